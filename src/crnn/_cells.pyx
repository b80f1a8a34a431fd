"""Point-wise cell kernels: the part of a time step that is not a GEMM.

The driver (_sequence.pyx) computes, for the live rows of step t,

    gates = x(t)·Uᵀ + b  [+ h(t-1)·Wᵀ unless separate_recurrent(kind)]
    recurrent = h(t-1)·Wᵀ                      (only if separate_recurrent)

and then calls ``cell_forward`` once; in BPTT it calls ``cell_backward`` once
and then forms dh(t-1) = drecurrent·W (plus the direct part the kernel left
in dh).  Buffers are row-major with these shapes (G = gate_blocks(kind)):

    gates, dgates, recurrent, drecurrent   rows × G·H
    h, h_prev, c, c_prev, keep, dh, dc     rows × H

Arguments a cell does not use may be NULL.  ``recurrent_bias`` (H,) is
added to the last gate block of the recurrent product (GRU's b_hn).

Both kernels cover the units [first, first + count) of every row: the
driver's thread team gives each thread its own units of a step (first = 0,
count = hidden is the whole step).
"""
import numpy as np

cdef extern from "_kernels.h" nogil:
    # The kernels themselves, in C (restrict pointers, vectorised): one
    # generic body in _kernels_impl.h, for float (_f32) and double (_f64).
    void crnn_rnn_forward_f32(int relu, int rows, int hidden, int first, int count,
                              const float *z, float *h)
    void crnn_rnn_forward_f64(int relu, int rows, int hidden, int first, int count,
                              const double *z, double *h)
    void crnn_rnn_backward_f32(int relu, int rows, int hidden, int first, int count,
                               const float *h,
                               const float *dh_out, const float *dh, float *dz)
    void crnn_rnn_backward_f64(int relu, int rows, int hidden, int first, int count,
                               const double *h,
                               const double *dh_out, const double *dh, double *dz)
    void crnn_lstm_forward_f32(int rows, int hidden, int first, int count, float *gates,
                               const float *c_prev, float *h, float *c)
    void crnn_lstm_forward_f64(int rows, int hidden, int first, int count, double *gates,
                               const double *c_prev, double *h, double *c)
    void crnn_lstm_backward_f32(int rows, int hidden, int first, int count,
                                const float *gates,
                                const float *c_prev, const float *c,
                                const float *dh_out, const float *dh,
                                float *dc, float *dgates)
    void crnn_lstm_backward_f64(int rows, int hidden, int first, int count,
                                const double *gates,
                                const double *c_prev, const double *c,
                                const double *dh_out, const double *dh,
                                double *dc, double *dgates)
    void crnn_gru_forward_f32(int rows, int hidden, int first, int count, float *gates,
                              const float *recurrent, const float *recurrent_bias,
                              const float *h_prev, float *h, float *keep)
    void crnn_gru_forward_f64(int rows, int hidden, int first, int count, double *gates,
                              const double *recurrent, const double *recurrent_bias,
                              const double *h_prev, double *h, double *keep)
    void crnn_gru_backward_f32(int rows, int hidden, int first, int count,
                               const float *gates,
                               const float *h_prev, const float *keep,
                               const float *dh_out, float *dh, float *dgates,
                               float *drecurrent)
    void crnn_gru_backward_f64(int rows, int hidden, int first, int count,
                               const double *gates,
                               const double *h_prev, const double *keep,
                               const double *dh_out, double *dh, double *dgates,
                               double *drecurrent)



cdef int gate_blocks(int kind) noexcept nogil:
    if kind == CELL_LSTM:
        return 4
    if kind == CELL_GRU:
        return 3
    return 1


cdef bint has_cell_state(int kind) noexcept nogil:
    return kind == CELL_LSTM


cdef bint separate_recurrent(int kind) noexcept nogil:
    return kind == CELL_GRU


# The math of each kernel (implemented in _kernels_impl.h):
#
# RNN   z = x·Uᵀ + h_prev·Wᵀ + b (in gates);  h = tanh(z) or relu(z)
#       BPTT: δ = dh (carried: Wᵀ g(t+1)) + dh_from_outputs;
#       g = (1 - h²) ⊙ δ (tanh) or [h > 0] ⊙ δ (relu)
#
# LSTM  gate blocks i, f, a, o (PyTorch's i, f, g, o), z = x·Uᵀ + h_prev·Wᵀ + b:
#       i = σ(z_i)  f = σ(z_f)  a = tanh(z_a)  o = σ(z_o)
#       C = f ⊙ C_prev + i ⊙ a      h = o ⊙ tanh(C)
#       the activations overwrite z (BPTT needs i, f, a, o, C; tanh(C) is
#       recomputed).  BPTT, with dh = carried + from outputs, tc = tanh(C):
#       dC = dh ⊙ o ⊙ (1 - tc²) + dC(t+1) ⊙ f(t+1)   (dc holds the second term)
#       dz_o = dh ⊙ tc ⊙ o(1-o)     dz_i = dC ⊙ a ⊙ i(1-i)
#       dz_f = dC ⊙ C_prev ⊙ f(1-f)  dz_a = dC ⊙ i ⊙ (1-a²)
#       carried to t-1: dc = dC ⊙ f
#
# GRU   PyTorch's GRU, blocks r, z, n; gates hold the input side x·Uᵀ + b,
#       R = h_prev·Wᵀ is separate because n multiplies it by r:
#       r = σ(gx_r + R_r)   z = σ(gx_z + R_z)   hn = R_n + b_hn
#       n = tanh(gx_n + r ⊙ hn)      h = (1 - z) ⊙ n + z ⊙ h_prev
#       gates keep r, z, n; keep holds hn.  BPTT:
#       d(pre n) = dh ⊙ (1-z) ⊙ (1-n²)   d(pre z) = dh ⊙ (h_prev - n) ⊙ z(1-z)
#       d(hn) = d(pre n) ⊙ r            d(pre r) = d(pre n) ⊙ hn ⊙ r(1-r)
#       input side (d pre r, d pre z, d pre n); recurrent side (d pre r,
#       d pre z, d hn); the direct part of dh(t-1), dh ⊙ z, is left in dh.
#
# float32 uses the vectorisable rational tanh of _fastmath.h (a few ulp) and
# σ(x) = ½ + ½·tanh(x/2) (the same rational function, rescaled); float64
# uses libm's tanh and exp.


cdef void cell_forward(int kind, int rows, int hidden, int first, int count,
                       floating *gates,              # IN pre-activations; OUT what BPTT needs
                       const floating *recurrent,    # IN h_prev·Wᵀ (separate_recurrent only)
                       const floating *recurrent_bias,  # IN (H,) GRU's b_hn
                       const floating *h_prev,       # IN
                       const floating *c_prev,       # IN (LSTM)
                       floating *h,                  # OUT h(t)
                       floating *c,                  # OUT C(t) (LSTM)
                       floating *keep) noexcept nogil:  # OUT extra values BPTT needs
    if kind == CELL_RNN_TANH or kind == CELL_RNN_RELU:
        if floating is float:
            crnn_rnn_forward_f32(kind == CELL_RNN_RELU, rows, hidden, first, count,
                                 gates, h)
        else:
            crnn_rnn_forward_f64(kind == CELL_RNN_RELU, rows, hidden, first, count,
                                 gates, h)
    elif kind == CELL_LSTM:
        if floating is float:
            crnn_lstm_forward_f32(rows, hidden, first, count, gates, c_prev, h, c)
        else:
            crnn_lstm_forward_f64(rows, hidden, first, count, gates, c_prev, h, c)
    elif kind == CELL_GRU:
        if floating is float:
            crnn_gru_forward_f32(rows, hidden, first, count,
                                 gates, recurrent, recurrent_bias,
                                 h_prev, h, keep)
        else:
            crnn_gru_forward_f64(rows, hidden, first, count,
                                 gates, recurrent, recurrent_bias,
                                 h_prev, h, keep)


cdef void cell_backward(int kind, int rows, int hidden, int first, int count,
                        const floating *gates,       # IN as left by cell_forward
                        const floating *h,           # IN h(t)
                        const floating *h_prev,      # IN h(t-1)
                        const floating *c_prev,      # IN C(t-1) (LSTM)
                        const floating *c,           # IN C(t) (LSTM)
                        const floating *keep,        # IN as left by cell_forward
                        const floating *dh_from_outputs,  # IN ∂L/∂h(t) from outputs/layer above, or NULL
                        floating *dh,                # IN ∂L/∂h(t) carried from t+1; OUT direct part of ∂L/∂h(t-1)
                        floating *dc,                # IN ∂L/∂C(t) carried; OUT carried to t-1 (LSTM)
                        floating *dgates,            # OUT ∂L/∂(input-side pre-activations)
                        floating *drecurrent) noexcept nogil:  # OUT ∂L/∂(h_prev·Wᵀ) (separate_recurrent only)
    if kind == CELL_RNN_TANH or kind == CELL_RNN_RELU:
        if floating is float:
            crnn_rnn_backward_f32(kind == CELL_RNN_RELU, rows, hidden, first, count, h,
                                  dh_from_outputs, dh, dgates)
        else:
            crnn_rnn_backward_f64(kind == CELL_RNN_RELU, rows, hidden, first, count, h,
                                  dh_from_outputs, dh, dgates)
    elif kind == CELL_LSTM:
        if floating is float:
            crnn_lstm_backward_f32(rows, hidden, first, count, gates, c_prev, c,
                                   dh_from_outputs, dh, dc, dgates)
        else:
            crnn_lstm_backward_f64(rows, hidden, first, count, gates, c_prev, c,
                                   dh_from_outputs, dh, dc, dgates)
    elif kind == CELL_GRU:
        if floating is float:
            crnn_gru_backward_f32(rows, hidden, first, count, gates, h_prev, keep,
                                  dh_from_outputs, dh, dgates, drecurrent)
        else:
            crnn_gru_backward_f64(rows, hidden, first, count, gates, h_prev, keep,
                                  dh_from_outputs, dh, dgates, drecurrent)


# ------------------------------------------------- for the tests only

def _float32_activations(float[::1] x):
    """(σ(x), tanh(x)) as the float32 LSTM kernel computes them: one row of
    len(x) units, z_i = z_a = x, whose i and a blocks come back as σ and tanh."""
    cdef Py_ssize_t n = x.shape[0], j
    if not 0 < n < 2 ** 28:
        raise ValueError(f"x must hold 1 to 2**28 - 1 values, got {n}")
    gates = np.zeros(4 * n, np.float32)
    c_prev = np.zeros(n, np.float32)
    h = np.empty(n, np.float32)
    c = np.empty(n, np.float32)
    cdef float[::1] g = gates
    for j in range(n):
        g[j] = x[j]
        g[2 * n + j] = x[j]
    cdef float[::1] cp = c_prev, hv = h, cv = c
    crnn_lstm_forward_f32(1, <int> n, 0, <int> n, &g[0], &cp[0], &hv[0], &cv[0])
    return gates[:n].copy(), gates[2 * n:3 * n].copy()
