// Checks ocr_bf16_gemm (the packed-A entry points and the im2col operand too) against ocr_bf16_gemm_reference,
// the bf16 rounding, and that results do not depend on the thread count. Run by build.sh once per kernel
// (OCR_BF16_KERNEL=amx, avx512bf16, portable). Prints "N passed, M failed" and exits non-zero on any failure.
#include "ocr_bf16.h"
#include "ocr_bf16_kernel.h"  // the scalar references of vector code

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL: %s\n", what);
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {  // xorshift64*: reproducible across runs and machines
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next_random() >> 40) / 16777216.0); }
static long uniform_long(long lo, long hi) { return lo + (long)(next_random() % (uint64_t)(hi - lo + 1)); }

static uint32_t bits_of(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float float_of(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

// ---------------------------------------------------------------- rounding

static void test_round(void) {
    struct { uint32_t in, out; const char *what; } cases[] = {
        {0x3f808000, 0x3f800000, "tie rounds down to even"},
        {0x3f818000, 0x3f820000, "tie rounds up to even"},
        {0x3f808001, 0x3f810000, "above tie rounds up"},
        {0x3f807fff, 0x3f800000, "below tie rounds down"},
        {0xbf818000, 0xbf820000, "negative tie to even"},
        {0x7f800000, 0x7f800000, "+inf"},
        {0xff800000, 0xff800000, "-inf"},
        {0x7f7fffff, 0x7f800000, "largest float rounds to inf"},
        {0x00000001, 0x00000000, "denormal to +0"},
        {0x807fffff, 0x80000000, "negative denormal to -0"},
        {0x00800000, 0x00800000, "smallest normal kept"},
        {0x00000000, 0x00000000, "+0"},
        {0x80000000, 0x80000000, "-0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        uint32_t got = bits_of(ocr_bf16_round(float_of(cases[i].in)));
        char what[160];
        snprintf(what, sizeof what, "round %08x: %s (got %08x, want %08x)", cases[i].in, cases[i].what, got,
                 cases[i].out);
        check(got == cases[i].out, what);
    }
    float nan_in[] = {float_of(0x7f800001), float_of(0x7fc00000), float_of(0xffc00001), float_of(0x7f80ffff)};
    int nan_ok = 1;
    for (int i = 0; i < 4; ++i) {
        float r = ocr_bf16_round(nan_in[i]);
        nan_ok &= isnan(r) && (bits_of(r) >> 31) == (bits_of(nan_in[i]) >> 31);
    }
    check(nan_ok, "NaN (signalling, quiet, negative, payload only in the low bits) stays NaN with its sign");

    // The kernel's packing must round exactly as ocr_bf16_round: a 1×1×1 product with b = 1 is round(a) (up to the
    // sign of zero: the accumulator starts at +0, and +0 + -0 = +0).
    int mismatches = 0;
    uint32_t first_bad = 0;
    for (int i = 0; i < 200000; ++i) {
        uint32_t u = (uint32_t)next_random();
        if (i % 4 == 0) u &= 0x807fffff;  // denormals too
        float a = float_of(u), one = 1, c = 0;
        ocr_bf16_gemm(0, 0, 1, 1, 1, 1, &a, 1, &one, 1, 0, &c, 1);
        float want = ocr_bf16_round(a);
        int same = isnan(want) ? isnan(c) : c == want;
        if (!same && mismatches++ == 0) first_bad = u;
    }
    char what[120];
    snprintf(what, sizeof what, "packing rounds as ocr_bf16_round on 200000 bit patterns (%d differ, first %08x)",
             mismatches, first_bad);
    check(mismatches == 0, what);
}

// ---------------------------------------------------------------- products against the reference

typedef struct {
    double worst_ratio;  // largest |ours − reference| / bound seen
    double worst_diff;
    char where[256];
} error_record;

static error_record overall;

static float *random_matrix(long count, int wide_exponents) {
    float *x = malloc((size_t)count * sizeof(float) + 4);
    for (long i = 0; i < count; ++i) {
        x[i] = uniform(-1, 1);
        if (wide_exponents) x[i] = ldexpf(x[i], (int)uniform_long(-20, 20));
    }
    return x;
}

// Compares one product; the bound is fp32 accumulation's: (k + k blocks + a few) · 2^-24 of
// |alpha|·Σ|a||b| + |beta·c|, per element.
static int compare_product(int transA, int transB, long m, long n, long k, float alpha, float beta, int nan_in_c,
                           int wide_exponents) {
    long lda = (transA ? m : k) + uniform_long(0, 3), ldb = (transB ? k : n) + uniform_long(0, 3);
    long ldc = n + uniform_long(0, 3);
    long a_rows = transA ? k : m, b_rows = transB ? n : k;
    float *a = random_matrix(a_rows * lda, wide_exponents), *b = random_matrix(b_rows * ldb, wide_exponents);
    size_t c_bytes = (size_t)(m * ldc) * sizeof(float);
    float *c = random_matrix(m * ldc, 0), *want = malloc(c_bytes), *initial = malloc(c_bytes);
    if (nan_in_c) for (long i = 0; i < m * ldc; ++i) c[i] = NAN;
    memcpy(want, c, c_bytes);
    memcpy(initial, c, c_bytes);

    ocr_bf16_gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    ocr_bf16_gemm_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);

    int ok = 1;
    for (long i = 0; i < m; ++i) {
        for (long j = 0; j < n; ++j) {
            double magnitude = 0;
            for (long p = 0; p < k; ++p) {
                float av = transA ? a[p * lda + i] : a[i * lda + p];
                float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                magnitude += fabs((double)ocr_bf16_round(av) * ocr_bf16_round(bv));
            }
            double scaled_c = beta == 0 ? 0 : fabs(beta * (double)initial[i * ldc + j]);
            double bound = (k + k / 256 + 8) * ldexp(1, -24) * (fabs(alpha) * magnitude + scaled_c) + 1e-37;
            double diff = fabs((double)c[i * ldc + j] - want[i * ldc + j]);
            if (!(diff <= bound)) ok = 0;  // NaN anywhere fails
            double ratio = diff / bound;
            if (!(ratio <= overall.worst_ratio)) {
                overall.worst_ratio = ratio;
                overall.worst_diff = diff;
                snprintf(overall.where, sizeof overall.where,
                         "tA=%d tB=%d m=%ld n=%ld k=%ld alpha=%g beta=%g at (%ld,%ld): ours %.9g ref %.9g", transA,
                         transB, m, n, k, alpha, beta, i, j, c[i * ldc + j], want[i * ldc + j]);
            }
        }
    }
    // Columns past n in each row (ldc padding) must be untouched.
    for (long i = 0; i < m && ok; ++i)
        for (long j = n; j < ldc; ++j)
            if (bits_of(c[i * ldc + j]) != bits_of(initial[i * ldc + j])) ok = 0;
    free(a), free(b), free(c), free(want), free(initial);
    return ok;
}

static void test_products(void) {
    // alpha 1 with beta 0 or 1 is the AMX kernel's accumulate-in-tiles path, the others its scaled one.
    const float alphas[] = {1, 0.5f, -2, 1, 1}, betas[] = {0, 1, 0.25f, -1, 1};
    char what[160];
    for (int trans = 0; trans < 4; ++trans) {
        int transA = trans >> 1, transB = trans & 1, all_ok = 1, count = 0;
        for (int t = 0; t < 150; ++t) {
            long m = uniform_long(1, 70), n = uniform_long(1, 70), k = uniform_long(1, 70);
            int variant = t % 5;
            all_ok &= compare_product(transA, transB, m, n, k, alphas[variant], betas[variant], 0, t % 3 == 0);
            count++;
        }
        snprintf(what, sizeof what, "tA=%d tB=%d: %d random shapes in 1..70 within bound", transA, transB, count);
        check(all_ok, what);

        // Large and edge-heavy shapes: several k blocks, several mc/nc blocks, OCR head's skinny ones.
        const long shapes[][3] = {{300, 260, 1100}, {19, 2100, 517}, {2500, 19, 300}, {13, 33, 769}, {1, 1, 3001},
                                  {48, 80, 1057}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
            int ok = compare_product(transA, transB, shapes[s][0], shapes[s][1], shapes[s][2], 1,
                                     s % 3 == 1 ? 0.5f : s % 3 == 2 ? 1.0f : 0, 0, 0);
            snprintf(what, sizeof what, "tA=%d tB=%d m=%ld n=%ld k=%ld within bound", transA, transB, shapes[s][0],
                     shapes[s][1], shapes[s][2]);
            check(ok, what);
        }
        snprintf(what, sizeof what, "tA=%d tB=%d beta=0 ignores NaN in C", transA, transB);
        check(compare_product(transA, transB, 37, 45, 29, 1.5f, 0, 1, 0), what);
    }

    // alpha == 0 scales C by beta without reading A or B (NaN there must not leak).
    float a = NAN, b = NAN, c[2] = {3, NAN};
    ocr_bf16_gemm(0, 0, 1, 1, 1, 0, &a, 1, &b, 1, 2, c, 1);
    check(c[0] == 6, "alpha=0 gives beta*C and ignores NaN in A, B");
    ocr_bf16_gemm(0, 0, 1, 1, 0, 1, &a, 1, &b, 1, 0, c + 1, 1);
    check(c[1] == 0, "k=0 with beta=0 zeroes C (even NaN)");

    printf("largest |ours - reference| = %.3g, %.3f of the bound, at %s\n", overall.worst_diff,
           overall.worst_ratio, overall.where);
}

// ---------------------------------------------------------------- determinism and the packed-A entry points

// One product with 1 thread, 2 threads and through ocr_bf16_pack_a: all three must give the same bits. beta 1
// adds to a random C (the AMX kernel then starts its accumulators from C).
static void check_same_bits(long m, long n, long k, int transA, int transB, float alpha, float beta) {
    char what[160];
    float *a = random_matrix(m * k, 0), *b = random_matrix(k * n, 0), *c0 = random_matrix(m * n, 0);
    size_t c_bytes = (size_t)(m * n) * sizeof(float);
    float *c1 = malloc(c_bytes), *c2 = malloc(c_bytes), *c3 = malloc(c_bytes), *c4 = malloc(c_bytes);
    memcpy(c1, c0, c_bytes), memcpy(c2, c0, c_bytes), memcpy(c3, c0, c_bytes), memcpy(c4, c0, c_bytes);
    long lda = transA ? m : k, ldb = transB ? k : n;

    ocr_bf16_set_threads(1);
    ocr_bf16_gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c1, n);
    ocr_bf16_set_threads(2);
    ocr_bf16_gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c2, n);
    snprintf(what, sizeof what, "m=%ld n=%ld k=%ld tA=%d tB=%d beta=%g: 1 and 2 threads bit-identical", m, n, k,
             transA, transB, beta);
    check(memcmp(c1, c2, c_bytes) == 0, what);

    void *packed = malloc(ocr_bf16_packed_a_size(m, k));
    ocr_bf16_pack_a(transA, m, k, a, lda, packed);  // 2 threads here
    ocr_bf16_gemm_packed_a(transB, m, n, k, alpha, packed, b, ldb, beta, c3, n);
    ocr_bf16_set_threads(1);
    ocr_bf16_gemm_packed_a(transB, m, n, k, alpha, packed, b, ldb, beta, c4, n);
    snprintf(what, sizeof what, "m=%ld n=%ld k=%ld tA=%d tB=%d beta=%g: packed A (1 and 2 threads) same bits", m,
             n, k, transA, transB, beta);
    check(memcmp(c1, c3, c_bytes) == 0 && memcmp(c1, c4, c_bytes) == 0, what);
    free(packed), free(a), free(b), free(c0), free(c1), free(c2), free(c3), free(c4);
}

static void test_threads_and_packing(void) {
    const long shapes[][5] = {
        // m, n, k, transA, transB: big enough (> 4 Mflop per thread) that 2 threads really split the work
        {300, 500, 200, 0, 0}, {2500, 19, 512, 0, 0}, {19, 3000, 512, 0, 0}, {250, 260, 777, 1, 1},
        {512, 300, 1000, 0, 1}, {300, 400, 513, 1, 0},
        // several mc, nc and kc blocks of every kernel, with edges in both directions
        {1100, 1300, 1100, 0, 0},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        for (int accumulate = 0; accumulate < 2; ++accumulate)
            check_same_bits(shapes[s][0], shapes[s][1], shapes[s][2], (int)shapes[s][3], (int)shapes[s][4], 1,
                            accumulate ? 1.0f : 0.0f);
    }
    check_same_bits(333, 444, 555, 0, 1, -0.5f, 0.25f);
}

// ---------------------------------------------------------------- B given as bf16 bits

// ocr_bf16_pack (vectorised where AVX512-BF16 runs) gives ocr_bf16_round's bits; a batch whose B operands are those
// bits gives ocr_bf16_gemm_batch's bits on the fp32 values, on 1 and 2 threads, with fewer products than threads
// and more, for every layout (and a thin C, which the fp32 path computes transposed).
static void test_bf16_b_operand(void) {
    enum { PATTERNS = 100003 };  // not a multiple of 16: the vector loop's last, partial step too
    float *x = malloc(PATTERNS * sizeof(float));
    uint16_t *bits = malloc(PATTERNS * sizeof(uint16_t));
    for (long i = 0; i < PATTERNS; ++i) {
        uint32_t u = (uint32_t)next_random();
        if (i % 4 == 0) u &= 0x807fffff;  // denormals
        if (i % 7 == 0) u |= 0x7f800000;  // inf and NaN
        x[i] = float_of(u);
    }
    ocr_bf16_pack(x, bits, PATTERNS);
    long differ = 0;
    for (long i = 0; i < PATTERNS; ++i) differ += bits[i] != bits_of(ocr_bf16_round(x[i])) >> 16;
    char what[200];
    snprintf(what, sizeof what, "ocr_bf16_pack gives ocr_bf16_round's bits on %d patterns (%ld differ)", PATTERNS,
             differ);
    check(differ == 0, what);
    free(x), free(bits);

    const long shapes[][6] = {  // count, m, n, k, transA, transB
        {3, 70, 90, 45, 0, 0}, {3, 64, 600, 130, 1, 0}, {4, 50, 70, 900, 0, 1}, {1, 300, 500, 200, 0, 0},
        {2, 100, 19, 77, 0, 0}, {5, 33, 1100, 400, 1, 1},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        const long count = shapes[s][0], m = shapes[s][1], n = shapes[s][2], k = shapes[s][3];
        const int transA = (int)shapes[s][4], transB = (int)shapes[s][5];
        const long lda = transA ? m : k, ldb = transB ? k : n;
        const float *a[8], *b[8];
        const uint16_t *b_bits[8];
        float *want[8], *got[8];
        for (long i = 0; i < count; ++i) {
            a[i] = random_matrix(m * k, 0), b[i] = random_matrix(k * n, 0);
            uint16_t *packed = malloc((size_t)(k * n) * sizeof(uint16_t));
            ocr_bf16_pack(b[i], packed, k * n);
            b_bits[i] = packed;
            want[i] = malloc((size_t)(m * n) * sizeof(float)), got[i] = malloc((size_t)(m * n) * sizeof(float));
        }
        for (int threads = 1; threads <= 2; ++threads) {
            ocr_bf16_set_threads(threads);
            ocr_bf16_gemm_batch(transA, transB, count, m, n, k, 1, a, lda, b, ldb, 0, want, n);
            for (long i = 0; i < count; ++i) memset(got[i], 0xff, (size_t)(m * n) * sizeof(float));  // NaN
            ocr_bf16_gemm_batch_bf16_b(transA, transB, count, m, n, k, 1, a, lda, b_bits, ldb, 0, got, n);
            int same = 1;
            for (long i = 0; i < count; ++i) same &= memcmp(want[i], got[i], (size_t)(m * n) * sizeof(float)) == 0;
            snprintf(what, sizeof what, "bf16 B: %ld products m=%ld n=%ld k=%ld tA=%d tB=%d, %d thread(s): the fp32 "
                     "batch's bits", count, m, n, k, transA, transB, threads);
            check(same, what);
        }
        for (long i = 0; i < count; ++i)
            free((void *)a[i]), free((void *)b[i]), free((void *)b_bits[i]), free(want[i]), free(got[i]);
    }
}

// ---------------------------------------------------------------- Winograd's transforms for bf16

// The vector transforms against their scalar references, bit for bit, over block counts that leave partial vectors
// (and none), with values of many magnitudes so that the bf16 rounding is exercised.
static void test_winograd_transforms(void) {
    const long shapes[][2] = {{1, 1}, {3, 5}, {2, 16}, {4, 17}, {5, 40}, {1, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        const long br = shapes[s][0], bc = shapes[s][1], stride = br * bc + 7;
        float *padded = random_matrix((2 * br + 2) * (2 * bc + 2), 1);
        uint16_t *want = malloc((size_t)(16 * stride) * 2), *got = malloc((size_t)(16 * stride) * 2);
        memset(want, 0, (size_t)(16 * stride) * 2), memset(got, 0, (size_t)(16 * stride) * 2);
        ocr_bf16_winograd_input_reference(padded, br, bc, want, stride);
        ocr_bf16_winograd_input(padded, br, bc, got, stride);
        char what[120];
        snprintf(what, sizeof what, "Winograd input transform %ld × %ld blocks: the reference's bits, nothing else written",
                 br, bc);
        check(memcmp(want, got, (size_t)(16 * stride) * 2) == 0, what);

        const long outputs = 4 * br * bc;
        float *m = random_matrix(16 * stride, 1);
        float *y_want = malloc((size_t)outputs * 4), *y_got = malloc((size_t)outputs * 4);
        ocr_bf16_winograd_output_reference(m, stride, br, bc, y_want);
        ocr_bf16_winograd_output(m, stride, br, bc, y_got);
        snprintf(what, sizeof what, "Winograd output transform %ld × %ld blocks: the reference's bits", br, bc);
        check(memcmp(y_want, y_got, (size_t)outputs * 4) == 0, what);

        float *z_want = malloc((size_t)(16 * stride) * 4), *z_got = malloc((size_t)(16 * stride) * 4);
        memset(z_want, 0, (size_t)(16 * stride) * 4), memset(z_got, 0, (size_t)(16 * stride) * 4);
        ocr_bf16_winograd_output_gradient_reference(m, br, bc, z_want, stride);  // m read as a 2br × 2bc dy
        ocr_bf16_winograd_output_gradient(m, br, bc, z_got, stride);
        snprintf(what, sizeof what, "Winograd output-gradient transform %ld × %ld blocks: the reference's bits, nothing "
                 "else written", br, bc);
        check(memcmp(z_want, z_got, (size_t)(16 * stride) * 4) == 0, what);
        free(padded), free(want), free(got), free(m), free(y_want), free(y_got), free(z_want), free(z_got);
    }
}

// ---------------------------------------------------------------- the im2col operand

// col (C·kh·kw × Ho·Wo) of the image, written out: the matrix ocr_bf16_gemm_im2col unfolds block by block.
static void im2col_reference(const ocr_bf16_conv_geometry *g, const float *image, long out_h, long out_w,
                             float *col) {
    for (long c = 0; c < g->channels; ++c)
        for (long i = 0; i < g->kernel_h; ++i)
            for (long j = 0; j < g->kernel_w; ++j)
                for (long oh = 0; oh < out_h; ++oh)
                    for (long ow = 0; ow < out_w; ++ow) {
                        long ih = oh * g->stride - g->padding + i * g->dilation;
                        long iw = ow * g->stride - g->padding + j * g->dilation;
                        int inside = ih >= 0 && ih < g->height && iw >= 0 && iw < g->width;
                        col[((c * g->kernel_h + i) * g->kernel_w + j) * out_h * out_w + oh * out_w + ow] =
                            inside ? image[(c * g->height + ih) * g->width + iw] : 0;
                    }
}

// A·col and A·colᵀ with the operand unfolded inside the GEMM: the bits of the stored matrix's product, on 1 and 2
// threads, for strides, paddings, dilations reaching past the image and sizes past every kernel's blocks.
static void test_im2col_operand(void) {
    const ocr_bf16_conv_geometry geometries[] = {
        // channels, height, width, kernel_h, kernel_w, stride, padding, dilation
        {3, 9, 11, 3, 3, 1, 1, 1}, {5, 8, 7, 3, 3, 2, 1, 1}, {6, 7, 13, 3, 3, 1, 4, 4}, {2, 6, 6, 1, 1, 2, 0, 1},
        {3, 9, 5, 5, 5, 1, 2, 1}, {130, 40, 30, 3, 3, 1, 1, 1}, {64, 20, 70, 3, 3, 2, 1, 1},
    };
    const long m = 37;
    char what[200];
    for (size_t s = 0; s < sizeof geometries / sizeof geometries[0]; ++s) {
        const ocr_bf16_conv_geometry *g = &geometries[s];
        long out_h = (g->height + 2 * g->padding - g->dilation * (g->kernel_h - 1) - 1) / g->stride + 1;
        long out_w = (g->width + 2 * g->padding - g->dilation * (g->kernel_w - 1) - 1) / g->stride + 1;
        long rows = g->channels * g->kernel_h * g->kernel_w, pixels = out_h * out_w;
        float *image = random_matrix(g->channels * g->height * g->width, 0), *col = malloc(rows * pixels * 4);
        im2col_reference(g, image, out_h, out_w, col);
        for (int transB = 0; transB < 2; ++transB) {
            long k = transB ? pixels : rows, n = transB ? rows : pixels;
            float *a = random_matrix(m * k, 0), *want = malloc(m * n * 4), *got = malloc(m * n * 4);
            void *packed = malloc(ocr_bf16_packed_a_size(m, k));
            ocr_bf16_pack_a(0, m, k, a, k, packed);
            for (int threads = 1; threads <= 2; ++threads) {
                ocr_bf16_set_threads(threads);
                ocr_bf16_gemm(0, transB, m, n, k, 1, a, k, col, transB ? pixels : n, 0, want, n);
                ocr_bf16_gemm_im2col(transB, m, 1, packed, g, image, 0, got, n);
                snprintf(what, sizeof what, "im2col operand, geometry %zu, transB %d, %d threads: same bits", s,
                         transB, threads);
                check(memcmp(want, got, (size_t)(m * n) * 4) == 0, what);
            }
            free(a), free(want), free(got), free(packed);
        }
        free(image), free(col);
    }
}

// ---------------------------------------------------------------- the direct convolution (AMX)

// ocr_bf16_conv against the bf16 reference product of the kernel and the stored column matrix, with the bound of
// compare_product per output; the same bits on 1 and 2 threads. Channels and widths off the 32-channel chunks and
// 16-pixel blocks, output channels off the 32-output blocks, dilations, no padding, 5×5 and 1×1 kernels.
static void test_direct_conv(void) {
    const ocr_bf16_conv_geometry geometries[] = {
        // channels, height, width, kernel_h, kernel_w, stride, padding, dilation
        {32, 9, 11, 3, 3, 1, 1, 1}, {40, 8, 21, 3, 3, 1, 2, 2}, {64, 7, 13, 3, 3, 1, 4, 4}, {3, 9, 5, 5, 5, 1, 2, 1},
        {33, 6, 6, 1, 1, 1, 0, 1}, {130, 12, 30, 3, 3, 1, 1, 1}, {64, 10, 40, 3, 3, 1, 0, 1},
        {32, 50, 61, 3, 3, 1, 1, 1},  // > 2048 grid pixels: the weight gradient's pixel blocks
    };
    const long out_channels[] = {48, 19, 70, 32, 16, 64, 33, 40};
    char what[200];
    for (size_t s = 0; s < sizeof geometries / sizeof geometries[0]; ++s) {
        const ocr_bf16_conv_geometry *g = &geometries[s];
        const long o = out_channels[s];
        if (!ocr_bf16_conv_available(o, g)) {
            check(ocr_bf16_conv_packed_kernel_size(o, g) > 0, "direct conv: sizes known where it does not run");
            continue;
        }
        long out_h = g->height + 2 * g->padding - g->dilation * (g->kernel_h - 1);
        long out_w = g->width + 2 * g->padding - g->dilation * (g->kernel_w - 1);
        long rows = g->channels * g->kernel_h * g->kernel_w, pixels = out_h * out_w;
        float *image = random_matrix(g->channels * g->height * g->width, 0), *col = malloc(rows * pixels * 4);
        float *w = random_matrix(o * rows, 0), *want = malloc(o * pixels * 4), *got[2];
        im2col_reference(g, image, out_h, out_w, col);
        ocr_bf16_gemm_reference(0, 0, o, pixels, rows, 1, w, rows, col, pixels, 0, want, pixels);
        void *packed = malloc(ocr_bf16_conv_packed_kernel_size(o, g));
        void *planes = aligned_alloc(64, (ocr_bf16_conv_planes_size(o, g) + 63) / 64 * 64);
        ocr_bf16_conv_pack_kernel(o, g, w, 0, packed);
        for (int threads = 1; threads <= 2; ++threads) {
            got[threads - 1] = malloc(o * pixels * 4);
            for (long i = 0; i < o * pixels; ++i) got[threads - 1][i] = NAN;
            ocr_bf16_set_threads(threads);
            ocr_bf16_conv(o, packed, g, image, planes, got[threads - 1]);
        }
        int ok = 1;
        double worst = 0;
        for (long i = 0; i < o && ok; ++i) {
            for (long p = 0; p < pixels; ++p) {
                double magnitude = 0;
                for (long r = 0; r < rows; ++r)
                    magnitude += fabs((double)ocr_bf16_round(w[i * rows + r]) * ocr_bf16_round(col[r * pixels + p]));
                double bound = (rows + 8) * ldexp(1, -24) * magnitude + 1e-37;
                double diff = fabs((double)got[0][i * pixels + p] - want[i * pixels + p]);
                if (!(diff <= bound)) ok = 0;
                if (diff / bound > worst) worst = diff / bound;
            }
        }
        snprintf(what, sizeof what, "direct conv, geometry %zu, %ld outputs: within the bound (worst %.3g of it)", s,
                 o, worst);
        check(ok, what);
        snprintf(what, sizeof what, "direct conv, geometry %zu: same bits on 1 and 2 threads", s);
        check(memcmp(got[0], got[1], (size_t)(o * pixels) * 4) == 0, what);
        // The weight gradient: dy·colᵀ against the reference, same bits on 1 and 2 threads.
        float *dy = random_matrix(o * pixels, 0), *dw_want = malloc(o * rows * 4), *dw[2];
        ocr_bf16_gemm_reference(0, 1, o, rows, pixels, 1, dy, pixels, col, pixels, 0, dw_want, rows);
        void *gradient_scratch = malloc(ocr_bf16_conv_weight_gradient_scratch_size(o, g));
        for (int threads = 1; threads <= 2; ++threads) {
            dw[threads - 1] = malloc(o * rows * 4);
            for (long i = 0; i < o * rows; ++i) dw[threads - 1][i] = NAN;
            ocr_bf16_set_threads(threads);
            ocr_bf16_conv_weight_gradient(o, g, image, dy, gradient_scratch, dw[threads - 1]);
        }
        ok = 1;
        worst = 0;
        for (long i = 0; i < o && ok; ++i) {
            for (long r = 0; r < rows; ++r) {
                double magnitude = 0;
                for (long p = 0; p < pixels; ++p)
                    magnitude += fabs((double)ocr_bf16_round(dy[i * pixels + p]) * ocr_bf16_round(col[r * pixels + p]));
                double bound = (pixels + 8) * ldexp(1, -24) * magnitude + 1e-37;
                double diff = fabs((double)dw[0][i * rows + r] - dw_want[i * rows + r]);
                if (!(diff <= bound)) ok = 0;
                if (diff / bound > worst) worst = diff / bound;
            }
        }
        snprintf(what, sizeof what, "direct conv weight gradient, geometry %zu: within the bound (worst %.3g of it)",
                 s, worst);
        check(ok, what);
        snprintf(what, sizeof what, "direct conv weight gradient, geometry %zu: same bits on 1 and 2 threads", s);
        check(memcmp(dw[0], dw[1], (size_t)(o * rows) * 4) == 0, what);
        free(dy), free(dw_want), free(dw[0]), free(dw[1]), free(gradient_scratch);

        // Flipped: w read as the C × O × kh × kw kernel of a forward whose input gradient this is; the packing
        // must be that of W̃ written out.
        const long kh = g->kernel_h, kw = g->kernel_w, channels = g->channels;
        float *flipped = malloc(o * rows * 4);
        for (long i = 0; i < o; ++i)
            for (long c = 0; c < channels; ++c)
                for (long y = 0; y < kh; ++y)
                    for (long x = 0; x < kw; ++x)
                        flipped[((i * channels + c) * kh + y) * kw + x] =
                            w[((c * o + i) * kh + kh - 1 - y) * kw + kw - 1 - x];
        size_t packed_size = ocr_bf16_conv_packed_kernel_size(o, g);
        void *packed_flipped = malloc(packed_size);
        ocr_bf16_conv_pack_kernel(o, g, flipped, 0, packed);
        ocr_bf16_conv_pack_kernel(o, g, w, 1, packed_flipped);
        snprintf(what, sizeof what, "direct conv, geometry %zu: the flipped packing is that of W̃ written out", s);
        check(memcmp(packed, packed_flipped, packed_size) == 0, what);
        free(flipped), free(packed_flipped);
        free(image), free(col), free(w), free(want), free(got[0]), free(got[1]), free(packed), free(planes);
    }
}

int main(void) {
    printf("kernel: %s (ocr_bf16_supported = %d, ocr_bf16_amx_supported = %d)\n", ocr_bf16_kernel_name(),
           ocr_bf16_supported(), ocr_bf16_amx_supported());
    test_round();
    test_products();
    test_threads_and_packing();
    test_bf16_b_operand();
    test_winograd_transforms();
    test_im2col_operand();
    test_direct_conv();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
