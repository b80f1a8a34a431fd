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
#include "_cell_table.h"

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

/* ------------------------------------------------------------ the table
 * One row per cell, in the order of _cells.pxd's CellKind (the fields are
 * those of crnn_cell_spec, _cell_table.h). */

#define CRNN_KERNELS(name) {name##_f32, name##_f64}

static const crnn_cell_spec crnn_cell_table[] = {
    /* name, G, pair, separate, bias, keeps, gated, peephole blocks,
     * {forward, backward, forward gate, backward gate} */
    {"rnn_tanh", 1, 0, 0, 0, 0, 0, 0,
     {CRNN_KERNELS(crnn_rnn_tanh_forward_cell),
      CRNN_KERNELS(crnn_rnn_tanh_backward_cell)}},
    {"rnn_relu", 1, 0, 0, 0, 0, 0, 0,
     {CRNN_KERNELS(crnn_rnn_relu_forward_cell),
      CRNN_KERNELS(crnn_rnn_relu_backward_cell)}},
    {"lstm", 4, 1, 0, 0, 0, 0, 0,
     {CRNN_KERNELS(crnn_lstm_forward_cell), CRNN_KERNELS(crnn_lstm_backward_cell)}},
    {"gru", 3, 0, 1, 1, 1, 0, 0,
     {CRNN_KERNELS(crnn_gru_forward_cell), CRNN_KERNELS(crnn_gru_backward_cell)}},
    {"gru_reset_before", 3, 0, 0, 0, 1, 1, 0,
     {CRNN_KERNELS(crnn_gru_rb_forward_cell), CRNN_KERNELS(crnn_gru_rb_backward_cell),
      CRNN_KERNELS(crnn_gru_rb_forward_gate_cell),
      CRNN_KERNELS(crnn_gru_rb_backward_gate_cell)}},
    {"lstm_peephole", 4, 1, 0, 0, 0, 0, 3,
     {CRNN_KERNELS(crnn_lstm_peephole_forward_cell),
      CRNN_KERNELS(crnn_lstm_peephole_backward_cell)}},
};

#define CRNN_CELL_COUNT ((int) (sizeof crnn_cell_table / sizeof crnn_cell_table[0]))

#endif
