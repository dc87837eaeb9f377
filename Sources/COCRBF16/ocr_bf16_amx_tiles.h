// The AMX tile configuration both AMX files load (LDTILECFG, per thread): palette 1, tmm0-7 all 16 rows × 64 bytes.
#ifndef OCR_BF16_AMX_TILES_H
#define OCR_BF16_AMX_TILES_H

#include <stdint.h>

typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} ocr_bf16_tile_config;

static const ocr_bf16_tile_config ocr_bf16_tiles_16x64 = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16},
};

#endif
