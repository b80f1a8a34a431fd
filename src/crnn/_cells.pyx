"""Point-wise cell kernels: the part of a time step that is not a GEMM.

The driver (_sequence.pyx) computes, for the live rows of step t,

    gates = x(t)·Uᵀ + b  [+ h(t-1)·Wᵀ unless separate_recurrent(kind)]
    recurrent = h(t-1)·Wᵀ                      (only if separate_recurrent)

and then calls ``cell_forward`` once; in BPTT it calls ``cell_backward`` once
and then forms dh(t-1) = drecurrent·W (plus the direct part the kernel left
in dh).  Buffers are row-major with these shapes (G = gate_blocks(kind)):

    gates, dgates, recurrent, drecurrent   rows × G·H
    h, h_prev, c, c_prev, keep, dh, dc     rows × H

Arguments a cell does not use may be NULL.
"""
from libc.math cimport tanh, tanhf



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


cdef inline floating tanh_(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


# ------------------------------------------------------------------ RNN
# z = x·Uᵀ + h_prev·Wᵀ + b (in gates);  h = tanh(z)  or  relu(z)

cdef void rnn_forward(bint relu, int rows, int hidden, const floating *z,
                      floating *h) noexcept nogil:
    cdef Py_ssize_t i, n = <Py_ssize_t> rows * hidden
    if relu:
        for i in range(n):
            h[i] = z[i] if z[i] > 0 else 0
    else:
        for i in range(n):
            h[i] = tanh_(z[i])


cdef void rnn_backward(bint relu, int rows, int hidden, const floating *h,
                       const floating *dh_from_outputs, const floating *dh,
                       floating *dz) noexcept nogil:
    # δ(t) = dh (carried: Wᵀ g(t+1)) + dh_from_outputs (Vᵀ(ŷ - y) or layer above)
    # g(t) = (1 - h²) ⊙ δ(t)   (tanh)      g(t) = [z > 0] ⊙ δ(t) = [h > 0] ⊙ δ(t)
    cdef Py_ssize_t i, n = <Py_ssize_t> rows * hidden
    cdef floating delta
    for i in range(n):
        delta = dh[i]
        if dh_from_outputs != NULL:
            delta = delta + dh_from_outputs[i]
        if relu:
            dz[i] = delta if h[i] > 0 else 0
        else:
            dz[i] = delta * (1 - h[i] * h[i])


# ------------------------------------------------------------ dispatch

cdef void cell_forward(int kind, int rows, int hidden,
                       floating *gates,              # IN pre-activations; OUT what BPTT needs
                       const floating *recurrent,    # IN h_prev·Wᵀ (separate_recurrent only)
                       const floating *recurrent_bias,  # IN (H,) GRU's b_hn
                       const floating *h_prev,       # IN
                       const floating *c_prev,       # IN (LSTM)
                       floating *h,                  # OUT h(t)
                       floating *c,                  # OUT C(t) (LSTM)
                       floating *keep) noexcept nogil:  # OUT extra values BPTT needs
    if kind == CELL_RNN_TANH or kind == CELL_RNN_RELU:
        rnn_forward(kind == CELL_RNN_RELU, rows, hidden, gates, h)


cdef void cell_backward(int kind, int rows, int hidden,
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
        rnn_backward(kind == CELL_RNN_RELU, rows, hidden, h, dh_from_outputs,
                     dh, dgates)
