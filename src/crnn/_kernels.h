/* The point-wise cell kernels, in C so that every pointer can be `restrict`
 * and the compiler vectorises each row's loop (Cython has no `restrict`).
 *
 * _kernels_impl.h holds one generic body; it is instantiated here for
 * float (suffix f32: the vectorisable rational tanh of _fastmath.h) and
 * double (suffix f64: libm, exact to the last bit).  _cells.pyx dispatches to
 * these by dtype and documents the math and the buffer shapes.
 *
 * On x86-64 Linux with GCC the float kernels are also compiled for AVX2+FMA
 * (x86-64-v3) and AVX-512 (x86-64-v4), chosen at load time by the CPU
 * (target_clones): wheels stay baseline x86-64 yet use the wide units.
 */
#ifndef CRNN_KERNELS_H
#define CRNN_KERNELS_H

#include <math.h>
#include <stddef.h>

#include "_fastmath.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CRNN_WIDE_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CRNN_WIDE_CLONES
#endif

#if defined(_MSC_VER)
#define CRNN_RESTRICT __restrict
#else
#define CRNN_RESTRICT restrict
#endif

static inline double crnn_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

#define REAL float
#define SUFFIX(name) name##_f32
#define TANH crnn_tanhf
#define SIGMOID crnn_sigmoidf
#define CLONES CRNN_WIDE_CLONES
#include "_kernels_impl.h"
#undef REAL
#undef SUFFIX
#undef TANH
#undef SIGMOID
#undef CLONES

#define REAL double
#define SUFFIX(name) name##_f64
#define TANH tanh
#define SIGMOID crnn_sigmoid
#define CLONES
#include "_kernels_impl.h"
#undef REAL
#undef SUFFIX
#undef TANH
#undef SIGMOID
#undef CLONES

#endif
