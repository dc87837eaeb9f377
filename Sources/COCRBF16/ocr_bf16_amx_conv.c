// Direct convolution on AMX tiles (stride 1), with no column matrix: the image is copied once into bf16
// channel-pair planes with zero borders, in which a B tile (16 channel pairs × 16 output pixels) of any kernel tap is
// a plain strided tile load. A tile of the output (16 output channels × 16 pixels of one output row) then
// accumulates every tap and every 32 input channels in the tiles, and is stored once, straight into the NCHW output.
//
// Shapes (per image; C input channels padded to chunks of 32, O output channels in blocks of 32, T = kh·kw taps):
//   planes:  (C/2) planes × `plane` pixels × 2 bf16: plane q, padded pixel (h, w) at  q·plane + h·Wp + w, holding
//            channels 2q and 2q + 1 of image pixel (h − p, w − p), zero outside the image (Hp × Wp = (H + 2p) ×
//            (W + 2p)); `plane` leaves ≥ 16 pixels after Hp·Wp for the last block's overrun (below).
//   kernel:  block b (32 outputs), tap t, chunk c: 32 rows (outputs) × 32 input channels, 2 KB = 2 A tiles.
//   output:  block of 16 pixels: output row oh, columns ow0 ... ow0 + 15, read from padded flat pixel
//            oh·Wp + ow0 + (i·d·Wp + j·d) for tap (i, j). Past Wo the pixels wrap into the next padded row: those
//            columns are computed and thrown away.
//
// A microtile is 32 outputs × 2 blocks, tmm0-3 accumulators (tmm0: outputs 0-15 × block 0, tmm1: 0-15 × block 1,
// tmm2: 16-31 × block 0, tmm3: 16-31 × block 1), tmm4-5 the two A tiles, tmm6-7 the two B tiles.
//
// Rounding and order: operands round to nearest even as the GEMM's packing does; each output is one thread's
// tile, summed over taps then chunks in the same order on every call, so results do not depend on the thread count
// (they differ from the im2col GEMM's, whose k order is channel-major).
#include "ocr_bf16.h"
#include "ocr_bf16_avx512_common.h"
#include "ocr_bf16_kernel.h"

#include <immintrin.h>
#include <string.h>

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

enum { CHUNK_CHANNELS = 32, PAIRS = 16, BLOCK_PIXELS = 16, BLOCK_OUTPUTS = 32, MAX_TAPS = 64 };

static long min_long(long a, long b) { return a < b ? a : b; }
static long round_up(long x, long unit) { return (x + unit - 1) / unit * unit; }

typedef struct {
    long chunks;                  // input channels / 32, rounded up
    long out_h, out_w, padded_w;  // output extent; padded image width (Wp)
    long plane;                   // pixels per channel-pair plane
    long taps, blocks_per_row, blocks, output_blocks;
    long tap_shift[MAX_TAPS];     // padded flat pixel offset of tap (i, j): i·d·Wp + j·d
} conv_layout;

static int layout_of(long out_channels, const ocr_bf16_conv_geometry *g, conv_layout *l) {
    const long padded_h = g->height + 2 * g->padding;
    l->padded_w = g->width + 2 * g->padding;
    l->out_h = padded_h - g->dilation * (g->kernel_h - 1);
    l->out_w = l->padded_w - g->dilation * (g->kernel_w - 1);
    l->taps = g->kernel_h * g->kernel_w;
    if (g->stride != 1 || l->out_h <= 0 || l->out_w <= 0 || l->taps > MAX_TAPS || g->channels <= 0 ||
        out_channels <= 0)
        return 0;
    l->chunks = (g->channels + CHUNK_CHANNELS - 1) / CHUNK_CHANNELS;
    // A whole number of cache lines, and an odd one: the 16 rows of a B tile, one per plane, then fall in different
    // L1 sets (a plane of 32 × 32 pixels, 4 KB, would put them all in one).
    l->plane = round_up(padded_h * l->padded_w + BLOCK_PIXELS, 16);
    if (l->plane / 16 % 2 == 0) l->plane += 16;
    l->blocks_per_row = (l->out_w + BLOCK_PIXELS - 1) / BLOCK_PIXELS;
    l->blocks = l->out_h * l->blocks_per_row;
    l->output_blocks = (out_channels + BLOCK_OUTPUTS - 1) / BLOCK_OUTPUTS;
    for (long i = 0; i < g->kernel_h; ++i)
        for (long j = 0; j < g->kernel_w; ++j)
            l->tap_shift[i * g->kernel_w + j] = i * g->dilation * l->padded_w + j * g->dilation;
    return 1;
}

int ocr_bf16_conv_available(long out_channels, const ocr_bf16_conv_geometry *g) {
    conv_layout l;
    return ocr_bf16_active_kernel() == &ocr_bf16_kernel_amx && layout_of(out_channels, g, &l);
}

size_t ocr_bf16_conv_packed_kernel_size(long out_channels, const ocr_bf16_conv_geometry *g) {
    conv_layout l;
    if (!layout_of(out_channels, g, &l)) return 0;
    return (size_t)l.output_blocks * l.taps * l.chunks * BLOCK_OUTPUTS * CHUNK_CHANNELS * sizeof(uint16_t);
}

size_t ocr_bf16_conv_planes_size(long out_channels, const ocr_bf16_conv_geometry *g) {
    conv_layout l;
    if (!layout_of(out_channels, g, &l)) return 0;
    return (size_t)l.chunks * PAIRS * l.plane * 2 * sizeof(uint16_t);
}

// ---------------------------------------------------------------- the kernel's A tiles

typedef struct {
    const ocr_bf16_conv_geometry *g;
    const conv_layout *l;
    long out_channels;
    int flipped;
    const float *w;
    uint16_t *packed;
} pack_kernel_job;

// Output blocks [index·n/count, ...): per chunk, row r (output o = 32b + r) and tap, the 32 input channels of the
// kernel entry, gathered (zero past C and past O). Kernel entry (o, c, tap t) is w[(o·C + c)·T + t] as stored, or,
// flipped, w[(c·O + o)·T + T − 1 − t]: the channels are then O·T floats apart instead of T.
static AMX void pack_kernel_part(void *ctx, int index, int count) {
    const pack_kernel_job *job = ctx;
    const conv_layout *l = job->l;
    const long channels = job->g->channels, taps = l->taps, tap_block = l->chunks * BLOCK_OUTPUTS * CHUNK_CHANNELS;
    const long channel_stride = job->flipped ? job->out_channels * taps : taps;
    const __m512i lane_offsets = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1,
                                                                     0), _mm512_set1_epi32((int)channel_stride));
    for (long b = l->output_blocks * index / count; b < l->output_blocks * (index + 1) / count; ++b) {
        for (long c = 0; c < l->chunks; ++c) {
            const long c0 = c * CHUNK_CHANNELS;
            const __mmask16 low_lanes = first_lanes(channels - c0), high_lanes = first_lanes(channels - c0 - 16);
            uint16_t *out = job->packed + (b * taps * l->chunks + c) * BLOCK_OUTPUTS * CHUNK_CHANNELS;
            for (long r = 0; r < BLOCK_OUTPUTS; ++r, out += CHUNK_CHANNELS) {
                const long o = b * BLOCK_OUTPUTS + r;
                const float *entry = job->flipped ? job->w + (c0 * job->out_channels + o) * taps + taps - 1
                                                  : job->w + (o * channels + c0) * taps;
                const long tap_step = job->flipped ? -1 : 1;
                for (long t = 0; t < taps; ++t, entry += tap_step) {
                    __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
                    if (o < job->out_channels) {
                        low = _mm512_mask_i32gather_ps(low, low_lanes, lane_offsets, entry, 4);
                        high = _mm512_mask_i32gather_ps(high, high_lanes, lane_offsets, entry + 16 * channel_stride,
                                                        4);
                    }
                    _mm512_storeu_si512(out + t * tap_block, (__m512i)_mm512_cvtne2ps_pbh(high, low));
                }
            }
        }
    }
}

void ocr_bf16_conv_pack_kernel(long out_channels, const ocr_bf16_conv_geometry *g, const float *w, int flipped,
                               void *packed) {
    conv_layout l;
    if (!layout_of(out_channels, g, &l)) return;
    pack_kernel_job job = {g, &l, out_channels, flipped != 0, w, packed};
    ocr_bf16_run_parallel(pack_kernel_part, &job, (int)min_long(ocr_bf16_get_threads(), l.output_blocks));
}

// ---------------------------------------------------------------- the image's channel-pair planes

typedef struct {
    const ocr_bf16_conv_geometry *g;
    const conv_layout *l;
    const float *image;
    uint32_t *planes;  // one 32-bit word per pixel: the pair (channel 2q, 2q + 1)
} fill_planes_job;

static AMX void fill_planes_part(void *ctx, int index, int count) {
    const fill_planes_job *job = ctx;
    const ocr_bf16_conv_geometry *g = job->g;
    const long planes = job->l->chunks * PAIRS, wp = job->l->padded_w, p = g->padding, image_plane = g->height * g->width;
    for (long q = planes * index / count; q < planes * (index + 1) / count; ++q) {
        uint32_t *plane = job->planes + q * job->l->plane;
        if (2 * q >= g->channels) {
            memset(plane, 0, (size_t)job->l->plane * 4);
            continue;
        }
        const float *even = job->image + 2 * q * image_plane;
        const float *odd = 2 * q + 1 < g->channels ? even + image_plane : NULL;
        memset(plane, 0, (size_t)(p * wp) * 4);
        for (long h = 0; h < g->height; ++h) {
            uint32_t *row = plane + (h + p) * wp;
            memset(row, 0, (size_t)p * 4);
            for (long w = 0; w < g->width; w += 16) {
                const __mmask16 valid = first_lanes(g->width - w);
                const __m512 e = _mm512_maskz_loadu_ps(valid, even + h * g->width + w);
                const __m512 o = odd ? _mm512_maskz_loadu_ps(valid, odd + h * g->width + w) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(row + p + w, valid, interleave_pair(e, o));
            }
            memset(row + p + g->width, 0, (size_t)(wp - p - g->width) * 4);
        }
        const long filled = (g->height + p) * wp;
        memset(plane + filled, 0, (size_t)(job->l->plane - filled) * 4);
    }
}

// ---------------------------------------------------------------- tiles

typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

// Palette 1, tmm0-7 all 16 rows × 64 bytes.
static const tile_config config = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16},
};

typedef struct {
    const conv_layout *l;
    long out_channels;
    const uint16_t *packed;
    const uint32_t *planes;
    float *y;
} conv_job;

// Output pixel index of block `block` (row-major over output rows × blocks per row) and its valid columns.
static long block_pixel(const conv_layout *l, long block, long *columns) {
    const long oh = block / l->blocks_per_row, ow0 = block % l->blocks_per_row * BLOCK_PIXELS;
    *columns = min_long(BLOCK_PIXELS, l->out_w - ow0);
    return oh * l->out_w + ow0;
}

static long block_flat(const conv_layout *l, long block) {
    return block / l->blocks_per_row * l->padded_w + block % l->blocks_per_row * BLOCK_PIXELS;
}

// Tile `tile` holds outputs [o0, o0 + 16) × the 16 pixels of `block`: stored into y (O × Ho·Wo) directly when all of
// them exist, else through a scratch tile.
#define STORE_OUTPUT(tile, o0, block)                                                                              \
    do {                                                                                                           \
        long columns_, pixel_ = block_pixel(l, (block), &columns_);                                                \
        const long rows_ = min_long(16, job->out_channels - (o0));                                                \
        if (rows_ <= 0) break;                                                                                     \
        float *dst_ = job->y + (o0) * pixels + pixel_;                                                             \
        if (rows_ == 16 && columns_ == 16) {                                                                       \
            _tile_stored(tile, dst_, pixels * 4);                                                                  \
        } else {                                                                                                   \
            _tile_stored(tile, scratch, 64);                                                                       \
            for (long r_ = 0; r_ < rows_; ++r_) memcpy(dst_ + r_ * pixels, scratch + r_ * 16, columns_ * 4);       \
        }                                                                                                          \
    } while (0)

// 32 outputs of output block b × blocks first and second (second == first when there is no second: computed twice,
// stored once).
static AMX void microtile(const conv_job *job, long b, long first, long second) {
    const conv_layout *l = job->l;
    const long pixels = l->out_h * l->out_w, plane_bytes = l->plane * 4;
    const uint16_t *a = job->packed + b * l->taps * l->chunks * BLOCK_OUTPUTS * CHUNK_CHANNELS;
    const uint32_t *b0 = job->planes + block_flat(l, first), *b1 = job->planes + block_flat(l, second);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (long t = 0; t < l->taps; ++t) {
        const long shift = l->tap_shift[t];
        for (long c = 0; c < l->chunks; ++c, a += BLOCK_OUTPUTS * CHUNK_CHANNELS) {
            const long offset = c * PAIRS * l->plane + shift;
            _tile_loadd(4, a, 64);
            _tile_loadd(6, b0 + offset, plane_bytes);
            _tile_loadd(7, b1 + offset, plane_bytes);
            _tile_loadd(5, a + 16 * CHUNK_CHANNELS, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    float scratch[16 * 16] __attribute__((aligned(64)));
    const long o0 = b * BLOCK_OUTPUTS;
    STORE_OUTPUT(0, o0, first);
    STORE_OUTPUT(2, o0 + 16, first);
    if (second != first) {
        STORE_OUTPUT(1, o0, second);
        STORE_OUTPUT(3, o0 + 16, second);
    }
}

// Pairs of pixel blocks handled for all output blocks before moving on: 8 pairs = 256 pixels, whose planes (3 padded
// rows and the dilation's halo per output row) stay in L2 while every output block's kernel streams past them.
static const long pairs_per_group = 8;

static AMX void conv_part(void *ctx, int index, int count) {
    const conv_job *job = ctx;
    const conv_layout *l = job->l;
    const long pairs = (l->blocks + 1) / 2;
    const long u0 = pairs * index / count, u1 = pairs * (index + 1) / count;
    _tile_loadconfig(&config);
    for (long g0 = u0; g0 < u1; g0 += pairs_per_group) {
        const long g1 = min_long(g0 + pairs_per_group, u1);
        for (long b = 0; b < l->output_blocks; ++b)
            for (long u = g0; u < g1; ++u) microtile(job, b, 2 * u, min_long(2 * u + 1, l->blocks - 1));
    }
    _tile_release();
}

void ocr_bf16_conv(long out_channels, const void *packed_kernel, const ocr_bf16_conv_geometry *g, const float *image,
                   void *planes, float *y) {
    conv_layout l;
    if (!layout_of(out_channels, g, &l)) return;
    const int threads = ocr_bf16_get_threads();
    fill_planes_job fill = {g, &l, image, planes};
    ocr_bf16_run_parallel(fill_planes_part, &fill, (int)min_long(threads, l.chunks * PAIRS));
    conv_job job = {&l, out_channels, packed_kernel, planes, y};
    ocr_bf16_run_parallel(conv_part, &job, (int)min_long(threads, (l.blocks + 1) / 2));
}
