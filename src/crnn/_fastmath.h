/* Branch-free float32 tanh that compilers vectorize (with -fno-trapping-math).
 *
 * tanh(x) ≈ x·P(x²)/Q(x²) on [-7.9053, 7.9053] (beyond, tanh rounds to ±1 in
 * float32), the rational approximation of Eigen's generic_fast_tanh_float;
 * for |x| < 4e-4, tanh(x) = x to float precision.  Maximum error measured
 * against double-precision tanh over [-20, 20] in steps of 1e-5:
 * 3.9e-7 absolute and relative (a few ulp).  Used by the float32 cell
 * kernels only; float64 kernels call libm.
 */
#ifndef CRNN_FASTMATH_H
#define CRNN_FASTMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_compiler.h"

static inline float crnn_tanhf(float x)
{
    const float clamp = 7.90531110763549805f;
    float xc = x < -clamp ? -clamp : (x > clamp ? clamp : x);
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float ax = x < 0 ? -x : x;
    return ax < 0.0004f ? x : p / q;
}

/* σ(x) = ½ + ½·tanh(x/2): the same accuracy (absolute), no exp, no overflow.
 * With u = x/2, ½·tanh(u) = ½·u·P(u²)/Q(u²) = x·P'(x²)/Q'(x²), where
 * p'_i = p_i / 4^(i+1) and q'_i = q_i / 4^i scale crnn_tanhf's coefficients
 * by powers of two.  Such scaling is exact in floating point, so every step
 * rounds as crnn_tanhf(x/2)'s does and σ comes out the same, in 4 fewer
 * operations: no halving of x, no final ½·t, and no tiny-|u| case (there
 * tanh(u) = u to float precision, but ½ + ½·u rounds to the same σ). */
static inline float crnn_sigmoidf(float x)
{
    const float clamp = 2 * 7.90531110763549805f;
    float xc = x < -clamp ? -clamp : (x > clamp ? clamp : x);
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f / 16384;
    p = p * x2 + 2.00018790482477e-13f / 4096;
    p = p * x2 + -8.60467152213735e-11f / 1024;
    p = p * x2 + 5.12229709037114e-08f / 256;
    p = p * x2 + 1.48572235717979e-05f / 64;
    p = p * x2 + 6.37261928875436e-04f / 16;
    p = p * x2 + 4.89352455891786e-03f / 4;
    p = p * xc;
    float q = 1.19825839466702e-06f / 64;
    q = q * x2 + 1.18534705686654e-04f / 16;
    q = q * x2 + 2.26843463243900e-03f / 4;
    q = q * x2 + 4.89352518554385e-03f;
    return 0.5f + p / q;
}

/* Branch-free float32 exp that compilers vectorize: exp(x) = 2^n · e^r,
 * n = round(x / ln 2), r = x - n·ln 2 (ln 2 in two parts), e^r by Cephes'
 * degree-6 polynomial (expf.c), 2^n built in the exponent bits.  x is
 * clamped to [-87.3, 88.0], where 2^n stays a normal float; below -87.3
 * the result is 0 (float32's smallest normal is e^-87.34).  Maximum error
 * measured against double-precision exp over [-87, 88] in steps of 1e-4:
 * 1.0 ulp (tests/test_loss.py allows 2).  Every build vectorises it:
 * x86-64 baseline (SSE2), v3 (AVX2) and v4 (AVX-512).
 */
static inline float crnn_expf(float x)
{
    const float lowest = -87.3365f, highest = 88.0f;
    float xc = x < lowest ? lowest : (x > highest ? highest : x);
    /* n = round(x / ln 2) by adding 1.5·2^23: the sum's low mantissa bits
     * hold n (|n| <= 127); -ffast-math would fold (s + magic) - magic, and
     * crnn is not built with it.  GCC (12) does not vectorise this loop for
     * AVX when n comes from a float-to-int conversion of the clamped x. */
    const float magic = 12582912.0f;
    float shifted = xc * 1.44269504088896341f + magic;
    float fn = shifted - magic;
    int32_t n;
    memcpy(&n, &shifted, sizeof n);
    n -= 0x4B400000;    /* the bits of 1.5·2^23 */
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lowest ? 0.0f : p * scale;
}

/* o[k] := exp(o[k] - shift), k < n: softmax's exponentials (_loss.pyx). */
static CRNN_WIDE_CLONES CRNN_MAYBE_UNUSED void crnn_exp_shifted_f32(
    ptrdiff_t n, float *CRNN_RESTRICT o, float shift)
{
    for (ptrdiff_t k = 0; k < n; k++)
        o[k] = crnn_expf(o[k] - shift);
}

#endif
