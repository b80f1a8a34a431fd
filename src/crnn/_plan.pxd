# The plan of one lane's call: its sizes, its cell's table row and the fast
# paths that pay, decided once (plan_lane) and passed down instead of
# process-wide switches.  See _plan.pyx.
from ._cells cimport CellSpec

# The fast paths, as bit flags (statsmodels' FILTER_* style).  A plan
# starts from the process's allowed set (use_fast_paths, for benchmarks
# and tests) and keeps those that pay for its sizes.
cdef enum:
    PATH_PANELS = 0x01          # recurrent products on packed weights
    PATH_FUSED_INPUTS = 0x02    # x(t)·Uᵀ inside the step product
    PATH_MERGED = 0x04          # dU and dW in one product
    PATH_CHUNKED = 0x08         # ... taken in chunks inside the BPTT loop
    PATH_OUTPUTS_IN_STEP = 0x10  # dY(t)·V inside BPTT's step product
    PATH_PIECES = 0x20          # a step's units in pieces the threads take
    PATH_STEP_SUMS = 0x40       # db summed inside BPTT's steps
    PATH_ALL = 0x7f

cdef struct LanePlan:
    const CellSpec *cell    # the cell's table row
    int kind                # its CellKind
    int steps               # T: time steps of the padded batch
    int batch               # B: rows, sorted by length, longest first
    int inputs              # D: input features (or vocabulary size for tokens)
    int hidden              # H: hidden units
    int state_width         # S: the width of h; H, or P < H with a projection
                            # h = m·Rᵀ (an LSTM's proj_size; plan_projection)
    int gate_columns        # G·H
    int paths               # PATH_* flags in force for this call
    int fused_width         # D when the forward's panels carry Uᵀ, else 0
    bint keep_gates         # a BPTT follows: keep every step's Z

# The process's allowed fast paths (all, unless use_fast_paths says not).
cdef int allowed_paths() noexcept nogil
# A lane's plan: sizes, cell row, and the allowed paths that pay.  `tokens`:
# one-hot inputs; `training`: a BPTT follows the forward.
cdef void plan_lane(LanePlan *plan, int kind, int T, int B, int D, int H,
                    bint tokens, bint training) noexcept nogil
# A lane under recurrent dropout: its recurrent product reads h(t-1) ⊙ mask
# and its BPTT masks that product's gradient, on BLAS (no packed weights,
# no fused inputs, dU and dW apart, no outputs or sums inside the steps).
cdef void plan_recurrent_dropout(LanePlan *plan) noexcept nogil

# A lane whose h is projected, h(t) = m(t)·Rᵀ with R (S × H), S < H (PyTorch's
# proj_size): its products run on BLAS (no panels, no merged dU and dW).
cdef void plan_projection(LanePlan *plan, int state_width) noexcept nogil

# Gate columns where dR = dZ, so that dU and dW share a product.
cdef int shared_gate_columns(const LanePlan *plan) noexcept nogil
# Elements of lane_backward's `merged` scratch (dU and dW in one product) at
# the team's thread count, 0 where they keep two products; the elements
# that hold it at any thread count, item size and paths (a workspace sized
# once); and the rows [x | h] that a scratch of `size` elements holds.
cdef Py_ssize_t merged_size(const LanePlan *plan, size_t itemsize) noexcept nogil
cdef Py_ssize_t merged_room(const LanePlan *plan) noexcept nogil
cdef Py_ssize_t merged_scratch_rows(const LanePlan *plan,
                                    Py_ssize_t size) noexcept nogil
# Whether BPTT takes that product in chunks, and the steps of one chunk.
cdef bint chunks_pay(const LanePlan *plan, size_t itemsize) noexcept nogil
cdef Py_ssize_t chunk_steps(int B) noexcept nogil
