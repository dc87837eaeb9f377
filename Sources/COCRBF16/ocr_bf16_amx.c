// The AMX-BF16 kernel: TDPBF16PS multiplies a tile of A (16 rows × 32 bf16 = 64 bytes per row) by a tile of B in
// pair layout (16 rows, one per pair of consecutive k, × 16 columns × 2 bf16) into a 16×16 fp32 tile. A microtile
// is 32×32 of C, as 2×2 accumulator tiles fed by 2 A tiles and 2 B tiles per 32 k (4 products per 4 tile loads).
//
// Tiles: tmm0-3 accumulate C rows 0-15 / 16-31 × columns 0-15 / 16-31 (tmm0 = top left, tmm1 = top right,
// tmm2 = bottom left, tmm3 = bottom right), tmm4-5 hold A rows 0-15 / 16-31, tmm6-7 B columns 0-15 / 16-31. Every
// tile is configured 16 rows × 64 bytes; smaller edges use the zero padding of the packed panels, and C is
// written through a scratch tile when the microtile is partial.
//
// Packed layouts (bf16 units; a panel is 32 lines × k padded to 32, in chunks of 32 k, 1024 bf16 per chunk):
//   A panel: chunk c, row r (0-31), k offset q (0-31)  at  c·1024 + r·32 + q         (rows 16-31: the 2nd tile)
//   B panel: chunk c, column j (0-31), k offset q       at  c·1024 + (j/16)·512 + (q/2)·32 + (j%16)·2 + q%2
// so each tile is 1 KB contiguous (row stride 64 bytes). A caller's packed A may be only 4-byte aligned, so the
// packing stores are unaligned ones (tile loads need no alignment).
//
// The tile configuration is per-thread state: thread_begin (LDTILECFG) runs on each thread before its first
// microkernel of a call, thread_end (TILERELEASE) after its last one. The driver uses this kernel only after
// ocr_bf16_amx_supported() (CPUID, XCR0 and, on Linux, the XTILEDATA permission).
//
// Rounding: VCVTNE2PS2BF16 packs as the other kernels do. The order in which TDPBF16PS adds the 32 products of
// one chunk into the fp32 accumulator is the hardware's (not the reference's sequential one), but it is the same
// on every call, so results remain deterministic and independent of the thread split.
#include "ocr_bf16_avx512_common.h"
#include "ocr_bf16_amx_tiles.h"
#include "ocr_bf16_kernel.h"

#include <immintrin.h>
#include <string.h>

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

enum { MR = 32, NR = 32, K_CHUNK = 32, CHUNK_BF16 = 32 * 32, TILE_BF16 = 16 * 32 };

// 32 floats (the first `count` of x, zeros after) as 32 bf16, round to nearest even.
static inline AMX __m512i convert_32(const float *x, long count) {
    __m512 low = _mm512_maskz_loadu_ps(first_lanes(count), x);
    __m512 high = _mm512_maskz_loadu_ps(first_lanes(count - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(high, low);
}

// ---------------------------------------------------------------- packing

// 16 lines whose k is strided by ld (line l, k p at src[p * ld + l]; lines ≥ lines and k ≥ k_len are zero), for
// k [p0, p0 + 32): 16 pair words per line, out[l] = the line's 32 bf16 in k order (an A tile row). The pairs come
// as 16 zmm of (pair, 16 lines); a transpose makes them 16 zmm of (line, 16 pairs).
static inline AMX void pairs_by_line(const float *src, long ld, long lines, long k_len, long p0, __m512i out[16]) {
    __mmask16 valid = first_lanes(lines);
    for (int q = 0; q < 16; ++q) {
        long p = p0 + 2 * q;
        __m512 even = p < k_len ? _mm512_maskz_loadu_ps(valid, src + p * ld) : _mm512_setzero_ps();
        __m512 odd = p + 1 < k_len ? _mm512_maskz_loadu_ps(valid, src + (p + 1) * ld) : _mm512_setzero_ps();
        out[q] = interleave_pair(even, odd);
    }
    transpose_16x16(out);
}

// Row panel of op(A): 32 rows, each chunk's row r = 32 consecutive k (64 bytes). Stored as op(A) (the usual case):
// one conversion per row and chunk. Stored transposed (dX = Wᵀ·dY): 16 rows at a time through pairs_by_line.
static AMX void pack_a_panel(int trans, const float *a, long lda, long rows, long k_len, uint16_t *panel) {
    long chunks = (k_len + K_CHUNK - 1) / K_CHUNK;
    for (long c = 0; c < chunks; ++c) {
        uint16_t *out = panel + c * CHUNK_BF16;
        long p0 = c * K_CHUNK;
        if (!trans) {
            for (long r = 0; r < MR; ++r) {
                __m512i v = r < rows ? convert_32(a + r * lda + p0, k_len - p0) : _mm512_setzero_si512();
                _mm512_storeu_si512(out + r * 32, v);
            }
        } else {
            for (long g = 0; g < MR / 16; ++g) {
                __m512i lines[16];
                if (rows > 16 * g) {
                    pairs_by_line(a + 16 * g, lda, rows - 16 * g, k_len, p0, lines);
                } else {
                    for (int l = 0; l < 16; ++l) lines[l] = _mm512_setzero_si512();
                }
                for (int l = 0; l < 16; ++l) _mm512_storeu_si512(out + (16 * g + l) * 32, lines[l]);
            }
        }
    }
}

// A block of op(B) as 32-column panels. Stored k × n (C = A·B): along each pair of rows k, k+1, 16 columns at a
// time, so the reads stream; one zmm is one row of a B tile. Stored n × k (dW = dY·Xᵀ): per 16 columns (stored
// rows) and chunk, 32 k of each converted, then transposed into the 16 tile rows of pairs.
static AMX void pack_b(int trans, const float *b, long ldb, long cols, long k_len, uint16_t *panels) {
    long chunks = (k_len + K_CHUNK - 1) / K_CHUNK;
    long panel_size = NR * chunks * K_CHUNK;
    long groups = (cols + NR - 1) / NR * 2;  // 16-column groups, both halves of the last panel included
    if (trans) {
        for (long g = 0; g < groups; ++g) {
            long lines = cols - 16 * g;
            uint16_t *group_out = panels + g / 2 * panel_size + g % 2 * TILE_BF16;
            for (long c = 0; c < chunks; ++c) {
                __m512i rows[16];
                for (long l = 0; l < 16; ++l)
                    rows[l] = l < lines ? convert_32(b + (16 * g + l) * ldb + c * K_CHUNK, k_len - c * K_CHUNK)
                                        : _mm512_setzero_si512();
                transpose_16x16(rows);
                uint16_t *out = group_out + c * CHUNK_BF16;
                for (int q = 0; q < 16; ++q) _mm512_storeu_si512(out + q * 32, rows[q]);
            }
        }
        return;
    }
    for (long p = 0; p < chunks * K_CHUNK; p += 2) {
        uint16_t *pair_out = panels + p / K_CHUNK * CHUNK_BF16 + (p % K_CHUNK) / 2 * 32;
        if (p >= k_len) {
            for (long g = 0; g < groups; ++g)
                _mm512_storeu_si512(pair_out + g / 2 * panel_size + g % 2 * TILE_BF16, _mm512_setzero_si512());
            continue;
        }
        const float *even_row = b + p * ldb, *odd_row = b + (p + 1) * ldb;
        int has_odd = p + 1 < k_len;
        for (long g = 0; g < groups; ++g) {
            __mmask16 valid = first_lanes(cols - 16 * g);
            __m512 even = _mm512_maskz_loadu_ps(valid, even_row + 16 * g);
            __m512 odd = has_odd ? _mm512_maskz_loadu_ps(valid, odd_row + 16 * g) : _mm512_setzero_ps();
            _mm512_storeu_si512(pair_out + g / 2 * panel_size + g % 2 * TILE_BF16, interleave_pair(even, odd));
        }
    }
}

// ---------------------------------------------------------------- tiles

static AMX void thread_begin(void) { _tile_loadconfig(&ocr_bf16_tiles_16x64); }
static AMX void thread_end(void) { _tile_release(); }

// GCC's tile load macros do not tell the compiler that they read memory: stores to a buffer that a tile load reads
// next must be forced out first.
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

// The accumulators tmm0-3 <-> a 32×32 fp32 block at c (row stride ldc floats); only the tiles in use.
#define FOR_TILES(two_rows, two_cols, op, c, ldc)                        \
    do {                                                                 \
        op(0, (c), (ldc) * 4);                                           \
        if (two_cols) op(1, (c) + 16, (ldc) * 4);                        \
        if (two_rows) op(2, (c) + 16 * (ldc), (ldc) * 4);                \
        if ((two_rows) && (two_cols)) op(3, (c) + 16 * (ldc) + 16, (ldc) * 4); \
    } while (0)

// The product of the panels for a compile-time shape of tiles (1 or 2 A tiles × 1 or 2 B tiles): C tiles need not
// compute zero rows or columns past 16 (the OCR head's 19 rows use 2 A tiles; its 19 columns, 2 B tiles).
// Meanwhile the 32 × 32 block of C at `next_c` (the driver's next microtile: the next row panel, same columns) is
// prefetched into L2, spread over the chunks: its rows are 8 KB apart for n = 2048 (and alias in L1's sets), and
// loading C into the accumulators waits for it at the start of every call. The gain measured was within this
// host's noise; prefetches do not fault, so past the last row panel they only waste a little bandwidth.
static inline AMX __attribute__((always_inline)) void product(const int two_rows, const int two_cols, long k_padded,
                                                             const uint16_t *a_panel, const uint16_t *b_panel,
                                                             const float *next_c, long ldc) {
    long chunks = k_padded / K_CHUNK, rows_per_chunk = (MR + chunks - 1) / chunks;
    for (long chunk = 0; chunk < chunks; ++chunk) {
        const uint16_t *a = a_panel + chunk * CHUNK_BF16, *b = b_panel + chunk * CHUNK_BF16;
        _tile_loadd(4, a, 64);
        _tile_loadd(6, b, 64);
        if (two_cols) _tile_loadd(7, b + TILE_BF16, 64);
        if (two_rows) _tile_loadd(5, a + TILE_BF16, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (two_cols) _tile_dpbf16ps(1, 4, 7);
        if (two_rows) _tile_dpbf16ps(2, 5, 6);
        if (two_rows && two_cols) _tile_dpbf16ps(3, 5, 7);
        for (long r = chunk * rows_per_chunk; r < (chunk + 1) * rows_per_chunk && r < MR; ++r) {
            _mm_prefetch((const char *)(next_c + r * ldc), _MM_HINT_T1);
            _mm_prefetch((const char *)(next_c + r * ldc + 16), _MM_HINT_T1);
        }
    }
}

#define LOAD_TILE(t, base, stride) _tile_loadd(t, base, stride)
#define STORE_TILE(t, base, stride) _tile_stored(t, base, stride)
#define ZERO_TILE(t, base, stride) _tile_zero(t)

// c[0..rows) [0..cols) = alpha · A·B + beta · c (beta == 0: c not read). When alpha == 1 and beta is 0 or 1 (the
// trainer's calls, and the driver's later k blocks when alpha == 1), the accumulators start from 0 or from C and
// are C afterwards: whole 32×32 blocks go straight between C and the tiles, partial ones through a scratch block.
// Otherwise the accumulators start from 0 and the scratch block is scaled into C. Which one is used depends only
// on alpha and beta, not on the block's position, so every element gets the same arithmetic.
static inline AMX __attribute__((always_inline)) void tile(const int two_rows, const int two_cols, long k_padded,
                                                          const uint16_t *a_panel, const uint16_t *b_panel, float *c,
                                                          long ldc, int rows, int cols, float alpha, float beta,
                                                          int transpose_c) {
    int accumulate = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
    if (two_rows && two_cols && accumulate && !transpose_c && rows == MR && cols == NR) {
        if (beta == 0.0f) FOR_TILES(1, 1, ZERO_TILE, c, ldc);
        else FOR_TILES(1, 1, LOAD_TILE, c, ldc);
        product(1, 1, k_padded, a_panel, b_panel, c + MR * ldc, ldc);
        FOR_TILES(1, 1, STORE_TILE, c, ldc);
        return;
    }
    float scratch[MR * NR] __attribute__((aligned(64)));
    int start_from_c = accumulate && beta == 1.0f;
    if (start_from_c) {
        memset(scratch, 0, sizeof scratch);
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) scratch[i * NR + j] = transpose_c ? c[j * ldc + i] : c[i * ldc + j];
        MEMORY_BARRIER();
        FOR_TILES(two_rows, two_cols, LOAD_TILE, scratch, NR);
    } else {
        FOR_TILES(two_rows, two_cols, ZERO_TILE, scratch, NR);
    }
    product(two_rows, two_cols, k_padded, a_panel, b_panel, transpose_c ? c : c + MR * ldc, ldc);
    FOR_TILES(two_rows, two_cols, STORE_TILE, scratch, NR);

    if (transpose_c) {
        for (int i = 0; i < rows; ++i) {
            for (int j = 0; j < cols; ++j) {
                float *out = c + j * ldc + i, acc = scratch[i * NR + j];
                *out = accumulate ? acc : beta == 0 ? alpha * acc : alpha * acc + beta * *out;
            }
        }
        return;
    }
    __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
    for (int i = 0; i < rows; ++i) {
        for (int half = 0; half < 1 + two_cols; ++half) {
            __mmask16 mask = first_lanes(cols - 16 * half);
            float *out = c + i * ldc + 16 * half;
            __m512 result = _mm512_load_ps(scratch + i * NR + 16 * half);
            if (!accumulate) {
                result = _mm512_mul_ps(result, alpha_v);
                if (beta != 0) result = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, out), beta_v, result);
            }
            _mm512_mask_storeu_ps(out, mask, result);
        }
    }
}

#define TILE_VARIANT(two_rows, two_cols)                                                                          \
    static AMX void tile_##two_rows##two_cols(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel,   \
                                              float *c, long ldc, int rows, int cols, float alpha, float beta,   \
                                              int transpose_c) {                                                 \
        tile(two_rows, two_cols, k_padded, a_panel, b_panel, c, ldc, rows, cols, alpha, beta, transpose_c);      \
    }
TILE_VARIANT(0, 0) TILE_VARIANT(0, 1) TILE_VARIANT(1, 0) TILE_VARIANT(1, 1)

static AMX void microkernel(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel, float *c, long ldc,
                        int rows, int cols, float alpha, float beta, int transpose_c) {
    if (rows > 16) {
        if (cols > 16) tile_11(k_padded, a_panel, b_panel, c, ldc, rows, cols, alpha, beta, transpose_c);
        else tile_10(k_padded, a_panel, b_panel, c, ldc, rows, cols, alpha, beta, transpose_c);
    } else {
        if (cols > 16) tile_01(k_padded, a_panel, b_panel, c, ldc, rows, cols, alpha, beta, transpose_c);
        else tile_00(k_padded, a_panel, b_panel, c, ldc, rows, cols, alpha, beta, transpose_c);
    }
}

const ocr_bf16_kernel ocr_bf16_kernel_amx = {
    .name = "amx-bf16 32x32",
    .mr = MR, .nr = NR, .k_unit = K_CHUNK, .m_unit = 16,
    // L1 48 KB, L2 2 MB per core. Each call drains and refills the 4 accumulator tiles (a few hundred cycles), so
    // kc is large: 1024 k = 32 chunks of 4 products per call. A block 256 × 1024 and B block 1024 × 512 (512 KB +
    // 1 MB) share L2; the B micro-panel (64 KB) no longer fits L1, so both operands stream from L2. Measured on
    // 2048³: kc 512 ran at 330-550 GFLOP/s, kc 1024 at 650-760 (noisy shared host).
    .kc = 1024, .mc = 256, .nc = 512,
    .pack_a_panel = pack_a_panel, .pack_b = pack_b, .microkernel = microkernel,
    .thread_begin = thread_begin, .thread_end = thread_end,
};
