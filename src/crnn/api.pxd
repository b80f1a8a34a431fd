# crnn's C-level API: one recurrent layer, one direction, of every cell type,
# forward and backward over a whole sequence batch and one step at a time,
# callable without the GIL.  These functions ARE crnn's engine: the lane
# that crnn's models and streams run (api.pyx only checks arguments and lays
# the caller's workspace out).  From Cython:
#
#     from crnn.api cimport crnn_sizes, crnn_forward_f64, CRNN_LSTM, ...
#
# built with ``include_dirs=[crnn.get_include()]`` (Cython also finds this
# file on sys.path).  From C or C++ without Cython: ``#include <crnn.h>``
# from the same folder, and ``crnn_import()`` once (a capsule table, as
# NumPy's import_array()).  Functions and plain structs only, so the ABI
# is the API (SciPy's rule for its Cython BLAS wrappers); this file cimports
# nothing.  CRNN_API_VERSION counts incompatible changes: 2 took the cell as
# an argument (one function per operation and type instead of one per
# cell) and added `lwork`.
#
# --------------------------------------------------------------- the contract
#
# Sizes (crnn_sizes): T = steps, B = batch, D = inputs, H = hidden, every one
# >= 1.  G = crnn_gate_blocks(cell): 1 for the RNNs, 4 for the LSTM (blocks
# i, f, a, o), 3 for the GRU (blocks r, z, n) -- PyTorch's gate order.
#
# Every array is C-contiguous (row-major), of the function's type (float for
# _f32, double for _f64), allocated and owned by the caller:
#
#     x        (T, B, D)    inputs, time-major: x[t, b, :] is row t*B + b
#     U        (G*H, D)     input weights          (crnn's params["U0"])
#     W        (G*H, H)     recurrent weights      (params["W0"])
#     b        (G*H,)       bias                   (params["b0"])
#     bn       (H,)         GRU only: bias of the recurrent n block (params["bn0"],
#                           PyTorch's b_hn)
#              (3, H)       LSTM_PEEPHOLE only: the peephole weights P in
#                           ONNX's order i, o, f (params["P0"]), in bn's place
#     h0, c0   (B, H)       initial state, or NULL for zeros (c: LSTM only);
#                           h0 may be hs itself when hs[0] is already filled
#     hs       (T+1, B, H)  OUT: hs[0] = h0, hs[t+1] = h after step t; rows
#                           past a sequence's length hold zeros
#     h_n, c_n (B, H)       OUT (or NULL): each sequence's state after its own
#                           last step, hs[lengths[b], b]
#     lengths  (B,) int     each in [1, T], sorted longest first (non-
#                           increasing); NULL means every sequence has T steps.
#                           crnn_length_order gives the order that sorts a
#                           batch so; permute x's rows (and un-permute the
#                           results) with it
#     work     see below
#
# The math per step (h = h(t-1) = hs[t] on the right, ' = transposed):
#     RNN    h = tanh(x U' + h W' + b)   (or relu)
#     LSTM   i, f, o = sigmoid(...), a = tanh(...), C = f*C + i*a, h = o*tanh(C)
#     GRU    r, z = sigmoid(x U' + h W' + b), n = tanh(x U_n' + b_n + r*(h W_n' + bn)),
#            h = (1 - z)*n + z*h
#     GRU_RESET_BEFORE  the same but n = tanh(x U_n' + b_n + (r*h) W_n'), no bn
#     LSTM_PEEPHOLE     the LSTM with i = sigmoid(... + P_i*C(t-1)),
#            f = sigmoid(... + P_f*C(t-1)), o = sigmoid(... + P_o*C(t))
#
# Backward (BPTT), after the forward call that filled `hs` and `work`:
#
#     dhs      (T, B, H)    IN dL/dh(t) from whatever reads hs[1:] (an output
#                           layer, the layer above), or NULL; rows past a
#                           sequence's length are ignored
#     dh_n     (B, H)       IN dL/d(h_n), or NULL (many-to-one models)
#     dc_n     (B, H)       IN dL/d(c_n), or NULL (LSTM only)
#     dU, dW, db, dbn       ACCUMULATED (+=) parameter gradients, shaped like
#                           U, W, b, bn: zero them first for a plain gradient
#                           (LSTM_PEEPHOLE: dbn receives dP, (3, H); the
#                           backward reads P from `work`, where its forward
#                           left it)
#     dx       (T, B, D)    OUT dL/dx (what the layer below needs), or NULL
#                           (then U may be NULL too)
#     dh0, dc0 (B, H)       OUT dL/dh0, dL/dc0, or NULL
#
# Layers and directions are the caller's: layer l+1's x is layer l's
# hs + B*H (its (T, B, H) outputs), and layer l+1's dx is layer l's dhs.  A
# reverse direction runs on each sequence reversed within its own length.
#
# Workspace: `work` holds `lwork` elements of the function's type (float or
# double), at least crnn_sequence_workspace_size(cell, sizes, backward)
# (the same count for both types); a shorter one is refused with
# CRNN_ERROR_WORKSPACE_SIZE before anything is written (LAPACK's lwork).
# The forward leaves in it what the backward needs: a backward call must get
# the workspace (and hs) that its forward call filled, untouched since, sized
# with backward=1.  One workspace per call in flight.
#
# Step (streaming, one time step; sizes.steps is ignored):
#
#     x        (B, D)       IN this step's inputs
#     h, c     (B, H)       IN the carried state, OUT the new one (c: LSTM)
#     work     lwork >= crnn_step_workspace_size(cell, sizes) elements
#
# Every forward, backward and step function returns CRNN_OK (0) or a
# crnn_status error code (crnn_status_name names it), having checked the
# cell, the sizes, the lengths, the required pointers and lwork (nothing
# else: the other arrays' extents are trusted).  They
# allocate nothing, never take the GIL, and are safe to call from many
# threads at once on separate workspaces.
# BLAS is SciPy's, through crnn's one BLAS shim (_blas.pyx).


cdef enum:
    CRNN_API_VERSION = 2

# The cells: bn is used by CRNN_GRU (its bias) and CRNN_LSTM_PEEPHOLE (its
# P, (3, H)) only.  CRNN_GRU_RESET_BEFORE is the original GRU (ONNX
# linear_before_reset = 0, Keras reset_after=False):
# n = tanh(x U_n' + b_n + (r*h) W_n'), no bn.  CRNN_LSTM_PEEPHOLE is ONNX's
# LSTM with peepholes (crnn.LSTM(peepholes=True)).
cdef enum crnn_cell:
    CRNN_RNN_TANH = 0
    CRNN_RNN_RELU = 1
    CRNN_LSTM = 2
    CRNN_GRU = 3
    CRNN_GRU_RESET_BEFORE = 4
    CRNN_LSTM_PEEPHOLE = 5

cdef enum crnn_status:
    CRNN_OK = 0
    CRNN_ERROR_CELL = 1         # not a crnn_cell
    CRNN_ERROR_SIZES = 2        # a size < 1, or T*B or G*H past INT_MAX
    CRNN_ERROR_LENGTHS = 3      # a length outside [1, T], or not sorted longest first
    CRNN_ERROR_NULL = 4         # a required pointer is NULL
    CRNN_ERROR_WORKSPACE = 5    # backward without its forward in `work`
    CRNN_ERROR_WORKSPACE_SIZE = 6  # lwork below the size the call needs

ctypedef struct crnn_sizes:
    int steps       # T
    int batch       # B
    int inputs      # D
    int hidden      # H


# The name of a status code ("CRNN_OK", ...; "unknown status" for others).
cdef const char *crnn_status_name(int status) noexcept nogil
# G: the weight matrices of `cell` have G*H rows; 0 for an unknown cell.
cdef int crnn_gate_blocks(int cell) noexcept nogil
# Elements of `work` for the sequence functions (backward=0: forward only;
# backward=1: forward then backward), or -1 for a bad cell or sizes.
cdef Py_ssize_t crnn_sequence_workspace_size(int cell, const crnn_sizes *sizes,
                                             bint backward) noexcept nogil
# Elements of `work` for the step functions, or -1.
cdef Py_ssize_t crnn_step_workspace_size(int cell,
                                         const crnn_sizes *sizes) noexcept nogil
# order[i] := the row of the i-th longest sequence (stable: equal lengths
# keep their order), so that lengths[order[0]] >= lengths[order[1]] >= ...
cdef void crnn_length_order(int batch, const int *lengths,
                            int *order) noexcept nogil

# ------------------------------------------------- forward, backward, step
cdef int crnn_forward_f32(
    int cell, const crnn_sizes *sizes, const int *lengths, const float *x,
    const float *U, const float *W, const float *b, const float *bn,
    const float *h0, const float *c0, float *hs, float *h_n, float *c_n,
    float *work, Py_ssize_t lwork) noexcept nogil
cdef int crnn_forward_f64(
    int cell, const crnn_sizes *sizes, const int *lengths, const double *x,
    const double *U, const double *W, const double *b, const double *bn,
    const double *h0, const double *c0, double *hs, double *h_n, double *c_n,
    double *work, Py_ssize_t lwork) noexcept nogil
cdef int crnn_backward_f32(
    int cell, const crnn_sizes *sizes, const float *x, const float *U,
    const float *W, const float *hs, const float *dhs, const float *dh_n,
    const float *dc_n, float *dU, float *dW, float *db, float *dbn, float *dx,
    float *dh0, float *dc0, float *work, Py_ssize_t lwork) noexcept nogil
cdef int crnn_backward_f64(
    int cell, const crnn_sizes *sizes, const double *x, const double *U,
    const double *W, const double *hs, const double *dhs, const double *dh_n,
    const double *dc_n, double *dU, double *dW, double *db, double *dbn,
    double *dx, double *dh0, double *dc0, double *work,
    Py_ssize_t lwork) noexcept nogil
cdef int crnn_step_f32(
    int cell, const crnn_sizes *sizes, const float *x, const float *U,
    const float *W, const float *b, const float *bn, float *h, float *c,
    float *work, Py_ssize_t lwork) noexcept nogil
cdef int crnn_step_f64(
    int cell, const crnn_sizes *sizes, const double *x, const double *U,
    const double *W, const double *b, const double *bn, double *h, double *c,
    double *work, Py_ssize_t lwork) noexcept nogil
