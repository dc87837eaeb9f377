// bf16 GEMM on AMX-BF16 or AVX512-BF16 (VDPBF16PS), a drop-in for the row-major cblas_sgemm calls of the trainer.
//
// Semantics: C = alpha * op(A) * op(B) + beta * C, row-major, with op(A): m×k, op(B): k×n, C: m×n, all fp32 in
// memory. The operands are rounded to bf16 (round-to-nearest-even, as VCVTNEPS2BF16 does) while they are packed;
// products are exact in fp32 and accumulate in fp32. transA/transB are 0 or 1 (1: the operand is stored
// transposed, as CblasTrans). lda/ldb/ldc are the row strides of the operands as stored. beta == 0 does not read C
// (NaN/inf there are overwritten, as in BLAS); alpha == 0 or k == 0 only scales C by beta.
//
// Determinism: every element of C is computed by one thread, over the same k blocks in the same order, whatever the
// thread count, so results are bit-identical for 1 or N threads (and for concurrent callers).
//
// The kernel is picked once, at the first call: the AMX-BF16 one when ocr_bf16_amx_supported(), else the
// AVX512-BF16 one when ocr_bf16_supported(), else a portable C kernel with the same bf16 rounding (slow, but callers
// never crash). OCR_BF16_KERNEL=amx|avx512bf16|portable in the environment caps the choice at that kernel (one the
// CPU lacks falls back down the list; tests use it to check every path on one machine).
#ifndef OCR_BF16_H
#define OCR_BF16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void ocr_bf16_gemm(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc);

// `count` products of one shape, C_i = alpha * op(A_i) * op(B_i) + beta * C_i with A_i = a[i] and so on (the 16
// GEMMs of a Winograd convolution). When there are at least as many products as threads, each product runs whole on
// one thread, the threads taking them in turn: one fork-join for all instead of two per product, and no product's
// columns split into slivers (measured on Zen 5, 2 threads, 16 products: 64×2048×64 100 → 206 GFLOP/s, 512³ 481 →
// 566). Each C_i gets the bits ocr_bf16_gemm gives it. Fewer products than threads run one after the other.
void ocr_bf16_gemm_batch(int transA, int transB, long count, long m, long n, long k, float alpha,
                         const float *const *a, long lda, const float *const *b, long ldb, float beta,
                         float *const *c, long ldc);

// The same with each B_i given as bf16 bits, stored as op(B_i) would be in fp32 (ldb in elements): the bits
// ocr_bf16_gemm_batch gives for the fp32 values that ocr_bf16_pack rounds to them, with half the bytes written by
// whoever produces B and read by the packing (Winograd's transformed inputs).
void ocr_bf16_gemm_batch_bf16_b(int transA, int transB, long count, long m, long n, long k, float alpha,
                                const float *const *a, long lda, const uint16_t *const *b, long ldb, float beta,
                                float *const *c, long ldc);

// Weights reused across many GEMMs (Winograd's 16 GEMMs per convolution, per-image loops, forward + backward of
// one step) can be packed once: ocr_bf16_packed_a_size bytes of caller memory (4-byte aligned; 64 is best), filled by
// ocr_bf16_pack_a, then used by ocr_bf16_gemm_packed_a with the same m and k. The layout belongs to the kernel
// chosen in this process, so a packed buffer must not be saved or sent to another process.
size_t ocr_bf16_packed_a_size(long m, long k);
void ocr_bf16_pack_a(int transA, long m, long k, const float *a, long lda, void *packed_a);
void ocr_bf16_gemm_packed_a(int transB, long m, long n, long k, float alpha, const void *packed_a,
                            const float *b, long ldb, float beta, float *c, long ldc);

// A convolution's im2col matrix as the B operand, never stored whole: the driver unfolds each block of it it packs
// from the image (C×H×W fp32) into an L2-sized scratch, so the column matrix (C·kh·kw)×(Ho·Wo) of a 3×3 layer, 9×
// the image, is neither written to memory nor read back (an im2col into memory and ocr_bf16_gemm give the same
// bits). Row (c, i, j) of the matrix is x[c, oh·stride − padding + i·dilation, ow·stride − padding + j·dilation],
// zero outside the image, column oh·Wo + ow.
typedef struct {
    long channels, height, width, kernel_h, kernel_w, stride, padding, dilation;
} ocr_bf16_conv_geometry;

// C (m × n) = alpha * A · op(B) + beta * C with B the im2col matrix of `image`: transB 0, op(B) = col (k = C·kh·kw
// rows, n = Ho·Wo: a forward W·col); transB 1, op(B) = colᵀ (k = Ho·Wo, n = C·kh·kw: a weight gradient dy·colᵀ).
// A is m × k, packed by ocr_bf16_pack_a. Results do not depend on the thread count.
void ocr_bf16_gemm_im2col(int transB, long m, float alpha, const void *packed_a, const ocr_bf16_conv_geometry *g,
                          const float *image, float beta, float *c, long ldc);

// A stride-1 convolution run directly on AMX tiles, with no column matrix: y (O × Ho × Wo, row-major, stored, not
// accumulated) = the convolution of `image` (C × H × W) with the kernel w (O × C × kh × kw) under g (stride 1).
// - The image is first copied into bf16 channel-pair planes with zero borders (`planes`: ocr_bf16_conv_planes_size
//   bytes of caller memory, any alignment, 64 bytes best), in which each kernel tap's operand is a strided tile
//   load; every output sums all taps and channels inside the tiles.
// - The kernel is packed once by ocr_bf16_conv_pack_kernel (ocr_bf16_conv_packed_kernel_size bytes, 4-byte
//   aligned) for the same out_channels and g. With `flipped` 1 it packs instead the kernel of an input gradient,
//   W̃[o, c, i, j] = w[c, o, kh−1−i, kw−1−j], from the forward's w (C × O × kh × kw): dx = conv(dy, W̃) with dy
//   padded by dilation·(k−1) − padding.
// - Operands round to bf16 as the GEMM's do and accumulate in fp32, taps outermost (not the im2col GEMM's order, so
//   not its bits); results do not depend on the thread count.
// - ocr_bf16_conv_available says whether it runs here (the AMX kernel is in use and g has stride 1); for a g it
//   cannot run, the sizes are 0 and ocr_bf16_conv does nothing.
int ocr_bf16_conv_available(long out_channels, const ocr_bf16_conv_geometry *g);
size_t ocr_bf16_conv_packed_kernel_size(long out_channels, const ocr_bf16_conv_geometry *g);
void ocr_bf16_conv_pack_kernel(long out_channels, const ocr_bf16_conv_geometry *g, const float *w, int flipped,
                               void *packed);
size_t ocr_bf16_conv_planes_size(long out_channels, const ocr_bf16_conv_geometry *g);
void ocr_bf16_conv(long out_channels, const void *packed_kernel, const ocr_bf16_conv_geometry *g, const float *image,
                   void *planes, float *y);

// The weight gradient of one image of that convolution, on the tiles too: dw (O × C × kh × kw, stored, not
// accumulated) = Σ over output pixels of dy (O × Ho × Wo) times the image under each tap, every element summed over
// all pixels inside the tiles. `scratch`: ocr_bf16_conv_weight_gradient_scratch_size bytes (the image and dy in bf16
// on a padded pixel grid). Same conditions as ocr_bf16_conv; results do not depend on the thread count.
size_t ocr_bf16_conv_weight_gradient_scratch_size(long out_channels, const ocr_bf16_conv_geometry *g);
void ocr_bf16_conv_weight_gradient(long out_channels, const ocr_bf16_conv_geometry *g, const float *image,
                                   const float *dy, void *scratch, float *dw);

// Winograd F(2×2, 3×3)'s input transform of one channel of one sub-image into bf16 bits (ocr_bf16_winograd.c has
// the shapes): `padded` (2·block_rows + 2) × (2·block_cols + 2) floats, the sub-image with a zero border; V_ξ of
// block (u, v) at out[ξ·stride + u·block_cols + v]. The values of the fp32 transform, rounded as ocr_bf16_pack does.
void ocr_bf16_winograd_input(const float *padded, long block_rows, long block_cols, uint16_t *out, long stride);
// Its output transform, y (the sub-image's 2·block_rows × 2·block_cols outputs) = Aᵀ M A per block from the 16
// product matrices m (block (u, v) at m[ξ·stride + u·block_cols + v]), and its output-gradient transform, z (16
// matrices, the same layout) = A dŶ Aᵀ per 2×2 block of dy (2·block_rows × 2·block_cols, zero past the sub-image):
// the fp32 values of Winograd.swift's transforms, vectorised.
void ocr_bf16_winograd_output(const float *m, long stride, long block_rows, long block_cols, float *y);
void ocr_bf16_winograd_output_gradient(const float *dy, long block_rows, long block_cols, float *z, long stride);

// 1 when the CPU has AVX512F/BW/VL + AVX512-BF16 and the OS saves zmm state (XCR0), else 0.
int ocr_bf16_supported(void);

// 1 when, in addition, the CPU has AMX-TILE + AMX-BF16, the OS saves tile state (XCR0 bits 17-18) and, on Linux,
// granted this process XTILEDATA (the first call requests it: arch_prctl(ARCH_REQ_XCOMP_PERM); signal frames grow
// by ~8 KB from then on, which matters only to threads with small sigaltstacks). Else 0.
int ocr_bf16_amx_supported(void);

// Threads the kernel may use (default 1; n < 1 counts as 1), like openblas_set_num_threads. The calling thread is
// one of them; the others are a persistent pool started on first need. A call made while another thread's call
// holds the pool runs on its caller's thread alone (same results).
void ocr_bf16_set_threads(int n);
int ocr_bf16_get_threads(void);

// Name of the kernel in use ("amx-bf16 32x32", "avx512bf16 12x32", "avx512bf16 12x32 kc512" (its k block for a
// 48 KB L1), "portable 4x16"), for benchmark logs.
const char *ocr_bf16_kernel_name(void);

// The textbook triple loop on the bf16-rounded operands, accumulating in double; tests compare against it.
void ocr_bf16_gemm_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                             const float *b, long ldb, float beta, float *c, long ldc);

// fp32 -> bf16 -> fp32 as the packing does it: round to nearest even; NaN stays NaN (quieted, sign kept); inf stays
// inf; fp32 denormals become zero of the same sign (VCVTNEPS2BF16 treats denormal inputs as zero).
float ocr_bf16_round(float x);

// x[0..n) as bf16 bits with the same rounding, and back (the bf16 gradient payloads of the all-reduce).
void ocr_bf16_pack(const float *x, uint16_t *out, long n);
void ocr_bf16_unpack(const uint16_t *h, float *out, long n);

#ifdef __cplusplus
}
#endif

#endif
