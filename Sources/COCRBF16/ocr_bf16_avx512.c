// The AVX512-BF16 kernel: VDPBF16PS adds, per 32-bit lane, the products of a pair of bf16 (k, k+1) to an fp32
// accumulator. B is packed so that one zmm holds 16 columns × one k pair; A's pair for one row is broadcast to
// all lanes. Only the functions here carry the target attribute, so this file builds without -mavx512 flags and
// runs only after the driver's CPUID check.
#include "ocr_bf16_avx512_common.h"
#include "ocr_bf16_kernel.h"

#include <immintrin.h>

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

enum { MR = 12, NR = 32 };

// Packs 16 lines (rows of op(A) stored as rows, or columns of op(B) stored as rows: A, or Bᵀ for dW = dY·Xᵀ)
// whose k values are contiguous: per line, 32 k become 16 bf16 pairs in one zmm (VCVTNE2PS2BF16 rounds to
// nearest even), then a transpose puts each pair of k in one zmm of 16 lines. Lines ≥ lines and k ≥ k_len are
// zeros. Output row `pair` goes to out + pair * out_stride (in 32-bit units), its first `store_lanes` lanes.
static AVX512BF16 void pack_k_contiguous(const float *src, long ld, long lines, long k_len, uint32_t *out,
                                         long out_stride, __mmask16 store_lanes) {
    for (long p = 0; p < k_len; p += 32) {
        __mmask16 low = first_lanes(k_len - p), high = first_lanes(k_len - p - 16);
        __m512i rows[16];
        for (long line = 0; line < 16; ++line) {
            if (line < lines) {
                const float *x = src + line * ld + p;
                rows[line] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(high, x + 16),
                                                          _mm512_maskz_loadu_ps(low, x));
            } else {
                rows[line] = _mm512_setzero_si512();
            }
        }
        transpose_16x16(rows);
        long pairs = (k_len - p + 1) / 2 < 16 ? (k_len - p + 1) / 2 : 16;
        for (long pair = 0; pair < pairs; ++pair)
            _mm512_mask_storeu_epi32(out + (p / 2 + pair) * out_stride, store_lanes, rows[pair]);
    }
}

// Packs up to 16 lines stored contiguously along the line (Aᵀ for dX = Wᵀ·dY) with k strided by ld.
static AVX512BF16 void pack_k_strided(const float *src, long ld, long lines, long k_len, uint32_t *out,
                                      long out_stride, __mmask16 store_lanes) {
    __mmask16 valid = first_lanes(lines);
    for (long p = 0; p < k_len; p += 2) {
        __m512 even = _mm512_maskz_loadu_ps(valid, src + p * ld);
        __m512 odd = p + 1 < k_len ? _mm512_maskz_loadu_ps(valid, src + (p + 1) * ld) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(out + p / 2 * out_stride, store_lanes, interleave_pair(even, odd));
    }
}

// Row panel of op(A): MR = 12 lines, the last 4 lanes of each 16-lane row not stored.
static void AVX512BF16 pack_a_panel(int trans, const float *a, long lda, long rows, long k_len, uint16_t *panel) {
    uint32_t *out = (uint32_t *)panel;
    if (trans) pack_k_strided(a, lda, rows, k_len, out, MR, first_lanes(MR));
    else pack_k_contiguous(a, lda, rows, k_len, out, MR, first_lanes(MR));
}

// When the last of the NR-column panels holds 16 columns or fewer, its unused half: zeros (tiles of ≤ 16 columns
// skip it).
static void AVX512BF16 zero_unused_half(uint32_t *panels, long cols, long k_len) {
    if (cols % NR == 0 || cols % NR > 16) return;
    uint32_t *half = panels + cols / NR * NR * ((k_len + 1) / 2) + 16;
    for (long pair = 0; pair < (k_len + 1) / 2; ++pair) _mm512_storeu_si512(half + pair * NR, _mm512_setzero_si512());
}

// A block of op(B) as NR = 32-column panels. Stored k × n (C = A·B): along each pair of rows, 16 columns at a
// time, so the reads stream. Stored n × k (dW = dY·Xᵀ): per panel, 16 columns (stored rows) at a time.
static void AVX512BF16 pack_b(int trans, const float *b, long ldb, long cols, long k_len, uint16_t *panels) {
    uint32_t *out = (uint32_t *)panels;
    long panel_size = NR * ((k_len + 1) / 2);  // in 32-bit pairs
    if (trans) {
        for (long j = 0; j < cols; j += 16) {
            uint32_t *panel = out + j / NR * panel_size + j % NR;
            pack_k_contiguous(b + j * ldb, ldb, cols - j, k_len, panel, NR, 0xffff);
        }
        zero_unused_half(out, cols, k_len);
        return;
    }
    long groups = (cols + 31) / 32 * 2;  // 16-column groups, the last panel's both halves included
    for (long p = 0; p < k_len; p += 2) {
        const float *even_row = b + p * ldb, *odd_row = b + (p + 1) * ldb;
        uint32_t *pair_out = out + p / 2 * NR;
        for (long g = 0; g < groups; ++g) {
            __mmask16 valid = first_lanes(cols - 16 * g);
            __m512 even = _mm512_maskz_loadu_ps(valid, even_row + 16 * g);
            __m512 odd = p + 1 < k_len ? _mm512_maskz_loadu_ps(valid, odd_row + 16 * g) : _mm512_setzero_ps();
            _mm512_storeu_si512(pair_out + g / 2 * panel_size + g % 2 * 16, interleave_pair(even, odd));
        }
    }
}

// pack_b's panels from B as bf16 bits. Stored k × n: the words of rows p and p + 1 of 16 columns, zero-extended
// and merged into pairs. Stored n × k: 32 k of 16 lines at a time are already 16 pairs, transposed as pack_b does.
static void AVX512BF16 pack_b_bf16(int trans, const uint16_t *b, long ldb, long cols, long k_len, uint16_t *panels) {
    uint32_t *out = (uint32_t *)panels;
    long panel_size = NR * ((k_len + 1) / 2);  // in 32-bit pairs
    if (trans) {
        for (long j = 0; j < cols; j += 16) {
            uint32_t *panel = out + j / NR * panel_size + j % NR;
            for (long p = 0; p < k_len; p += 32) {
                __m512i rows[16];
                for (long line = 0; line < 16; ++line)
                    rows[line] = j + line < cols ? _mm512_maskz_loadu_epi16(first_words(k_len - p), b + (j + line) * ldb + p)
                                                 : _mm512_setzero_si512();
                transpose_16x16(rows);
                long pairs = (k_len - p + 1) / 2 < 16 ? (k_len - p + 1) / 2 : 16;
                for (long pair = 0; pair < pairs; ++pair) _mm512_storeu_si512(panel + (p / 2 + pair) * NR, rows[pair]);
            }
        }
        zero_unused_half(out, cols, k_len);
        return;
    }
    long groups = (cols + 31) / 32 * 2;  // 16-column groups, the last panel's both halves included
    for (long p = 0; p < k_len; p += 2) {
        const uint16_t *even_row = b + p * ldb, *odd_row = b + (p + 1) * ldb;
        uint32_t *pair_out = out + p / 2 * NR;
        for (long g = 0; g < groups; ++g) {
            __mmask16 valid = first_lanes(cols - 16 * g);
            __m512i even = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, even_row + 16 * g));
            __m512i odd = p + 1 < k_len ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, odd_row + 16 * g))
                                        : _mm512_setzero_si512();
            _mm512_storeu_si512(pair_out + g / 2 * panel_size + g % 2 * 16,
                                _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
        }
    }
}

// ocr_bf16_pack's rounding, 16 values per VCVTNEPS2BF16 (the instruction ocr_bf16_bits matches).
void AVX512BF16 ocr_bf16_pack_avx512(const float *x, uint16_t *out, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 valid = first_lanes(n - i);
        _mm256_mask_storeu_epi16(out + i, valid, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(valid, x + i)));
    }
}

// c = alpha * acc + beta * c on the lanes of `mask` (beta == 0: c is not read, so NaN there does not leak).
static inline AVX512BF16 void store_tile_row(float *c, __m512 acc, __mmask16 mask, __m512 alpha, float beta) {
    __m512 result = _mm512_mul_ps(acc, alpha);
    if (beta != 0) result = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, c), _mm512_set1_ps(beta), result);
    _mm512_mask_storeu_ps(c, mask, result);
}

// The same for a tile row written down a column of C (lane l at c + l * ldc, offsets in `lane_offsets`): the
// same arithmetic, so Cᵀ = op(B)ᵀ·op(A)ᵀ gives C's bits. A scatter per 16 elements, against ~kc dot products.
static inline AVX512BF16 void store_tile_column(float *c, __m512i lane_offsets, __m512 acc, __mmask16 mask,
                                                __m512 alpha, float beta) {
    __m512 result = _mm512_mul_ps(acc, alpha);
    if (beta != 0) {
        __m512 old = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, lane_offsets, c, 4);
        result = _mm512_fmadd_ps(old, _mm512_set1_ps(beta), result);
    }
    _mm512_mask_i32scatter_ps(c, mask, lane_offsets, result, 4);
}

// The tile product for a compile-time number of rows (the last row panel of m = 19 runs 7, not 12) and of zmm
// column halves (1 when cols ≤ 16): VDPBF16PS issues once per 2 cycles on Cooper Lake and twice per cycle on Zen 5,
// so padded rows or columns cost their full share; 12 × 2 accumulators cover its latency at either rate.
static inline AVX512BF16 __attribute__((always_inline)) void tile(const int rows, const int halves, long k_padded,
                                                                 const uint16_t *a_panel, const uint16_t *b_panel,
                                                                 float *c, long ldc, int cols, float alpha,
                                                                 float beta, int transpose_c) {
    // C's rows (ldc apart, beyond L2 for large C) are fetched now so that the k loop hides their latency rather
    // than the stores at its end waiting on it (measured on Zen 5: 2048³ 272 → 385 GFLOP/s on one thread, the
    // input-gradient shape 4608×1024×512 244 → 377). A transposed tile is rare (the OCR head's thin products).
    if (!transpose_c) {
#pragma GCC unroll 16
        for (int i = 0; i < rows; ++i) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            if (halves == 2) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
        }
    }
    __m512 acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < rows; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int32_t *a = (const int32_t *)a_panel;
    const __m512i *b = (const __m512i *)b_panel;
    for (long pair = 0; pair < k_padded / 2; ++pair) {
        __m512bh b_low = (__m512bh)_mm512_load_si512(b + 2 * pair);
        __m512bh b_high = (__m512bh)_mm512_load_si512(b + 2 * pair + halves - 1);
#pragma GCC unroll 16
        for (int i = 0; i < rows; ++i) {
            __m512bh a_pair = (__m512bh)_mm512_set1_epi32(a[MR * pair + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a_pair, b_low);
            if (halves == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a_pair, b_high);
        }
    }
    __m512 alpha_v = _mm512_set1_ps(alpha);
    __mmask16 mask_low = first_lanes(cols), mask_high = first_lanes(cols - 16);
    if (transpose_c) {
        __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512i lane_offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)ldc));
        for (int i = 0; i < rows; ++i) {
            store_tile_column(c + i, lane_offsets, acc[i][0], mask_low, alpha_v, beta);
            if (halves == 2) store_tile_column(c + 16 * ldc + i, lane_offsets, acc[i][1], mask_high, alpha_v, beta);
        }
        return;
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; ++i) {
        store_tile_row(c + i * ldc, acc[i][0], mask_low, alpha_v, beta);
        if (halves == 2) store_tile_row(c + i * ldc + 16, acc[i][1], mask_high, alpha_v, beta);
    }
}

#define TILE_VARIANT(rows, halves)                                                                                \
    static void AVX512BF16 tile_##rows##x##halves(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel, \
                                                  float *c, long ldc, int cols, float alpha, float beta,         \
                                                  int transpose_c) {                                              \
        tile(rows, halves, k_padded, a_panel, b_panel, c, ldc, cols, alpha, beta, transpose_c);                   \
    }
#define TILE_VARIANTS(rows) TILE_VARIANT(rows, 1) TILE_VARIANT(rows, 2)
TILE_VARIANTS(1) TILE_VARIANTS(2) TILE_VARIANTS(3) TILE_VARIANTS(4) TILE_VARIANTS(5) TILE_VARIANTS(6)
TILE_VARIANTS(7) TILE_VARIANTS(8) TILE_VARIANTS(9) TILE_VARIANTS(10) TILE_VARIANTS(11) TILE_VARIANTS(12)

typedef void (*tile_fn)(long, const uint16_t *, const uint16_t *, float *, long, int, float, float, int);
static const tile_fn tiles[MR][2] = {
    {tile_1x1, tile_1x2}, {tile_2x1, tile_2x2}, {tile_3x1, tile_3x2}, {tile_4x1, tile_4x2},
    {tile_5x1, tile_5x2}, {tile_6x1, tile_6x2}, {tile_7x1, tile_7x2}, {tile_8x1, tile_8x2},
    {tile_9x1, tile_9x2}, {tile_10x1, tile_10x2}, {tile_11x1, tile_11x2}, {tile_12x1, tile_12x2},
};

static void microkernel(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel, float *c, long ldc,
                        int rows, int cols, float alpha, float beta, int transpose_c) {
    tiles[rows - 1][cols > 16](k_padded, a_panel, b_panel, c, ldc, cols, alpha, beta, transpose_c);
}

// L1 32 KB, L2 1 MB per core (Cooper Lake, where these were measured): B micro-panel 384 × 32 bf16 = 24 KB; A block
// 720 × 384 = 540 KB and B block 384 × 1024 = 768 KB share L2 with C's traffic (measured: mc 1200 / nc 2048 ran
// 2048³ at 63-67 GFLOP/s, these at 70-76).
#define AVX512_KERNEL(name_, kc_)                                                                  \
    {.name = name_, .mr = MR, .nr = NR, .k_unit = 2, .kc = kc_, .mc = 720, .nc = 1024,             \
     .pack_a_panel = pack_a_panel, .pack_b = pack_b, .pack_b_bf16 = pack_b_bf16, .microkernel = microkernel}
const ocr_bf16_kernel ocr_bf16_kernel_avx512 = AVX512_KERNEL("avx512bf16 12x32", 384);
// With a 48 KB L1 (Zen 5) a 32 KB micro-panel of kc = 512 still stays there, and C is read and written in half as
// many k passes for k = 512 (measured, 2 threads, in one process: 2048×8192×512 639 → 676 GFLOP/s, the input
// gradient 512×8192×512 586 → 639; Winograd's one-thread products within ±3 %).
const ocr_bf16_kernel ocr_bf16_kernel_avx512_l1_48k = AVX512_KERNEL("avx512bf16 12x32 kc512", 512);
