// What the blocked driver (ocr_bf16.c) needs to know of a microkernel. Each kernel owns the layout of its packed
// panels; the driver only knows a panel's size: mr (or nr) rows × the k extent rounded up to k_unit, in bf16.
// For VDPBF16PS k_unit is 2 (a 32-bit pair of consecutive k per row/column); the tile-based AMX kernel (32 k per
// tile row of A) sets k_unit = 32, with its own packing.
#ifndef OCR_BF16_KERNEL_H
#define OCR_BF16_KERNEL_H

#include <stdint.h>

typedef struct {
    const char *name;
    int mr, nr;   // microtile: mr rows of op(A) × nr columns of op(B)
    int k_unit;   // packed k extents are padded with zeros to a multiple of this
    long kc;      // k block (multiple of k_unit): B micro-panel of kc × nr stays in L1 over the row panels
    long mc;      // rows of op(A) per block (multiple of mr): the mc × kc packed block stays in L2
    long nc;      // columns of op(B) per block (multiple of nr): the kc × nc packed block stays in L2/L3

    // Packs rows [0, rows) × k [0, k_len) of op(A) (a already points at the first element, rows ≤ mr) into one
    // panel of mr × round_up(k_len, k_unit) bf16, zero-padded.
    void (*pack_a_panel)(int trans, const float *a, long lda, long rows, long k_len, uint16_t *panel);
    // The same for a block of op(B): columns [0, cols) × k [0, k_len) into ceil(cols / nr) consecutive panels of
    // nr × round_up(k_len, k_unit) bf16. A whole block at once, so that a B stored k × n can be read along its
    // rows (panel by panel, each k row would be a different page: 32 KB apart for n = 8192).
    void (*pack_b)(int trans, const float *b, long ldb, long cols, long k_len, uint16_t *panels);
    // Optional (NULL: the driver widens the block to fp32 and calls pack_b). The same panels from B given as bf16
    // bits (ocr_bf16_gemm_batch_bf16_b): the values are already rounded, so only their layout changes.
    void (*pack_b_bf16)(int trans, const uint16_t *b, long ldb, long cols, long k_len, uint16_t *panels);
    // tile[0..rows) [0..cols) = alpha * Apanel·Bpanel + beta * tile (beta == 0: c is not read), where tile (i, j) is
    // c[i * ldc + j], or c[j * ldc + i] when transpose_c (the driver computes Cᵀ = op(B)ᵀ·op(A)ᵀ when C has few
    // columns). k_padded is the panels' padded k extent.
    void (*microkernel)(long k_padded, const uint16_t *a_panel, const uint16_t *b_panel, float *c, long ldc,
                        int rows, int cols, float alpha, float beta, int transpose_c);

    // Optional (NULL: none). Rows of a microtile cost whole multiples of m_unit (0 or 1: any row count costs what
    // it is; AMX: 16-row tiles), which decides whether computing Cᵀ saves work.
    int m_unit;
    // Called on each thread that runs microkernels, before its first and after its last one of a call (AMX: the
    // per-thread tile configuration, LDTILECFG / TILERELEASE).
    void (*thread_begin)(void);
    void (*thread_end)(void);
} ocr_bf16_kernel;

// The kernel the driver picked (ocr_bf16.c), for code beside the GEMM that runs only on one of them.
const ocr_bf16_kernel *ocr_bf16_active_kernel(void);

// The driver's thread pool: job(ctx, index, count) for index in [0, count), index 0 on the caller's thread. A call
// made while another thread's job holds the pool runs job(ctx, 0, 1) on its caller alone.
typedef void (*ocr_bf16_pool_job)(void *ctx, int index, int count);
void ocr_bf16_run_parallel(ocr_bf16_pool_job job, void *ctx, int count);

// Round-to-nearest-even fp32 -> bf16 bits, matching VCVTNEPS2BF16 (denormal inputs as zero, NaN quieted).
static inline uint16_t ocr_bf16_bits(float x) {
    union { float f; uint32_t u; } v = { x };
    uint32_t u = v.u;
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x0040u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float ocr_bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

// Defined only on x86-64 with a compiler that knows AVX512-BF16 (and AMX); the driver checks CPUID (and, for AMX,
// XCR0 and the OS permission) before using them.
extern const ocr_bf16_kernel ocr_bf16_kernel_amx;
extern const ocr_bf16_kernel ocr_bf16_kernel_avx512;
extern const ocr_bf16_kernel ocr_bf16_kernel_avx512_l1_48k;  // the same with a k block for an L1 of 48 KB or more
extern const ocr_bf16_kernel ocr_bf16_kernel_portable;

// ocr_bf16_pack on AVX512-BF16 (ocr_bf16_avx512.c): the same bits, 16 at a time.
void ocr_bf16_pack_avx512(const float *x, uint16_t *out, long n);

// The Winograd transforms' scalar references (ocr_bf16_winograd.c), which run where AVX512-BF16 does not.
void ocr_bf16_winograd_input_reference(const float *padded, long block_rows, long block_cols, uint16_t *out,
                                       long stride);
void ocr_bf16_winograd_output_reference(const float *m, long stride, long block_rows, long block_cols, float *y);
void ocr_bf16_winograd_output_gradient_reference(const float *dy, long block_rows, long block_cols, float *z,
                                                 long stride);

#endif
