# One time step of a lane on the thread team, and the packed weights it
# reads (_step.pyx).
from cython cimport floating
from ._cells cimport CellArgs, CellSpec
from ._plan cimport LanePlan

cdef enum:
    # shares a StepJob can count pieces for (CRNN_MAX_THREADS of _team.h);
    # a larger team shares a step out without pieces
    MAX_SHARES = 16

cdef struct StepJob:
    # One time step of one lane for step_part.  Pointers hold the lane's
    # dtype (`single`: float); NULL where the cell has no such buffer.
    bint single, backward
    const CellSpec *cell
    int hidden
    int product_rows    # rows of the recurrent product
    const void *panels  # pack_weights: forward [Uᵀ; Wᵀ], backward W
    Py_ssize_t gate_panels  # elements per gate block of `panels` (forward)
    int input_width     # forward: D when panels carry Uᵀ; BPTT: K with V
    const void *inputs  # with input_width: x(t) (live × D); BPTT dY(t) (K)
    const void *bias    # forward with input_width: b (G·H,)
    const void *product_in  # forward: h(t-1); backward: dR(t+1)
    # the point-wise kernel's buffers; args.rows: live rows (0: no pass)
    CellArgs args
    void *db            # BPTT: += Σ_rows dZ(t), or NULL
    void *d_recurrent_bias  # BPTT: += Σ_rows dR(t)'s last block, or NULL
    # run_step: whether pieces may be used, units per piece (0: one equal
    # share per part), the pieces, and the next piece of each part's share
    # to take (step_part)
    bint pieces_allowed
    int piece_units
    int pieces
    int next_piece[MAX_SHARES]


# The fields of a lane's StepJob that stay the same at every step.
cdef void start_step_job(StepJob *job, bint backward, const LanePlan *plan,
                         const floating *panels, int input_width,
                         const floating *bias) noexcept nogil
# The step on the team, or on this thread when it is too small.
cdef void run_step(StepJob *job) noexcept nogil

# Elements of the packed weights for the forward (forward: [Uᵀ;] Wᵀ per gate
# block, D = plan.fused_width) or BPTT (W, or [W; V] with V (K × H) as U),
# and the packing itself, on the team.
cdef Py_ssize_t packed_size(floating tag, const LanePlan *plan, bint forward,
                            int K) noexcept nogil
cdef void pack_weights(floating tag, const LanePlan *plan, bint forward, int K,
                       const void *U, const void *W, void *panels) noexcept nogil


# sums[:n] += Σ_{r < rows} block[r·ld : r·ld + n]
cdef inline void add_rows(Py_ssize_t rows, int n, const floating *block, int ld,
                          floating *sums) noexcept nogil:
    cdef Py_ssize_t r, j
    for r in range(rows):
        for j in range(n):
            sums[j] += block[r * ld + j]
