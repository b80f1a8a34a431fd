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
"""
from libc.math cimport exp, tanh


cdef extern from "_fastmath.h" nogil:
    float crnn_tanhf(float x)
    float crnn_sigmoidf(float x)



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
    # float32: a vectorisable rational approximation (_fastmath.h, a few ulp);
    # float64: libm, exact to the last bit for the 1e-10 parity checks.
    if floating is float:
        return crnn_tanhf(v)
    else:
        return tanh(v)


cdef inline floating sigmoid(floating v) noexcept nogil:
    # float32: ½ + ½·tanh(v/2) with the vectorisable tanh (no exp, no overflow).
    # float64: 1 / (1 + e^-v); for v << 0, e^-v overflows to inf and the
    # result is exactly 0, never NaN; for v >> 0 it rounds to 1.
    if floating is float:
        return crnn_sigmoidf(v)
    else:
        return 1 / (1 + exp(-v))


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


# ----------------------------------------------------------------- LSTM
# gates blocks i, f, a, o (PyTorch's i, f, g, o), z = x·Uᵀ + h_prev·Wᵀ + b:
#   i = σ(z_i)  f = σ(z_f)  a = tanh(z_a)  o = σ(z_o)
#   C = f ⊙ C_prev + i ⊙ a      h = o ⊙ tanh(C)
# The activations overwrite z (BPTT needs i, f, a, o, C; tanh(C) is recomputed).

cdef void lstm_forward(int rows, int hidden, floating *gates,
                       const floating *c_prev, floating *h,
                       floating *c) noexcept nogil:
    cdef Py_ssize_t r, j, H = hidden
    cdef floating *g
    cdef floating i, f, a, o, cell
    for r in range(rows):
        g = gates + r * 4 * H
        for j in range(H):
            i = sigmoid(g[j])
            f = sigmoid(g[H + j])
            a = tanh_(g[2 * H + j])
            o = sigmoid(g[3 * H + j])
            cell = f * c_prev[r * H + j] + i * a
            g[j] = i
            g[H + j] = f
            g[2 * H + j] = a
            g[3 * H + j] = o
            c[r * H + j] = cell
            h[r * H + j] = o * tanh_(cell)


cdef void lstm_backward(int rows, int hidden, const floating *gates,
                        const floating *c_prev, const floating *c,
                        const floating *dh_from_outputs, const floating *dh,
                        floating *dc, floating *dgates) noexcept nogil:
    # dh(t) = carried + from outputs;  tc = tanh(C(t))
    # dC(t) = dh ⊙ o ⊙ (1 - tc²) + dC(t+1) ⊙ f(t+1)     (dc holds the second term)
    # dz_o = dh ⊙ tc ⊙ o(1-o)    dz_i = dC ⊙ a ⊙ i(1-i)
    # dz_f = dC ⊙ C(t-1) ⊙ f(1-f)    dz_a = dC ⊙ i ⊙ (1-a²)
    # carried to t-1: dC(t) ⊙ f(t)
    cdef Py_ssize_t r, j, k, H = hidden
    cdef const floating *g
    cdef floating *dg
    cdef floating i, f, a, o, tc, delta, dcell
    for r in range(rows):
        g = gates + r * 4 * H
        dg = dgates + r * 4 * H
        for j in range(H):
            k = r * H + j
            i = g[j]
            f = g[H + j]
            a = g[2 * H + j]
            o = g[3 * H + j]
            tc = tanh_(c[k])
            delta = dh[k]
            if dh_from_outputs != NULL:
                delta = delta + dh_from_outputs[k]
            dcell = delta * o * (1 - tc * tc) + dc[k]
            dg[j] = dcell * a * i * (1 - i)
            dg[H + j] = dcell * c_prev[k] * f * (1 - f)
            dg[2 * H + j] = dcell * i * (1 - a * a)
            dg[3 * H + j] = delta * tc * o * (1 - o)
            dc[k] = dcell * f


# ------------------------------------------------------------------ GRU
# PyTorch's GRU, blocks r, z, n; the input side x·Uᵀ + b is in gates, the
# recurrent product R = h_prev·Wᵀ is separate because n multiplies it by r:
#   r = σ(gx_r + R_r)   z = σ(gx_z + R_z)   hn = R_n + b_hn
#   n = tanh(gx_n + r ⊙ hn)      h = (1 - z) ⊙ n + z ⊙ h_prev
# gates keeps r, z, n; keep holds hn.

cdef void gru_forward(int rows, int hidden, floating *gates,
                      const floating *recurrent, const floating *recurrent_bias,
                      const floating *h_prev, floating *h,
                      floating *keep) noexcept nogil:
    cdef Py_ssize_t r, j, k, H = hidden
    cdef floating *g
    cdef const floating *rec
    cdef floating rg, zg, ng, hn
    for r in range(rows):
        g = gates + r * 3 * H
        rec = recurrent + r * 3 * H
        for j in range(H):
            k = r * H + j
            rg = sigmoid(g[j] + rec[j])
            zg = sigmoid(g[H + j] + rec[H + j])
            hn = rec[2 * H + j] + recurrent_bias[j]
            ng = tanh_(g[2 * H + j] + rg * hn)
            g[j] = rg
            g[H + j] = zg
            g[2 * H + j] = ng
            keep[k] = hn
            h[k] = (1 - zg) * ng + zg * h_prev[k]


cdef void gru_backward(int rows, int hidden, const floating *gates,
                       const floating *h_prev, const floating *keep,
                       const floating *dh_from_outputs, floating *dh,
                       floating *dgates, floating *drecurrent) noexcept nogil:
    # dn = dh ⊙ (1-z)    dz = dh ⊙ (h_prev - n)
    # d(pre n) = dn ⊙ (1 - n²)   d(pre z) = dz ⊙ z(1-z)
    # d(hn) = d(pre n) ⊙ r       d(pre r) = d(pre n) ⊙ hn ⊙ r(1-r)
    # input side: (d pre r, d pre z, d pre n); recurrent side: (d pre r, d pre z, d hn)
    # direct part of dh(t-1): dh ⊙ z
    cdef Py_ssize_t r, j, k, H = hidden
    cdef const floating *g
    cdef floating *dg
    cdef floating *dr
    cdef floating rg, zg, ng, delta, dpre_n, dpre_z, dpre_r
    for r in range(rows):
        g = gates + r * 3 * H
        dg = dgates + r * 3 * H
        dr = drecurrent + r * 3 * H
        for j in range(H):
            k = r * H + j
            rg = g[j]
            zg = g[H + j]
            ng = g[2 * H + j]
            delta = dh[k]
            if dh_from_outputs != NULL:
                delta = delta + dh_from_outputs[k]
            dpre_n = delta * (1 - zg) * (1 - ng * ng)
            dpre_z = delta * (h_prev[k] - ng) * zg * (1 - zg)
            dpre_r = dpre_n * keep[k] * rg * (1 - rg)
            dg[j] = dpre_r
            dg[H + j] = dpre_z
            dg[2 * H + j] = dpre_n
            dr[j] = dpre_r
            dr[H + j] = dpre_z
            dr[2 * H + j] = dpre_n * rg
            dh[k] = delta * zg


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
    elif kind == CELL_LSTM:
        lstm_forward(rows, hidden, gates, c_prev, h, c)
    elif kind == CELL_GRU:
        gru_forward(rows, hidden, gates, recurrent, recurrent_bias, h_prev,
                    h, keep)


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
    elif kind == CELL_LSTM:
        lstm_backward(rows, hidden, gates, c_prev, c, dh_from_outputs, dh,
                      dc, dgates)
    elif kind == CELL_GRU:
        gru_backward(rows, hidden, gates, h_prev, keep, dh_from_outputs, dh,
                     dgates, drecurrent)
