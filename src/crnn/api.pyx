"""crnn's C-level API, for other extensions: ``cimport crnn.api`` from
Cython, ``#include <crnn.h>`` from C and C++ (the capsule table below).

Nothing here is meant for Python; the contract (shapes, layout, workspace,
status codes) is written once, in api.pxd.  Each public function checks its
arguments, lays the caller's workspace out and runs the lane (_lane.pyx):
the same functions crnn's models and streams run.

Neighbours: the lane, its plan and the cell table below; nothing above.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset
from cython cimport floating

from ._cells cimport CellSpec, cell_spec, known_cell
from ._lane cimport (LaneGradients, LaneInputs, LaneStates, LaneWeights,
                     lane_backward, lane_forward)
from ._plan cimport (LanePlan, PATH_PANELS, merged_room, merged_scratch_rows,
                     merged_size, plan_lane)
from ._step cimport pack_weights


# ---------------------------------------------------------------- layout

cdef struct Layout:
    # Offsets into `work`, in elements of the data type.  Regions a cell does
    # not use are empty.  The forward part comes first, so a forward-only
    # workspace is a prefix of a training one.
    Py_ssize_t gates        # (T·B × G·H) activations kept for BPTT
    Py_ssize_t cs           # ((T+1)·B × H) pair-state cells: C, slot 0 = c0
    Py_ssize_t keep         # (T·B × H) cells that keep a buffer (the GRUs)
    Py_ssize_t peepholes    # (peephole_blocks × H) the forward's copy of P, for BPTT
    Py_ssize_t recurrent    # (B × G·H) separate-recurrent and gated cells: scratch
    Py_ssize_t panels_T     # [Uᵀ;] Wᵀ packed for the forward's step products
    Py_ssize_t forward_end
    Py_ssize_t dgates       # (T·B × G·H) ∂L/∂Z
    Py_ssize_t drecurrent   # (T·B × G·H) separate-recurrent cells: ∂L/∂R
    Py_ssize_t dh           # (B × H) ∂L/∂h carried back in time
    Py_ssize_t dc           # (B × H) pair-state cells: ∂L/∂C carried back
    Py_ssize_t panels       # W packed for the backward's recurrent products
    Py_ssize_t merged       # [dU | dW] block and rows [x | h] (merged_room)
    Py_ssize_t hs           # step only: (2·B × H) h, slot 0 carried in, slot 1 new
    Py_ssize_t total


cdef int check_sizes(int cell, const crnn_sizes *sizes, bint sequence) noexcept nogil:
    if not known_cell(cell):
        return CRNN_ERROR_CELL
    if sizes == NULL:
        return CRNN_ERROR_NULL
    if ((sequence and sizes.steps < 1) or sizes.batch < 1
            or sizes.inputs < 1 or sizes.hidden < 1):
        return CRNN_ERROR_SIZES
    # The GEMMs take C ints: T·B rows (all steps at once), G·H columns.
    cdef Py_ssize_t steps = sizes.steps if sequence else 1
    if (steps * sizes.batch > INT_MAX
            or <Py_ssize_t> cell_spec(cell).gate_blocks * sizes.hidden > INT_MAX):
        return CRNN_ERROR_SIZES
    return CRNN_OK


cdef int check_call(int cell, const crnn_sizes *sizes, bint sequence,
                    bint missing, bint no_bn, bint no_c) noexcept nogil:
    """CRNN_OK, or the call's first refusal: the cell, the sizes (check_sizes),
    then a required pointer: `missing` (the ones every cell needs), bn for a
    cell with a recurrent bias or peepholes (its P), c for a pair-state
    cell."""
    cdef int status = check_sizes(cell, sizes, sequence)
    if status != CRNN_OK:
        return status
    cdef const CellSpec *spec = cell_spec(cell)
    if (missing or ((spec.recurrent_bias or spec.peephole_blocks) and no_bn)
            or (spec.pair_state and no_c)):
        return CRNN_ERROR_NULL
    return CRNN_OK


cdef inline Py_ssize_t panel_room(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Elements that panels of a (k × n) matrix need in either type: columns
    rounded up to 16 (64 bytes of float; double's 8 divide it)."""
    return (n + 15) // 16 * 16 * k


cdef Layout sequence_layout(const LanePlan *plan) noexcept nogil:
    cdef Py_ssize_t T = plan.steps, B = plan.batch, H = plan.hidden
    cdef Py_ssize_t GH = plan.gate_columns
    cdef bint separate = plan.cell.separate_recurrent
    cdef bint scratch = separate or plan.cell.gated_blocks
    cdef bint pair = plan.cell.pair_state
    cdef Layout L
    # Elements [0, T) hold batch_sizes, T ints (an int is no wider than a
    # float); every region after it starts at a whole element.
    L.gates = T
    L.cs = L.gates + T * B * GH
    L.keep = L.cs + ((T + 1) * B * H if pair else 0)
    L.peepholes = L.keep + (T * B * H if plan.cell.keeps else 0)
    L.recurrent = L.peepholes + plan.cell.peephole_blocks * H
    L.panels_T = L.recurrent + (B * GH if scratch else 0)
    # room for Uᵀ too (unless separate), whether or not the call packs it
    # (the plan's fused_width)
    L.forward_end = L.panels_T + plan.cell.gate_blocks * panel_room(
        (0 if separate else plan.inputs) + H, H)
    L.dgates = L.forward_end
    L.drecurrent = L.dgates + T * B * GH
    L.dh = L.drecurrent + (T * B * GH if separate else 0)
    L.dc = L.dh + B * H
    L.panels = L.dc + (B * H if pair else 0)
    # dU and dW's one product: its block and T·B rows [x | h], where it may
    # pay at some thread count (lane_backward's `merged`)
    L.merged = L.panels + panel_room(GH, H)
    L.total = L.merged + merged_room(plan)
    L.hs = L.total
    return L


cdef Layout step_layout(const LanePlan *plan) noexcept nogil:
    # The forward part of the sequence layout with T = 1 (no batch_sizes:
    # the step keeps its one count on the stack), C in two slots like h,
    # and h itself, which a sequence call keeps in the caller's `hs`.
    cdef Py_ssize_t B = plan.batch, H = plan.hidden
    cdef Py_ssize_t GH = plan.gate_columns
    cdef bint scratch = plan.cell.separate_recurrent or plan.cell.gated_blocks
    cdef Layout L
    L.gates = 0
    L.cs = L.gates + B * GH
    L.keep = L.cs + (2 * B * H if plan.cell.pair_state else 0)
    L.peepholes = L.keep + (B * H if plan.cell.keeps else 0)
    L.recurrent = L.peepholes
    L.panels_T = L.recurrent + (B * GH if scratch else 0)
    L.forward_end = L.panels_T
    L.hs = L.forward_end
    L.total = L.hs + 2 * B * H
    L.dgates = L.drecurrent = L.dh = L.dc = L.panels = L.merged = L.total
    return L


cdef bint sequence_plan(LanePlan *plan, Layout *L, int cell,
                        const crnn_sizes *sizes, bint backward,
                        Py_ssize_t lwork) noexcept nogil:
    """A sequence call's plan and workspace layout; False when `lwork` is
    short of what the call (a forward, or a backward) needs."""
    plan_lane(plan, cell, sizes.steps, sizes.batch, sizes.inputs, sizes.hidden,
              False, True)
    L[0] = sequence_layout(plan)
    return lwork >= (L.total if backward else L.forward_end)


# --------------------------------------------------------- sizes and names

cdef const char *status_names[7]
status_names[<int> CRNN_OK] = "CRNN_OK"
status_names[<int> CRNN_ERROR_CELL] = "CRNN_ERROR_CELL"
status_names[<int> CRNN_ERROR_SIZES] = "CRNN_ERROR_SIZES"
status_names[<int> CRNN_ERROR_LENGTHS] = "CRNN_ERROR_LENGTHS"
status_names[<int> CRNN_ERROR_NULL] = "CRNN_ERROR_NULL"
status_names[<int> CRNN_ERROR_WORKSPACE] = "CRNN_ERROR_WORKSPACE"
status_names[<int> CRNN_ERROR_WORKSPACE_SIZE] = "CRNN_ERROR_WORKSPACE_SIZE"


cdef const char *crnn_status_name(int status) noexcept nogil:
    if 0 <= status <= CRNN_ERROR_WORKSPACE_SIZE:
        return status_names[status]
    return "unknown status"


cdef int crnn_gate_blocks(int cell) noexcept nogil:
    return cell_spec(cell).gate_blocks if known_cell(cell) else 0


cdef Py_ssize_t crnn_sequence_workspace_size(int cell, const crnn_sizes *sizes,
                                             bint backward) noexcept nogil:
    cdef LanePlan plan
    cdef Layout L
    if check_sizes(cell, sizes, True) != CRNN_OK:
        return -1
    sequence_plan(&plan, &L, cell, sizes, backward, 0)
    return L.total if backward else L.forward_end


cdef Py_ssize_t crnn_step_workspace_size(int cell,
                                         const crnn_sizes *sizes) noexcept nogil:
    cdef LanePlan plan
    if check_sizes(cell, sizes, False) != CRNN_OK:
        return -1
    plan_lane(&plan, cell, 1, sizes.batch, sizes.inputs, sizes.hidden, False, True)
    return step_layout(&plan).total


cdef void crnn_length_order(int batch, const int *lengths,
                            int *order) noexcept nogil:
    # insertion sort, stable: a batch is small next to its sequences
    cdef int i, j, row
    for i in range(batch):
        row = i
        j = i
        while j > 0 and lengths[order[j - 1]] < lengths[row]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = row


# ----------------------------------------------------------- generic bodies

cdef int fill_batch_sizes(int T, int B, const int *lengths,
                          int *batch_sizes) noexcept nogil:
    """batch_sizes[t] = sequences longer than t (a prefix, lengths sorted)."""
    cdef int t, r, live = B
    if lengths == NULL:
        for t in range(T):
            batch_sizes[t] = B
        return CRNN_OK
    for r in range(B):
        if (lengths[r] < 1 or lengths[r] > T
                or (r > 0 and lengths[r] > lengths[r - 1])):
            return CRNN_ERROR_LENGTHS
    for t in range(T):
        while live > 0 and lengths[live - 1] <= t:
            live -= 1
        batch_sizes[t] = live
    return CRNN_OK


cdef int sequence_forward(int cell, const crnn_sizes *sizes, const int *lengths,
                          const floating *x, const floating *U,
                          const floating *W, const floating *b,
                          const floating *bn, const floating *h0,
                          const floating *c0, floating *hs, floating *h_n,
                          floating *c_n, floating *work,
                          Py_ssize_t lwork) noexcept nogil:
    cdef int status = check_call(
        cell, sizes, True, x == NULL or U == NULL or W == NULL or b == NULL
        or hs == NULL or work == NULL, bn == NULL, False)
    if status != CRNN_OK:
        return status
    cdef const CellSpec *spec = cell_spec(cell)
    cdef LanePlan plan
    cdef Layout L
    if not sequence_plan(&plan, &L, cell, sizes, False, lwork):
        return CRNN_ERROR_WORKSPACE_SIZE
    cdef int T = sizes.steps, B = sizes.batch, H = sizes.hidden
    cdef Py_ssize_t state = <Py_ssize_t> B * H, r, last
    status = fill_batch_sizes(T, B, lengths, <int *> work)
    if status != CRNN_OK:
        return status
    if h0 == NULL:
        memset(hs, 0, state * sizeof(floating))
    elif h0 != hs:
        memcpy(hs, h0, state * sizeof(floating))
    cdef floating *cs = work + L.cs if spec.pair_state else NULL
    if spec.pair_state:
        if c0 == NULL:
            memset(cs, 0, state * sizeof(floating))
        else:
            memcpy(cs, c0, state * sizeof(floating))
    cdef LaneInputs inputs
    cdef LaneWeights weights
    cdef LaneStates states
    inputs.batch_sizes, inputs.x, inputs.tokens = <int *> work, x, NULL
    weights.U, weights.U_T, weights.W, weights.b = U, NULL, W, b
    weights.recurrent_bias = bn if spec.recurrent_bias else NULL
    # a peephole cell's P (passed as bn), kept in `work` for its backward
    weights.peepholes = NULL
    if spec.peephole_blocks:
        memcpy(work + L.peepholes, bn,
               spec.peephole_blocks * H * sizeof(floating))
        weights.peepholes = work + L.peepholes
    weights.panels = NULL
    if plan.paths & PATH_PANELS:
        weights.panels = work + L.panels_T
        pack_weights(<floating> 0, &plan, True, 0, U, W, work + L.panels_T)
    states.gates, states.hs, states.cs = work + L.gates, hs, cs
    states.recurrent = work + L.recurrent if L.panels_T > L.recurrent else NULL
    states.keep = work + L.keep if spec.keeps else NULL
    states.recurrent_mask = NULL    # inference: no dropout
    lane_forward(<floating> 0, &plan, &inputs, &weights, &states)
    # Final states: row r's state after its own last step, slot lengths[r].
    for r in range(B):
        last = (lengths[r] if lengths != NULL else T) * state + r * H
        if h_n != NULL:
            memcpy(h_n + r * H, hs + last, H * sizeof(floating))
        if spec.pair_state and c_n != NULL:
            memcpy(c_n + r * H, cs + last, H * sizeof(floating))
    return CRNN_OK


cdef int sequence_backward(int cell, const crnn_sizes *sizes,
                           const floating *x, const floating *U,
                           const floating *W, const floating *hs,
                           const floating *dhs, const floating *dh_n,
                           const floating *dc_n, floating *dU, floating *dW,
                           floating *db, floating *dbn, floating *dx,
                           floating *dh0, floating *dc0,
                           floating *work, Py_ssize_t lwork) noexcept nogil:
    cdef int status = check_call(
        cell, sizes, True, x == NULL or W == NULL or hs == NULL or dU == NULL
        or dW == NULL or db == NULL or work == NULL or (dx != NULL and U == NULL),
        dbn == NULL, False)
    if status != CRNN_OK:
        return status
    cdef const CellSpec *spec = cell_spec(cell)
    cdef LanePlan plan
    cdef Layout L
    if not sequence_plan(&plan, &L, cell, sizes, True, lwork):
        return CRNN_ERROR_WORKSPACE_SIZE
    cdef int T = sizes.steps, B = sizes.batch, H = sizes.hidden, t
    cdef Py_ssize_t state = <Py_ssize_t> B * H
    cdef const int *batch_sizes = <const int *> work
    # A cheap guard against a workspace the forward did not fill: the live
    # counts start at B and never grow (they reach 0 when every sequence is
    # shorter than T).
    if batch_sizes[0] != B:
        return CRNN_ERROR_WORKSPACE
    for t in range(1, T):
        if batch_sizes[t] < 0 or batch_sizes[t] > batch_sizes[t - 1]:
            return CRNN_ERROR_WORKSPACE
    cdef LaneInputs inputs
    cdef LaneWeights weights
    cdef LaneStates states
    cdef LaneGradients g
    inputs.batch_sizes, inputs.x, inputs.tokens = batch_sizes, x, NULL
    weights.U, weights.U_T, weights.W, weights.b = U, NULL, W, NULL
    weights.recurrent_bias = NULL
    weights.peepholes = work + L.peepholes if spec.peephole_blocks else NULL
    weights.panels = NULL
    if plan.paths & PATH_PANELS:
        weights.panels = work + L.panels
        pack_weights(<floating> 0, &plan, False, 0, NULL, W, work + L.panels)
    states.gates, states.hs = work + L.gates, hs
    states.cs = work + L.cs if spec.pair_state else NULL
    states.keep = work + L.keep if spec.keeps else NULL
    states.recurrent_mask = NULL    # inference: no dropout
    states.recurrent = work + L.recurrent if L.panels_T > L.recurrent else NULL
    memset(&g, 0, sizeof(LaneGradients))
    g.dh_outputs, g.dh_final = dhs, dh_n
    g.dc_final = dc_n if spec.pair_state else NULL
    g.dgates = work + L.dgates
    g.drecurrent = work + L.drecurrent if spec.separate_recurrent else NULL
    g.dh = work + L.dh
    g.dc = work + L.dc if spec.pair_state else NULL
    g.dU, g.dW, g.db, g.dx = dU, dW, db, dx
    g.d_recurrent_bias = dbn if spec.recurrent_bias else NULL
    g.dpeepholes = dbn if spec.peephole_blocks else NULL
    if merged_size(&plan, sizeof(floating)) > 0:
        g.merged = work + L.merged
        g.merged_rows = <Py_ssize_t> T * B
    lane_backward(<floating> 0, &plan, &inputs, &weights, &states, &g)
    if dh0 != NULL:
        memcpy(dh0, work + L.dh, state * sizeof(floating))
    if spec.pair_state and dc0 != NULL:
        memcpy(dc0, work + L.dc, state * sizeof(floating))
    return CRNN_OK


cdef int cell_step(int cell, const crnn_sizes *sizes, const floating *x,
                   const floating *U, const floating *W, const floating *b,
                   const floating *bn, floating *h, floating *c,
                   floating *work, Py_ssize_t lwork) noexcept nogil:
    cdef int status = check_call(
        cell, sizes, False, x == NULL or U == NULL or W == NULL or b == NULL
        or h == NULL or work == NULL, bn == NULL, c == NULL)
    if status != CRNN_OK:
        return status
    cdef const CellSpec *spec = cell_spec(cell)
    cdef LanePlan plan
    plan_lane(&plan, cell, 1, sizes.batch, sizes.inputs, sizes.hidden, False, True)
    cdef Layout L = step_layout(&plan)
    if lwork < L.total:
        return CRNN_ERROR_WORKSPACE_SIZE
    cdef size_t state_bytes = <size_t> sizes.batch * sizes.hidden * sizeof(floating)
    cdef Py_ssize_t state = <Py_ssize_t> sizes.batch * sizes.hidden
    cdef int batch_sizes[1]
    cdef LaneInputs inputs
    cdef LaneWeights weights
    cdef LaneStates states
    batch_sizes[0] = sizes.batch
    inputs.batch_sizes, inputs.x, inputs.tokens = batch_sizes, x, NULL
    weights.U, weights.U_T, weights.W, weights.b = U, NULL, W, b
    weights.recurrent_bias = bn if spec.recurrent_bias else NULL
    weights.peepholes = bn if spec.peephole_blocks else NULL
    weights.panels = NULL
    states.gates, states.hs = work + L.gates, work + L.hs
    states.cs = work + L.cs if spec.pair_state else NULL
    states.recurrent = work + L.recurrent if L.panels_T > L.recurrent else NULL
    states.keep = work + L.keep if spec.keeps else NULL
    states.recurrent_mask = NULL    # inference: no dropout
    memcpy(work + L.hs, h, state_bytes)
    if spec.pair_state:
        memcpy(work + L.cs, c, state_bytes)
    lane_forward(<floating> 0, &plan, &inputs, &weights, &states)
    memcpy(h, work + L.hs + state, state_bytes)
    if spec.pair_state:
        memcpy(c, work + L.cs + state, state_bytes)
    return CRNN_OK


# ------------------------------------------------------- the public functions
# The type is fixed by the name; the cell is an argument.

cdef int crnn_forward_f32(
        int cell, const crnn_sizes *sizes, const int *lengths, const float *x,
        const float *U, const float *W, const float *b, const float *bn,
        const float *h0, const float *c0, float *hs, float *h_n, float *c_n,
        float *work, Py_ssize_t lwork) noexcept nogil:
    return sequence_forward(cell, sizes, lengths, x, U, W, b, bn, h0, c0, hs,
                            h_n, c_n, work, lwork)

cdef int crnn_forward_f64(
        int cell, const crnn_sizes *sizes, const int *lengths, const double *x,
        const double *U, const double *W, const double *b, const double *bn,
        const double *h0, const double *c0, double *hs, double *h_n,
        double *c_n, double *work, Py_ssize_t lwork) noexcept nogil:
    return sequence_forward(cell, sizes, lengths, x, U, W, b, bn, h0, c0, hs,
                            h_n, c_n, work, lwork)

cdef int crnn_backward_f32(
        int cell, const crnn_sizes *sizes, const float *x, const float *U,
        const float *W, const float *hs, const float *dhs, const float *dh_n,
        const float *dc_n, float *dU, float *dW, float *db, float *dbn,
        float *dx, float *dh0, float *dc0, float *work,
        Py_ssize_t lwork) noexcept nogil:
    return sequence_backward(cell, sizes, x, U, W, hs, dhs, dh_n, dc_n, dU, dW,
                             db, dbn, dx, dh0, dc0, work, lwork)

cdef int crnn_backward_f64(
        int cell, const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *hs, const double *dhs,
        const double *dh_n, const double *dc_n, double *dU, double *dW,
        double *db, double *dbn, double *dx, double *dh0, double *dc0,
        double *work, Py_ssize_t lwork) noexcept nogil:
    return sequence_backward(cell, sizes, x, U, W, hs, dhs, dh_n, dc_n, dU, dW,
                             db, dbn, dx, dh0, dc0, work, lwork)

cdef int crnn_step_f32(
        int cell, const crnn_sizes *sizes, const float *x, const float *U,
        const float *W, const float *b, const float *bn, float *h, float *c,
        float *work, Py_ssize_t lwork) noexcept nogil:
    return cell_step(cell, sizes, x, U, W, b, bn, h, c, work, lwork)

cdef int crnn_step_f64(
        int cell, const crnn_sizes *sizes, const double *x, const double *U,
        const double *W, const double *b, const double *bn, double *h,
        double *c, double *work, Py_ssize_t lwork) noexcept nogil:
    return cell_step(cell, sizes, x, U, W, b, bn, h, c, work, lwork)


# ------------------------------------------------------ the C header's door
# crnn.h (crnn.get_include()) reads this table through the capsule
# crnn.api._C_API, in this order (its struct crnn_api).

cdef int crnn_api_version() noexcept nogil:
    return CRNN_API_VERSION


cdef void *c_api_table[12]
c_api_table[0] = <void *> crnn_api_version
c_api_table[1] = <void *> crnn_status_name
c_api_table[2] = <void *> crnn_gate_blocks
c_api_table[3] = <void *> crnn_sequence_workspace_size
c_api_table[4] = <void *> crnn_step_workspace_size
c_api_table[5] = <void *> crnn_length_order
c_api_table[6] = <void *> crnn_forward_f32
c_api_table[7] = <void *> crnn_forward_f64
c_api_table[8] = <void *> crnn_backward_f32
c_api_table[9] = <void *> crnn_backward_f64
c_api_table[10] = <void *> crnn_step_f32
c_api_table[11] = <void *> crnn_step_f64
_C_API = PyCapsule_New(<void *> c_api_table, "crnn.api._C_API", NULL)
