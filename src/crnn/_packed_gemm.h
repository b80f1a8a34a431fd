/* The recurrent product's own GEMM: C (m × n) (+)= A (m × k) · B with B
 * packed once per call into column panels, then reused at every time step.
 *
 * Why: each step of a recurrent layer multiplies a few rows of h (the live
 * batch, m = B_t) by the same recurrent weight (H × G·H).  A BLAS GEMM packs
 * both operands at every call; with m that small, repacking the whole weight
 * (4 MB at H = 512) costs as much as the multiply (OpenBLAS's sgemm spends
 * 42 % of an LSTM step at (B, H) = (16, 512) in its copy routines).  Packed
 * once per sequence, the weight is streamed straight from its panels.
 *
 * Layout of the panels of B (k × n): ceil(n / NR) panels of NR columns, each
 * k rows of NR contiguous elements (columns past n are zero), NR = 64 bytes
 * of REAL.  The micro-kernel keeps MR × NR of C in registers: per k, one
 * panel row loaded, MR elements of A broadcast, MR vector multiply-adds.
 *
 * _packed_gemm_impl.h holds the generic body, instantiated here for float
 * (suffix f32) and double (f64).  It needs vector types (GCC, Clang):
 * CRNN_PACKED_GEMM_FAST is 0 elsewhere (MSVC), where the body is plain loops,
 * correct but slow, and the driver uses BLAS instead.
 *
 * The lane (_lane.pyx) shares a time step out among the threads of
 * _team.h by hidden units: each thread multiplies its own panels, so the
 * result is the same for any thread count.
 */
#ifndef CRNN_PACKED_GEMM_H
#define CRNN_PACKED_GEMM_H

#include <stddef.h>
#include <string.h>

#include "_compiler.h"

#define CRNN_PACKED_GEMM_FAST CRNN_HAVE_VECTOR_TYPES
#define CRNN_PANEL_BYTES 64
#define CRNN_MR 6

#define REAL float
#define SUFFIX(name) name##_f32
#include "_packed_gemm_impl.h"
#undef REAL
#undef SUFFIX

#define REAL double
#define SUFFIX(name) name##_f64
#include "_packed_gemm_impl.h"
#undef REAL
#undef SUFFIX

#endif
