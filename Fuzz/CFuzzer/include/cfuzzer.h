#ifndef OCR_DDP_CFUZZER_H
#define OCR_DDP_CFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver on `callback` (libFuzzer parses argc/argv itself). Returns -1 when the binary was built
/// without -sanitize=fuzzer, so a normal build can fall back to replaying inputs.
int ocr_fuzz_run(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
