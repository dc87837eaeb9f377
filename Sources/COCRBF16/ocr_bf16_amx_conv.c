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
#include "ocr_bf16_amx_tiles.h"
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
    _tile_loadconfig(&ocr_bf16_tiles_16x64);
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

// ---------------------------------------------------------------- the weight gradient

// dW (O × C × kh × kw) of one image, k = pixels: dWᵀ[c, o] for tap t = Σ_p x[c, p + shift_t] · dy[o, p], on a grid
// of `grid_w` = Wp rounded up to even columns, so that a row starts on a whole pixel pair. The operands:
//   A (x):  C planes (channels padded to 32) of `x_plane` bf16, padded pixel (h, w) at c·x_plane + h·grid_w + w, zero
//           outside the image; a tile row is 32 consecutive pixels of one channel at any shift (a plain load).
//   B (dy): pixel pairs × outputs (padded to 32) × 2 bf16: pair q (grid pixels 2q, 2q + 1), output o at
//           (q·O32 + o)·2; grid pixel oh·grid_w + ow holds dy[o, oh, ow], zero where ow ≥ Wo and past the last row.
// Each (32-channel block, 32-output block, tap) is one thread's 2 × 2 tiles over every pixel chunk, stored once.
typedef struct {
    long chunks, outputs32, out_h, out_w, grid_w, x_plane, pixel_chunks, taps;
    long tap_shift[MAX_TAPS];
} gradient_layout;

static int gradient_layout_of(long out_channels, const ocr_bf16_conv_geometry *g, gradient_layout *l) {
    conv_layout forward;
    if (!layout_of(out_channels, g, &forward)) return 0;
    l->chunks = forward.chunks;
    l->outputs32 = forward.output_blocks * BLOCK_OUTPUTS;
    l->out_h = forward.out_h;
    l->out_w = forward.out_w;
    l->taps = forward.taps;
    l->grid_w = round_up(forward.padded_w, 2);
    l->pixel_chunks = (l->out_h * l->grid_w + 31) / 32;
    // Reads reach pixel_chunks·32 − 1 + the largest shift; whole cache lines, an odd count (see layout_of).
    const long padded_h = g->height + 2 * g->padding;
    const long largest_shift = (g->kernel_h - 1) * g->dilation * l->grid_w + (g->kernel_w - 1) * g->dilation;
    l->x_plane = round_up(l->pixel_chunks * 32 + largest_shift, 32);
    if (l->x_plane < padded_h * l->grid_w) l->x_plane = round_up(padded_h * l->grid_w, 32);
    if (l->x_plane / 32 % 2 == 0) l->x_plane += 32;
    for (long i = 0; i < g->kernel_h; ++i)
        for (long j = 0; j < g->kernel_w; ++j)
            l->tap_shift[i * g->kernel_w + j] = i * g->dilation * l->grid_w + j * g->dilation;
    return 1;
}

// Pixel chunks (32 pixels each) an item runs before the next item's turn: the x rows (32 channels) and dy pairs (32
// outputs) of 2048 pixels are 128 KB each and stay in L2 across the items of the same channel or output block, where
// a whole image's (R50-D8 layer4 at 512×1024: 557 KB each) would stream from memory once per item. Between blocks an
// item's four accumulator tiles wait in `partial` (exact fp32), so the bits are those of one unbroken pass.
static const long gradient_chunks_per_block = 64;

// The scratch: x planes and dy pairs (bf16 counts), then the items' partial sums (floats; 4 tiles of 256 per item).
static long gradient_x_bf16(const gradient_layout *l) { return l->chunks * CHUNK_CHANNELS * l->x_plane; }
static long gradient_dy_bf16(const gradient_layout *l) { return l->pixel_chunks * 32 * l->outputs32; }
static long gradient_partial_floats(const gradient_layout *l) {
    return l->pixel_chunks > gradient_chunks_per_block ? l->chunks * (l->outputs32 / BLOCK_OUTPUTS) * l->taps * 1024 : 0;
}

size_t ocr_bf16_conv_weight_gradient_scratch_size(long out_channels, const ocr_bf16_conv_geometry *g) {
    gradient_layout l;
    if (!gradient_layout_of(out_channels, g, &l)) return 0;
    return (size_t)(gradient_x_bf16(&l) + gradient_dy_bf16(&l)) * sizeof(uint16_t)
        + (size_t)gradient_partial_floats(&l) * sizeof(float);
}

typedef struct {
    const ocr_bf16_conv_geometry *g;
    const gradient_layout *l;
    long out_channels;
    const float *image, *dy;
    uint16_t *x_planes, *dy_pairs;
    float *partial;  // 4 accumulator tiles per item between pixel blocks
    float *dw;
} gradient_job;

// x planes [index·n/count, ...) of the padded channels.
static AMX void fill_x_planes_part(void *ctx, int index, int count) {
    const gradient_job *job = ctx;
    const ocr_bf16_conv_geometry *g = job->g;
    const gradient_layout *l = job->l;
    const long planes = l->chunks * CHUNK_CHANNELS, p = g->padding, gw = l->grid_w;
    for (long c = planes * index / count; c < planes * (index + 1) / count; ++c) {
        uint16_t *plane = job->x_planes + c * l->x_plane;
        if (c >= g->channels) {
            memset(plane, 0, (size_t)l->x_plane * 2);
            continue;
        }
        const float *src = job->image + c * g->height * g->width;
        memset(plane, 0, (size_t)(p * gw) * 2);
        for (long h = 0; h < g->height; ++h) {
            uint16_t *row = plane + (h + p) * gw;
            memset(row, 0, (size_t)p * 2);
            for (long w = 0; w < g->width; w += 16) {
                const __mmask16 valid = first_lanes(g->width - w);
                const __m256i bits = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(valid, src + h * g->width + w));
                _mm256_mask_storeu_epi16(row + p + w, valid, bits);
            }
            memset(row + p + g->width, 0, (size_t)(gw - p - g->width) * 2);
        }
        const long filled = (g->height + p) * gw;
        memset(plane + filled, 0, (size_t)(l->x_plane - filled) * 2);
    }
}

// Word (bf16 pair) of output group `group` (16 outputs) and pixel pair q: each 16 pairs × 16 outputs, one B tile,
// are 1 KB together.
static long dy_pair_word(const gradient_layout *l, long group, long q) {
    return ((group * l->pixel_chunks + q / 16) * 16 + q % 16) * 16;
}

// dy pairs for output groups of 16 [index·n/count, ...): per output row and 32 grid columns, 16 outputs' 16 pairs
// each (one zmm per output), transposed into 16 pairs' 16 outputs (the B tile rows).
static AMX void fill_dy_pairs_part(void *ctx, int index, int count) {
    const gradient_job *job = ctx;
    const gradient_layout *l = job->l;
    const long groups = l->outputs32 / 16, pixels = l->out_h * l->out_w, gw = l->grid_w;
    uint32_t *pairs = (uint32_t *)job->dy_pairs;  // pair q, output o at q·O32 + o
    for (long group = groups * index / count; group < groups * (index + 1) / count; ++group) {
        const long o0 = group * 16;
        for (long oh = 0; oh < l->out_h; ++oh) {
            for (long w0 = 0; w0 < gw; w0 += 32) {
                __m512i rows[16];
                for (long r = 0; r < 16; ++r) {
                    const long o = o0 + r;
                    if (o >= job->out_channels) {
                        rows[r] = _mm512_setzero_si512();
                        continue;
                    }
                    const float *src = job->dy + o * pixels + oh * l->out_w + w0;
                    const __m512 even_half = _mm512_maskz_loadu_ps(first_lanes(l->out_w - w0), src);
                    const __m512 odd_half = _mm512_maskz_loadu_ps(first_lanes(l->out_w - w0 - 16), src + 16);
                    rows[r] = (__m512i)_mm512_cvtne2ps_pbh(odd_half, even_half);  // 16 pairs of consecutive pixels
                }
                transpose_16x16(rows);
                const long first_pair = (oh * gw + w0) / 2, pairs_here = min_long(16, (gw - w0) / 2);
                for (long q = 0; q < pairs_here; ++q)
                    _mm512_storeu_si512(pairs + dy_pair_word(l, group, first_pair + q), rows[q]);
            }
        }
        // Pairs past the last output row, up to whole pixel chunks.
        for (long q = l->out_h * gw / 2; q < l->pixel_chunks * 16; ++q)
            _mm512_storeu_si512(pairs + dy_pair_word(l, group, q), _mm512_setzero_si512());
    }
}

// dW[o, c, tap] for tile `tile` = channels [c0, c0 + 16) × outputs [o0, o0 + 16), through a scratch tile.
#define STORE_GRADIENT(tile, c0, o0)                                                                               \
    do {                                                                                                           \
        _tile_stored(tile, scratch, 64);                                                                           \
        for (long c_ = c0; c_ < min_long((c0) + 16, channels); ++c_)                                               \
            for (long o_ = o0; o_ < min_long((o0) + 16, job->out_channels); ++o_)                                  \
                job->dw[(o_ * channels + c_) * l->taps + t] = scratch[(c_ - (c0)) * 16 + o_ - (o0)];               \
    } while (0)

static AMX void gradient_part(void *ctx, int index, int count) {
    const gradient_job *job = ctx;
    const gradient_layout *l = job->l;
    const long channels = job->g->channels, output_blocks = l->outputs32 / BLOCK_OUTPUTS;
    const long items = l->chunks * output_blocks * l->taps;
    const long first = items * index / count, last = items * (index + 1) / count;
    float scratch[16 * 16] __attribute__((aligned(64)));
    _tile_loadconfig(&ocr_bf16_tiles_16x64);
    for (long k0 = 0; k0 < l->pixel_chunks; k0 += gradient_chunks_per_block) {
        const long k1 = min_long(k0 + gradient_chunks_per_block, l->pixel_chunks);
        for (long item = first; item < last; ++item) {
            const long t = item % l->taps, ob = item / l->taps % output_blocks, cb = item / l->taps / output_blocks;
            const uint16_t *a = job->x_planes + cb * CHUNK_CHANNELS * l->x_plane + l->tap_shift[t] + k0 * 32;
            const uint16_t *b0 = job->dy_pairs + 2 * dy_pair_word(l, 2 * ob, k0 * 16);
            const uint16_t *b1 = job->dy_pairs + 2 * dy_pair_word(l, 2 * ob + 1, k0 * 16);
            float *partial = job->partial + item * 4 * 256;
            if (k0 == 0) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            } else {
                _tile_loadd(0, partial, 64);
                _tile_loadd(1, partial + 256, 64);
                _tile_loadd(2, partial + 512, 64);
                _tile_loadd(3, partial + 768, 64);
            }
            for (long k = k0; k < k1; ++k, a += 32, b0 += 512, b1 += 512) {
                _tile_loadd(4, a, l->x_plane * 2);
                _tile_loadd(6, b0, 64);
                _tile_loadd(7, b1, 64);
                _tile_loadd(5, a + 16 * l->x_plane, l->x_plane * 2);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            if (k1 < l->pixel_chunks) {
                _tile_stored(0, partial, 64);
                _tile_stored(1, partial + 256, 64);
                _tile_stored(2, partial + 512, 64);
                _tile_stored(3, partial + 768, 64);
                continue;
            }
            const long c0 = cb * CHUNK_CHANNELS, o0 = ob * BLOCK_OUTPUTS;
            STORE_GRADIENT(0, c0, o0);
            STORE_GRADIENT(1, c0, o0 + 16);
            STORE_GRADIENT(2, c0 + 16, o0);
            STORE_GRADIENT(3, c0 + 16, o0 + 16);
        }
    }
    _tile_release();
}

void ocr_bf16_conv_weight_gradient(long out_channels, const ocr_bf16_conv_geometry *g, const float *image,
                                   const float *dy, void *scratch, float *dw) {
    gradient_layout l;
    if (!gradient_layout_of(out_channels, g, &l)) return;
    const int threads = ocr_bf16_get_threads();
    uint16_t *x_planes = scratch, *dy_pairs = x_planes + gradient_x_bf16(&l);
    float *partial = (float *)(dy_pairs + gradient_dy_bf16(&l));
    gradient_job job = {g, &l, out_channels, image, dy, x_planes, dy_pairs, partial, dw};
    ocr_bf16_run_parallel(fill_x_planes_part, &job, (int)min_long(threads, l.chunks * CHUNK_CHANNELS));
    ocr_bf16_run_parallel(fill_dy_pairs_part, &job, (int)min_long(threads, l.outputs32 / 16));
    ocr_bf16_run_parallel(gradient_part, &job,
                          (int)min_long(threads, l.chunks * (l.outputs32 / BLOCK_OUTPUTS) * l.taps));
}
