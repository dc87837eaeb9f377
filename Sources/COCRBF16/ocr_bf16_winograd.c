// Winograd F(2×2, 3×3) transforms for the bf16 path (Sources/OCRTensor/Winograd.swift runs them when the 16 GEMMs
// run in bf16), vectorised over 16 blocks of a block row, each beside its scalar reference. Each does the
// operations of Winograd.swift's fp32 transform in its order, so it gives its values; the input transform then
// rounds them to bf16 bits (half the bytes of fp32, the rounding the GEMM's packing would apply).
//
// Shapes, for one channel of one sub-image of br × bc blocks of 2×2 outputs, ξ = 4i + j:
//   input:            padded (2·br + 2) × pw floats, pw = 2·bc + 2: the sub-image with a zero border (rows and
//                     columns −1 ...); out[ξ·stride + u·bc + v] = (Bᵀ d B)[i][j] of the 4×4 input d of block (u, v)
//   output:           m[ξ·stride + u·bc + v] → y: 2·br × 2·bc floats, the sub-image's outputs (Aᵀ M A per block)
//   output gradient:  dy: 2·br × 2·bc floats (zero past the sub-image) → z[ξ·stride + u·bc + v] = (A dŶ Aᵀ)[i][j]
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

// ---------------------------------------------------------------- input: Bᵀ d B

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

// ---------------------------------------------------------------- output: Aᵀ M A

// Per block, row a of M gives r0 = m0 + m1 + m2 and r1 = m1 − m2 − m3; Aᵀ sums them into the four outputs
// starting from 0 (so that a −0 sum comes out as +0, as the fp32 transform's accumulators do).
void ocr_bf16_winograd_output_reference(const float *m, long stride, long block_rows, long block_cols, float *y) {
    const long width = 2 * block_cols;
    for (long b = 0; b < block_rows * block_cols; ++b) {
        float r0[4], r1[4];
        for (int a = 0; a < 4; ++a) {
            const float m0 = m[(4 * a) * stride + b], m1 = m[(4 * a + 1) * stride + b];
            const float m2 = m[(4 * a + 2) * stride + b], m3 = m[(4 * a + 3) * stride + b];
            r0[a] = m0 + m1 + m2, r1[a] = m1 - m2 - m3;
        }
        float *top = y + b / block_cols * 2 * width + b % block_cols * 2;
        top[0] = 0.0f + r0[0] + r0[1] + r0[2];
        top[1] = 0.0f + r1[0] + r1[1] + r1[2];
        top[width] = 0.0f + r0[1] - r0[2] - r0[3];
        top[width + 1] = 0.0f + r1[1] - r1[2] - r1[3];
    }
}

static OCR_AVX512 void winograd_output_avx512(const float *m, long stride, long block_rows, long block_cols,
                                              float *y) {
    const long width = 2 * block_cols;
    // Lanes of (left, right) interleaved: outputs 0 ... 15 and 16 ... 31 of a row of 16 blocks.
    const __m512i low = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
    const __m512 zero = _mm512_setzero_ps();
    for (long bu = 0; bu < block_rows; ++bu) {
        for (long bv = 0; bv < block_cols; bv += 16) {
            const long b = bu * block_cols + bv;
            const __mmask16 blocks = first_lanes(block_cols - bv);
            __m512 r0[4], r1[4];
            for (int a = 0; a < 4; ++a) {
                const __m512 m0 = _mm512_maskz_loadu_ps(blocks, m + (4 * a) * stride + b);
                const __m512 m1 = _mm512_maskz_loadu_ps(blocks, m + (4 * a + 1) * stride + b);
                const __m512 m2 = _mm512_maskz_loadu_ps(blocks, m + (4 * a + 2) * stride + b);
                const __m512 m3 = _mm512_maskz_loadu_ps(blocks, m + (4 * a + 3) * stride + b);
                r0[a] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                r1[a] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            const __m512 y00 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(zero, r0[0]), r0[1]), r0[2]);
            const __m512 y01 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(zero, r1[0]), r1[1]), r1[2]);
            const __m512 y10 = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(zero, r0[1]), r0[2]), r0[3]);
            const __m512 y11 = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(zero, r1[1]), r1[2]), r1[3]);
            float *top = y + 2 * bu * width + 2 * bv;
            const long columns = 2 * (block_cols - bv);
            _mm512_mask_storeu_ps(top, first_lanes(columns), _mm512_permutex2var_ps(y00, low, y01));
            _mm512_mask_storeu_ps(top + 16, first_lanes(columns - 16), _mm512_permutex2var_ps(y00, high, y01));
            _mm512_mask_storeu_ps(top + width, first_lanes(columns), _mm512_permutex2var_ps(y10, low, y11));
            _mm512_mask_storeu_ps(top + width + 16, first_lanes(columns - 16), _mm512_permutex2var_ps(y10, high, y11));
        }
    }
}

// ---------------------------------------------------------------- output gradient: A dŶ Aᵀ

// Per block, A dŶ has rows (y0q, y0q + y1q, y0q − y1q, −y1q); each row (p, q) times Aᵀ is (p, p + q, p − q, −q).
void ocr_bf16_winograd_output_gradient_reference(const float *dy, long block_rows, long block_cols, float *z,
                                                 long stride) {
    const long width = 2 * block_cols;
    for (long b = 0; b < block_rows * block_cols; ++b) {
        const float *top = dy + b / block_cols * 2 * width + b % block_cols * 2;
        const float y00 = top[0], y01 = top[1], y10 = top[width], y11 = top[width + 1];
        const float p[4] = {y00, y00 + y10, y00 - y10, -y10}, q[4] = {y01, y01 + y11, y01 - y11, -y11};
        for (int a = 0; a < 4; ++a) {
            z[(4 * a) * stride + b] = p[a];
            z[(4 * a + 1) * stride + b] = p[a] + q[a];
            z[(4 * a + 2) * stride + b] = p[a] - q[a];
            z[(4 * a + 3) * stride + b] = -q[a];
        }
    }
}

// −x, exactly (the sign bit flipped; AVX512F has no floating-point xor).
static inline OCR_AVX512 __m512 negate(__m512 x) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
}

static OCR_AVX512 void winograd_output_gradient_avx512(const float *dy, long block_rows, long block_cols, float *z,
                                                       long stride) {
    const long width = 2 * block_cols;
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (long bu = 0; bu < block_rows; ++bu) {
        for (long bv = 0; bv < block_cols; bv += 16) {
            const long b = bu * block_cols + bv, columns = 2 * (block_cols - bv);
            const __mmask16 blocks = first_lanes(block_cols - bv);
            const float *top = dy + 2 * bu * width + 2 * bv;
            const __m512 t0 = _mm512_maskz_loadu_ps(first_lanes(columns), top);
            const __m512 t1 = _mm512_maskz_loadu_ps(first_lanes(columns - 16), top + 16);
            const __m512 u0 = _mm512_maskz_loadu_ps(first_lanes(columns), top + width);
            const __m512 u1 = _mm512_maskz_loadu_ps(first_lanes(columns - 16), top + width + 16);
            const __m512 y00 = _mm512_permutex2var_ps(t0, evens, t1), y01 = _mm512_permutex2var_ps(t0, odds, t1);
            const __m512 y10 = _mm512_permutex2var_ps(u0, evens, u1), y11 = _mm512_permutex2var_ps(u0, odds, u1);
            const __m512 p[4] = {y00, _mm512_add_ps(y00, y10), _mm512_sub_ps(y00, y10),
                                 negate(y10)};
            const __m512 q[4] = {y01, _mm512_add_ps(y01, y11), _mm512_sub_ps(y01, y11),
                                 negate(y11)};
            for (int a = 0; a < 4; ++a) {
                _mm512_mask_storeu_ps(z + (4 * a) * stride + b, blocks, p[a]);
                _mm512_mask_storeu_ps(z + (4 * a + 1) * stride + b, blocks, _mm512_add_ps(p[a], q[a]));
                _mm512_mask_storeu_ps(z + (4 * a + 2) * stride + b, blocks, _mm512_sub_ps(p[a], q[a]));
                _mm512_mask_storeu_ps(z + (4 * a + 3) * stride + b, blocks, negate(q[a]));
            }
        }
    }
}

// ---------------------------------------------------------------- dispatch

static int vector_transform;
static pthread_once_t vector_transform_once = PTHREAD_ONCE_INIT;
static void check_vector_transform(void) { vector_transform = ocr_bf16_supported(); }

void ocr_bf16_winograd_input(const float *padded, long block_rows, long block_cols, uint16_t *out, long stride) {
    pthread_once(&vector_transform_once, check_vector_transform);
    if (vector_transform) winograd_input_avx512(padded, block_rows, block_cols, out, stride);
    else ocr_bf16_winograd_input_reference(padded, block_rows, block_cols, out, stride);
}

void ocr_bf16_winograd_output(const float *m, long stride, long block_rows, long block_cols, float *y) {
    pthread_once(&vector_transform_once, check_vector_transform);
    if (vector_transform) winograd_output_avx512(m, stride, block_rows, block_cols, y);
    else ocr_bf16_winograd_output_reference(m, stride, block_rows, block_cols, y);
}

void ocr_bf16_winograd_output_gradient(const float *dy, long block_rows, long block_cols, float *z, long stride) {
    pthread_once(&vector_transform_once, check_vector_transform);
    if (vector_transform) winograd_output_gradient_avx512(dy, block_rows, block_cols, z, stride);
    else ocr_bf16_winograd_output_gradient_reference(dy, block_rows, block_cols, z, stride);
}
