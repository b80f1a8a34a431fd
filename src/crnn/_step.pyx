"""One time step of a lane on the thread team, and the packed weights it reads.

With packed weights, a step is shared out among crnn's threads by hidden
units: each part forms the recurrent products of its own units (all gate
blocks) and runs the point-wise kernel on them, so the point-wise work is
split too, with one handoff per step.  Parts write disjoint columns (whole
cache lines: workspace buffers start on one) with the same arithmetic, so
results do not depend on the thread count.  In BPTT a step's part first
forms its units of dH(t) = dR(t+1) @ W (which needs every unit of
dR(t+1): the previous step's join is the barrier), then runs the cell's
backward kernel on them.

Neighbours: the plan, the cell table, the parallel module and the BLAS
shim's packed kernel below; the lane (_lane.pyx) above.
"""
from cython cimport floating
from libc.string cimport memset

from ._blas cimport packed_gemm, packed_gemm_pair, pack_panel_rows, panels_size
from ._cells cimport CRNN_BACKWARD, CRNN_FORWARD, CellArgs, CellSpec, run_cell
from ._parallel cimport team_parts, team_run
from ._plan cimport LanePlan, PATH_PIECES

cdef enum:
    # The team's parts of a step start on whole panels (64 bytes: 16
    # floats, 8 doubles).
    UNIT_ALIGN = 16
    # A step on the team is cut into about this many pieces per thread,
    # which the threads take as they come (step_part)
    PIECES_PER_THREAD = 8
    # packing one element (a strided read, 1-2 cycles) against the 16 or
    # more multiply-adds a cycle of the products that team_parts weighs
    PACK_WORK_PER_ELEMENT = 16

cdef extern from *:
    """
    /* the next piece of a step (a counter shared by the team's threads) */
    #if defined(_MSC_VER)
    #include <intrin.h>
    #endif
    static inline int crnn_next_piece(int *counter)
    {
    #if defined(__GNUC__) || defined(__clang__)
        return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    #elif defined(_MSC_VER)
        return _InterlockedExchangeAdd((volatile long *) counter, 1);
    #else
        return (*counter)++;    /* no team without threads (_team.h) */
    #endif
    }
    """
    int crnn_next_piece(int *counter) nogil


# --------------------------------------------------------- packed weights

cdef inline int unit_blocks(int hidden) noexcept nogil:
    """Pieces of UNIT_ALIGN units (whole panels) the team splits H into."""
    return (hidden + UNIT_ALIGN - 1) // UNIT_ALIGN


cdef inline int part_start(int hidden, int part, int parts) noexcept nogil:
    """The first unit of `part` of `parts` (part = parts: H): whole panels,
    as many to each part as can be.  Steps and packing split alike."""
    return min(hidden,
               <int> (<long long> unit_blocks(hidden) * part // parts) * UNIT_ALIGN)


cdef struct PackJob:
    # Weights to pack for pack_part; pointers of the dtype (`single`: float).
    bint single, forward
    int G, H, D
    const void *U       # forward: U (G·H × D); BPTT: V (D × H) under W
    const void *W       # (G·H × H)
    void *panels


cdef Py_ssize_t packed_size(floating tag, const LanePlan *plan, bint forward,
                            int K) noexcept nogil:
    cdef int G = plan.cell.gate_blocks, H = plan.hidden
    if forward:
        return G * panels_size(tag, plan.fused_width + H, H)
    return panels_size(tag, G * H + K, H)


cdef void pack_weights(floating tag, const LanePlan *plan, bint forward, int K,
                       const void *U, const void *W, void *panels) noexcept nogil:
    """The weights packed for the time loop's products (_packed_gemm.h).

    forward: gate block by gate block, block g is [U_gᵀ; W_gᵀ] ((D + H) ×
    H; U_gᵀ only when D = plan.fused_width > 0), U_g and W_g the rows
    [g·H, (g+1)·H) of U (G·H × D) and W (G·H × H), in its own panels, so
    that units [u, u + n) of every gate start on a panel (u a multiple of
    UNIT_ALIGN) whatever H is.  BPTT: W (G·H × H) itself as B, or with
    K > 0 [W; U], U then the output layer's V (K × H): dH(t) = dR(t+1)·W
    + dY(t)·V in one product (G·H + K rows).

    Shared out among the team by units as the steps are: each part packs
    the panels its own steps will read."""
    cdef PackJob job
    cdef int G = plan.cell.gate_blocks, H = plan.hidden
    cdef int D = plan.fused_width if forward else K
    job.single = floating is float
    job.forward = forward
    job.G, job.H, job.D = G, H, D
    job.U, job.W, job.panels = U, W, panels
    # an element copied into the panels costs about as much time as
    # PACK_WORK_PER_ELEMENT multiply-adds of a product (team_parts' unit)
    team_run(pack_part, &job,
             team_parts(<double> PACK_WORK_PER_ELEMENT * H
                        * (G * (D + H) if forward else G * H + D),
                        unit_blocks(H)))


cdef void pack_units(floating tag, const PackJob *job, int first,
                     int last) noexcept nogil:
    """Units [first, last) (whole panels) of every gate block's panels."""
    cdef int G = job.G, H = job.H, D = job.D, n = last - first
    cdef const floating *U = <const floating *> job.U
    cdef const floating *W = <const floating *> job.W
    cdef floating *panels = <floating *> job.panels
    cdef Py_ssize_t block, g, at
    if n <= 0:
        return
    if not job.forward:
        # columns [first, last) of B = [W; V] ((G·H + D) × H)
        at = <Py_ssize_t> first * (G * H + D)
        pack_panel_rows(False, G * H, n, W + first, H, panels + at, G * H + D, 0)
        if D > 0:
            pack_panel_rows(False, D, n, U + first, H, panels + at, G * H + D,
                            G * H)
        return
    block = panels_size(tag, D + H, H)
    for g in range(G):
        # columns [first, last) of [U_gᵀ; W_gᵀ]: rows first.. of U_g, W_g
        at = g * block + <Py_ssize_t> first * (D + H)
        if D > 0:
            pack_panel_rows(True, D, n, U + (<Py_ssize_t> g * H + first) * D,
                            D, panels + at, D + H, 0)
        pack_panel_rows(True, H, n, W + (<Py_ssize_t> g * H + first) * H, H,
                        panels + at, D + H, D)


cdef void pack_part(void *arg, int part, int parts) noexcept nogil:
    """The team's task: this part's units, split as step_part splits them."""
    cdef const PackJob *job = <const PackJob *> arg
    cdef int first = part_start(job.H, part, parts)
    cdef int last = part_start(job.H, part + 1, parts)
    if job.single:
        pack_units(<float> 0, job, first, last)
    else:
        pack_units(<double> 0, job, first, last)


# ------------------------------------- one time step on the thread team

cdef void start_step_job(StepJob *job, bint backward, const LanePlan *plan,
                         const floating *panels, int input_width,
                         const floating *bias) noexcept nogil:
    """The fields of a lane's StepJob that stay the same at every step."""
    memset(job, 0, sizeof(StepJob))
    job.single = floating is float
    job.backward = backward
    job.cell = plan.cell
    job.hidden = plan.hidden
    job.panels = panels
    job.input_width = input_width
    job.gate_panels = panels_size(panels[0], input_width + plan.hidden,
                                  plan.hidden)
    job.bias = bias
    job.pieces_allowed = plan.paths & PATH_PIECES != 0
    job.args.hidden = plan.hidden


cdef void step_products(floating tag, const StepJob *job, int first,
                        int n) noexcept nogil:
    """The forward step's recurrent products for units [first, first + n)."""
    cdef int H = job.hidden, G = job.cell.gate_blocks
    cdef int GH = G * H, g, D = job.input_width
    cdef bint separate = job.cell.separate_recurrent
    cdef const floating *panels = <const floating *> job.panels
    cdef const floating *product_in = <const floating *> job.product_in
    cdef const floating *bias = <const floating *> job.bias
    cdef floating *product_out = <floating *> (job.args.recurrent if separate
                                                else job.args.gates)
    for g in range(G):
        if D > 0:
            # Z[:, g·H+first : +n] = b_g + x(t) @ U_gᵀ + h(t-1) @ W_gᵀ
            #   on units [first, last): (live × n) = (n,)
            #   + (live × D)(D × n) + (live × H)(H × n)
            packed_gemm_pair(job.product_rows, n,
                             D, <const floating *> job.inputs, D,
                             H, product_in, H,
                             panels + g * job.gate_panels
                             + <Py_ssize_t> first * (D + H),
                             bias + g * H + first, False,
                             product_out + g * H + first, GH)
        else:
            # R[:, g·H+first : +n] (+)= h(t-1) @ W_gᵀ[:, first : last]
            #   (live × n) = (live × H)(H × n); added to Z unless separate
            packed_gemm(job.product_rows, n, H, product_in, H,
                        panels + g * job.gate_panels + <Py_ssize_t> first * H,
                        not separate, product_out + g * H + first, GH)


cdef void step_back_products(floating tag, const StepJob *job, int first,
                             int n) noexcept nogil:
    """BPTT's product for units [first, first + n): dH(t) from dR(t+1)."""
    cdef int H = job.hidden, GH = job.cell.gate_blocks * job.hidden
    cdef int D = job.input_width
    cdef bint separate = job.cell.separate_recurrent
    cdef const floating *panels = <const floating *> job.panels
    cdef const floating *product_in = <const floating *> job.product_in
    if job.product_rows > 0 and D > 0:
        # dH(t)[:, first : last] (+)= dR(t+1) @ W[:, first : last]
        #                             + dY(t) @ V[:, first : last]
        #   (rows × n) = (rows × G·H)(G·H × n) + (rows × K)(K × n), K = D
        packed_gemm_pair(job.product_rows, n, GH, product_in, GH,
                         D, <const floating *> job.inputs, D,
                         panels + <Py_ssize_t> first * (GH + D), NULL,
                         separate, <floating *> job.args.dh + first, H)
    elif job.product_rows > 0:
        # dH(t)[:, first : last] (+)= dR(t+1) @ W[:, first : last]
        #   (rows × n) = (rows × G·H)(G·H × n); += keeps the direct part a
        #   separate-recurrent cell left in dh
        packed_gemm(job.product_rows, n, GH, product_in, GH,
                    panels + <Py_ssize_t> first * GH, separate,
                    <floating *> job.args.dh + first, H)


cdef void step_units(floating tag, const StepJob *job, int first,
                     int last) noexcept nogil:
    """The step for units [first, last): products, then point-wise pass."""
    cdef int H = job.hidden, G = job.cell.gate_blocks
    cdef int GH = G * H, n = last - first, g
    cdef CellArgs args
    if n <= 0:
        return
    if job.backward:
        step_back_products(tag, job, first, n)
    else:
        step_products(tag, job, first, n)
    if job.args.rows == 0:
        return
    args = job.args
    args.first, args.count = first, n
    run_cell(job.cell, CRNN_BACKWARD if job.backward else CRNN_FORWARD,
             floating is float, &args)
    if not job.backward:
        return
    if job.db != NULL:
        # db[g·H + first : +n] += Σ_rows dZ(t)[:, g·H + first : +n] for
        # every gate block g, while this part's dZ(t) is in cache
        for g in range(G):
            add_rows(args.rows, n, <const floating *> args.dgates + g * H + first,
                     GH, <floating *> job.db + g * H + first)
    if job.d_recurrent_bias != NULL:
        # the recurrent bias is added to R's last block: Σ_rows dR(t)
        add_rows(args.rows, n,
                 <const floating *> args.drecurrent + GH - H + first, GH,
                 <floating *> job.d_recurrent_bias + first)


cdef void step_part(void *arg, int part, int parts) noexcept nogil:
    """The team's task: this part's share of the units, whole panels.

    With pieces, the share is cut into pieces; a part takes its own share's
    pieces one at a time, then those of the other parts' shares not taken
    yet.  That balances threads that run at different speeds for a while
    (the machine's other work, an interrupt), where with one equal share the
    faster thread waits at each step's join, while each part still reads
    its own units' panels (in its own cache) first.  Each unit's arithmetic
    is the same whoever takes its piece."""
    cdef StepJob *job = <StepJob *> arg
    cdef int first, last, turn, share, piece, end
    if job.piece_units == 0:
        first = part_start(job.hidden, part, parts)
        last = part_start(job.hidden, part + 1, parts)
        step_range(job, first, last)
        return
    for turn in range(parts):
        share = (part + turn) % parts
        end = (<long long> job.pieces * (share + 1)) // parts
        while True:
            piece = crnn_next_piece(&job.next_piece[share])
            if piece >= end:
                break
            first = piece * job.piece_units
            step_range(job, first, min(job.hidden, first + job.piece_units))


cdef inline void step_range(const StepJob *job, int first,
                            int last) noexcept nogil:
    if job.single:
        step_units(<float> 0, job, first, last)
    else:
        step_units(<double> 0, job, first, last)


cdef void run_step(StepJob *job) noexcept nogil:
    """The step on the team, or on this thread when it is too small."""
    cdef double work = (<double> max(job.args.rows, job.product_rows)
                        * job.cell.gate_blocks * job.hidden * job.hidden)
    cdef int blocks = unit_blocks(job.hidden)
    cdef int parts = team_parts(work, blocks), part
    job.piece_units = 0
    if parts > 1:
        if job.pieces_allowed and parts <= MAX_SHARES:
            job.piece_units = max(1, blocks // (PIECES_PER_THREAD * parts)) * UNIT_ALIGN
            job.pieces = (job.hidden + job.piece_units - 1) // job.piece_units
            for part in range(parts):
                job.next_piece[part] = (<long long> job.pieces * part) // parts
        team_run(step_part, job, parts)
    else:
        step_part(job, 0, 1)


