// Winograd F(2×2, 3×3) input transform with bf16 output (Sources/OCRTensor/Winograd.swift, transformInput, when
// the 16 GEMMs run in bf16): the transformed inputs go straight to bf16 bits, half the bytes of fp32, with the
// rounding the GEMM's packing would apply to them.
//
// Shapes, for one channel of one sub-image of br × bc blocks of 2×2 outputs:
//   padded:  (2·br + 2) × pw floats, pw = 2·bc + 2: the sub-image with a zero border (rows and columns −1 ...)
//   out:     V_ξ for ξ = 4i + j at out[ξ·stride + u·bc + v] for block (u, v): (Bᵀ d B)[i][j] of its 4×4 input d
// Arithmetic: first the rows of Bᵀ d (d0 − d2, d1 + d2, d2 − d1, d1 − d3, each rounded to fp32), then their
// columns combined the same way, then rounded to bf16: the fp32 path's operations in its order, so its values.
#include "ocr_bf16.h"
#include "ocr_bf16_avx512_common.h"
#include "ocr_bf16_kernel.h"

#include <pthread.h>

void ocr_bf16_winograd_input_reference(const float *padded, long block_rows, long block_cols, uint16_t *out,
                                       long stride) {
    const long pw = 2 * block_cols + 2;
    for (long bu = 0; bu < block_rows; ++bu) {
        const float *d0 = padded + 2 * bu * pw, *d1 = d0 + pw, *d2 = d1 + pw, *d3 = d2 + pw;
        for (long bv = 0; bv < block_cols; ++bv) {
            float r[4][4];  // row i of Bᵀ d at columns 2·bv ... 2·bv + 3
            for (int q = 0; q < 4; ++q) {
                const long x = 2 * bv + q;
                r[0][q] = d0[x] - d2[x], r[1][q] = d1[x] + d2[x], r[2][q] = d2[x] - d1[x], r[3][q] = d1[x] - d3[x];
            }
            uint16_t *o = out + bu * block_cols + bv;
            for (int i = 0; i < 4; ++i) {
                o[(4 * i) * stride] = ocr_bf16_bits(r[i][0] - r[i][2]);
                o[(4 * i + 1) * stride] = ocr_bf16_bits(r[i][1] + r[i][2]);
                o[(4 * i + 2) * stride] = ocr_bf16_bits(r[i][2] - r[i][1]);
                o[(4 * i + 3) * stride] = ocr_bf16_bits(r[i][1] - r[i][3]);
            }
        }
    }
}

// 16 blocks of a block row at a time: columns x ... x + 31 of each row of Bᵀ d give, split into even and odd
// columns, e0 and e1 of the 16 blocks; columns x + 2 ... x + 33 give e2 and e3.
static OCR_AVX512 void winograd_input_avx512(const float *padded, long block_rows, long block_cols, uint16_t *out,
                                             long stride) {
    const long pw = 2 * block_cols + 2;
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (long bu = 0; bu < block_rows; ++bu) {
        const float *d = padded + 2 * bu * pw;
        for (long bv = 0; bv < block_cols; bv += 16) {
            const long x = 2 * bv;
            // [k][0..3]: row k of d at columns x, x + 16, x + 2, x + 18 (16 each; zeros past the row)
            __m512 rows[4][4];
            for (int k = 0; k < 4; ++k)
                for (int part = 0; part < 4; ++part) {
                    const long at = x + (part & 1) * 16 + (part >> 1) * 2;
                    rows[k][part] = _mm512_maskz_loadu_ps(first_lanes(pw - at), d + k * pw + at);
                }
            const __mmask16 blocks = first_lanes(block_cols - bv);
            uint16_t *o = out + bu * block_cols + bv;
            for (int i = 0; i < 4; ++i) {
                __m512 r[4];  // row i of Bᵀ d, the four column ranges
                for (int part = 0; part < 4; ++part) {
                    const __m512 d0 = rows[0][part], d1 = rows[1][part], d2 = rows[2][part], d3 = rows[3][part];
                    r[part] = i == 0 ? _mm512_sub_ps(d0, d2) : i == 1 ? _mm512_add_ps(d1, d2)
                            : i == 2 ? _mm512_sub_ps(d2, d1) : _mm512_sub_ps(d1, d3);
                }
                const __m512 e0 = _mm512_permutex2var_ps(r[0], evens, r[1]), e1 = _mm512_permutex2var_ps(r[0], odds, r[1]);
                const __m512 e2 = _mm512_permutex2var_ps(r[2], evens, r[3]), e3 = _mm512_permutex2var_ps(r[2], odds, r[3]);
                const __m512 v[4] = {_mm512_sub_ps(e0, e2), _mm512_add_ps(e1, e2), _mm512_sub_ps(e2, e1),
                                     _mm512_sub_ps(e1, e3)};
                for (int j = 0; j < 4; ++j)
                    _mm256_mask_storeu_epi16(o + (4 * i + j) * stride, blocks, (__m256i)_mm512_cvtneps_pbh(v[j]));
            }
        }
    }
}

static int vector_transform;
static pthread_once_t vector_transform_once = PTHREAD_ONCE_INIT;
static void check_vector_transform(void) { vector_transform = ocr_bf16_supported(); }

void ocr_bf16_winograd_input(const float *padded, long block_rows, long block_cols, uint16_t *out, long stride) {
    pthread_once(&vector_transform_once, check_vector_transform);
    if (vector_transform) winograd_input_avx512(padded, block_rows, block_cols, out, stride);
    else ocr_bf16_winograd_input_reference(padded, block_rows, block_cols, out, stride);
}
