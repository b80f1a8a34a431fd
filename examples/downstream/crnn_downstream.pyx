"""A downstream extension that runs crnn's recurrent layers through crnn's
C-level API (``cimport crnn.api``), without the GIL.

``lstm_forward`` is the example to copy: sizes in a struct, a workspace of
the size crnn asks for, one call inside ``with nogil``, a status to check.
The rest wraps every public function (float32 and float64 forward,
backward and step, for any cell) for crnn's own tests, tests/test_capi.py.
"""
from cython cimport floating

from crnn.api cimport *

import numpy as np


# ------------------------------------------------------------------ example

def lstm_forward(const double[:, :, ::1] x, const double[:, ::1] U,
                 const double[:, ::1] W, const double[::1] b):
    """h of one LSTM layer at every step: x (T, B, D) time-major, U (4H, D),
    W (4H, H), b (4H,), zero initial state.  Returns hs, (T+1, B, H), with
    hs[0] = 0 and hs[t+1] = h after step t."""
    cdef crnn_sizes sizes
    sizes.steps, sizes.batch, sizes.inputs = x.shape[0], x.shape[1], x.shape[2]
    sizes.hidden = W.shape[1]
    if U.shape[0] != 4 * sizes.hidden or U.shape[1] != sizes.inputs or \
            W.shape[0] != 4 * sizes.hidden or b.shape[0] != 4 * sizes.hidden:
        raise ValueError("U, W, b must be (4H, D), (4H, H), (4H,)")

    cdef Py_ssize_t n = crnn_sequence_workspace_size(CRNN_LSTM, &sizes, False)
    cdef double[::1] work = np.empty(n)
    hs = np.empty((sizes.steps + 1, sizes.batch, sizes.hidden))
    cdef double[:, :, ::1] h = hs
    cdef int status
    with nogil:
        status = crnn_forward_f64(CRNN_LSTM, &sizes, NULL, &x[0, 0, 0], &U[0, 0],
                                  &W[0, 0], &b[0], NULL, NULL, NULL,
                                  &h[0, 0, 0], NULL, NULL, &work[0], n)
    if status != CRNN_OK:
        raise RuntimeError("crnn_forward_f64 failed: "
                           + crnn_status_name(status).decode())
    return hs


# ------------------------------------------------- every function, for tests

CELLS = {"rnn_tanh": CRNN_RNN_TANH, "rnn_relu": CRNN_RNN_RELU,
         "lstm": CRNN_LSTM, "gru": CRNN_GRU,
         "gru_reset_before": CRNN_GRU_RESET_BEFORE,
         "lstm_peephole": CRNN_LSTM_PEEPHOLE}
# the cells whose state is a pair (h, c)
PAIR_STATE = (CRNN_LSTM, CRNN_LSTM_PEEPHOLE)
STATUS = {"ok": CRNN_OK, "cell": CRNN_ERROR_CELL, "sizes": CRNN_ERROR_SIZES,
          "lengths": CRNN_ERROR_LENGTHS, "null": CRNN_ERROR_NULL,
          "workspace": CRNN_ERROR_WORKSPACE,
          "workspace_size": CRNN_ERROR_WORKSPACE_SIZE}
API_VERSION = CRNN_API_VERSION


def status_name(int status):
    return crnn_status_name(status).decode()


def length_order(lengths):
    """crnn_length_order: the rows longest first (stable)."""
    cdef int[::1] lens = np.ascontiguousarray(lengths, np.intc)
    order = np.empty(lens.shape[0], np.intc)
    cdef int[::1] o = order
    if lens.shape[0] > 0:
        crnn_length_order(lens.shape[0], &lens[0], &o[0])
    return order


def gate_blocks(str cell):
    return crnn_gate_blocks(CELLS[cell])


def workspace_size(str cell, int steps, int batch, int inputs, int hidden,
                   bint backward=False, bint step=False):
    cdef crnn_sizes sizes = make_sizes(steps, batch, inputs, hidden)
    if step:
        return crnn_step_workspace_size(CELLS[cell], &sizes)
    return crnn_sequence_workspace_size(CELLS[cell], &sizes, backward)


cdef crnn_sizes make_sizes(int steps, int batch, int inputs, int hidden):
    cdef crnn_sizes sizes
    sizes.steps, sizes.batch, sizes.inputs, sizes.hidden = steps, batch, inputs, hidden
    return sizes


def flat(array):
    """A 1-D view of a C-contiguous array (None stays None)."""
    if array is None:
        return None
    if not array.flags.c_contiguous:
        raise ValueError("arrays must be C-contiguous")
    return array.reshape(-1)


cdef inline floating *ptr(floating[::1] view) noexcept:
    return NULL if view is None else &view[0]


def forward(str cell, x, U, W, b, bn=None, lengths=None, h0=None, c0=None,
            bint backward=True, lwork=None):
    """Sequence forward.  x (T, B, D), lengths sorted longest first; the
    workspace has `lwork` elements (default: the size crnn asks for).
    `bn` is the GRU's recurrent bias, or the peephole LSTM's P (3, H).
    Returns (status, hs, h_n, c_n, work); c_n is None but for the LSTMs."""
    T, B, D = x.shape
    H = W.shape[1]
    kind = CELLS[cell]
    cdef crnn_sizes sizes = make_sizes(T, B, D, H)
    hs = np.zeros((T + 1, B, H), x.dtype)
    h_n = np.zeros((B, H), x.dtype)
    c_n = np.zeros((B, H), x.dtype) if kind in PAIR_STATE else None
    if lwork is None:
        lwork = crnn_sequence_workspace_size(kind, &sizes, backward)
    work = np.zeros(max(lwork, 1), x.dtype)
    cdef int[::1] lens = None if lengths is None else np.ascontiguousarray(lengths, np.intc)
    cdef const int *lens_ptr = NULL if lens is None else &lens[0]
    if x.dtype == np.float32:
        status = _forward[float](kind, &sizes, lens_ptr, flat(x), flat(U),
                                 flat(W), flat(b), flat(bn), flat(h0),
                                 flat(c0), flat(hs), flat(h_n), flat(c_n),
                                 flat(work), lwork)
    else:
        status = _forward[double](kind, &sizes, lens_ptr, flat(x), flat(U),
                                  flat(W), flat(b), flat(bn), flat(h0),
                                  flat(c0), flat(hs), flat(h_n), flat(c_n),
                                  flat(work), lwork)
    return status, hs, h_n, c_n, work


cdef int _forward(int cell, const crnn_sizes *s, const int *lengths,
                  floating[::1] x, floating[::1] U, floating[::1] W,
                  floating[::1] b, floating[::1] bn, floating[::1] h0,
                  floating[::1] c0, floating[::1] hs, floating[::1] h_n,
                  floating[::1] c_n, floating[::1] work, Py_ssize_t lwork):
    cdef floating *px = ptr(x)
    cdef floating *pU = ptr(U)
    cdef floating *pW = ptr(W)
    cdef floating *pb = ptr(b)
    cdef floating *pbn = ptr(bn)
    cdef floating *ph0 = ptr(h0)
    cdef floating *pc0 = ptr(c0)
    cdef floating *phs = ptr(hs)
    cdef floating *ph_n = ptr(h_n)
    cdef floating *pc_n = ptr(c_n)
    cdef floating *pwork = ptr(work)
    cdef int status
    with nogil:
        if floating is float:
            status = crnn_forward_f32(cell, s, lengths, px, pU, pW, pb, pbn,
                                      ph0, pc0, phs, ph_n, pc_n, pwork, lwork)
        else:
            status = crnn_forward_f64(cell, s, lengths, px, pU, pW, pb, pbn,
                                      ph0, pc0, phs, ph_n, pc_n, pwork, lwork)
    return status


def backward(str cell, x, U, W, hs, work, dhs=None, dh_n=None, dc_n=None,
             bint want_dx=True, lwork=None):
    """Sequence backward after `forward` (same x, hs, work; `lwork`
    defaults to work's length).  Returns (status, grads, dx, dh0, dc0):
    grads has "U", "W", "b" (and "bn" for the GRU, "P" for the peephole
    LSTM, in dbn's place), accumulated into zeros; dx is None unless
    want_dx; dc0 is None but for the LSTMs."""
    T, B, D = x.shape
    H = W.shape[1]
    kind = CELLS[cell]
    cdef crnn_sizes sizes = make_sizes(T, B, D, H)
    grads = {"U": np.zeros_like(U), "W": np.zeros_like(W),
             "b": np.zeros(W.shape[0], x.dtype)}
    if kind == CRNN_GRU:
        grads["bn"] = np.zeros(H, x.dtype)
    if kind == CRNN_LSTM_PEEPHOLE:
        grads["P"] = np.zeros((3, H), x.dtype)
    dx = np.full_like(x, np.nan) if want_dx else None
    dh0 = np.full((B, H), np.nan, x.dtype)
    dc0 = np.full((B, H), np.nan, x.dtype) if kind in PAIR_STATE else None
    dU, dW, db = grads["U"], grads["W"], grads["b"]
    dbn = grads.get("bn", grads.get("P"))
    if lwork is None:
        lwork = work.shape[0]
    if x.dtype == np.float32:
        status = _backward[float](kind, &sizes, flat(x), flat(U), flat(W),
                                  flat(hs), flat(dhs), flat(dh_n), flat(dc_n),
                                  flat(dU), flat(dW), flat(db), flat(dbn),
                                  flat(dx), flat(dh0), flat(dc0), flat(work),
                                  lwork)
    else:
        status = _backward[double](kind, &sizes, flat(x), flat(U), flat(W),
                                   flat(hs), flat(dhs), flat(dh_n), flat(dc_n),
                                   flat(dU), flat(dW), flat(db), flat(dbn),
                                   flat(dx), flat(dh0), flat(dc0), flat(work),
                                   lwork)
    return status, grads, dx, dh0, dc0


cdef int _backward(int cell, const crnn_sizes *s, floating[::1] x,
                   floating[::1] U, floating[::1] W, floating[::1] hs,
                   floating[::1] dhs, floating[::1] dh_n, floating[::1] dc_n,
                   floating[::1] dU, floating[::1] dW, floating[::1] db,
                   floating[::1] dbn, floating[::1] dx, floating[::1] dh0,
                   floating[::1] dc0, floating[::1] work, Py_ssize_t lwork):
    cdef floating *px = ptr(x)
    cdef floating *pU = ptr(U)
    cdef floating *pW = ptr(W)
    cdef floating *phs = ptr(hs)
    cdef floating *pdhs = ptr(dhs)
    cdef floating *pdh_n = ptr(dh_n)
    cdef floating *pdc_n = ptr(dc_n)
    cdef floating *pdU = ptr(dU)
    cdef floating *pdW = ptr(dW)
    cdef floating *pdb = ptr(db)
    cdef floating *pdbn = ptr(dbn)
    cdef floating *pdx = ptr(dx)
    cdef floating *pdh0 = ptr(dh0)
    cdef floating *pdc0 = ptr(dc0)
    cdef floating *pwork = ptr(work)
    cdef int status
    with nogil:
        if floating is float:
            status = crnn_backward_f32(cell, s, px, pU, pW, phs, pdhs, pdh_n,
                                       pdc_n, pdU, pdW, pdb, pdbn, pdx, pdh0,
                                       pdc0, pwork, lwork)
        else:
            status = crnn_backward_f64(cell, s, px, pU, pW, phs, pdhs, pdh_n,
                                       pdc_n, pdU, pdW, pdb, pdbn, pdx, pdh0,
                                       pdc0, pwork, lwork)
    return status


def step(str cell, x, U, W, b, bn, h, c=None, lwork=None):
    """One step: x (B, D); h (and c, LSTM) (B, H) are updated in place.
    Returns the status."""
    B, D = x.shape
    H = W.shape[1]
    kind = CELLS[cell]
    cdef crnn_sizes sizes = make_sizes(1, B, D, H)
    if lwork is None:
        lwork = crnn_step_workspace_size(kind, &sizes)
    work = np.zeros(max(lwork, 1), x.dtype)
    if x.dtype == np.float32:
        return _step[float](kind, &sizes, flat(x), flat(U), flat(W), flat(b),
                            flat(bn), flat(h), flat(c), flat(work), lwork)
    return _step[double](kind, &sizes, flat(x), flat(U), flat(W), flat(b),
                         flat(bn), flat(h), flat(c), flat(work), lwork)


cdef int _step(int cell, const crnn_sizes *s, floating[::1] x,
               floating[::1] U, floating[::1] W, floating[::1] b,
               floating[::1] bn, floating[::1] h, floating[::1] c,
               floating[::1] work, Py_ssize_t lwork):
    cdef floating *px = ptr(x)
    cdef floating *pU = ptr(U)
    cdef floating *pW = ptr(W)
    cdef floating *pb = ptr(b)
    cdef floating *pbn = ptr(bn)
    cdef floating *ph = ptr(h)
    cdef floating *pc = ptr(c)
    cdef floating *pwork = ptr(work)
    cdef int status
    with nogil:
        if floating is float:
            status = crnn_step_f32(cell, s, px, pU, pW, pb, pbn, ph, pc, pwork,
                                   lwork)
        else:
            status = crnn_step_f64(cell, s, px, pU, pW, pb, pbn, ph, pc, pwork,
                                   lwork)
    return status
