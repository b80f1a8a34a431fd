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

/* σ(x) = ½ + ½·tanh(x/2): the same accuracy (absolute), no exp, no overflow. */
static inline float crnn_sigmoidf(float x)
{
    return 0.5f + 0.5f * crnn_tanhf(0.5f * x);
}

#endif
