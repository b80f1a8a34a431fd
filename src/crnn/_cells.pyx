"""The cell table: the part of a time step that is not a GEMM.

Each row of the table (_kernels.h) names a cell, its gate blocks and flags,
and its point-wise kernels (C, _kernels_impl.h).  The lane (_lane.pyx)
computes, for the live rows of step t,

    gates = x(t)·Uᵀ + b  [+ h(t-1)·Wᵀ unless separate_recurrent(kind)]
    recurrent = h(t-1)·Wᵀ                      (only if separate_recurrent)

and then calls the row's forward kernel once; in BPTT it calls the
backward kernel once and then forms dh(t-1) = drecurrent·W (plus the direct
part the kernel left in dh).  Buffers (CellArgs, _cell_table.h) are
row-major with these shapes (G = the row's gate_blocks):

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
    const CellSpec crnn_cell_table[]
    int CRNN_CELL_COUNT
    void crnn_lstm_forward_f32(int rows, int hidden, int first, int count, float *gates,
                               const float *c_prev, float *h, float *c)


cdef const CellSpec *cell_spec(int kind) noexcept nogil:
    return &crnn_cell_table[kind]


cdef bint known_cell(int kind) noexcept nogil:
    return 0 <= kind < CRNN_CELL_COUNT


def cell_names():
    """The table's cell names, in CellKind order (for the tests)."""
    return [crnn_cell_table[kind].name.decode() for kind in range(CRNN_CELL_COUNT)]


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
# LSTM with peepholes (lstm_peephole; ONNX's P, peepholes = (3 × H) rows
#       P_i, P_o, P_f): i = σ(z_i + P_i ⊙ C_prev), f = σ(z_f + P_f ⊙ C_prev),
#       o = σ(z_o + P_o ⊙ C).  BPTT: dz_o = dh ⊙ tc ⊙ o(1-o) first, then
#       dC = dh ⊙ o ⊙ (1 - tc²) + dc + dz_o ⊙ P_o;  dz_i, dz_f, dz_a as the
#       LSTM's;  carried: dc = dC ⊙ f + dz_i ⊙ P_i + dz_f ⊙ P_f;  dpeepholes
#       += (dz_i ⊙ C_prev, dz_o ⊙ C, dz_f ⊙ C_prev) summed over the rows.
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
# GRU, reset before the product (gru_reset_before: ONNX linear_before_reset
#       = 0, Keras reset_after=False; no b_hn): the recurrent product adds to
#       Z, but its n block multiplies r ⊙ h_prev, so a step has two products
#       with a gate pass between them (gated_blocks = 1):
#       Z[r,z] += h_prev·W_rzᵀ;  gate pass: r = σ(Z_r), z = σ(Z_z),
#       keep = r ⊙ h_prev;  Z[n] += keep·W_nᵀ;  forward: n = tanh(Z_n),
#       h = (1 - z) ⊙ n + z ⊙ h_prev.  BPTT (dR = dZ in every block):
#       backward: dZ_n = dh ⊙ (1-z) ⊙ (1-n²), dZ_z = dh ⊙ (h_prev - n) ⊙ z(1-z),
#       dh := dh ⊙ z;  the lane: d(rh) = dZ_n·W_n (into `recurrent`);
#       gate pass: dZ_r = d(rh) ⊙ h_prev ⊙ r(1-r), dh += d(rh) ⊙ r;  then
#       dh(t-1) = dh + dZ[r,z]·W_rz, and dW_n = dZ_nᵀ·keep.
#
# float32 uses the vectorisable rational tanh of _fastmath.h (a few ulp) and
# σ(x) = ½ + ½·tanh(x/2) (the same rational function, rescaled); float64
# uses libm's tanh and exp.


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
