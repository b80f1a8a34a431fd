"""crnn's C-level API, for other Cython extensions: ``cimport crnn.api``.

Nothing here is meant for Python; the contract (shapes, layout, workspace,
status codes) is written once, in api.pxd.  Every public function is a thin
named wrapper over one generic body per operation (forward, backward, step),
which checks its arguments, lays the caller's workspace out and runs the
driver's lane functions (_sequence.pxd): the same code crnn's models run.
"""
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset
from cython cimport floating

from ._cells cimport (CELL_GRU, CELL_LSTM, CELL_RNN_RELU, CELL_RNN_TANH,
                      gate_blocks, has_cell_state, separate_recurrent)
from ._sequence cimport (LaneShape, lane_forward, lane_backward, panels_pay,
                         merged_size, merged_room, fused_input_width,
                         pack_weights)


# ---------------------------------------------------------------- layout

cdef struct Layout:
    # Offsets into `work`, in elements of the data type.  Regions a cell does
    # not use are empty.  The forward part comes first, so a forward-only
    # workspace is a prefix of a training one.
    Py_ssize_t gates        # (T·B × G·H) activations kept for BPTT
    Py_ssize_t cs           # ((T+1)·B × H) LSTM: C, slot 0 = c0
    Py_ssize_t keep         # (T·B × H) GRU: R_n + bn per step
    Py_ssize_t recurrent    # (B × G·H) GRU: scratch for h·Wᵀ
    Py_ssize_t panels_T     # [Uᵀ;] Wᵀ packed for the forward's step products
    Py_ssize_t forward_end
    Py_ssize_t dgates       # (T·B × G·H) ∂L/∂Z
    Py_ssize_t drecurrent   # (T·B × G·H) GRU: ∂L/∂R
    Py_ssize_t dh           # (B × H) ∂L/∂h carried back in time
    Py_ssize_t dc           # (B × H) LSTM: ∂L/∂C carried back
    Py_ssize_t panels       # W packed for the backward's recurrent products
    Py_ssize_t merged       # [dU | dW] block and rows [x | h] (merged_room)
    Py_ssize_t hs           # step only: (2·B × H) h, slot 0 carried in, slot 1 new
    Py_ssize_t total


cdef inline int cell_kind(int cell) noexcept nogil:
    """The driver's CellKind for a public crnn_cell, or -1 (spelled out so
    the two enums can never drift apart silently)."""
    if cell == CRNN_RNN_TANH:
        return CELL_RNN_TANH
    if cell == CRNN_RNN_RELU:
        return CELL_RNN_RELU
    if cell == CRNN_LSTM:
        return CELL_LSTM
    if cell == CRNN_GRU:
        return CELL_GRU
    return -1


cdef int check_sizes(int kind, const crnn_sizes *sizes, bint sequence) noexcept nogil:
    if kind < 0:
        return CRNN_ERROR_CELL
    if sizes == NULL:
        return CRNN_ERROR_NULL
    if ((sequence and sizes.steps < 1) or sizes.batch < 1
            or sizes.inputs < 1 or sizes.hidden < 1):
        return CRNN_ERROR_SIZES
    # The GEMMs take C ints: T·B rows (all steps at once), G·H columns.
    cdef Py_ssize_t steps = sizes.steps if sequence else 1
    if (steps * sizes.batch > INT_MAX
            or <Py_ssize_t> gate_blocks(kind) * sizes.hidden > INT_MAX):
        return CRNN_ERROR_SIZES
    return CRNN_OK


cdef inline Py_ssize_t panel_room(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Elements that panels of a (k × n) matrix need in either type: columns
    rounded up to 16 (64 bytes of float; double's 8 divide it)."""
    return (n + 15) // 16 * 16 * k


cdef Layout sequence_layout(int kind, const crnn_sizes *sizes) noexcept nogil:
    cdef Py_ssize_t T = sizes.steps, B = sizes.batch, H = sizes.hidden
    cdef Py_ssize_t GH = gate_blocks(kind) * H
    cdef bint gru = separate_recurrent(kind), lstm = has_cell_state(kind)
    cdef Layout L
    # Elements [0, T) hold batch_sizes, T ints (an int is no wider than a
    # float); every region after it starts at a whole element.
    L.gates = T
    L.cs = L.gates + T * B * GH
    L.keep = L.cs + ((T + 1) * B * H if lstm else 0)
    L.recurrent = L.keep + (T * B * H if gru else 0)
    L.panels_T = L.recurrent + (B * GH if gru else 0)
    # room for Uᵀ too (unless GRU), whether or not the call packs it
    # (fused_input_width)
    L.forward_end = L.panels_T + gate_blocks(kind) * panel_room(
        (0 if gru else sizes.inputs) + H, H)
    L.dgates = L.forward_end
    L.drecurrent = L.dgates + T * B * GH
    L.dh = L.drecurrent + (T * B * GH if gru else 0)
    L.dc = L.dh + B * H
    L.panels = L.dc + (B * H if lstm else 0)
    # dU and dW's one product: its block and T·B rows [x | h], where it may
    # pay at some thread count (lane_backward's `merged`)
    L.merged = L.panels + panel_room(GH, H)
    L.total = L.merged + merged_room(kind, T, B, sizes.inputs, H)
    L.hs = L.total
    return L


cdef Layout step_layout(int kind, const crnn_sizes *sizes) noexcept nogil:
    # The forward part of the sequence layout with T = 1 (no batch_sizes:
    # the step keeps its one count on the stack), C in two slots like h,
    # and h itself, which a sequence call keeps in the caller's `hs`.
    cdef Py_ssize_t B = sizes.batch, H = sizes.hidden
    cdef Py_ssize_t GH = gate_blocks(kind) * H
    cdef bint gru = separate_recurrent(kind), lstm = has_cell_state(kind)
    cdef Layout L
    L.gates = 0
    L.cs = L.gates + B * GH
    L.keep = L.cs + (2 * B * H if lstm else 0)
    L.recurrent = L.keep + (B * H if gru else 0)
    L.panels_T = L.recurrent + (B * GH if gru else 0)
    L.forward_end = L.panels_T
    L.hs = L.forward_end
    L.total = L.hs + 2 * B * H
    L.dgates = L.drecurrent = L.dh = L.dc = L.panels = L.merged = L.total
    return L


cdef int crnn_gate_blocks(int cell) noexcept nogil:
    cdef int kind = cell_kind(cell)
    return 0 if kind < 0 else gate_blocks(kind)


cdef Py_ssize_t crnn_sequence_workspace_size(int cell, const crnn_sizes *sizes,
                                             bint backward) noexcept nogil:
    cdef int kind = cell_kind(cell)
    if check_sizes(kind, sizes, True) != CRNN_OK:
        return -1
    cdef Layout L = sequence_layout(kind, sizes)
    return L.total if backward else L.forward_end


cdef Py_ssize_t crnn_step_workspace_size(int cell,
                                         const crnn_sizes *sizes) noexcept nogil:
    cdef int kind = cell_kind(cell)
    if check_sizes(kind, sizes, False) != CRNN_OK:
        return -1
    return step_layout(kind, sizes).total


# ----------------------------------------------------------- generic bodies

cdef int sequence_forward(int kind, const crnn_sizes *sizes, const int *lengths,
                          const floating *x, const floating *U,
                          const floating *W, const floating *b,
                          const floating *bn, const floating *h0,
                          const floating *c0, floating *hs, floating *h_n,
                          floating *c_n, floating *work) noexcept nogil:
    cdef int status = check_sizes(kind, sizes, True)
    if status != CRNN_OK:
        return status
    cdef bint gru = separate_recurrent(kind), lstm = has_cell_state(kind)
    if (x == NULL or U == NULL or W == NULL or b == NULL or hs == NULL
            or work == NULL or (gru and bn == NULL)):
        return CRNN_ERROR_NULL
    cdef int T = sizes.steps, B = sizes.batch, H = sizes.hidden
    cdef Py_ssize_t state = <Py_ssize_t> B * H, r
    cdef int t, live
    cdef Layout L = sequence_layout(kind, sizes)
    cdef int *batch_sizes = <int *> work

    # batch_sizes[t] = sequences longer than t (a prefix, lengths sorted)
    if lengths == NULL:
        for t in range(T):
            batch_sizes[t] = B
    else:
        for r in range(B):
            if (lengths[r] < 1 or lengths[r] > T
                    or (r > 0 and lengths[r] > lengths[r - 1])):
                return CRNN_ERROR_LENGTHS
        live = B
        for t in range(T):
            while live > 0 and lengths[live - 1] <= t:
                live -= 1
            batch_sizes[t] = live

    if h0 == NULL:
        memset(hs, 0, state * sizeof(floating))
    elif h0 != hs:
        memcpy(hs, h0, state * sizeof(floating))
    cdef floating *cs = work + L.cs if lstm else NULL
    if lstm:
        if c0 == NULL:
            memset(cs, 0, state * sizeof(floating))
        else:
            memcpy(cs, c0, state * sizeof(floating))

    cdef LaneShape shape
    shape.steps = T
    shape.batch = B
    shape.inputs = sizes.inputs
    shape.hidden = H
    shape.kind = kind
    cdef floating *panels = NULL
    cdef int fused = 0
    if panels_pay(T, B):
        panels = work + L.panels_T
        fused = fused_input_width(kind, sizes.inputs, H, False)
        pack_weights(True, gate_blocks(kind), H, fused, U, W, panels)
    lane_forward(&shape, batch_sizes, x, NULL, U, NULL, W, panels, fused, b, bn,
                 work + L.gates, work + L.recurrent if gru else NULL, hs, cs,
                 work + L.keep if gru else NULL, True)

    # Final states: row r's state after its own last step, slot lengths[r].
    cdef Py_ssize_t last
    for r in range(B):
        last = (lengths[r] if lengths != NULL else T) * state + r * H
        if h_n != NULL:
            memcpy(h_n + r * H, hs + last, H * sizeof(floating))
        if lstm and c_n != NULL:
            memcpy(c_n + r * H, cs + last, H * sizeof(floating))
    return CRNN_OK


cdef int sequence_backward(int kind, const crnn_sizes *sizes,
                           const floating *x, const floating *U,
                           const floating *W, const floating *hs,
                           const floating *dhs, const floating *dh_n,
                           const floating *dc_n, floating *dU, floating *dW,
                           floating *db, floating *dbn, floating *dx,
                           floating *dh0, floating *dc0,
                           floating *work) noexcept nogil:
    cdef int status = check_sizes(kind, sizes, True)
    if status != CRNN_OK:
        return status
    cdef bint gru = separate_recurrent(kind), lstm = has_cell_state(kind)
    if (x == NULL or W == NULL or hs == NULL or dU == NULL or dW == NULL
            or db == NULL or work == NULL or (dx != NULL and U == NULL)
            or (gru and dbn == NULL)):
        return CRNN_ERROR_NULL
    cdef int T = sizes.steps, B = sizes.batch, H = sizes.hidden, t
    cdef Py_ssize_t state = <Py_ssize_t> B * H
    cdef Layout L = sequence_layout(kind, sizes)
    cdef const int *batch_sizes = <const int *> work
    # A cheap guard against a workspace the forward did not fill: the live
    # counts start at B and never grow (they reach 0 when every sequence is
    # shorter than T).
    if batch_sizes[0] != B:
        return CRNN_ERROR_WORKSPACE
    for t in range(1, T):
        if batch_sizes[t] < 0 or batch_sizes[t] > batch_sizes[t - 1]:
            return CRNN_ERROR_WORKSPACE

    cdef LaneShape shape
    shape.steps = T
    shape.batch = B
    shape.inputs = sizes.inputs
    shape.hidden = H
    shape.kind = kind
    cdef floating *panels = NULL
    if panels_pay(T, B):
        panels = work + L.panels
        pack_weights(False, gate_blocks(kind), H, 0, NULL, W, panels)
    cdef floating *merged = NULL
    if merged_size(kind, T, B, sizes.inputs, H, sizeof(floating)) > 0:
        merged = work + L.merged
    lane_backward(&shape, batch_sizes, x, NULL, U, W, panels, work + L.gates, hs,
                  work + L.cs if lstm else NULL,
                  work + L.keep if gru else NULL,
                  dhs, dh_n, dc_n if lstm else NULL,
                  work + L.dgates, work + L.drecurrent if gru else NULL,
                  work + L.dh, work + L.dc if lstm else NULL,
                  dU, NULL, dW, db, dbn if gru else NULL, dx, merged,
                  <Py_ssize_t> T * B, NULL, 0, NULL)
    if dh0 != NULL:
        memcpy(dh0, work + L.dh, state * sizeof(floating))
    if lstm and dc0 != NULL:
        memcpy(dc0, work + L.dc, state * sizeof(floating))
    return CRNN_OK


cdef int cell_step(int kind, const crnn_sizes *sizes, const floating *x,
                   const floating *U, const floating *W, const floating *b,
                   const floating *bn, floating *h, floating *c,
                   floating *work) noexcept nogil:
    cdef int status = check_sizes(kind, sizes, False)
    if status != CRNN_OK:
        return status
    cdef bint gru = separate_recurrent(kind), lstm = has_cell_state(kind)
    if (x == NULL or U == NULL or W == NULL or b == NULL or h == NULL
            or work == NULL or (gru and bn == NULL) or (lstm and c == NULL)):
        return CRNN_ERROR_NULL
    cdef int B = sizes.batch, H = sizes.hidden
    cdef Py_ssize_t state = <Py_ssize_t> B * H
    cdef size_t state_bytes = state * sizeof(floating)
    cdef Layout L = step_layout(kind, sizes)
    cdef floating *hs = work + L.hs
    cdef floating *cs = work + L.cs if lstm else NULL
    cdef int batch_sizes[1]
    batch_sizes[0] = B

    memcpy(hs, h, state_bytes)
    if lstm:
        memcpy(cs, c, state_bytes)
    cdef LaneShape shape
    shape.steps = 1
    shape.batch = B
    shape.inputs = sizes.inputs
    shape.hidden = H
    shape.kind = kind
    lane_forward(&shape, batch_sizes, x, NULL, U, NULL, W, NULL, 0, b, bn,
                 work + L.gates, work + L.recurrent if gru else NULL, hs, cs,
                 work + L.keep if gru else NULL, True)
    memcpy(h, hs + state, state_bytes)
    if lstm:
        memcpy(c, cs + state, state_bytes)
    return CRNN_OK


# ------------------------------------------------------- the named functions
# One line each: the cell kind and the type are fixed by the name.

cdef int crnn_rnn_tanh_forward_f32(
        const crnn_sizes *sizes, const int *lengths, const float *x,
        const float *U, const float *W, const float *b, const float *h0,
        float *hs, float *h_n, float *work) noexcept nogil:
    return sequence_forward[float](CELL_RNN_TANH, sizes, lengths, x, U, W, b,
                                   NULL, h0, NULL, hs, h_n, NULL, work)

cdef int crnn_rnn_tanh_forward_f64(
        const crnn_sizes *sizes, const int *lengths, const double *x,
        const double *U, const double *W, const double *b, const double *h0,
        double *hs, double *h_n, double *work) noexcept nogil:
    return sequence_forward[double](CELL_RNN_TANH, sizes, lengths, x, U, W, b,
                                    NULL, h0, NULL, hs, h_n, NULL, work)

cdef int crnn_rnn_tanh_backward_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *hs, const float *dhs, const float *dh_n,
        float *dU, float *dW, float *db, float *dx, float *dh0,
        float *work) noexcept nogil:
    return sequence_backward[float](CELL_RNN_TANH, sizes, x, U, W, hs, dhs,
                                    dh_n, NULL, dU, dW, db, NULL, dx, dh0,
                                    NULL, work)

cdef int crnn_rnn_tanh_backward_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *hs, const double *dhs,
        const double *dh_n, double *dU, double *dW, double *db, double *dx,
        double *dh0, double *work) noexcept nogil:
    return sequence_backward[double](CELL_RNN_TANH, sizes, x, U, W, hs, dhs,
                                     dh_n, NULL, dU, dW, db, NULL, dx, dh0,
                                     NULL, work)

cdef int crnn_rnn_tanh_step_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *b, float *h, float *work) noexcept nogil:
    return cell_step[float](CELL_RNN_TANH, sizes, x, U, W, b, NULL, h, NULL,
                            work)

cdef int crnn_rnn_tanh_step_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *b, double *h,
        double *work) noexcept nogil:
    return cell_step[double](CELL_RNN_TANH, sizes, x, U, W, b, NULL, h, NULL,
                             work)


cdef int crnn_rnn_relu_forward_f32(
        const crnn_sizes *sizes, const int *lengths, const float *x,
        const float *U, const float *W, const float *b, const float *h0,
        float *hs, float *h_n, float *work) noexcept nogil:
    return sequence_forward[float](CELL_RNN_RELU, sizes, lengths, x, U, W, b,
                                   NULL, h0, NULL, hs, h_n, NULL, work)

cdef int crnn_rnn_relu_forward_f64(
        const crnn_sizes *sizes, const int *lengths, const double *x,
        const double *U, const double *W, const double *b, const double *h0,
        double *hs, double *h_n, double *work) noexcept nogil:
    return sequence_forward[double](CELL_RNN_RELU, sizes, lengths, x, U, W, b,
                                    NULL, h0, NULL, hs, h_n, NULL, work)

cdef int crnn_rnn_relu_backward_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *hs, const float *dhs, const float *dh_n,
        float *dU, float *dW, float *db, float *dx, float *dh0,
        float *work) noexcept nogil:
    return sequence_backward[float](CELL_RNN_RELU, sizes, x, U, W, hs, dhs,
                                    dh_n, NULL, dU, dW, db, NULL, dx, dh0,
                                    NULL, work)

cdef int crnn_rnn_relu_backward_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *hs, const double *dhs,
        const double *dh_n, double *dU, double *dW, double *db, double *dx,
        double *dh0, double *work) noexcept nogil:
    return sequence_backward[double](CELL_RNN_RELU, sizes, x, U, W, hs, dhs,
                                     dh_n, NULL, dU, dW, db, NULL, dx, dh0,
                                     NULL, work)

cdef int crnn_rnn_relu_step_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *b, float *h, float *work) noexcept nogil:
    return cell_step[float](CELL_RNN_RELU, sizes, x, U, W, b, NULL, h, NULL,
                            work)

cdef int crnn_rnn_relu_step_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *b, double *h,
        double *work) noexcept nogil:
    return cell_step[double](CELL_RNN_RELU, sizes, x, U, W, b, NULL, h, NULL,
                             work)


cdef int crnn_lstm_forward_f32(
        const crnn_sizes *sizes, const int *lengths, const float *x,
        const float *U, const float *W, const float *b,
        const float *h0, const float *c0,
        float *hs, float *h_n, float *c_n, float *work) noexcept nogil:
    return sequence_forward[float](CELL_LSTM, sizes, lengths, x, U, W, b, NULL,
                                   h0, c0, hs, h_n, c_n, work)

cdef int crnn_lstm_forward_f64(
        const crnn_sizes *sizes, const int *lengths, const double *x,
        const double *U, const double *W, const double *b,
        const double *h0, const double *c0,
        double *hs, double *h_n, double *c_n, double *work) noexcept nogil:
    return sequence_forward[double](CELL_LSTM, sizes, lengths, x, U, W, b,
                                    NULL, h0, c0, hs, h_n, c_n, work)

cdef int crnn_lstm_backward_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *hs, const float *dhs, const float *dh_n, const float *dc_n,
        float *dU, float *dW, float *db, float *dx, float *dh0, float *dc0,
        float *work) noexcept nogil:
    return sequence_backward[float](CELL_LSTM, sizes, x, U, W, hs, dhs, dh_n,
                                    dc_n, dU, dW, db, NULL, dx, dh0, dc0, work)

cdef int crnn_lstm_backward_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *hs, const double *dhs,
        const double *dh_n, const double *dc_n,
        double *dU, double *dW, double *db, double *dx, double *dh0,
        double *dc0, double *work) noexcept nogil:
    return sequence_backward[double](CELL_LSTM, sizes, x, U, W, hs, dhs, dh_n,
                                     dc_n, dU, dW, db, NULL, dx, dh0, dc0,
                                     work)

cdef int crnn_lstm_step_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *b, float *h, float *c, float *work) noexcept nogil:
    return cell_step[float](CELL_LSTM, sizes, x, U, W, b, NULL, h, c, work)

cdef int crnn_lstm_step_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *b, double *h, double *c,
        double *work) noexcept nogil:
    return cell_step[double](CELL_LSTM, sizes, x, U, W, b, NULL, h, c, work)


cdef int crnn_gru_forward_f32(
        const crnn_sizes *sizes, const int *lengths, const float *x,
        const float *U, const float *W, const float *b, const float *bn,
        const float *h0, float *hs, float *h_n, float *work) noexcept nogil:
    return sequence_forward[float](CELL_GRU, sizes, lengths, x, U, W, b, bn,
                                   h0, NULL, hs, h_n, NULL, work)

cdef int crnn_gru_forward_f64(
        const crnn_sizes *sizes, const int *lengths, const double *x,
        const double *U, const double *W, const double *b, const double *bn,
        const double *h0, double *hs, double *h_n,
        double *work) noexcept nogil:
    return sequence_forward[double](CELL_GRU, sizes, lengths, x, U, W, b, bn,
                                    h0, NULL, hs, h_n, NULL, work)

cdef int crnn_gru_backward_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *hs, const float *dhs, const float *dh_n,
        float *dU, float *dW, float *db, float *dbn, float *dx, float *dh0,
        float *work) noexcept nogil:
    return sequence_backward[float](CELL_GRU, sizes, x, U, W, hs, dhs, dh_n,
                                    NULL, dU, dW, db, dbn, dx, dh0, NULL, work)

cdef int crnn_gru_backward_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *hs, const double *dhs,
        const double *dh_n, double *dU, double *dW, double *db, double *dbn,
        double *dx, double *dh0, double *work) noexcept nogil:
    return sequence_backward[double](CELL_GRU, sizes, x, U, W, hs, dhs, dh_n,
                                     NULL, dU, dW, db, dbn, dx, dh0, NULL,
                                     work)

cdef int crnn_gru_step_f32(
        const crnn_sizes *sizes, const float *x, const float *U, const float *W,
        const float *b, const float *bn, float *h, float *work) noexcept nogil:
    return cell_step[float](CELL_GRU, sizes, x, U, W, b, bn, h, NULL, work)

cdef int crnn_gru_step_f64(
        const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *b, const double *bn, double *h,
        double *work) noexcept nogil:
    return cell_step[double](CELL_GRU, sizes, x, U, W, b, bn, h, NULL, work)
