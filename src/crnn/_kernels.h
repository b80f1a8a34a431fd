/* The point-wise cell kernels, in C so that every pointer can be `restrict`
 * and the compiler vectorises each row's loop (Cython has no `restrict`).
 *
 * _kernels_impl.h holds one generic body; it is instantiated here for
 * float (suffix f32: the vectorisable rational tanh of _fastmath.h) and
 * double (suffix f64: libm, exact to the last bit).  _cells.pyx dispatches to
 * these by dtype and documents the math and the buffer shapes.
 *
 * The float kernels are also compiled for AVX2 and AVX-512 where the
 * compiler allows (CRNN_WIDE_CLONES, _compiler.h).
 */
#ifndef CRNN_KERNELS_H
#define CRNN_KERNELS_H

#include <math.h>
#include <stddef.h>

#include "_compiler.h"
#include "_fastmath.h"

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
