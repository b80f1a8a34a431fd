"""The plan of one lane's call: which fast paths pay, decided once.

Every heuristic of the engine lives here, each with the measurement that
set it.  ``plan_lane`` fills a ``LanePlan`` (sizes, the cell's table row,
the PATH_* flags in force) that the lane, the network and the C API pass
down; nothing below reads a process-wide switch.

``use_fast_paths`` is the one override, for benchmarks and tests: it
narrows the set of paths a plan may take (results stay bit-identical for
each path; the tests check that each switch keeps the gradients).

Neighbours: the cell table (_cells) and the BLAS shim's packed-kernel
query below; the lane, the network and the C API above.
"""
from libc.limits cimport INT_MAX

from ._blas cimport packed_gemm_fast
from ._cells cimport cell_spec
from ._parallel cimport team_threads

cdef enum:
    # Sequences at least this long run their recurrent products on packed
    # weights (see _packed_gemm.h); shorter ones call BLAS, and so do steps
    # with one live row (GEMV).
    PANELS_MIN_STEPS = 4
    # dU and dW in one product from this many gate columns G·H on; from
    # MERGE_MIN_GATES_CHUNKED on at one thread when it runs in chunks
    MERGE_MIN_GATES = 256
    MERGE_MIN_GATES_CHUNKED = 128
    # that product taken a chunk of about this many rows at a time, inside
    # the BPTT loop, while its steps' dZ are still in cache, when its
    # result block (re-read by every chunk) is at most CHUNK_MAX_BLOCK bytes
    CHUNK_ROWS = 512
    CHUNK_MAX_BLOCK = 512 * 1024

cdef int allowed = PATH_ALL

# use_fast_paths's names for the PATH_* flags
_NAMES = {"packed_gemm": PATH_PANELS, "fused_inputs": PATH_FUSED_INPUTS,
          "merged_weight_gradients": PATH_MERGED,
          "chunked_weight_gradients": PATH_CHUNKED,
          "outputs_in_step": PATH_OUTPUTS_IN_STEP,
          "step_pieces": PATH_PIECES, "bias_sums_in_steps": PATH_STEP_SUMS}


def use_fast_paths(**switches):
    """Allow (True) or forbid (False) fast paths by name, for benchmarks and
    tests; returns every path's previous setting, so that
    ``use_fast_paths(**previous)`` restores them.

    packed_gemm               the recurrent products on weights packed once
    fused_inputs              x(t)·Uᵀ inside the step's packed product
    merged_weight_gradients   dU and dW in one product
    chunked_weight_gradients  ... in chunks of steps inside the BPTT loop
    outputs_in_step           the output layer's dY(t)·V inside BPTT's step
    step_pieces               a step's units in pieces the threads take
    bias_sums_in_steps        db summed inside BPTT's steps
    """
    global allowed
    unknown = sorted(set(switches) - set(_NAMES))
    if unknown:
        raise ValueError(f"fast paths are {sorted(_NAMES)}, got {unknown}")
    previous = {name: bool(allowed & flag) for name, flag in _NAMES.items()}
    for name, enabled in switches.items():
        if enabled:
            allowed |= _NAMES[name]
        else:
            allowed &= ~_NAMES[name]
    return previous


cdef int allowed_paths() noexcept nogil:
    return allowed


cdef void plan_lane(LanePlan *plan, int kind, int T, int B, int D, int H,
                    bint tokens, bint training) noexcept nogil:
    plan.cell = cell_spec(kind)
    plan.kind = kind
    plan.steps, plan.batch, plan.inputs, plan.hidden = T, B, D, H
    plan.state_width = H
    plan.gate_columns = plan.cell.gate_blocks * H
    plan.keep_gates = training
    plan.paths = allowed
    # A batch of one is a matrix-vector product, which BLAS's GEMV does well.
    # A cell with a gate pass between two products runs them on BLAS.
    if not (packed_gemm_fast() and T >= PANELS_MIN_STEPS and B > 1
            and not plan.cell.gated_blocks):
        plan.paths &= ~PATH_PANELS
    # x(t)·Uᵀ in the step's product: dense inputs, cells whose recurrent
    # product adds to Z (one-hot tokens are a gather; the GRU keeps h·Wᵀ
    # apart), panels of D + H rows within int
    plan.fused_width = 0
    if (plan.paths & PATH_PANELS and plan.paths & PATH_FUSED_INPUTS
            and not tokens and not plan.cell.separate_recurrent
            and D <= INT_MAX - H):
        plan.fused_width = D


cdef void plan_projection(LanePlan *plan, int state_width) noexcept nogil:
    """h(t) = m(t)·Rᵀ of width S = state_width < H.  The packed panels and
    the merged dU, dW product assume h as wide as the cell (H): such a lane
    runs its products on BLAS, with the projection a product of its own
    after each step's point-wise pass."""
    plan.state_width = state_width
    plan.paths &= ~(PATH_PANELS | PATH_MERGED)
    plan.fused_width = 0


cdef void plan_recurrent_dropout(LanePlan *plan) noexcept nogil:
    """The paths of a lane under recurrent dropout: the mask sits between
    h(t-1) and W, on both sides of BPTT, where the fused step products and
    the merged dU/dW product read h(t-1) itself; so its products run on
    BLAS (training with recurrent dropout only: inference never drops)."""
    plan.paths &= ~(PATH_PANELS | PATH_FUSED_INPUTS | PATH_MERGED
                    | PATH_CHUNKED | PATH_OUTPUTS_IN_STEP | PATH_STEP_SUMS)
    plan.fused_width = 0

cdef int shared_gate_columns(const LanePlan *plan) noexcept nogil:
    """Gate columns where dR = dZ and dW multiplies h(t-1), so that dU and
    dW share a product: all G·H, or the GRU's r and z blocks (its n block's
    dR is dZ·r; a gated cell's n block multiplies its keep)."""
    if plan.cell.gated_blocks:
        return plan.gate_columns - plan.cell.gated_blocks * plan.hidden
    if plan.cell.separate_recurrent:
        return plan.gate_columns - plan.hidden
    return plan.gate_columns


cdef bint chunks_pay(const LanePlan *plan, size_t itemsize) noexcept nogil:
    """Whether lane_backward takes the one product for dU and dW in chunks:
    when its result block, re-read by every chunk, is small (see
    CHUNK_MAX_BLOCK)."""
    return (plan.paths & PATH_CHUNKED != 0
            and <size_t> shared_gate_columns(plan) * (plan.inputs + plan.hidden)
            * itemsize <= CHUNK_MAX_BLOCK)


cdef inline bint merge_pays(const LanePlan *plan, Py_ssize_t rows,
                            size_t itemsize) noexcept nogil:
    """Whether dU and dW share one product (measured, float32 training):
    from G·H = 256 on (the RNN at H = 128 lost 4 %, at H = 256 gained 5 %
    with the product after the loop); from G·H = 128 on at one thread when
    the product runs in chunks of at least CHUNK_ROWS rows (the RNN at
    (100,32,32,128,32): 0.89-0.97x at 1 thread, 1.03-1.10x at 2)."""
    if plan.gate_columns >= MERGE_MIN_GATES:
        return True
    return (plan.gate_columns >= MERGE_MIN_GATES_CHUNKED and team_threads() == 1
            and rows >= CHUNK_ROWS and chunks_pay(plan, itemsize))


cdef Py_ssize_t chunk_steps(int B) noexcept nogil:
    """Steps of one chunk of the product for dU and dW (about CHUNK_ROWS
    rows, at least one step)."""
    return max(1, CHUNK_ROWS // B)


cdef Py_ssize_t merged_size(const LanePlan *plan, size_t itemsize) noexcept nogil:
    """Elements of lane_backward's `merged` scratch where dU and dW share one
    product at the team's thread count, else 0: the result block [dU | dW]
    (G·H × (D+H)), then the rows [x(t) | h(t-1)] of one product, a chunk's
    (chunks_pay) or all T·B.  At most merged_room."""
    cdef Py_ssize_t rows = <Py_ssize_t> plan.steps * plan.batch
    if not (plan.paths & PATH_MERGED and merge_pays(plan, rows, itemsize)):
        return 0
    if chunks_pay(plan, itemsize):
        rows = min(<Py_ssize_t> plan.steps, chunk_steps(plan.batch)) * plan.batch
    return (plan.gate_columns + rows) * (plan.inputs + plan.hidden)


cdef Py_ssize_t merged_scratch_rows(const LanePlan *plan,
                                    Py_ssize_t size) noexcept nogil:
    """Rows [x | h] that a merged scratch of `size` elements holds."""
    return max(0, size // (plan.inputs + plan.hidden) - plan.gate_columns)


cdef Py_ssize_t merged_room(const LanePlan *plan) noexcept nogil:
    """Elements that hold merged_size's scratch at any thread count, item
    size and allowed paths: what a workspace sized once (the C API's)
    reserves."""
    if plan.gate_columns < MERGE_MIN_GATES_CHUNKED:
        return 0
    return ((plan.gate_columns + <Py_ssize_t> plan.steps * plan.batch)
            * (plan.inputs + plan.hidden))
