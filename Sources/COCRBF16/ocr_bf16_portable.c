// The portable kernel: plain C with the same packing layout (pairs of consecutive k per row/column) and the same
// bf16 rounding as the AVX512-BF16 one, for CPUs without it. Slow (scalar fp32), but never wrong.
#include "ocr_bf16_kernel.h"

enum { PORTABLE_MR = 4, PORTABLE_NR = 16 };

// The k-pair layout: for each pair of consecutive k, panel_lines 32-bit slots (one per row of op(A) or column of
// op(B)) holding (k even, k odd) in the low and high bf16. Lines ≥ lines and k ≥ k_len are zeros, so padded
// products add exactly 0. Element (line, p) is src[line * ld + p] when k_contiguous, else src[p * ld + line].
static void pack_pairs(int k_contiguous, const float *src, long ld, long lines, long panel_lines, long k_len,
                       uint16_t *panel) {
    long k_pairs = (k_len + 1) / 2;
    for (long pair = 0; pair < k_pairs; ++pair) {
        uint16_t *out = panel + 2 * pair * panel_lines;
        for (long line = 0; line < panel_lines; ++line) {
            for (long half = 0; half < 2; ++half) {
                long p = 2 * pair + half;
                float x = 0;
                if (line < lines && p < k_len) x = k_contiguous ? src[line * ld + p] : src[p * ld + line];
                out[2 * line + half] = ocr_bf16_bits(x);
            }
        }
    }
}

static void pack_a_panel(int trans, const float *a, long lda, long rows, long k_len, uint16_t *panel) {
    pack_pairs(!trans, a, lda, rows, PORTABLE_MR, k_len, panel);
}

static void pack_b(int trans, const float *b, long ldb, long cols, long k_len, uint16_t *panels) {
    long panel_size = PORTABLE_NR * (k_len + k_len % 2);
    for (long j = 0; j < cols; j += PORTABLE_NR, panels += panel_size) {
        long panel_cols = cols - j < PORTABLE_NR ? cols - j : PORTABLE_NR;
        pack_pairs(trans, trans ? b + j * ldb : b + j, ldb, panel_cols, PORTABLE_NR, k_len, panels);
    }
}

static void microkernel(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel, float *c, long ldc,
                        int rows, int cols, float alpha, float beta, int transpose_c) {
    float acc[PORTABLE_MR][PORTABLE_NR] = {{0}};
    for (long pair = 0; pair < k_padded / 2; ++pair) {
        const uint16_t *a = a_panel + 2 * PORTABLE_MR * pair, *b = b_panel + 2 * PORTABLE_NR * pair;
        for (int i = 0; i < PORTABLE_MR; ++i) {
            float a_even = ocr_bf16_to_float(a[2 * i]), a_odd = ocr_bf16_to_float(a[2 * i + 1]);
            for (int j = 0; j < PORTABLE_NR; ++j) {
                acc[i][j] += a_even * ocr_bf16_to_float(b[2 * j]);
                acc[i][j] += a_odd * ocr_bf16_to_float(b[2 * j + 1]);
            }
        }
    }
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            float *out = transpose_c ? c + j * ldc + i : c + i * ldc + j;
            *out = beta == 0 ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *out;
        }
    }
}

const ocr_bf16_kernel ocr_bf16_kernel_portable = {
    .name = "portable 4x16",
    .mr = PORTABLE_MR, .nr = PORTABLE_NR, .k_unit = 2,
    .kc = 256, .mc = 128, .nc = 1024,
    .pack_a_panel = pack_a_panel, .pack_b = pack_b, .microkernel = microkernel,
};
