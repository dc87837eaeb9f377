// Microbenchmark: per-core peaks (VDPBF16PS, fp32 FMA, AMX TDPBF16PS), then ocr_bf16_gemm and OpenBLAS's
// cblas_sgemm on OCRNet's GEMM shapes with 1 and 2 threads. Modes:
//   bench_bf16 [all]   peaks, then one child process per column (OCR_BF16_KERNEL=amx, =avx512bf16; OpenBLAS with
//                      OPENBLAS_CORETYPE unset and =SkylakeX: the core type is read when the library loads), merged
//                      into one table, then the AMX kernel's packing times
//   bench_bf16 peak    the peaks only
//   bench_bf16 ours    ocr_bf16_gemm with the kernel OCR_BF16_KERNEL picks, and its packing times
//   bench_bf16 sgemm   cblas_sgemm only (OPENBLAS_CORETYPE as set)
//   bench_bf16 winograd  the 16-product batches of R18-D8's Winograd convolutions (256×256, batch 2), B as bf16
//                      bits as the trainer passes them, on 2 threads, with the share spent packing A
// Each GEMM time is the best of repeated runs lasting ~0.1 s in total (2 cores shared with other work here: ±10 %
// between runs is normal), so every column takes a few seconds.
#include "ocr_bf16.h"
#include "ocr_bf16_kernel.h"

#include <cblas.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------- peak

// 24 independent accumulator chains, registers only, as many as the kernel's 12×32 tile keeps: VDPBF16PS's latency
// (~7 cycles on Cooper Lake) needs ≥ 4 chains at one instruction per 2 cycles there; Zen 5 issues two per cycle,
// and with 12 chains measured 432 GFLOP/s per core against 468 with 24.
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
    X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
enum { CHAIN_COUNT = 24 };

__attribute__((target("avx512f,avx512bf16"), noinline)) static double dpbf16_seconds(long iterations) {
#define DECLARE(i) __m512 acc##i = _mm512_set1_ps(i);
#define STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, x, y);
#define SUM(i) +_mm512_reduce_add_ps(acc##i)
    CHAINS(DECLARE)
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_setzero_si512();
    double start = seconds();
    for (long it = 0; it < iterations; ++it) {
        CHAINS(STEP)
        __asm__ volatile("" : "+v"(x), "+v"(y));  // keeps the loop from being folded away
    }
    double elapsed = seconds() - start;
    volatile float sink = 0 CHAINS(SUM);
    (void)sink;
    return elapsed;
}

// The same with fp32 FMA (32 flops per zmm instruction), to show what the bf16 kernel competes with.
__attribute__((target("avx512f"), noinline)) static double fma_seconds(long iterations) {
#define STEP_FMA(i) acc##i = _mm512_fmadd_ps(u, v, acc##i);
    CHAINS(DECLARE)
    __m512 u = _mm512_set1_ps(1), v = _mm512_setzero_ps();
    double start = seconds();
    for (long it = 0; it < iterations; ++it) {
        CHAINS(STEP_FMA)
        __asm__ volatile("" : "+v"(u), "+v"(v));
    }
    double elapsed = seconds() - start;
    volatile float sink = 0 CHAINS(SUM);
    (void)sink;
    return elapsed;
}

// AMX: 4 accumulator tiles (tmm0-3) fed by 2 × 2 tiles, as the kernel's 32×32 microtile; TDPBF16PS is
// 16 × 16 × 32 multiply-adds = 16384 flops. Tiles only (loads hoisted out of the loop), or with the kernel's 4
// tile loads per 4 products from a 4 KB (L1-resident) buffer.
typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;
static const tile_config amx_config = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
static uint16_t amx_operands[4][512] __attribute__((aligned(64)));
static float amx_sink[256] __attribute__((aligned(64)));

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16"), noinline))
#define AMX_PRODUCTS() \
    _tile_dpbf16ps(0, 4, 6); \
    _tile_dpbf16ps(1, 4, 7); \
    _tile_dpbf16ps(2, 5, 6); \
    _tile_dpbf16ps(3, 5, 7);
#define AMX_LOADS()                             \
    _tile_loadd(4, amx_operands[0], 64);        \
    _tile_loadd(6, amx_operands[2], 64);        \
    _tile_loadd(7, amx_operands[3], 64);        \
    _tile_loadd(5, amx_operands[1], 64);

// 4 TDPBF16PS per iteration on zeroed accumulators; with `reload` (a compile-time constant in each caller) the 4
// operand tiles are loaded from L1 before every iteration, else once before the loop.
static inline __attribute__((target("amx-tile,amx-bf16"), always_inline)) double amx_run(long iterations,
                                                                                         const int reload) {
    _tile_loadconfig(&amx_config);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    __asm__ volatile("" ::: "memory");
    if (!reload) { AMX_LOADS() }
    double start = seconds();
    for (long it = 0; it < iterations; ++it) {
        if (reload) { AMX_LOADS() }
        AMX_PRODUCTS()
    }
    double elapsed = seconds() - start;
    _tile_stored(0, amx_sink, 64);
    _tile_release();
    return elapsed;
}

AMX_TARGET static double amx_seconds(long iterations) { return amx_run(iterations, 0); }
AMX_TARGET static double amx_loads_seconds(long iterations) { return amx_run(iterations, 1); }

// Best of 10 runs (~0.05-0.1 s each): on this shared VM single runs vary by ±10 %.
static double best_rate(double (*run)(long), long iterations, double flops_per_iteration) {
    double best = 0;
    for (int r = 0; r < 10; ++r) {
        double rate = iterations * flops_per_iteration / run(iterations) * 1e-9;
        if (rate > best) best = rate;
    }
    return best;
}

// rate as a percentage of peak (0 when no peak was measured: the CPU lacks the instruction).
static double share(double rate, double peak) { return peak > 0 ? 100 * rate / peak : 0; }

// ---------------------------------------------------------------- GEMM shapes

typedef struct {
    const char *what;
    int transA, transB;
    long m, n, k;
} shape;

static const shape shapes[] = {
    {"square 512", 0, 0, 512, 512, 512},
    {"square 2048", 0, 0, 2048, 2048, 2048},
    {"1x1 conv 64->64 @64x128", 0, 0, 64, 8192, 64},
    {"1x1 conv 256->256 @64x128", 0, 0, 256, 8192, 256},
    {"1x1 conv 512->512 @64x128", 0, 0, 512, 8192, 512},
    {"1x1 conv 2048->512 @64x128", 0, 0, 512, 8192, 2048},
    {"3x3 im2col 256->256 @64x128", 0, 0, 256, 8192, 2304},
    {"winograd 512x512 T=2048", 0, 0, 512, 2048, 512},
    {"ocr head 19x512 . 512x8192", 0, 0, 19, 8192, 512},
    {"ocr head 8192x512 . 512x19", 0, 0, 8192, 19, 512},
    {"dW 512x8192 . (512x8192)T", 0, 1, 512, 512, 8192},
    {"dX (512x512)T . 512x8192", 1, 0, 512, 8192, 512},
    // one image of R18-D8 at 256×256 (32×32 maps from layer2 on), as the trainer's per-image convolutions call it
    {"r18 layer4 3x3 y=W.col", 0, 0, 512, 1024, 4608},
    {"r18 layer4 3x3 dcol=WT.dy", 1, 0, 4608, 1024, 512},
    {"r18 layer4 3x3 dW=dy.colT", 0, 1, 512, 4608, 1024},
    {"r18 layer1 3x3 dcol=WT.dy", 1, 0, 576, 4096, 64},
};

typedef void (*gemm_fn)(const shape *s, const float *a, const float *b, float *c);

static void run_ours(const shape *s, const float *a, const float *b, float *c) {
    ocr_bf16_gemm(s->transA, s->transB, s->m, s->n, s->k, 1, a, s->transA ? s->m : s->k, b,
                  s->transB ? s->k : s->n, 0, c, s->n);
}

static void run_sgemm(const shape *s, const float *a, const float *b, float *c) {
    cblas_sgemm(CblasRowMajor, s->transA ? CblasTrans : CblasNoTrans, s->transB ? CblasTrans : CblasNoTrans,
                (int)s->m, (int)s->n, (int)s->k, 1, a, s->transA ? (int)s->m : (int)s->k, b,
                s->transB ? (int)s->k : (int)s->n, 0, c, (int)s->n);
}

// Best time of repeated runs (after a warm-up: page faults, packing buffers, pool threads).
static double best_seconds(gemm_fn run, const shape *s, const float *a, const float *b, float *c) {
    double best = 1e30, total = 0;
    run(s, a, b, c);
    for (int r = 0; r < 10 && (r < 2 || total < 0.1); ++r) {
        double start = seconds();
        run(s, a, b, c);
        double elapsed = seconds() - start;
        total += elapsed;
        if (elapsed < best) best = elapsed;
    }
    return best;
}

static double flops_of(const shape *s) { return 2.0 * s->m * s->n * s->k; }

// On huge pages, as the trainer's tensors are (Sources/OCRTensor/FloatStorage.swift): with 4 KB pages the kernels
// walk C by rows on a new page each and measure the TLB more than themselves.
static float *random_floats(long count) {
    size_t bytes = ((size_t)count * sizeof(float) + (2 << 20) - 1) / (2 << 20) * (2 << 20);
    float *x = aligned_alloc(2 << 20, bytes);
    madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < count; ++i) x[i] = (float)rand() / RAND_MAX - 0.5f;
    return x;
}

enum { SHAPE_COUNT = sizeof shapes / sizeof shapes[0] };

// ---------------------------------------------------------------- packing share

static const ocr_bf16_kernel *kernel_in_use(void) {
    const char *name = ocr_bf16_kernel_name();
    if (strcmp(name, ocr_bf16_kernel_amx.name) == 0) return &ocr_bf16_kernel_amx;
    if (strcmp(name, ocr_bf16_kernel_avx512.name) == 0) return &ocr_bf16_kernel_avx512;
    return &ocr_bf16_kernel_portable;
}

static long min_long(long a, long b) { return a < b ? a : b; }

// op(B) packed block by block as the driver does on one thread (jc over nc, pc over kc), into one reused buffer.
static const ocr_bf16_kernel *timed_kernel;
static uint16_t *pack_b_buffer;
static void run_pack_b(const shape *s, const float *a, const float *b, float *c) {
    (void)a, (void)c;
    const ocr_bf16_kernel *kern = timed_kernel;
    long ldb = s->transB ? s->k : s->n;
    for (long jc = 0; jc < s->n; jc += kern->nc)
        for (long pc = 0; pc < s->k; pc += kern->kc) {
            const float *src = s->transB ? b + jc * ldb + pc : b + pc * ldb + jc;
            kern->pack_b(s->transB, src, ldb, min_long(kern->nc, s->n - jc), min_long(kern->kc, s->k - pc),
                         pack_b_buffer);
        }
}

static void *pack_a_buffer;
static void run_pack_a(const shape *s, const float *a, const float *b, float *c) {
    (void)b, (void)c;
    ocr_bf16_pack_a(s->transA, s->m, s->k, a, s->transA ? s->m : s->k, pack_a_buffer);
}

// ---------------------------------------------------------------- modes

static void run_ours_mode(int raw) {
    const ocr_bf16_kernel *kern = kernel_in_use();
    timed_kernel = kern;
    pack_b_buffer = aligned_alloc(64, (size_t)(kern->nc + kern->nr) * kern->kc * 2);
    if (!raw) {
        printf("kernel: %s\n", ocr_bf16_kernel_name());
        printf("%-30s %6s %6s %6s | %8s %8s | %7s %7s %7s\n", "shape", "m", "n", "k", "GF/s 1T", "GF/s 2T",
               "packA%", "packB%", "B GB/s");
    }
    for (int i = 0; i < SHAPE_COUNT; ++i) {
        const shape *s = &shapes[i];
        float *a = random_floats(s->m * s->k), *b = random_floats(s->k * s->n), *c = random_floats(s->m * s->n);
        pack_a_buffer = malloc(ocr_bf16_packed_a_size(s->m, s->k));
        double t[2];
        for (int th = 0; th < 2; ++th) {
            ocr_bf16_set_threads(th + 1);
            t[th] = best_seconds(run_ours, s, a, b, c);
        }
        // Packing on one thread, against the 1-thread product (the driver packs A, then B per k × n block; a
        // transposed product, Cᵀ for skinny C on the AVX512 kernel, packs the other way round: not counted).
        ocr_bf16_set_threads(1);
        double pa = best_seconds(run_pack_a, s, a, b, c), pb = best_seconds(run_pack_b, s, a, b, c);
        double b_bytes = 4.0 * s->k * s->n;  // fp32 read (the bf16 written is half of it again)
        if (raw) {
            printf("%d %.6g %.6g %.6g %.6g\n", i, flops_of(s) / t[0] * 1e-9, flops_of(s) / t[1] * 1e-9,
                   100 * pa / t[0], 100 * pb / t[0]);
        } else {
            printf("%-30s %6ld %6ld %6ld | %8.1f %8.1f | %6.0f%% %6.0f%% %7.1f\n", s->what, s->m, s->n, s->k,
                   flops_of(s) / t[0] * 1e-9, flops_of(s) / t[1] * 1e-9, 100 * pa / t[0], 100 * pb / t[0],
                   b_bytes / pb * 1e-9);
        }
        fflush(stdout);
        free(a), free(b), free(c), free(pack_a_buffer);
    }
    free(pack_b_buffer);
}

static void run_sgemm_mode(int raw) {
    if (!raw) {
        printf("OpenBLAS core: %s\n", openblas_get_corename());
        printf("%-30s %6s %6s %6s | %8s %8s\n", "shape", "m", "n", "k", "GF/s 1T", "GF/s 2T");
    } else {
        printf("core %s\n", openblas_get_corename());
    }
    for (int i = 0; i < SHAPE_COUNT; ++i) {
        const shape *s = &shapes[i];
        float *a = random_floats(s->m * s->k), *b = random_floats(s->k * s->n), *c = random_floats(s->m * s->n);
        double t[2];
        for (int th = 0; th < 2; ++th) {
            openblas_set_num_threads(th + 1);
            t[th] = best_seconds(run_sgemm, s, a, b, c);
        }
        if (raw) printf("%d %.6g %.6g\n", i, flops_of(s) / t[0] * 1e-9, flops_of(s) / t[1] * 1e-9);
        else printf("%-30s %6ld %6ld %6ld | %8.1f %8.1f\n", s->what, s->m, s->n, s->k, flops_of(s) / t[0] * 1e-9,
                    flops_of(s) / t[1] * 1e-9);
        fflush(stdout);
        free(a), free(b), free(c);
    }
}

// One column of the merged table, from a child process: "index gflops1T gflops2T [packA% packB%]" lines.
typedef struct {
    const char *env, *mode;
    char label[64];
    double g[SHAPE_COUNT][2], pack[SHAPE_COUNT][2];
    int ok;
} column;

static void run_column(const char *self, column *col) {
    char command[4096 + 256];
    snprintf(command, sizeof command, "env %s '%s' %s-raw", col->env, self, col->mode);
    FILE *child = popen(command, "r");
    if (!child) return;
    char line[512];
    while (fgets(line, sizeof line, child)) {
        int i;
        double g1, g2, p1 = 0, p2 = 0;
        char name[64];
        if (sscanf(line, "core %63s", name) == 1) {
            snprintf(col->label + strlen(col->label), sizeof col->label - strlen(col->label), " (%s)", name);
        } else if (sscanf(line, "%d %lf %lf %lf %lf", &i, &g1, &g2, &p1, &p2) >= 3 && i >= 0 && i < SHAPE_COUNT) {
            col->g[i][0] = g1, col->g[i][1] = g2, col->pack[i][0] = p1, col->pack[i][1] = p2;
            col->ok++;
        }
    }
    pclose(child);
}

// ---------------------------------------------------------------- Winograd batches

// One convolution's 16 GEMMs as Winograd.swift calls them: forward M = U·V (m o, n t, k c), input gradient
// Uᵀ·V of dy (transA: m c, n t, k o), weight gradient Z·Vᵀ (transB: m o, n c, k t); V in bf16 bits.
typedef struct { const char *what; int transA, transB; long m, n, k; } batch_shape;

static const batch_shape winograd_shapes[] = {
    {"layer1 64->64 t=2048 fwd", 0, 0, 64, 2048, 64},   {"layer1 dX", 1, 0, 64, 2048, 64},
    {"layer1 dW", 0, 1, 64, 64, 2048},                  {"layer2 128->128 t=512 fwd", 0, 0, 128, 512, 128},
    {"layer2 dX", 1, 0, 128, 512, 128},                 {"layer2 dW", 0, 1, 128, 128, 512},
    {"layer3 256->256 t=512 fwd", 0, 0, 256, 512, 256}, {"layer3 dX", 1, 0, 256, 512, 256},
    {"layer3 dW", 0, 1, 256, 256, 512},                 {"layer4 512->512 t=512 fwd", 0, 0, 512, 512, 512},
    {"layer4 dX", 1, 0, 512, 512, 512},                 {"layer4 dW", 0, 1, 512, 512, 512},
    {"stem 32->64 t=8192 fwd", 0, 0, 64, 8192, 32},     {"stem dX", 1, 0, 32, 8192, 64},
    {"stem dW", 0, 1, 64, 32, 8192},
};

static void run_winograd_mode(void) {
    enum { PRODUCTS = 16 };
    ocr_bf16_set_threads(2);
    printf("kernel: %s, 16 products per batch, 2 threads\n", ocr_bf16_kernel_name());
    printf("%-28s %5s %5s %5s | %8s | %7s\n", "shape", "m", "n", "k", "GF/s", "packA%");
    printf("(packA%%: packing the 16 A on one thread, against the batch on two: half of it is each thread's share)\n");
    for (size_t i = 0; i < sizeof winograd_shapes / sizeof winograd_shapes[0]; ++i) {
        const batch_shape *s = &winograd_shapes[i];
        const float *a[PRODUCTS];
        const uint16_t *b[PRODUCTS];
        float *c[PRODUCTS];
        void *packed[PRODUCTS];
        for (int p = 0; p < PRODUCTS; ++p) {
            a[p] = random_floats(s->m * s->k);
            float *wide = random_floats(s->k * s->n);
            uint16_t *bits = malloc((size_t)s->k * s->n * sizeof(uint16_t));
            ocr_bf16_pack(wide, bits, s->k * s->n);
            free(wide);
            b[p] = bits;
            c[p] = random_floats(s->m * s->n);
            packed[p] = malloc(ocr_bf16_packed_a_size(s->m, s->k));
        }
        const long lda = s->transA ? s->m : s->k, ldb = s->transB ? s->k : s->n;
        double best = 1e30, best_pack = 1e30;
        for (int r = 0; r < 10; ++r) {
            double start = seconds();
            ocr_bf16_gemm_batch_bf16_b(s->transA, s->transB, PRODUCTS, s->m, s->n, s->k, 1, a, lda, b, ldb, 0, c, s->n);
            ocr_bf16_set_threads(1);  // as each product packs its A inside the batch
            double mid = seconds();
            for (int p = 0; p < PRODUCTS; ++p) ocr_bf16_pack_a(s->transA, s->m, s->k, a[p], lda, packed[p]);
            double end = seconds();
            ocr_bf16_set_threads(2);
            if (mid - start < best) best = mid - start;
            if (end - mid < best_pack) best_pack = end - mid;
        }
        printf("%-28s %5ld %5ld %5ld | %8.1f | %6.0f%%\n", s->what, s->m, s->n, s->k,
               PRODUCTS * 2.0 * s->m * s->n * s->k / best * 1e-9, 100 * best_pack / best);
        fflush(stdout);
        for (int p = 0; p < PRODUCTS; ++p) free((void *)a[p]), free((void *)b[p]), free(c[p]), free(packed[p]);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    if (strcmp(mode, "ours-raw") == 0) return run_ours_mode(1), 0;
    if (strcmp(mode, "sgemm-raw") == 0) return run_sgemm_mode(1), 0;
    if (strcmp(mode, "ours") == 0) return run_ours_mode(0), 0;
    if (strcmp(mode, "sgemm") == 0) return run_sgemm_mode(0), 0;
    if (strcmp(mode, "winograd") == 0) return run_winograd_mode(), 0;

    if (!ocr_bf16_supported()) printf("note: no AVX512-BF16 here; timing the portable kernel\n");
    double peak = 0, fma_peak = 0, amx_peak = 0, amx_load_peak = 0;
    if (ocr_bf16_supported()) {
        peak = best_rate(dpbf16_seconds, 5000000, CHAIN_COUNT * 64.0);
        fma_peak = best_rate(fma_seconds, 5000000, CHAIN_COUNT * 32.0);
        printf("peak per core: VDPBF16PS zmm %.1f GFLOP/s (%d chains), fp32 VFMADD zmm %.1f GFLOP/s\n", peak,
               CHAIN_COUNT, fma_peak);
    }
    if (ocr_bf16_amx_supported()) {
        amx_peak = best_rate(amx_seconds, 200000, 4 * 16384.0);
        amx_load_peak = best_rate(amx_loads_seconds, 200000, 4 * 16384.0);
        printf("peak per core: AMX TDPBF16PS %.1f GFLOP/s (4 accumulators, tiles only), %.1f GFLOP/s with 4 tile "
               "loads (L1) per 4\n", amx_peak, amx_load_peak);
    }
    if (strcmp(mode, "peak") == 0) return 0;

    column columns[] = {
        {"OCR_BF16_KERNEL=amx", "ours", "ours AMX", {{0}}, {{0}}, 0},
        {"OCR_BF16_KERNEL=avx512bf16", "ours", "ours AVX512-BF16", {{0}}, {{0}}, 0},
        {"-u OPENBLAS_CORETYPE", "sgemm", "sgemm", {{0}}, {{0}}, 0},
        {"OPENBLAS_CORETYPE=SkylakeX", "sgemm", "sgemm", {{0}}, {{0}}, 0},
    };
    enum { COLUMNS = sizeof columns / sizeof columns[0] };
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) return 1;
    self[length] = 0;
    for (int col = 0; col < COLUMNS; ++col) {
        run_column(self, &columns[col]);
        printf("  measured: %-34s %s\n", columns[col].label, columns[col].ok == SHAPE_COUNT ? "" : "(incomplete)");
        fflush(stdout);
    }
    // Each kernel against its own instruction's peak per core (AMX: the higher of the two peak loops; the tiles-only
    // one can be the lower, its 4 accumulators then bound by TDPBF16PS's latency).
    double tile_peak = amx_peak > amx_load_peak ? amx_peak : amx_load_peak;
    printf("GFLOP/s, 1 thread / 2 threads (%%pk: share of the per-core peak of the kernel's instruction, AMX "
           "%.0f, VDPBF16PS %.0f GFLOP/s)\n", tile_peak, peak);
    printf("%-28s %5s %5s %5s |%6s %6s %4s %4s |%6s %6s %4s %4s |%6s %6s |%6s %6s\n", "shape", "m", "n", "k", "amx1",
           "amx2", "%pk1", "%pk2", "avx1", "avx2", "%pk1", "%pk2", "sgPr1", "sgPr2", "sgSX1", "sgSX2");
    for (int i = 0; i < SHAPE_COUNT; ++i) {
        const shape *s = &shapes[i];
        double (*g)[2] = columns[0].g, (*v)[2] = columns[1].g;
        printf("%-28s %5ld %5ld %5ld |%6.0f %6.0f %3.0f%% %3.0f%% |%6.0f %6.0f %3.0f%% %3.0f%% |%6.0f %6.0f |%6.0f "
               "%6.0f\n", s->what, s->m, s->n, s->k, g[i][0], g[i][1], share(g[i][0], tile_peak),
               share(g[i][1], 2 * tile_peak), v[i][0], v[i][1], share(v[i][0], peak), share(v[i][1], 2 * peak),
               columns[2].g[i][0], columns[2].g[i][1], columns[3].g[i][0], columns[3].g[i][1]);
    }
    printf("(sgPr: %s; sgSX: %s)\n", columns[2].label, columns[3].label);
    printf("AMX kernel, 1 thread: time packing A / packing B (fp32 -> bf16, one thread) as %% of the whole product\n");
    for (int i = 0; i < SHAPE_COUNT; ++i)
        printf("  %-28s A %3.0f%%  B %3.0f%%\n", shapes[i].what, columns[0].pack[i][0], columns[0].pack[i][1]);
    return 0;
}
