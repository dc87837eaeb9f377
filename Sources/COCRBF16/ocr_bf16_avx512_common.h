// AVX-512 helpers both x86 kernels (AVX512-BF16 and AMX-BF16) pack with. Their target attribute is the common
// subset, so they inline into either kernel's functions; like those, they run only after the driver's CPUID check.
#ifndef OCR_BF16_AVX512_COMMON_H
#define OCR_BF16_AVX512_COMMON_H

#include <immintrin.h>

#define OCR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// Mask of the first `count` (clamped to 0...16) lanes.
static inline OCR_AVX512 __mmask16 first_lanes(long count) {
    return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count > 0 ? count : 0)) - 1);
}

// Mask of the first `count` (clamped to 0...32) 16-bit lanes.
static inline OCR_AVX512 __mmask32 first_words(long count) {
    return count >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (count > 0 ? count : 0)) - 1);
}

// In-register transpose of a 16×16 matrix of 32-bit elements (rows[i] lane j  ->  rows[j] lane i): pairs of
// rows interleaved by 32 then 64 bits, then the 128-bit lanes gathered with two rounds of vshufi32x4.
static inline OCR_AVX512 void transpose_16x16(__m512i rows[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    // Now u[4q + j], 128-bit lane l, holds column 4l + j of rows 4q ... 4q + 3.
    for (int j = 0; j < 4; ++j) {
        __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xdd);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
        __m512i w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xdd);
        rows[j] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        rows[4 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        rows[8 + j] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        rows[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

// Pairs (even k, odd k) of 16 lines, rounded to bf16 (VCVTNE2PS2BF16: nearest even): words 2j, 2j+1 of the
// result take lane j of `even` and of `odd`, the pair layout VDPBF16PS and TDPBF16PS read.
static inline OCR_AVX512 __m512i interleave_pair(__m512 even, __m512 odd) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

#endif
