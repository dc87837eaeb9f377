// Blocked GEMM driver (GotoBLAS/BLIS loop order), kernel dispatch, thread pool, and the reference.
//
// Loops, outermost first, for one thread's share of C (rows [r0, r1) × columns [c0, c1)):
//   jc: nc columns of op(B)      — B block of kc × nc packed per (jc, pc), by the thread that uses it
//   pc: kc of k                  — the same k blocks in the same order for every element, whatever the split
//   ic: mc rows of op(A)         — A is packed once per call (or once by the caller) into mr-row panels
//   jr: nr columns               — one B micro-panel (kc × nr), reused from L1 by every row panel below
//   ir: mr rows                  — microkernel on an A panel streamed from L2
// Threads split C's columns (or rows, when there are more row panels than column panels: the OCR head's
// 8192×512 · 512×19) into contiguous ranges of whole panels, so each element has exactly one owner.
#include "ocr_bf16.h"
#include "ocr_bf16_kernel.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static long min_long(long a, long b) { return a < b ? a : b; }
static long round_up(long x, long unit) { return (x + unit - 1) / unit * unit; }

// ---------------------------------------------------------------- reference and rounding

float ocr_bf16_round(float x) { return ocr_bf16_to_float(ocr_bf16_bits(x)); }

static int vector_pack;
static pthread_once_t vector_pack_once = PTHREAD_ONCE_INIT;
static void check_vector_pack(void) { vector_pack = ocr_bf16_supported(); }

void ocr_bf16_pack(const float *x, uint16_t *out, long n) {
    pthread_once(&vector_pack_once, check_vector_pack);
    if (vector_pack) {
        ocr_bf16_pack_avx512(x, out, n);
        return;
    }
    for (long i = 0; i < n; ++i) out[i] = ocr_bf16_bits(x[i]);
}

void ocr_bf16_unpack(const uint16_t *h, float *out, long n) {
    for (long i = 0; i < n; ++i) out[i] = ocr_bf16_to_float(h[i]);
}

void ocr_bf16_gemm_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                             const float *b, long ldb, float beta, float *c, long ldc) {
    for (long i = 0; i < m; ++i) {
        for (long j = 0; j < n; ++j) {
            double sum = 0;
            for (long p = 0; p < k; ++p) {
                float av = transA ? a[p * lda + i] : a[i * lda + p];
                float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                sum += (double)ocr_bf16_round(av) * (double)ocr_bf16_round(bv);
            }
            float *out = c + i * ldc + j;
            *out = beta == 0 ? alpha * (float)sum : alpha * (float)sum + beta * *out;
        }
    }
}

// ---------------------------------------------------------------- CPU support and kernel choice

static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

int ocr_bf16_supported(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;  // OSXSAVE: xgetbv usable
    // XCR0 bits 1, 2 (SSE, AVX state) and 5, 6, 7 (opmask, upper halves of zmm0-15, zmm16-31) saved by the OS.
    if ((read_xcr0() & 0xe6) != 0xe6) return 0;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned f_bw_vl = (1u << 16) | (1u << 30) | (1u << 31);  // AVX512F, AVX512BW, AVX512VL
    if ((ebx & f_bw_vl) != f_bw_vl) return 0;
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    return (eax >> 5) & 1;  // AVX512_BF16
}

// AMX: CPUID.(7,0).EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), XCR0 bits 17-18 (XTILECFG, XTILEDATA) enabled by
// the OS, and, on Linux (5.16+), the process's permission to use XTILEDATA, which must be requested once
// (arch_prctl ARCH_REQ_XCOMP_PERM) before the first tile instruction. The packing and epilogue use AVX512-BF16.
#define ARCH_GET_XCOMP_PERM_ 0x1022
#define ARCH_REQ_XCOMP_PERM_ 0x1023
#define XFEATURE_XTILEDATA_ 18

static int detect_amx(void) {
    if (!ocr_bf16_supported()) return 0;
    unsigned eax, ebx, ecx, edx;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned amx = (1u << 22) | (1u << 24);
    if ((edx & amx) != amx) return 0;
    const uint64_t tile_state = (1ull << 17) | (1ull << 18);
    if ((read_xcr0() & tile_state) != tile_state) return 0;
#if defined(__linux__)
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM_, XFEATURE_XTILEDATA_) != 0) return 0;
    unsigned long permitted = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM_, &permitted) != 0) return 0;
    if (!(permitted & (1ul << XFEATURE_XTILEDATA_))) return 0;
#endif
    return 1;
}

static int amx_usable;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static void check_amx(void) { amx_usable = detect_amx(); }

int ocr_bf16_amx_supported(void) {
    pthread_once(&amx_once, check_amx);
    return amx_usable;
}

// The L1 data cache per core, 0 when the C library cannot tell.
static long l1_data_cache_bytes(void) {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    long bytes = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return bytes > 0 ? bytes : 0;
#else
    return 0;
#endif
}

static const ocr_bf16_kernel *active_kernel;
static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;

// The fastest kernel this CPU and OS allow, or the one OCR_BF16_KERNEL names (amx, avx512bf16, portable) when it
// is allowed too; a named kernel that is not falls back down the same list.
static void choose_kernel(void) {
    const char *forced = getenv("OCR_BF16_KERNEL");
    int rank = 0;  // 0: amx, 1: avx512bf16, 2: portable
    if (forced && strcmp(forced, "avx512bf16") == 0) rank = 1;
    if (forced && strcmp(forced, "portable") == 0) rank = 2;
    if (rank <= 0 && ocr_bf16_amx_supported()) active_kernel = &ocr_bf16_kernel_amx;
    else if (rank <= 1 && ocr_bf16_supported())
        active_kernel = l1_data_cache_bytes() >= 48 * 1024 ? &ocr_bf16_kernel_avx512_l1_48k
                                                            : &ocr_bf16_kernel_avx512;
    else active_kernel = &ocr_bf16_kernel_portable;
}

static const ocr_bf16_kernel *kernel(void) {
    pthread_once(&kernel_once, choose_kernel);
    return active_kernel;
}

const ocr_bf16_kernel *ocr_bf16_active_kernel(void) { return kernel(); }

const char *ocr_bf16_kernel_name(void) { return kernel()->name; }

// ---------------------------------------------------------------- thread pool


static atomic_int requested_threads = 1;

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t start, finished;
    int workers;                 // helper threads started so far (indices 1...workers)
    unsigned long generation;    // bumped per job; a helper runs each generation once
    ocr_bf16_pool_job job;
    void *ctx;
    int count, remaining;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};

// Held by the one caller whose job is in the pool; a concurrent caller runs its job alone instead of waiting.
static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;

static void *pool_worker(void *arg) {
    int index = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mutex);
    for (;;) {
        while (pool.generation == seen) pthread_cond_wait(&pool.start, &pool.mutex);
        seen = pool.generation;
        if (index >= pool.count) continue;
        ocr_bf16_pool_job job = pool.job;
        void *ctx = pool.ctx;
        int count = pool.count;
        pthread_mutex_unlock(&pool.mutex);
        job(ctx, index, count);
        pthread_mutex_lock(&pool.mutex);
        if (--pool.remaining == 0) pthread_cond_signal(&pool.finished);
    }
    return NULL;
}

// Called with pool.mutex held; returns how many threads (caller included) can run.
static int ensure_workers(int count) {
    while (pool.workers < count - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, pool_worker, (void *)(intptr_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        pool.workers++;
    }
    return min_long(count, pool.workers + 1);
}

void ocr_bf16_run_parallel(ocr_bf16_pool_job job, void *ctx, int count) {
    if (count <= 1 || pthread_mutex_trylock(&pool_owner) != 0) {
        job(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool.mutex);
    count = ensure_workers(count);
    pool.job = job;
    pool.ctx = ctx;
    pool.count = count;
    pool.remaining = count - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mutex);

    job(ctx, 0, count);

    pthread_mutex_lock(&pool.mutex);
    while (pool.remaining > 0) pthread_cond_wait(&pool.finished, &pool.mutex);
    pthread_mutex_unlock(&pool.mutex);
    pthread_mutex_unlock(&pool_owner);
}

void ocr_bf16_set_threads(int n) { atomic_store(&requested_threads, n < 1 ? 1 : n); }
int ocr_bf16_get_threads(void) { return atomic_load(&requested_threads); }

// Below this many flops a fork-join (~10-30 µs) costs more than the second thread saves.
static const double min_flops_per_thread = 4e6;

static int threads_for(long m, long n, long k, long panels) {
    int threads = atomic_load(&requested_threads);
    double flops = 2.0 * m * n * k;
    if (flops < min_flops_per_thread * threads) threads = (int)(flops / min_flops_per_thread);
    return (int)min_long(threads < 1 ? 1 : threads, panels);
}

// ---------------------------------------------------------------- scratch

// Per-thread buffers grown on demand and kept (pool threads live for the process), 64-byte aligned for the
// kernels' aligned loads; from 2 MB on, huge-page aligned and marked MADV_HUGEPAGE, as the trainer's tensors are
// (FloatStorage.swift says why). Returns NULL when memory runs out.
typedef struct { void *data; size_t size; } scratch_buffer;

enum { HUGE_PAGE_BYTES = 2 << 20 };

static void *scratch(scratch_buffer *buffer, size_t size) {
    if (buffer->size < size) {
        free(buffer->data);
        int huge = size >= HUGE_PAGE_BYTES;
        buffer->data = aligned_alloc(huge ? HUGE_PAGE_BYTES : 64, round_up((long)size, huge ? HUGE_PAGE_BYTES : 64));
#ifdef MADV_HUGEPAGE
        if (huge && buffer->data) madvise(buffer->data, round_up((long)size, HUGE_PAGE_BYTES), MADV_HUGEPAGE);
#endif
        buffer->size = buffer->data ? size : 0;
    }
    return buffer->data;
}

static _Thread_local scratch_buffer packed_b_scratch, packed_a_scratch, unfolded_b_scratch;

// ---------------------------------------------------------------- packing of A

size_t ocr_bf16_packed_a_size(long m, long k) {
    const ocr_bf16_kernel *kern = kernel();
    return (size_t)round_up(m, kern->mr) * round_up(k, kern->k_unit) * sizeof(uint16_t);
}

// Bf16 offset of row panel `panel` in k block [pc, pc + kc_len): blocks are stored one after the other, each as
// all row panels of the block (so an mc × kc block is contiguous); full blocks hold kc k values exactly.
static size_t packed_a_offset(const ocr_bf16_kernel *kern, long m, long pc, long kc_len, long panel) {
    return (size_t)round_up(m, kern->mr) * pc + (size_t)panel * kern->mr * round_up(kc_len, kern->k_unit);
}

typedef struct {
    const ocr_bf16_kernel *kern;
    int transA;
    long m, k, lda;
    const float *a;
    uint16_t *packed;
} pack_a_job;

static void pack_a_part(void *ctx, int index, int count) {
    const pack_a_job *job = ctx;
    const ocr_bf16_kernel *kern = job->kern;
    long panels = (job->m + kern->mr - 1) / kern->mr;
    for (long pc = 0; pc < job->k; pc += kern->kc) {
        long kc_len = min_long(kern->kc, job->k - pc);
        for (long panel = panels * index / count; panel < panels * (index + 1) / count; ++panel) {
            long i = panel * kern->mr;
            const float *src = job->transA ? job->a + pc * job->lda + i : job->a + i * job->lda + pc;
            kern->pack_a_panel(job->transA, src, job->lda, min_long(kern->mr, job->m - i), kc_len,
                               job->packed + packed_a_offset(kern, job->m, pc, kc_len, panel));
        }
    }
}

static void pack_a(const ocr_bf16_kernel *kern, int transA, long m, long k, const float *a, long lda,
                   uint16_t *packed, int threads) {
    pack_a_job job = {kern, transA, m, k, lda, a, packed};
    ocr_bf16_run_parallel(pack_a_part, &job, threads);
}

void ocr_bf16_pack_a(int transA, long m, long k, const float *a, long lda, void *packed_a) {
    if (m <= 0 || k <= 0) return;
    const ocr_bf16_kernel *kern = kernel();
    pack_a(kern, transA, m, k, a, lda, packed_a, threads_for(m, 1024, k, (m + kern->mr - 1) / kern->mr));
}

// ---------------------------------------------------------------- the blocked product

typedef struct {
    const ocr_bf16_kernel *kern;
    int transB, split_columns, transpose_c;
    long m, n, k, ldb, ldc;
    float alpha, beta;
    const uint16_t *packed_a;
    const float *b;                          // op(B) as stored, or the image whose im2col matrix it is
    const ocr_bf16_conv_geometry *im2col;    // NULL: b is the matrix itself
    float *c;
    const uint16_t *b_bits;                  // non-NULL: op(B) as stored, in bf16 (b unused)
} gemm_job;

// ---------------------------------------------------------------- the im2col matrix, block by block

static long output_extent(long size, long kernel, const ocr_bf16_conv_geometry *g) {
    return (size + 2 * g->padding - g->dilation * (kernel - 1) - 1) / g->stride + 1;
}

// out[r * ld + p] = col[row0 + r][pixel0 + p] for r < rows, p < pixels: rows of the column matrix unfolded from
// the image, each as runs along output rows (within a run, the valid input columns are one stretch).
static void unfold_columns(const ocr_bf16_conv_geometry *g, const float *image, long row0, long rows, long pixel0,
                           long pixels, float *out, long ld) {
    const long out_w = output_extent(g->width, g->kernel_w, g), kk = g->kernel_h * g->kernel_w;
    for (long r = 0; r < rows; ++r) {
        const long row = row0 + r, ki = row % kk / g->kernel_w, kj = row % g->kernel_w;
        const float *plane = image + row / kk * g->height * g->width;
        const long shift = kj * g->dilation - g->padding;  // iw = ow·stride + shift
        // Output columns [lo, hi) read inside the image.
        const long lo = shift >= 0 ? 0 : (-shift + g->stride - 1) / g->stride;
        const long hi_raw = g->width - 1 - shift;
        const long hi = hi_raw < 0 ? 0 : min_long(out_w, hi_raw / g->stride + 1);
        float *dst = out + r * ld;
        for (long p = pixel0, end = pixel0 + pixels; p < end;) {
            const long oh = p / out_w, ow = p % out_w, run = min_long(out_w - ow, end - p);
            const long ih = oh * g->stride - g->padding + ki * g->dilation;
            const long a = lo > ow ? lo : ow, b = min_long(hi, ow + run);  // valid [a, b) of [ow, ow + run)
            if (ih < 0 || ih >= g->height || a >= b) {
                memset(dst, 0, (size_t)run * sizeof(float));
            } else {
                const float *src = plane + ih * g->width + shift;
                memset(dst, 0, (size_t)(a - ow) * sizeof(float));
                if (g->stride == 1) memcpy(dst + (a - ow), src + a, (size_t)(b - a) * sizeof(float));
                else for (long t = a; t < b; ++t) dst[t - ow] = src[t * g->stride];
                memset(dst + (b - ow), 0, (size_t)(ow + run - b) * sizeof(float));
            }
            dst += run;
            p += run;
        }
    }
}

// The fp32 strip of an im2col B unfolded at a time: 256 KB, beside the packed B block and A's block in L2.
static const long unfolded_strip_floats = 65536;

// Packs the kc_len × nc_len block of op(B) at (pc, jc) into consecutive nr-column panels. An im2col B is unfolded
// a few panels at a time (on AMX a strip of kc × 64), so that the strip and the packed block stay in L2
// beside A; the panels are those the kernel's pack_b makes of the whole matrix, column group by column group.
static void pack_b_block(const gemm_job *job, long pc, long kc_len, long jc, long nc_len, uint16_t *packed_b) {
    const ocr_bf16_kernel *kern = job->kern;
    if (job->b_bits) {
        const uint16_t *src = job->transB ? job->b_bits + jc * job->ldb + pc : job->b_bits + pc * job->ldb + jc;
        if (kern->pack_b_bf16) {
            kern->pack_b_bf16(job->transB, src, job->ldb, nc_len, kc_len, packed_b);
            return;
        }
        // Widened to fp32 (exact) and packed as such: rounding a bf16 value again leaves it as it is.
        const long rows = job->transB ? nc_len : kc_len, cols = job->transB ? kc_len : nc_len;
        float *wide = scratch(&unfolded_b_scratch, (size_t)rows * cols * sizeof(float));
        if (!wide) abort();
        for (long r = 0; r < rows; ++r)
            for (long j = 0; j < cols; ++j) wide[r * cols + j] = ocr_bf16_to_float(src[r * job->ldb + j]);
        kern->pack_b(job->transB, wide, cols, nc_len, kc_len, packed_b);
        return;
    }
    if (!job->im2col) {
        const float *src = job->transB ? job->b + jc * job->ldb + pc : job->b + pc * job->ldb + jc;
        kern->pack_b(job->transB, src, job->ldb, nc_len, kc_len, packed_b);
        return;
    }
    const long nr = kern->nr, k_padded = round_up(kc_len, kern->k_unit);
    long group = (unfolded_strip_floats / kc_len) / nr * nr;
    if (group < nr) group = nr;
    float *strip = scratch(&unfolded_b_scratch, (size_t)group * kc_len * sizeof(float));
    if (!strip) abort();
    for (long j = 0; j < nc_len; j += group) {
        const long cols = min_long(group, nc_len - j);
        uint16_t *panels = packed_b + j / nr * nr * k_padded;
        if (job->transB) {  // op(B) = colᵀ: its columns are rows of col, its k the pixels
            unfold_columns(job->im2col, job->b, jc + j, cols, pc, kc_len, strip, kc_len);
            kern->pack_b(1, strip, kc_len, cols, kc_len, panels);
        } else {            // op(B) = col: its k the rows of col, its columns the pixels
            unfold_columns(job->im2col, job->b, pc, kc_len, jc + j, cols, strip, cols);
            kern->pack_b(0, strip, cols, cols, kc_len, panels);
        }
    }
}

static void gemm_range(const gemm_job *job, long r0, long r1, long c0, long c1) {
    const ocr_bf16_kernel *kern = job->kern;
    const long mr = kern->mr, nr = kern->nr;
    uint16_t *packed_b = scratch(&packed_b_scratch, (size_t)round_up(kern->nc, nr) * kern->kc * sizeof(uint16_t));
    if (!packed_b) abort();  // a few MB; nothing sensible to return through a BLAS-like void API
    if (kern->thread_begin) kern->thread_begin();
    for (long jc = c0; jc < c1; jc += kern->nc) {
        long nc_len = min_long(kern->nc, c1 - jc);
        for (long pc = 0; pc < job->k; pc += kern->kc) {
            long kc_len = min_long(kern->kc, job->k - pc);
            long k_padded = round_up(kc_len, kern->k_unit);
            float beta = pc == 0 ? job->beta : 1.0f;  // later k blocks add to what the first one stored
            pack_b_block(job, pc, kc_len, jc, nc_len, packed_b);
            for (long ic = r0; ic < r1; ic += kern->mc) {
                long mc_len = min_long(kern->mc, r1 - ic);
                for (long jp = 0; jp < nc_len; jp += nr) {
                    const uint16_t *b_panel = packed_b + jp / nr * nr * k_padded;
                    int cols = (int)min_long(nr, nc_len - jp);
                    for (long ip = 0; ip < mc_len; ip += mr) {
                        long i = ic + ip, j = jc + jp;
                        const uint16_t *a_panel = job->packed_a + packed_a_offset(kern, job->m, pc, kc_len, i / mr);
                        float *tile = job->transpose_c ? job->c + j * job->ldc + i : job->c + i * job->ldc + j;
                        kern->microkernel(k_padded, a_panel, b_panel, tile, job->ldc, (int)min_long(mr, r1 - i), cols,
                                          job->alpha, beta, job->transpose_c);
                    }
                }
            }
        }
    }
    if (kern->thread_end) kern->thread_end();
}

static void gemm_part(void *ctx, int index, int count) {
    const gemm_job *job = ctx;
    const ocr_bf16_kernel *kern = job->kern;
    if (job->split_columns) {
        long panels = (job->n + kern->nr - 1) / kern->nr;
        long c0 = panels * index / count * kern->nr, c1 = min_long(panels * (index + 1) / count * kern->nr, job->n);
        if (c0 < c1) gemm_range(job, 0, job->m, c0, c1);
    } else {
        long panels = (job->m + kern->mr - 1) / kern->mr;
        long r0 = panels * index / count * kern->mr, r1 = min_long(panels * (index + 1) / count * kern->mr, job->m);
        if (r0 < r1) gemm_range(job, r0, r1, 0, job->n);
    }
}

// C = beta * C, the whole product when alpha or k is 0 (BLAS reads neither A nor B then).
static void scale_c(long m, long n, float beta, float *c, long ldc) {
    for (long i = 0; i < m; ++i) {
        float *row = c + i * ldc;
        if (beta == 0) memset(row, 0, (size_t)n * sizeof(float));
        else if (beta != 1) for (long j = 0; j < n; ++j) row[j] *= beta;
    }
}

// Runs a job on up to `threads` threads, split along C's columns or rows, whichever has more panels.
static void run_gemm(gemm_job *job, int threads) {
    long row_panels = (job->m + job->kern->mr - 1) / job->kern->mr;
    long column_panels = (job->n + job->kern->nr - 1) / job->kern->nr;
    job->split_columns = column_panels >= row_panels;
    ocr_bf16_run_parallel(gemm_part, job, (int)min_long(threads, job->split_columns ? column_panels : row_panels));
}

// transpose_c: the product is Cᵀ (m × n here is C's n × m), written into C transposed.
static void gemm_with_packed_a(const ocr_bf16_kernel *kern, int transB, long m, long n, long k, float alpha,
                               const uint16_t *packed_a, const float *b, const uint16_t *b_bits, long ldb, float beta,
                               float *c, long ldc, int threads, int transpose_c) {
    gemm_job job = {kern, transB, 0, transpose_c, m, n, k, ldb, ldc, alpha, beta, packed_a, b, NULL, c, b_bits};
    run_gemm(&job, threads);
}

// An empty C, or one that only scales by beta (alpha 0 or k 0, where A and B are never read): handled here, true.
static int product_is_trivial(long m, long n, long k, float alpha, float beta, float *c, long ldc) {
    if (m <= 0 || n <= 0) return 1;
    if (alpha != 0 && k > 0) return 0;
    scale_c(m, n, beta, c, ldc);
    return 1;
}

void ocr_bf16_gemm_packed_a(int transB, long m, long n, long k, float alpha, const void *packed_a,
                            const float *b, long ldb, float beta, float *c, long ldc) {
    if (product_is_trivial(m, n, k, alpha, beta, c, ldc)) return;
    const ocr_bf16_kernel *kern = kernel();
    gemm_with_packed_a(kern, transB, m, n, k, alpha, packed_a, b, NULL, ldb, beta, c, ldc,
                       threads_for(m, n, k, m + n), 0);
}

// Columns the microkernels compute for n columns: whole nr panels, the last one in 16-column halves (a tile of
// ≤ 16 columns runs one zmm of them). Rows cost only what they are (tiles exist for every row count).
static long computed_columns(long n, long nr) {
    long rest = n % nr;
    return n - rest + (rest == 0 ? 0 : round_up(rest, 16));
}

// Whether to compute Cᵀ = op(B)ᵀ·op(A)ᵀ instead: when C has few columns that waste much of the last panel (the
// OCR head's 8192×512 · 512×19: 19 of 32 columns), and more rows, which then become fully used columns. The
// transposed tile store needs 32-bit lane offsets up to 31 · ldc. A kernel whose rows also cost whole units
// (AMX: 16-row tiles) transposes only when that computes ≥ 10 % fewer padded elements (never, for 16 × 16 units).
static int computes_transposed(const ocr_bf16_kernel *kern, long m, long n, long ldc) {
    if (!(m > n && ldc < INT32_MAX / 32)) return 0;
    if (kern->m_unit <= 1) return computed_columns(n, kern->nr) * 9 > n * 10;
    double direct = (double)round_up(m, kern->m_unit) * computed_columns(n, kern->nr);
    double transposed = (double)round_up(n, kern->m_unit) * computed_columns(m, kern->nr);
    return transposed * 10 < direct * 9;
}

// One product on up to `threads` threads (1: on the caller's alone, never touching the pool). A B given as bf16
// bits (b_bits) is never the transposed product's left operand, which would need a bf16 A packing too.
static void product(const ocr_bf16_kernel *kern, int transA, int transB, long m, long n, long k, float alpha,
                    const float *a, long lda, const float *b, const uint16_t *b_bits, long ldb, float beta, float *c,
                    long ldc, int threads) {
    if (product_is_trivial(m, n, k, alpha, beta, c, ldc)) return;
    if (!b_bits && computes_transposed(kern, m, n, ldc)) {
        // op(B)ᵀ (n × k) is the packed left operand and op(A)ᵀ (k × m) the right one, each stored "transposed" as
        // the other was not; the dot products are the same pairs of products, so the bits are the same.
        uint16_t *packed = scratch(&packed_a_scratch, ocr_bf16_packed_a_size(n, k));
        if (!packed) abort();
        pack_a(kern, !transB, n, k, b, ldb, packed, (int)min_long(threads, (n + kern->mr - 1) / kern->mr));
        gemm_with_packed_a(kern, !transA, n, m, k, alpha, packed, a, NULL, lda, beta, c, ldc, threads, 1);
        return;
    }
    uint16_t *packed = scratch(&packed_a_scratch, ocr_bf16_packed_a_size(m, k));
    if (!packed) abort();
    pack_a(kern, transA, m, k, a, lda, packed, (int)min_long(threads, (m + kern->mr - 1) / kern->mr));
    gemm_with_packed_a(kern, transB, m, n, k, alpha, packed, b, b_bits, ldb, beta, c, ldc, threads, 0);
}

void ocr_bf16_gemm_im2col(int transB, long m, float alpha, const void *packed_a, const ocr_bf16_conv_geometry *g,
                          const float *image, float beta, float *c, long ldc) {
    const long rows = g->channels * g->kernel_h * g->kernel_w;
    const long pixels = output_extent(g->height, g->kernel_h, g) * output_extent(g->width, g->kernel_w, g);
    const long n = transB ? rows : pixels, k = transB ? pixels : rows;
    if (product_is_trivial(m, n, k, alpha, beta, c, ldc)) return;
    gemm_job job = {kernel(), transB, 0, 0, m, n, k, 0, ldc, alpha, beta, packed_a, image, g, c, NULL};
    run_gemm(&job, threads_for(m, n, k, m + n));
}

void ocr_bf16_gemm(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                   const float *b, long ldb, float beta, float *c, long ldc) {
    product(kernel(), transA, transB, m, n, k, alpha, a, lda, b, NULL, ldb, beta, c, ldc,
            threads_for(m, n, k, m + n));
}

typedef struct {
    const ocr_bf16_kernel *kern;
    int transA, transB;
    long count, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *const *a, *const *b;
    const uint16_t *const *b_bits;  // non-NULL: the B operands in bf16 (b unused)
    float *const *c;
} batch_job;

static void batch_product(const batch_job *job, long i, int threads) {
    product(job->kern, job->transA, job->transB, job->m, job->n, job->k, job->alpha, job->a[i], job->lda,
            job->b_bits ? NULL : job->b[i], job->b_bits ? job->b_bits[i] : NULL, job->ldb, job->beta, job->c[i],
            job->ldc, threads);
}

// Thread `index` of `threads` runs products index, index + threads, ..., each whole.
static void batch_part(void *ctx, int index, int threads) {
    const batch_job *job = ctx;
    for (long i = index; i < job->count; i += threads) batch_product(job, i, 1);
}

static void run_batch(const batch_job *job) {
    if (job->count <= 0) return;
    int threads = ocr_bf16_get_threads();
    if (job->count < threads) {  // too few products to go round: one after the other, each on all threads
        for (long i = 0; i < job->count; ++i)
            batch_product(job, i, threads_for(job->m, job->n, job->k, job->m + job->n));
        return;
    }
    ocr_bf16_run_parallel(batch_part, (void *)job, threads);
}

void ocr_bf16_gemm_batch(int transA, int transB, long count, long m, long n, long k, float alpha,
                         const float *const *a, long lda, const float *const *b, long ldb, float beta,
                         float *const *c, long ldc) {
    batch_job job = {kernel(), transA, transB, count, m, n, k, lda, ldb, ldc, alpha, beta, a, b, NULL, c};
    run_batch(&job);
}

void ocr_bf16_gemm_batch_bf16_b(int transA, int transB, long count, long m, long n, long k, float alpha,
                                const float *const *a, long lda, const uint16_t *const *b, long ldb, float beta,
                                float *const *c, long ldc) {
    batch_job job = {kernel(), transA, transB, count, m, n, k, lda, ldb, ldc, alpha, beta, a, NULL, b, c};
    run_batch(&job);
}
