"""The generic sequence driver: time, layers, directions, lengths and BPTT.

One loop serves every cell type; the cell-specific work is the point-wise
kernel pair of _cells.pyx.  Layout, shared by every buffer here:

- time-major and C-contiguous: a (T, B, width) array is T·B rows of `width`;
- the batch is sorted by length, longest first, so the sequences alive at
  step t are the rows [0, batch_sizes[t]) and padding costs nothing;
- rows past a sequence's end hold zeros (h, C, gradients), so the products
  over all T·B rows after the time loop need no mask.

A *lane* is one layer in one direction.  ``lane_forward`` runs per step one
product on the live rows and one point-wise kernel.  On packed weights the
LSTM's and RNN's step product includes the input projection, Z(t) = b +
x(t)·Uᵀ + h(t-1)·Wᵀ; otherwise the projection is hoisted into one GEMM over
all T·B rows (a gather for tokens) and the step adds h(t-1)·Wᵀ.
``lane_backward`` runs BPTT computing only dgates and dh(t-1) in the loop;
the weight gradients are single GEMMs after it (dU and dW in one when they
share dZ).

``run`` drives the lanes of a whole network (layers bottom-up, the reverse
direction on a per-sequence time-reversed copy of its input), the output
layer and the loss (shared out by time steps), and BPTT back down.  Its
buffers come from a ``Workspace`` and are reused across calls.
"""
cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from ._blas cimport (gemm, blas_gemm, packed_gemm, packed_gemm_fast,
                     packed_gemm_pair, pack_panel_rows,
                     panels_size, team_may_call_blas, team_parts, team_run,
                     team_threads)
from ._cells cimport (cell_forward, cell_backward, gate_blocks,
                      has_cell_state, separate_recurrent)
from ._loss cimport softmax_cross_entropy, squared_error

import numpy as np

cnp.import_array()

# Sequences at least this long run their recurrent products on packed
# weights (see _packed_gemm.h); shorter ones call BLAS, and so do steps with
# one live row (GEMV).
cdef enum:
    PANELS_MIN_STEPS = 4
    # The team's parts of a step start on whole panels (64 bytes: 16
    # floats, 8 doubles).
    UNIT_ALIGN = 16
    # Workspace views kept for reuse (many batch shapes: the cache restarts)
    MAX_CACHED_VIEWS = 512
    CACHE_LINE = 64
    # dU and dW in one product from this many gate columns G·H on; from
    # MERGE_MIN_GATES_CHUNKED on at one thread when it runs in chunks
    MERGE_MIN_GATES = 256
    MERGE_MIN_GATES_CHUNKED = 128
    # that product taken a chunk of about this many rows at a time, inside
    # the BPTT loop, while its steps' dZ are still in cache, when its
    # result block (re-read by every chunk) is at most CHUNK_MAX_BLOCK bytes
    CHUNK_ROWS = 512
    CHUNK_MAX_BLOCK = 512 * 1024
    # A step on the team is cut into about this many pieces per thread,
    # which the threads take as they come (step_part)
    PIECES_PER_THREAD = 8
    # shares a StepJob can count pieces for (CRNN_MAX_THREADS of _team.h);
    # a larger team shares a step out without pieces
    MAX_SHARES = 16
    # packing one element (a strided read, 1-2 cycles) against the 16 or
    # more multiply-adds a cycle of the products that team_parts weighs
    PACK_WORK_PER_ELEMENT = 16

cdef bint panels_enabled = True
cdef bint fusion_enabled = True
cdef bint merge_enabled = True
cdef bint chunks_enabled = True
cdef bint outputs_step_enabled = True
cdef bint pieces_enabled = True
cdef bint step_sums_enabled = True

cdef extern from *:
    """
    /* the next piece of a step (a counter shared by the team's threads) */
    static inline int crnn_next_piece(int *counter)
    {
    #if defined(__GNUC__) || defined(__clang__)
        return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    #else
        return (*counter)++;    /* no team without POSIX threads */
    #endif
    }
    """
    int crnn_next_piece(int *counter) nogil


cdef bint panels_pay(int steps, int batch) noexcept nogil:
    # A batch of one is a matrix-vector product, which BLAS's GEMV does well.
    return (panels_enabled and packed_gemm_fast() and steps >= PANELS_MIN_STEPS
            and batch > 1)


cdef bint swap_flag(bint *flag, bint enabled) noexcept:
    """flag := enabled; returns the previous value (the use_* switches)."""
    cdef bint previous = flag[0]
    flag[0] = enabled
    return previous


def use_packed_gemm(bint enabled):
    """Turn the packed recurrent GEMM on or off (benchmarks: does it pay?).
    Returns the previous setting."""
    return swap_flag(&panels_enabled, enabled)


cdef int fused_input_width(int kind, int inputs, int hidden,
                           bint tokens) noexcept nogil:
    """D when the forward's packed weight carries Uᵀ above Wᵀ, so that each
    step forms Z(t) = b + x(t)·Uᵀ + h(t-1)·Wᵀ in one product (dense inputs,
    cells whose recurrent product adds to Z); else 0: Z comes from
    project_inputs (one-hot tokens: a gather; the GRU keeps h·Wᵀ apart)."""
    if (fusion_enabled and not tokens and not separate_recurrent(kind)
            and inputs <= INT_MAX - hidden):    # panels of D + H rows
        return inputs
    return 0


def use_merged_weight_gradients(bint enabled):
    """Turn the one product for dU and dW on or off (off: two GEMMs).
    Returns the previous setting."""
    return swap_flag(&merge_enabled, enabled)


def use_chunked_weight_gradients(bint enabled):
    """Turn on or off taking the one product for dU and dW in chunks of
    steps inside the BPTT loop (off: once over all T·B rows after it).
    Returns the previous setting."""
    return swap_flag(&chunks_enabled, enabled)


def use_outputs_in_step(bint enabled):
    """Turn on or off adding the output layer's dY(t)·V inside BPTT's step
    product (off: one GEMM for dH_top before BPTT).  Returns the previous
    setting."""
    return swap_flag(&outputs_step_enabled, enabled)


def use_step_pieces(bint enabled):
    """Turn on or off sharing a step's units out in pieces that the team's
    threads take as they come (off: one equal share per thread).  Returns
    the previous setting."""
    return swap_flag(&pieces_enabled, enabled)


def use_bias_sums_in_steps(bint enabled):
    """Turn on or off summing db (and the GRU's recurrent-bias gradient)
    inside BPTT's steps, each part its own units (off: one pass over all
    T·B rows of dZ after the loop, on one thread).  Returns the previous
    setting."""
    return swap_flag(&step_sums_enabled, enabled)


def use_fused_inputs(bint enabled):
    """Turn the per-step input projection on packed weights on or off (off:
    one BLAS GEMM over all T·B rows first).  Returns the previous setting."""
    return swap_flag(&fusion_enabled, enabled)

cpdef enum OutputKind:
    OUTPUT_NONE = 0      # outputs are the top layer's h
    OUTPUT_SOFTMAX = 1   # softmax + cross-entropy
    OUTPUT_LINEAR = 2    # linear + ½‖o - y‖²


def aligned_empty(Py_ssize_t size, dtype):
    """An uninitialised 1-d array of `size` elements whose data starts on a
    64-byte boundary (a cache line): threads writing neighbouring columns
    of a row then never share a line at a part's edge."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size + CACHE_LINE // itemsize, dtype=dtype)
    skip = (-raw.ctypes.data % CACHE_LINE) // itemsize
    return raw[skip:skip + size]


cdef class Workspace:
    """Every buffer the driver uses, by name, grown only when a call needs more.

    ``get(name, shape, dtype)`` returns a C-contiguous view of a flat buffer
    that is allocated on first use and reallocated only when a larger call
    (or another dtype) arrives; calls of the same or smaller size reuse it.
    Contents are not initialised: the driver writes every element it reads.
    The views are cached too, so a call shaped like the last ones makes no
    new array objects.
    """
    cdef dict buffers
    cdef dict views     # (name, shape, dtype) -> view of buffers[name]

    def __init__(self):
        self.buffers = {}
        self.views = {}

    cpdef cnp.ndarray get(self, str name, tuple shape, object dtype):
        key = (name, shape, dtype)
        view = self.views.get(key)
        if view is not None:
            return view
        cdef Py_ssize_t size = 1
        for extent in shape:
            size *= extent
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[0] < size or buffer.dtype != dtype:
            buffer = aligned_empty(max(size, 1), dtype)
            self.buffers[name] = buffer
            # views of the old buffer would keep it alive
            self.views = {k: v for k, v in self.views.items() if k[0] != name}
        if len(self.views) >= MAX_CACHED_VIEWS:
            self.views.clear()
        view = buffer[:size].reshape(shape)
        self.views[key] = view
        return view

    def nbytes(self):
        """Total bytes held (for tests and diagnostics)."""
        return sum(b.nbytes for b in self.buffers.values())

    def __reduce__(self):
        # A workspace is scratch memory: copies start empty.
        return (Workspace, ())


cdef inline void *data(object array):
    """The array's data pointer, or NULL for None."""
    return NULL if array is None else cnp.PyArray_DATA(<cnp.ndarray> array)


cdef Py_ssize_t gate_panels_size(floating tag, int G, int H,
                                 int D) noexcept nogil:
    """Elements of the forward's packed weights (pack_weights)."""
    return G * panels_size(tag, D + H, H)


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


cdef void pack_weights(bint forward, int G, int H, int D, const floating *U,
                       const floating *W, floating *panels) noexcept nogil:
    """The weights packed for the time loop's products (_packed_gemm.h).

    forward: gate block by gate block, block g is [U_gᵀ; W_gᵀ] ((D + H) ×
    H; U_gᵀ only when D > 0, see fused_input_width), U_g and W_g the rows
    [g·H, (g+1)·H) of U (G·H × D) and W (G·H × H), in its own panels, so
    that units [u, u + n) of every gate start on a panel (u a multiple of
    UNIT_ALIGN) whatever H is.  BPTT: W (G·H × H) itself as B, or with
    D > 0 [W; U], U then the output layer's V (D × H): dH(t) = dR(t+1)·W
    + dY(t)·V in one product (G·H + D rows).

    Shared out among the team by units as the steps are: each part packs
    the panels its own steps will read."""
    cdef PackJob job
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


cdef floating *packed_weight(Workspace ws, str name, bint forward, int G,
                             int H, int D, const floating *U,
                             const floating *W):
    """The weights packed for the time loop, in the workspace buffer `name`:
    for the forward [Uᵀ; Wᵀ] per gate block (pack_weights; D = 0 leaves
    U out), for BPTT's dH(t-1) = dR(t) @ W, W itself, or [W; V] with V
    (D × H) as U."""
    dtype = np.float32 if floating is float else np.float64
    size = (gate_panels_size(W[0], G, H, D) if forward
            else panels_size(W[0], G * H + D, H))
    panels = ws.get(name, (size,), dtype)
    cdef floating *target = <floating *> data(panels)
    with nogil:
        pack_weights(forward, G, H, D, U, W, target)
    return target


# ------------------------------------- one time step on the thread team
#
# With packed weights, a step is shared out among crnn's threads by hidden
# units: each part forms the recurrent products of its own units (all gate
# blocks) and runs the point-wise kernel on them, so the point-wise work is
# split too, with one handoff per step.  Parts write disjoint columns (whole
# cache lines: workspace buffers start on one) with the same arithmetic, so
# results do not depend on the thread count.  In BPTT a step's part first
# forms its units of dH(t) = dR(t+1) @ W (which needs every unit of
# dR(t+1): the previous step's join is the barrier), then runs the cell's
# backward kernel on them.

cdef struct StepJob:
    # One time step of one lane for step_part.  Pointers hold the lane's
    # dtype (`single`: float); NULL where the cell has no such buffer.
    bint single, backward
    int kind, hidden
    int live            # rows of the point-wise pass (0: none)
    int product_rows    # rows of the recurrent product
    const void *panels  # pack_weights: forward [Uᵀ; Wᵀ], backward W
    Py_ssize_t gate_panels  # elements per gate block of `panels` (forward)
    int input_width     # forward: D when panels carry Uᵀ; BPTT: K with V
    const void *inputs  # with input_width: x(t) (live × D); BPTT dY(t) (K)
    const void *bias    # forward with input_width: b (G·H,)
    const void *product_in  # forward: h(t-1); backward: dR(t+1)
    # the point-wise kernel's buffers (_cells.pxd)
    void *gates
    void *recurrent
    const void *recurrent_bias
    const void *h
    const void *h_prev
    const void *c_prev
    void *c
    void *keep
    const void *dh_outputs
    void *dh
    void *dc
    void *dgates
    void *drecurrent
    void *db            # BPTT: += Σ_rows dZ(t), or NULL
    void *d_recurrent_bias  # BPTT: += Σ_rows dR(t)'s last block, or NULL
    void *h_out         # forward: h(t)
    # run_step: units per piece (0: one equal share per part), the pieces,
    # and the next piece of each part's share to take (step_part)
    int piece_units
    int pieces
    int next_piece[MAX_SHARES]


cdef void start_step_job(StepJob *job, bint backward, int kind, int H,
                         const floating *panels, int input_width,
                         const floating *bias) noexcept nogil:
    """The fields of a lane's StepJob that stay the same at every step."""
    job.single = floating is float
    job.backward = backward
    job.kind = kind
    job.hidden = H
    job.panels = panels
    job.input_width = input_width
    job.gate_panels = panels_size(panels[0], input_width + H, H)
    job.inputs = NULL
    job.bias = bias
    job.db = NULL
    job.d_recurrent_bias = NULL


cdef void step_units(floating tag, const StepJob *job, int first,
                     int last) noexcept nogil:
    """The step for units [first, last): products, then point-wise pass."""
    cdef int kind = job.kind, H = job.hidden, G = gate_blocks(kind)
    cdef int GH = G * H, n = last - first, g, D = job.input_width
    cdef bint separate = separate_recurrent(kind)
    cdef const floating *panels = <const floating *> job.panels
    cdef const floating *product_in = <const floating *> job.product_in
    cdef const floating *bias = <const floating *> job.bias
    cdef floating *product_out
    if n <= 0:
        return
    if not job.backward:
        product_out = <floating *> (job.recurrent if separate else job.gates)
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
        cell_forward(kind, job.live, H, first, n, <floating *> job.gates,
                     <const floating *> job.recurrent,
                     <const floating *> job.recurrent_bias,
                     <const floating *> job.h_prev,
                     <const floating *> job.c_prev,
                     <floating *> job.h_out, <floating *> job.c,
                     <floating *> job.keep)
        return
    if job.product_rows > 0 and D > 0:
        # dH(t)[:, first : last] (+)= dR(t+1) @ W[:, first : last]
        #                             + dY(t) @ V[:, first : last]
        #   (rows × n) = (rows × G·H)(G·H × n) + (rows × K)(K × n), K = D
        packed_gemm_pair(job.product_rows, n, GH, product_in, GH,
                         D, <const floating *> job.inputs, D,
                         panels + <Py_ssize_t> first * (GH + D), NULL,
                         separate, <floating *> job.dh + first, H)
    elif job.product_rows > 0:
        # dH(t)[:, first : last] (+)= dR(t+1) @ W[:, first : last]
        #   (rows × n) = (rows × G·H)(G·H × n); += keeps the direct part a
        #   separate-recurrent cell left in dh
        packed_gemm(job.product_rows, n, GH, product_in, GH,
                    panels + <Py_ssize_t> first * GH, separate,
                    <floating *> job.dh + first, H)
    if job.live > 0:
        cell_backward(kind, job.live, H, first, n,
                      <const floating *> job.gates,
                      <const floating *> job.h,
                      <const floating *> job.h_prev,
                      <const floating *> job.c_prev,
                      <const floating *> job.c,
                      <const floating *> job.keep,
                      <const floating *> job.dh_outputs,
                      <floating *> job.dh, <floating *> job.dc,
                      <floating *> job.dgates,
                      <floating *> job.drecurrent)
        if job.db != NULL:
            # db[g·H + first : +n] += Σ_rows dZ(t)[:, g·H + first : +n] for
            # every gate block g, while this part's dZ(t) is in cache
            for g in range(G):
                add_rows(job.live, n, <const floating *> job.dgates + g * H + first,
                         GH, <floating *> job.db + g * H + first)
        if job.d_recurrent_bias != NULL:
            # the recurrent bias is added to R's last block: Σ_rows dR(t)
            add_rows(job.live, n,
                     <const floating *> job.drecurrent + GH - H + first, GH,
                     <floating *> job.d_recurrent_bias + first)


cdef inline void add_rows(Py_ssize_t rows, int n, const floating *block, int ld,
                          floating *sums) noexcept nogil:
    """sums[:n] += Σ_{r < rows} block[r·ld : r·ld + n]"""
    cdef Py_ssize_t r, j
    for r in range(rows):
        for j in range(n):
            sums[j] += block[r * ld + j]


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
    cdef int G = gate_blocks(job.kind)
    cdef double work = (<double> max(job.live, job.product_rows) * G
                        * job.hidden * job.hidden)
    cdef int blocks = unit_blocks(job.hidden)
    cdef int parts = team_parts(work, blocks), part
    job.piece_units = 0
    if parts > 1:
        if pieces_enabled and parts <= MAX_SHARES:
            job.piece_units = max(1, blocks // (PIECES_PER_THREAD * parts)) * UNIT_ALIGN
            job.pieces = (job.hidden + job.piece_units - 1) // job.piece_units
            for part in range(parts):
                job.next_piece[part] = (<long long> job.pieces * part) // parts
        team_run(step_part, job, parts)
    else:
        step_part(job, 0, 1)


# ---------------------------------------------------------------- one lane

cdef void lane_forward(const LaneShape *shape,
                       const int *batch_sizes,      # (T,) live rows per step
                       const floating *x,           # (T·B × D) input, or NULL for tokens
                       const int *tokens,           # (T·B,) token ids, or NULL
                       const floating *U,           # (G·H × D)
                       const floating *U_T,         # (D × G·H) Uᵀ, for tokens only
                       const floating *W,           # (G·H × H)
                       const floating *W_panels,    # [Uᵀ;] Wᵀ packed (pack_weights), or NULL: BLAS
                       int input_width,             # D when W_panels carries Uᵀ, else 0
                       const floating *b,           # (G·H,)
                       const floating *recurrent_bias,  # (H,) GRU only
                       floating *gates,             # OUT (T·B × G·H), kept for BPTT; (B × G·H) when reused
                       floating *recurrent,         # scratch (B × G·H), separate_recurrent only
                       floating *hs,                # ((T+1)·B × H): slot 0 = h0 on entry, slot t+1 = h(t)
                       floating *cs,                # ((T+1)·B × H): the same for C (LSTM)
                       floating *keep,              # OUT (T·B × H), cells that keep more
                       bint keep_gates) noexcept nogil:  # False: see lane_recur
    if input_width == 0:
        project_inputs(shape, shape.steps * shape.batch, x, tokens, U, U_T, b,
                       gates)
        lane_recur(shape, batch_sizes, NULL, 0, NULL, W, W_panels,
                   recurrent_bias, gates, recurrent, hs, cs, keep, True)
    else:
        # the input projection happens step by step on the packed weights
        lane_recur(shape, batch_sizes, x, input_width, b, W, W_panels,
                   recurrent_bias, gates, recurrent, hs, cs, keep, keep_gates)


cdef void project_inputs(const LaneShape *shape, int rows,
                         const floating *x,         # (rows × D), or NULL for tokens
                         const int *tokens,         # (rows,), or NULL
                         const floating *U,         # (G·H × D)
                         const floating *U_T,       # (D × G·H) for tokens, or NULL: gather from U
                         const floating *b,         # (G·H,)
                         floating *gates) noexcept nogil:  # OUT (rows × G·H)
    """The input projection of every row at once: Z = X @ U.T + b."""
    cdef int D = shape.inputs, GH = gate_blocks(shape.kind) * shape.hidden
    cdef Py_ssize_t r, j
    cdef floating *z
    cdef const floating *column
    for r in range(rows):
        z = gates + r * GH
        if tokens == NULL:
            memcpy(z, b, GH * sizeof(floating))
        elif U_T != NULL:
            # One-hot x: X @ U.T is row x of U.T, a gather.
            column = U_T + <Py_ssize_t> tokens[r] * GH
            for j in range(GH):
                z[j] = column[j] + b[j]
        else:
            # The same from U itself, column x (strided): for a single step.
            column = U + tokens[r]
            for j in range(GH):
                z[j] = column[j * D] + b[j]
    if tokens == NULL:
        # Z += X @ U.T   (rows × G·H) += (rows × D)(G·H × D)ᵀ
        gemm(False, True, rows, GH, D, 1, x, D, U, D, 1, gates, GH)


cdef void lane_recur(const LaneShape *shape,
                     const int *batch_sizes,        # (T,) live rows per step
                     const floating *x,             # (T·B × D) with input_width, else NULL
                     int input_width,               # D when W_panels carries Uᵀ, else 0
                     const floating *b,             # (G·H,) with input_width, else NULL
                     const floating *W,             # (G·H × H)
                     const floating *W_panels,      # [Uᵀ;] Wᵀ packed (pack_weights), or NULL: BLAS
                     const floating *recurrent_bias,  # (H,) GRU only
                     floating *gates,               # IN Z = X·Uᵀ + b unless input_width; OUT what BPTT needs
                     floating *recurrent,           # scratch (B × G·H), separate_recurrent only
                     floating *hs,                  # ((T+1)·B × H), slot 0 = h0
                     floating *cs,                  # ((T+1)·B × H), slot 0 = c0 (LSTM)
                     floating *keep,                # OUT (T·B × H)
                     bint keep_gates) noexcept nogil:
    """The time loop: per step one recurrent GEMM on the live rows (with
    input_width, the input projection too) and one point-wise pass.

    Without keep_gates and with input_width (a forward pass that no BPTT
    follows), every step forms its Z in the same (B × G·H) block of
    `gates`: it stays in cache, where T blocks would each be written to
    fresh memory."""
    cdef int T = shape.steps, B = shape.batch
    cdef int H = shape.hidden, kind = shape.kind
    cdef int GH = gate_blocks(kind) * H
    cdef Py_ssize_t gate_step = (<Py_ssize_t> B * GH
                                 if keep_gates or input_width == 0 else 0)
    cdef Py_ssize_t t
    cdef Py_ssize_t state = <Py_ssize_t> B * H
    cdef bint separate = separate_recurrent(kind)
    cdef bint with_c = has_cell_state(kind)
    cdef int live
    cdef floating *z
    cdef floating *h
    cdef StepJob job
    if W_panels != NULL:
        start_step_job(&job, False, kind, H, W_panels, input_width, b)
        job.recurrent = recurrent
        job.recurrent_bias = recurrent_bias
        job.keep = NULL
    for t in range(T):
        live = batch_sizes[t]
        z = gates + t * gate_step
        h = hs + (t + 1) * state
        if W_panels != NULL:
            # products and point-wise pass, unit by unit, on the team
            job.live = job.product_rows = live
            job.product_in = job.h_prev = hs + t * state
            job.inputs = x + t * B * input_width if input_width > 0 else NULL
            job.gates = z
            job.c_prev = cs + t * state if with_c else NULL
            job.c = cs + (t + 1) * state if with_c else NULL
            job.keep = keep + t * state if keep != NULL else NULL
            job.h_out = h
            run_step(&job)
        else:
            # R = H[t-1] @ W.T   (B_t × G·H) = (B_t × H)(G·H × H)ᵀ, into its
            # own buffer (separate) or added to Z[t] (Z[t] += R)
            gemm(False, True, live, GH, H, 1, hs + t * state, H, W, H,
                 0 if separate else 1, recurrent if separate else z, GH)
            cell_forward(kind, live, H, 0, H, z, recurrent, recurrent_bias,
                         hs + t * state,
                         cs + t * state if with_c else NULL,
                         h,
                         cs + (t + 1) * state if with_c else NULL,
                         keep + t * state if keep != NULL else NULL)
        # Finished sequences: h(t) = 0 (and C(t) = 0) keeps padding inert.
        memset(h + <Py_ssize_t> live * H, 0, (B - live) * H * sizeof(floating))
        if with_c:
            memset(cs + (t + 1) * state + <Py_ssize_t> live * H, 0,
                   (B - live) * H * sizeof(floating))


cdef inline int shared_gate_columns(int kind, int H) noexcept nogil:
    """Gate columns where dR = dZ, so that dU and dW share a product: all
    G·H, or the GRU's r and z blocks (its n block's dR is dZ·r)."""
    cdef int GH = gate_blocks(kind) * H
    return GH - H if separate_recurrent(kind) else GH


cdef inline bint chunks_pay(int kind, int D, int H,
                            size_t itemsize) noexcept nogil:
    """Whether lane_backward takes the one product for dU and dW in chunks:
    when its result block, re-read by every chunk, is small (see
    CHUNK_MAX_BLOCK)."""
    return (chunks_enabled
            and <size_t> shared_gate_columns(kind, H) * (D + H) * itemsize
            <= CHUNK_MAX_BLOCK)


cdef inline bint merge_pays(int kind, Py_ssize_t rows, int D, int H,
                            size_t itemsize) noexcept nogil:
    """Whether dU and dW share one product (measured, float32 training):
    from G·H = 256 on (the RNN at H = 128 lost 4 %, at H = 256 gained 5 %
    with the product after the loop); from G·H = 128 on at one thread when
    the product runs in chunks of at least CHUNK_ROWS rows (the RNN at
    (100,32,32,128,32): 0.89-0.97x at 1 thread, 1.03-1.10x at 2)."""
    cdef int GH = gate_blocks(kind) * H
    if GH >= MERGE_MIN_GATES:
        return True
    return (GH >= MERGE_MIN_GATES_CHUNKED and team_threads() == 1
            and rows >= CHUNK_ROWS and chunks_pay(kind, D, H, itemsize))


cdef inline Py_ssize_t chunk_steps(int B) noexcept nogil:
    """Steps of one chunk of the product for dU and dW (about CHUNK_ROWS
    rows, at least one step)."""
    return max(1, CHUNK_ROWS // B)


cdef Py_ssize_t merged_size(int kind, int T, int B, int D, int H,
                            size_t itemsize) noexcept nogil:
    """Elements of lane_backward's `merged` scratch where dU and dW share one
    product at the team's thread count, else 0: the result block [dU | dW]
    (G·H × (D+H)), then the rows [x(t) | h(t-1)] of one product, a chunk's
    (chunks_pay) or all T·B.  At most merged_room."""
    cdef Py_ssize_t rows = <Py_ssize_t> T * B
    if not (merge_enabled
            and merge_pays(kind, rows, D, H, itemsize)):
        return 0
    if chunks_pay(kind, D, H, itemsize):
        rows = min(<Py_ssize_t> T, chunk_steps(B)) * B
    return (gate_blocks(kind) * H + rows) * (D + H)


cdef inline Py_ssize_t merged_scratch_rows(Py_ssize_t size, int kind,
                                           int D, int H) noexcept nogil:
    """Rows [x | h] that a merged scratch of `size` elements holds."""
    return max(0, size // (D + H) - gate_blocks(kind) * H)


cdef Py_ssize_t merged_room(int kind, int T, int B, int D,
                            int H) noexcept nogil:
    """Elements that hold merged_size's scratch at any thread count, item
    size and setting of the use_* switches: what a workspace sized once
    (the C API's) reserves."""
    cdef int GH = gate_blocks(kind) * H
    if GH < MERGE_MIN_GATES_CHUNKED:
        return 0
    return (GH + <Py_ssize_t> T * B) * (D + H)


cdef void merged_weight_gradients(int kind, int D, int H,
                                  Py_ssize_t first, Py_ssize_t count,
                                  bint accumulate,
                                  const floating *x,          # (T·B × D)
                                  const floating *hs,         # (T·B × H) h(t-1)
                                  const floating *dgates,     # (T·B × G·H)
                                  const floating *drecurrent,  # (T·B × G·H), separate only
                                  floating *dU,               # += n block (separate)
                                  floating *dW,               # += n block (separate)
                                  floating *xh,               # scratch (count × (D+H))
                                  floating *dUW) noexcept nogil:  # = or += (shared × (D+H))
    """dU and dW of rows [first, first + count) where they share dZ.

    dU and dW share their left operand dZ: one product packs dZ once
    (OpenBLAS's copy of dZ is a third of a separate dU's time).  With a
    separate dR (the GRU) they share it in the r and z blocks, where dR =
    dZ; the n block's two products go straight into dU and dW."""
    cdef int DH = D + H, GH = gate_blocks(kind) * H
    cdef int shared = shared_gate_columns(kind, H)
    cdef bint separate = shared < GH
    cdef Py_ssize_t r
    x += first * D
    hs += first * H
    dgates += first * GH
    for r in range(count):
        memcpy(xh + r * DH, x + r * D, D * sizeof(floating))
        memcpy(xh + r * DH + D, hs + r * H, H * sizeof(floating))
    # [dU | dW][:shared] (+)= dZ[:, :shared].T @ [X | H_prev]
    #   (shared × (D+H)) (+)= (rows × shared)ᵀ (rows × (D+H))
    gemm(True, False, shared, DH, <int> count, 1, dgates, GH, xh, DH,
         1 if accumulate else 0, dUW, DH)
    if separate:
        # dU[n] += dZ[:, n].T @ X        (H × D) += (rows × H)ᵀ (rows × D)
        gemm(True, False, H, D, <int> count, 1, dgates + shared, GH, x, D,
             1, dU + shared * D, D)
        # dW[n] += dR[:, n].T @ H_prev   (H × H) += (rows × H)ᵀ (rows × H)
        gemm(True, False, H, H, <int> count, 1,
             drecurrent + first * GH + shared, GH, hs, H, 1, dW + shared * H, H)


cdef void lane_backward(const LaneShape *shape,
                        const int *batch_sizes,     # (T,)
                        const floating *x,          # (T·B × D) or NULL for tokens
                        const int *tokens,          # (T·B,) or NULL
                        const floating *U,          # (G·H × D)
                        const floating *W,          # (G·H × H)
                        const floating *W_panels,   # W packed (pack_weights), or NULL: BLAS
                        const floating *gates,      # IN from lane_forward
                        const floating *hs,         # IN from lane_forward
                        const floating *cs,         # IN from lane_forward (LSTM)
                        const floating *keep,       # IN from lane_forward
                        const floating *dh_outputs,  # IN (T·B × H) ∂L/∂h(t) from outputs or the layer above, or NULL
                        const floating *dh_final,   # IN (B × H) ∂L/∂(final h), or NULL
                        const floating *dc_final,   # IN (B × H) ∂L/∂(final C), or NULL
                        floating *dgates,           # OUT (T·B × G·H) ∂L/∂Z
                        floating *drecurrent,       # OUT (T·B × G·H) ∂L/∂R, separate_recurrent only
                        floating *dh,               # OUT (B × H) ∂L/∂h0
                        floating *dc,               # OUT (B × H) ∂L/∂c0 (LSTM)
                        floating *dU,               # += (G·H × D), unless tokens
                        floating *dU_T,             # += (D × G·H), tokens only
                        floating *dW,               # += (G·H × H)
                        floating *db,               # += (G·H,)
                        floating *d_recurrent_bias,  # += (H,) Σ rows of dR's last block, or NULL
                        floating *dx,               # OUT (T·B × D) ∂L/∂x, or NULL
                        floating *merged,           # scratch (merged_size), or NULL
                        Py_ssize_t merged_rows,     # rows [x | h] that `merged` holds
                        const floating *doutputs,   # IN (T·B × K) ∂L/∂y(t) into the step product, or NULL
                        int K,                      # y's width: W_panels are [W; V], V (K × H)
                        const floating *zeros) noexcept nogil:  # (B × max(G·H, K)) zeros, with doutputs
    cdef int T = shape.steps, B = shape.batch, D = shape.inputs
    cdef int H = shape.hidden, kind = shape.kind
    cdef int GH = gate_blocks(kind) * H
    cdef Py_ssize_t rows = <Py_ssize_t> T * B, r, j, t
    cdef Py_ssize_t state = <Py_ssize_t> B * H
    cdef bint separate = separate_recurrent(kind)
    cdef bint with_c = has_cell_state(kind)
    cdef int live, starting
    cdef floating *dz
    cdef floating *dr
    cdef floating *target
    cdef const floating *source
    cdef size_t row_bytes = H * sizeof(floating)
    cdef StepJob job
    # with doutputs, the output layer's dY(t)·V joins the step product
    cdef bint outputs_in_step = doutputs != NULL and W_panels != NULL
    cdef bint sums_in_steps = W_panels != NULL and step_sums_enabled
    if W_panels != NULL:
        start_step_job(&job, True, kind, H, W_panels,
                       K if outputs_in_step else 0, <const floating *> NULL)
        job.dh = dh
        job.dc = dc if with_c else NULL
        # db and the recurrent bias's gradient summed step by step, each
        # part its own units
        if sums_in_steps:
            job.db = db
            job.d_recurrent_bias = d_recurrent_bias
    # dU and dW in one product (merged): taken every chunk_steps steps
    # inside the loop while those steps' dZ are in cache, or after it
    cdef int DH = D + H
    cdef int shared = shared_gate_columns(kind, H)
    if merged_rows < B:
        merged = NULL               # not even one step's rows: two products
    cdef floating *dUW = merged     # (G·H × (D+H)), then the rows [x | h]
    cdef floating *xh = merged + <Py_ssize_t> GH * DH if merged != NULL else NULL
    # in chunks where they pay, or where the scratch holds fewer rows than
    # T·B (so a switch flipped since it was sized cannot overrun it)
    cdef bint chunked = (merged != NULL and tokens == NULL
                         and (chunks_pay(kind, D, H, sizeof(floating))
                              or merged_rows < rows))
    cdef Py_ssize_t steps_per_chunk = max(1, min(chunk_steps(B),
                                                 merged_rows // B))
    cdef Py_ssize_t chunk_end = T       # steps [t + 1, chunk_end) wait

    t = T - 1
    while t >= 0:
        live = batch_sizes[t]
        starting = batch_sizes[t + 1] if t + 1 < T else 0
        # Rows whose last position is t start their BPTT here, from the
        # gradient reaching their final state (many-to-one) or zero.
        for r in range(starting, live):
            if dh_final != NULL:
                memcpy(dh + r * H, dh_final + r * H, row_bytes)
            else:
                memset(dh + r * H, 0, row_bytes)
            if with_c:
                if dc_final != NULL:
                    memcpy(dc + r * H, dc_final + r * H, row_bytes)
                else:
                    memset(dc + r * H, 0, row_bytes)
        dz = dgates + t * B * GH
        dr = drecurrent + t * B * GH if separate else dz
        memset(dz + <Py_ssize_t> live * GH, 0, (B - live) * GH * sizeof(floating))
        if separate:
            memset(dr + <Py_ssize_t> live * GH, 0,
                   (B - live) * GH * sizeof(floating))
        if W_panels != NULL:
            # on the team: step t+1's product dH(t) = dR(t+1) @ W (rows
            # alive at t+1), then this step's point-wise pass, unit by unit
            job.product_rows = starting
            job.product_in = dr + <Py_ssize_t> B * GH
            if outputs_in_step:
                # dH(t) = dR(t+1) @ W + dY(t) @ V for every row alive at t
                # (dR(t+1) is zero past the rows alive at t+1; none at T)
                job.product_rows = live
                if t + 1 == T:
                    job.product_in = zeros
                job.inputs = doutputs + t * B * K
            job.live = live
            job.gates = <void *> (gates + t * B * GH)
            job.h = hs + (t + 1) * state
            job.h_prev = hs + t * state
            job.c_prev = cs + t * state if with_c else NULL
            job.c = <void *> (cs + (t + 1) * state) if with_c else NULL
            job.keep = <void *> (keep + t * state) if keep != NULL else NULL
            job.dh_outputs = dh_outputs + t * state if dh_outputs != NULL else NULL
            job.dgates = dz
            job.drecurrent = dr
            run_step(&job)
        else:
            cell_backward(kind, live, H, 0, H, gates + t * B * GH,
                          hs + (t + 1) * state, hs + t * state,
                          cs + t * state if with_c else NULL,
                          cs + (t + 1) * state if with_c else NULL,
                          keep + t * state if keep != NULL else NULL,
                          dh_outputs + t * state if dh_outputs != NULL else NULL,
                          dh, dc if with_c else NULL, dz, dr)
            # dH[t-1] = dR[t] @ W   (B_t × H) = (B_t × G·H)(G·H × H)
            # (+= when the cell left a direct h(t-1) → h(t) term in dh)
            gemm(False, False, live, H, GH, 1, dr, GH, W, H,
                 1 if separate else 0, dh, H)
        if chunked and (chunk_end - t >= steps_per_chunk or t == 0):
            # steps [t, chunk_end): dZ(t) is final once its pass is done
            merged_weight_gradients(kind, D, H, t * B,
                                    (chunk_end - t) * B, chunk_end < T, x,
                                    hs, dgates, drecurrent, dU, dW, xh, dUW)
            chunk_end = t
        t -= 1
    if W_panels != NULL:
        # the last product: dH(-1) = ∂L/∂h0 = dR(0) @ W
        job.product_rows = batch_sizes[0]
        job.product_in = drecurrent if separate else dgates
        job.inputs = zeros      # no output at t = -1
        job.live = 0
        run_step(&job)

    # Weight gradients: GEMMs over all T·B rows (dead rows are zero).
    if merged != NULL and tokens == NULL:
        if not chunked:
            merged_weight_gradients(kind, D, H, 0, rows, False, x, hs,
                                    dgates, drecurrent, dU, dW, xh, dUW)
        for r in range(shared):
            for j in range(D):
                dU[r * D + j] += dUW[r * DH + j]
            for j in range(H):
                dW[r * H + j] += dUW[r * DH + D + j]
    else:
        # dW += dR.T @ H_prev   (G·H × H) += (T·B × G·H)ᵀ (T·B × H)
        gemm(True, False, GH, H, <int> rows, 1,
             drecurrent if separate else dgates, GH, hs, H, 1, dW, H)
        if tokens != NULL:
            # One-hot x: dU.T[x] += dZ row, a scatter-add.
            for r in range(rows):
                target = dU_T + <Py_ssize_t> tokens[r] * GH
                source = dgates + r * GH
                for j in range(GH):
                    target[j] += source[j]
        else:
            # dU += dZ.T @ X   (G·H × D) += (T·B × G·H)ᵀ (T·B × D)
            gemm(True, False, GH, D, <int> rows, 1, dgates, GH, x, D, 1, dU, D)
    if not sums_in_steps:
        # db += Σ_rows dZ
        add_rows(rows, GH, dgates, GH, db)
        if d_recurrent_bias != NULL:
            # the recurrent bias is added to the last block of R: Σ_rows dR[:, (G-1)·H:]
            add_rows(rows, H, drecurrent + GH - H, GH, d_recurrent_bias)
    if dx != NULL:
        # dX = dZ @ U   (T·B × D) = (T·B × G·H)(G·H × D)
        gemm(False, False, <int> rows, D, GH, 1, dgates, GH, U, D, 0, dx, D)


# ------------------------------------------------- time reversal and concat

cdef void copy_steps(int T, int B, int width, const int *lengths,
                     bint reverse, bint accumulate,
                     const floating *source, int source_stride,
                     floating *target, int target_stride) noexcept nogil:
    """target[t', b] (+)= source[t, b] for t < lengths[b]; t' = t, or
    lengths[b]-1-t with `reverse` (each sequence reversed within its own
    length).  Without `accumulate`, target rows past a length are zeroed."""
    cdef Py_ssize_t t, b, k, to
    cdef const floating *s
    cdef floating *d
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                to = lengths[b] - 1 - t if reverse else t
                s = source + (t * B + b) * source_stride
                d = target + (to * B + b) * target_stride
                if accumulate:
                    for k in range(width):
                        d[k] += s[k]
                else:
                    memcpy(d, s, width * sizeof(floating))
            elif not accumulate:
                memset(target + (t * B + b) * target_stride, 0,
                       width * sizeof(floating))


cdef void reverse_tokens(int T, int B, const int *lengths, const int *source,
                         int *target) noexcept nogil:
    cdef Py_ssize_t t, b
    for t in range(T):
        for b in range(B):
            target[t * B + b] = (source[(lengths[b] - 1 - t) * B + b]
                                 if t < lengths[b] else 0)


# ------------------------------------------------------------- the network

# ------------------------------- the output layer and its loss on the team
#
# O = H_top @ Vᵀ + c, then softmax + cross-entropy (or ½‖o - y‖²) row by
# row.  The team shares the time steps out: each part forms its rows'
# outputs in one BLAS product, then runs the loss on them.  Each step's loss
# goes to its own slot and the caller sums the slots in order, so the order
# of the sum does not depend on the thread count (the parts' BLAS products
# may still differ in the last bits from one whole product: README,
# Threads).  (Vᵀ on the packed kernel, in chunks that stay in L2, measured
# 1-4 % slower at one thread than this.)

cdef struct OutputJob:
    # Pointers hold the dtype (`single`: float); NULL where unused.
    bint single
    int kind                # OUTPUT_SOFTMAX or OUTPUT_LINEAR
    int steps, rows         # `steps` blocks of `rows` rows
    int classes, width      # K, and H·dirs of the top h
    const int *live         # (steps,) live rows per step, or NULL: all rows
    const void *top_h       # (steps·rows × width)
    const void *V           # (K × width)
    const void *c           # (K,)
    const int *labels       # softmax: (steps·rows,) class ids, or NULL
    const void *targets     # linear: (steps·rows × K), or NULL
    double scale            # of the gradient: 1/(positions) or 1
    void *outputs           # OUT (steps·rows × K), rows past live zero
    void *doutputs          # OUT scale·∂L/∂O, or NULL
    double *step_loss       # OUT (steps,) each step's summed loss


cdef void output_steps(floating tag, const OutputJob *job, int first,
                       int last) noexcept nogil:
    """The output layer and loss of steps [first, last)."""
    cdef int K = job.classes, Hd = job.width, live
    cdef Py_ssize_t r, t, row0
    cdef Py_ssize_t start = <Py_ssize_t> first * job.rows
    cdef int m = (last - first) * job.rows
    cdef const floating *c = <const floating *> job.c
    cdef floating *o = <floating *> job.outputs
    cdef floating *do = <floating *> job.doutputs
    cdef const floating *y = <const floating *> job.targets
    cdef floating scale = <floating> job.scale
    if m <= 0:
        return
    for r in range(start, start + m):     # every row starts as the bias c
        memcpy(o + r * K, c, K * sizeof(floating))
    # O[rows] += H_top[rows] @ V.T   (m × K) += (m × H·dirs)(K × H·dirs)ᵀ
    blas_gemm(False, True, m, K, Hd, 1,
              <const floating *> job.top_h + start * Hd, Hd,
              <const floating *> job.V, Hd, 1, o + start * K, K)
    for t in range(first, last):
        live = job.live[t] if job.live != NULL else job.rows
        row0 = t * job.rows
        if job.kind == OUTPUT_SOFTMAX:
            job.step_loss[t] = softmax_cross_entropy(
                live, K, o + row0 * K,
                job.labels + row0 if job.labels != NULL else NULL,
                scale, do + row0 * K if do != NULL else NULL)
        elif do != NULL:
            job.step_loss[t] = squared_error(live, K, o + row0 * K,
                                             y + row0 * K, scale, do + row0 * K)
        else:
            job.step_loss[t] = 0
        memset(o + (row0 + live) * K, 0, (job.rows - live) * K * sizeof(floating))
        if do != NULL:
            memset(do + (row0 + live) * K, 0,
                   (job.rows - live) * K * sizeof(floating))


cdef void output_part(void *arg, int part, int parts) noexcept nogil:
    """The team's task: this part's share of the steps."""
    cdef const OutputJob *job = <const OutputJob *> arg
    cdef int first = <int> (<long long> job.steps * part // parts)
    cdef int last = <int> (<long long> job.steps * (part + 1) // parts)
    if job.single:
        output_steps(<float> 0, job, first, last)
    else:
        output_steps(<double> 0, job, first, last)


cdef void run_output(OutputJob *job) noexcept nogil:
    """The output job on the team, or on this thread when it is small or
    when BLAS keeps its own threads (its parts call BLAS)."""
    cdef double work = (<double> job.steps * job.rows * job.classes
                        * job.width)
    cdef int parts = team_parts(work, job.steps) if team_may_call_blas() else 1
    if parts > 1:
        team_run(output_part, job, parts)
    else:
        output_part(job, 0, 1)


def run(Workspace ws, int kind, int hidden, int num_layers, int directions,
        list lanes, V, c, cnp.ndarray inputs, cnp.ndarray lengths,
        h0, c0, int output_kind, bint return_sequences, targets,
        double scale, bint need_grad):
    """Forward (and with `need_grad` the loss and BPTT) of a whole network.

    lanes       list of (U, W, b) per lane, layer-major then direction;
                (U, W, b, bn) for cells with a recurrent bias (GRU)
    V, c        output layer (K × H·dirs), (K,), or None
    inputs      (T, B, D) floats in the model's dtype, or (T, B) int32 tokens
    lengths     (B,) int32, sorted descending, each in [1, T]
    h0, c0      (lanes, B, H) initial states, or None for zeros
    targets     int32 labels (T, B) / (B,), float (T, B, K) / (B, K), or None
    scale       1 / (positions with a target) for the mean, 1 for the sum

    Returns a dict: "outputs" (T, B, K) or (B, K) (rows past a length are 0;
    a view of the workspace: copy before the next call), "h_n", "c_n"
    (lanes, B, H), and with `need_grad` "loss", "grads" (one list, lane
    after lane: dU, dW, db, and dbn for cells with a recurrent bias), "dV",
    "dc", "dh0", "dc0".
    """
    if need_grad and output_kind == OUTPUT_NONE:
        raise ValueError("a model without an output layer has no loss")
    dtype = lanes[0][0].dtype
    if dtype == np.float32:
        return _run[float](<float> 0, ws, kind, hidden, num_layers, directions,
                           lanes, V, c, inputs, lengths, h0, c0, output_kind,
                           return_sequences, targets, scale, need_grad)
    return _run[double](<double> 0, ws, kind, hidden, num_layers, directions,
                        lanes, V, c, inputs, lengths, h0, c0, output_kind,
                        return_sequences, targets, scale, need_grad)


cdef object _run(floating dtype_tag, Workspace ws, int kind, int H,
                 int num_layers, int directions, list lanes, V, c,
                 cnp.ndarray inputs, cnp.ndarray lengths, h0, c0,
                 int output_kind, bint return_sequences, targets,
                 double scale, bint need_grad):
    dtype = np.float32 if floating is float else np.float64
    cdef bint tokens = inputs.ndim == 2
    cdef int T = inputs.shape[0], B = inputs.shape[1]
    cdef int G = gate_blocks(kind), GH = G * H
    cdef int Hd = H * directions
    cdef int n_lanes = num_layers * directions
    cdef bint with_c = has_cell_state(kind)
    cdef bint separate = separate_recurrent(kind)
    cdef int K = V.shape[0] if V is not None else Hd
    cdef int l, d, lane, t, b, D, fused
    cdef LaneShape shape
    cdef const int *lens = <const int *> data(lengths)
    cdef double loss = 0
    # The arrays returned to the caller are made through numpy's C API
    # (PyArray_EMPTY / PyArray_ZEROS) and filled here with memcpy: on a small
    # call each np.zeros_like / fancy index / broadcast assignment costs
    # thousands of instructions, more than the copy itself.
    cdef int typenum = cnp.NPY_FLOAT if floating is float else cnp.NPY_DOUBLE
    cdef cnp.npy_intp state_dims[3]
    state_dims[0], state_dims[1], state_dims[2] = n_lanes, B, H
    cdef size_t row_bytes = H * sizeof(floating)

    # batch_sizes[t] = number of sequences longer than t
    cdef cnp.ndarray batch_array = ws.get("batch_sizes", (T,), np.int32)
    cdef int *batch_sizes = <int *> data(batch_array)
    for t in range(T):
        batch_sizes[t] = 0
    for b in range(B):
        for t in range(lens[b]):
            batch_sizes[t] += 1

    shape.steps = T
    shape.batch = B
    shape.hidden = H
    shape.kind = kind

    # Per lane: its input (possibly reversed), and what BPTT will need.
    lane_inputs = [None] * n_lanes
    lane_gates = [None] * n_lanes
    lane_hs = [None] * n_lanes
    lane_cs = [None] * n_lanes
    lane_keep = [None] * n_lanes
    layer_outputs = [None] * num_layers   # (T, B, H·dirs) per layer

    cdef cnp.ndarray layer_input = inputs, lane_input, U_T, gates, hs, cs
    cdef cnp.ndarray recurrent = ws.get("recurrent", (B, GH), dtype)
    cdef cnp.ndarray concat
    # raw pointers handed to the nogil sections
    cdef floating *recurrent_ptr = <floating *> data(recurrent)
    cdef floating *source
    cdef floating *target
    cdef floating *x_ptr
    cdef int *token_ptr
    cdef floating *U_ptr
    cdef floating *U_T_ptr
    cdef floating *W_ptr
    cdef floating *b_ptr
    cdef floating *gates_ptr
    cdef floating *hs_ptr
    cdef floating *cs_ptr
    cdef floating *keep_ptr
    cdef floating *bn_ptr
    cdef floating *panels_ptr
    # The recurrent products run on packed weights (packed_gemm) when the
    # packing, about one product's cost, is shared by enough time steps.
    cdef bint use_panels = panels_pay(T, B)

    # ------------------------------------------------------------ forward
    for l in range(num_layers):
        D = layer_input.shape[2] if layer_input.ndim == 3 else lanes[0][0].shape[1]
        shape.inputs = D
        for d in range(directions):
            lane = l * directions + d
            U, W, bias = lanes[lane][:3]
            recurrent_bias = lanes[lane][3] if separate else None
            if d == 0:
                lane_input = layer_input
            elif layer_input.ndim == 2:
                lane_input = ws.get(f"input{lane}", (T, B), np.int32)
                reverse_tokens(T, B, lens, <int *> data(layer_input),
                               <int *> data(lane_input))
            else:
                lane_input = ws.get(f"input{lane}", (T, B, D), dtype)
                source = <floating *> data(layer_input)
                target = <floating *> data(lane_input)
                with nogil:
                    copy_steps(T, B, D, lens, True, False, source, D, target, D)
            hs = ws.get(f"hs{lane}", (T + 1, B, H), dtype)
            if h0 is None:
                memset(data(hs), 0, B * row_bytes)
            else:
                hs[0] = h0[lane]
            if with_c:
                cs = ws.get(f"cs{lane}", (T + 1, B, H), dtype)
                if c0 is None:
                    memset(data(cs), 0, B * row_bytes)
                else:
                    cs[0] = c0[lane]
            else:
                cs = None
            U_T = None
            if lane_input.ndim == 2:
                U_T = ws.get(f"U_T{lane}", (D, GH), dtype)
                np.copyto(U_T, U.T)
            x_ptr = NULL if U_T is not None else <floating *> data(lane_input)
            token_ptr = <int *> data(lane_input) if U_T is not None else NULL
            U_ptr, U_T_ptr = <floating *> data(U), <floating *> data(U_T)
            W_ptr, b_ptr = <floating *> data(W), <floating *> data(bias)
            hs_ptr = <floating *> data(hs)
            cs_ptr = <floating *> data(cs)
            keep = ws.get(f"keep{lane}", (T, B, H), dtype) if separate else None
            keep_ptr = <floating *> data(keep)
            bn_ptr = <floating *> data(recurrent_bias)
            # [Uᵀ;] Wᵀ packed once for the T steps' products
            fused = (fused_input_width(kind, D, H, U_T is not None)
                     if use_panels else 0)
            panels_ptr = packed_weight(ws, f"W_panels_T{lane}", True, G, H,
                                       fused, U_ptr, W_ptr) if use_panels else NULL
            # Z of every step, for BPTT; a forward pass alone that forms Z
            # step by step (fused) reuses one step's block (lane_recur)
            gates = ws.get(f"gates{lane}",
                           (T if need_grad or fused == 0 else 1, B, GH), dtype)
            gates_ptr = <floating *> data(gates)
            with nogil:
                lane_forward(&shape, batch_sizes, x_ptr, token_ptr, U_ptr,
                             U_T_ptr, W_ptr, panels_ptr, fused, b_ptr, bn_ptr,
                             gates_ptr, recurrent_ptr, hs_ptr, cs_ptr, keep_ptr,
                             need_grad)
            lane_keep[lane] = keep
            lane_inputs[lane] = lane_input
            lane_gates[lane] = gates
            lane_hs[lane] = hs
            lane_cs[lane] = cs
        if directions == 1:
            layer_outputs[l] = lane_hs[l][1:]
        else:
            concat = ws.get(f"output{l}", (T, B, Hd), dtype)
            for d in range(directions):
                source = <floating *> data(lane_hs[l * directions + d]) + <Py_ssize_t> B * H
                target = <floating *> data(concat) + d * H
                with nogil:
                    copy_steps(T, B, H, lens, d == 1, False, source, H, target, Hd)
            layer_outputs[l] = concat
        layer_input = layer_outputs[l]

    # Final states: each sequence's state after its own last position,
    # h_n[lane, b] = hs[lengths[b], b] (row b of step lengths[b]).
    top = (num_layers - 1) * directions
    h_n = cnp.PyArray_EMPTY(3, state_dims, typenum, 0)
    c_n = cnp.PyArray_EMPTY(3, state_dims, typenum, 0) if with_c else None
    for lane in range(n_lanes):
        source = <floating *> data(lane_hs[lane])
        target = <floating *> data(h_n) + <Py_ssize_t> lane * B * H
        for b in range(B):
            memcpy(target + b * H, source + (<Py_ssize_t> lens[b] * B + b) * H,
                   row_bytes)
        if with_c:
            source = <floating *> data(lane_cs[lane])
            target = <floating *> data(c_n) + <Py_ssize_t> lane * B * H
            for b in range(B):
                memcpy(target + b * H, source + (<Py_ssize_t> lens[b] * B + b) * H,
                       row_bytes)

    # --------------------------------------------------- output and loss
    cdef cnp.ndarray top_h, logits, dlogits = None, labels_array = None
    cdef cnp.ndarray target_array = None
    cdef int out_rows
    cdef floating *logit_ptr
    cdef floating *dlogit_ptr = NULL
    cdef const int *label_ptr = NULL
    cdef const floating *target_ptr = NULL
    cdef OutputJob output_job
    # Both are C-contiguous already: hs[1:] of a (T+1, B, H) buffer, the
    # workspace's concatenation, a lane of h_n.
    if return_sequences:
        top_h = layer_outputs[num_layers - 1]
    elif directions == 1:
        top_h = h_n[top]
    else:
        top_h = np.concatenate([h_n[top + d] for d in range(directions)], axis=1)
    out_rows = T * B if return_sequences else B

    if output_kind == OUTPUT_NONE:
        outputs = top_h     # (T, B, H·dirs) already with return_sequences
    else:
        # in the outputs' shape from the start: (T, B, K) or (B, K)
        if return_sequences:
            logits = ws.get("logits", (T, B, K), dtype)
        else:
            logits = ws.get("logits", (B, K), dtype)
        logit_ptr = <floating *> data(logits)
        if need_grad:
            dlogits = ws.get("dlogits", (out_rows, K), dtype)
            dlogit_ptr = <floating *> data(dlogits)
            if output_kind == OUTPUT_SOFTMAX:
                labels_array = targets
                label_ptr = <const int *> data(labels_array)
            else:
                target_array = targets
                target_ptr = <const floating *> data(target_array)
        output_job.single = floating is float
        output_job.kind = output_kind
        output_job.steps = T if return_sequences else 1
        output_job.rows = B
        output_job.classes = K
        output_job.width = Hd
        # many-to-one: one step of B rows, every one of them live
        output_job.live = batch_sizes if return_sequences else NULL
        output_job.top_h = data(top_h)
        output_job.V = data(V)
        output_job.c = data(c)
        output_job.labels = label_ptr
        output_job.targets = target_ptr
        output_job.scale = scale
        output_job.outputs = logit_ptr
        output_job.doutputs = dlogit_ptr
        output_job.step_loss = <double *> malloc(output_job.steps * sizeof(double))
        if output_job.step_loss == NULL:
            raise MemoryError()
        with nogil:
            run_output(&output_job)
            for t in range(output_job.steps):
                loss += output_job.step_loss[t]
        free(output_job.step_loss)
        outputs = logits
    if not need_grad:
        return {"outputs": outputs, "h_n": h_n, "c_n": c_n}

    # ------------------------------------------------------------ BPTT
    Hd_shape = (out_rows, Hd)
    # The top lane's ∂L/∂h(t) from the output layer, dH_top = dO @ V, joins
    # its BPTT step product when that runs on packed weights (one direction,
    # an output at every step: lane_backward's doutputs); else one GEMM here.
    cdef bint outputs_in_step = (use_panels and directions == 1
                                 and return_sequences and outputs_step_enabled)
    cdef cnp.ndarray dtop = (None if outputs_in_step
                             else ws.get("dtop", Hd_shape, dtype))
    cdef cnp.ndarray zeros = None
    cdef floating *zeros_ptr = NULL
    if outputs_in_step:
        zeros = ws.get("zeros", (B * max(GH, K),), dtype)
        zeros_ptr = <floating *> data(zeros)
        memset(zeros_ptr, 0, <size_t> B * max(GH, K) * sizeof(floating))
    # every element is written by the first GEMM below (beta = 0)
    dV = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray> V), typenum, 0)
    # dV = dO.T @ H_top   (K × H·dirs) = (rows × K)ᵀ (rows × H·dirs)
    # dH_top = dO @ V     (rows × H·dirs) = (rows × K)(K × H·dirs)
    source = <floating *> data(top_h)
    target = <floating *> data(dV)
    W_ptr = <floating *> data(V)
    cdef floating *dtop_ptr = <floating *> data(dtop)
    # dc = Σ_rows dO, summed in float64 row after row: numpy's order for
    # dlogits.sum(axis=0, dtype=np.float64) when K > 1.  With K = 1 numpy
    # sums the single column pairwise, so that case stays numpy's own call.
    cdef cnp.npy_intp K_dim = K
    cdef double *dc_sum = NULL
    cdef floating *dc_ptr_out = NULL
    if K == 1:
        dc_out = dlogits.sum(axis=0, dtype=np.float64).astype(dtype)
    else:
        dc_acc = cnp.PyArray_EMPTY(1, &K_dim, cnp.NPY_DOUBLE, 0)
        dc_out = cnp.PyArray_EMPTY(1, &K_dim, typenum, 0)
        dc_sum = <double *> data(dc_acc)
        dc_ptr_out = <floating *> data(dc_out)
    with nogil:
        gemm(True, False, K, Hd, out_rows, 1, dlogit_ptr, K, source, Hd, 0,
             target, Hd)
        if dtop_ptr != NULL:
            gemm(False, False, out_rows, Hd, K, 1, dlogit_ptr, K, W_ptr, Hd,
                 0, dtop_ptr, Hd)
        if dc_sum != NULL:
            for b in range(K):
                dc_sum[b] = dlogit_ptr[b]
            for t in range(1, out_rows):
                for b in range(K):
                    dc_sum[b] += dlogit_ptr[<Py_ssize_t> t * K + b]
            for b in range(K):
                dc_ptr_out[b] = <floating> dc_sum[b]

    # flat, lane after lane: dU, dW, db (and dbn), like the model's keys
    cdef int per_lane = 4 if separate else 3
    grads = [None] * (n_lanes * per_lane)
    dh0 = cnp.PyArray_EMPTY(3, state_dims, typenum, 0)
    dc0 = cnp.PyArray_EMPTY(3, state_dims, typenum, 0) if with_c else None
    cdef cnp.ndarray dgates, dh, dc, dU, dU_T, dW, db, dx, dh_out, merged
    cdef cnp.ndarray dlayer = dtop          # ∂L/∂(this layer's output)
    cdef cnp.ndarray dlayer_below
    cdef cnp.ndarray dh_final
    cdef floating *dh_out_ptr
    cdef floating *dh_final_ptr
    cdef floating *dgates_ptr
    cdef floating *dh_ptr
    cdef floating *dc_ptr
    cdef floating *dU_ptr
    cdef floating *dU_T_ptr
    cdef floating *dW_ptr
    cdef floating *db_ptr
    cdef floating *dx_ptr
    cdef floating *dbn_ptr
    cdef floating *drecurrent_ptr
    cdef floating *merged_ptr
    cdef Py_ssize_t merged_elements
    cdef bint top_in_step
    for l in range(num_layers - 1, -1, -1):
        D = lanes[l * directions][0].shape[1]
        shape.inputs = D
        dlayer_below = None
        if l > 0:
            dlayer_below = ws.get(f"dlayer{l - 1}", (T, B, Hd), dtype)
        for d in range(directions):
            lane = l * directions + d
            U, W, bias = lanes[lane][:3]
            lane_input = lane_inputs[lane]
            # This lane's share of the gradient from above, in its own time order.
            dh_out_ptr = NULL
            dh_final_ptr = NULL
            if return_sequences or l < num_layers - 1:
                if directions == 1:
                    dh_out = dlayer
                else:
                    dh_out = ws.get(f"dh_out{lane}", (T, B, H), dtype)
                    source = <floating *> data(dlayer) + d * H
                    target = <floating *> data(dh_out)
                    with nogil:
                        copy_steps(T, B, H, lens, d == 1, False, source, Hd,
                                   target, H)
                dh_out_ptr = <floating *> data(dh_out)
            else:
                dh_final = np.ascontiguousarray(dtop[:, d * H:(d + 1) * H])
                dh_final_ptr = <floating *> data(dh_final)
            dgates = ws.get(f"dgates{lane}", (T, B, GH), dtype)
            dh = ws.get(f"dh{lane}", (B, H), dtype)
            dc = ws.get(f"dc{lane}", (B, H), dtype) if with_c else None
            dU = cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> U), typenum, 0)
            dW = cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> W), typenum, 0)
            db = cnp.PyArray_ZEROS(1, cnp.PyArray_DIMS(<cnp.ndarray> bias), typenum, 0)
            dbn = cnp.PyArray_ZEROS(1, cnp.PyArray_DIMS(<cnp.ndarray> lanes[lane][3]),
                                    typenum, 0) if separate else None
            drecurrent = ws.get(f"drecurrent{lane}", (T, B, GH), dtype) if separate else None
            dU_T = None
            if lane_input.ndim == 2:
                dU_T = ws.get(f"dU_T{lane}", (D, GH), dtype)
                memset(data(dU_T), 0, <size_t> D * GH * sizeof(floating))
            dx = ws.get(f"dx{lane}", (T, B, D), dtype) if l > 0 else None
            # scratch for dU and dW in one product (lane_backward), every
            # lane in turn
            merged_elements = merged_size(kind, T, B, D, H, sizeof(floating))
            merged = (ws.get("merged", (merged_elements,), dtype)
                      if dU_T is None and merged_elements > 0 else None)
            gates = lane_gates[lane]
            hs = lane_hs[lane]
            cs = lane_cs[lane]
            x_ptr = NULL if dU_T is not None else <floating *> data(lane_input)
            token_ptr = <int *> data(lane_input) if dU_T is not None else NULL
            U_ptr, W_ptr = <floating *> data(U), <floating *> data(W)
            gates_ptr, hs_ptr = <floating *> data(gates), <floating *> data(hs)
            cs_ptr = <floating *> data(cs)
            dgates_ptr, dh_ptr = <floating *> data(dgates), <floating *> data(dh)
            dc_ptr, dU_ptr = <floating *> data(dc), <floating *> data(dU)
            dU_T_ptr, dW_ptr = <floating *> data(dU_T), <floating *> data(dW)
            db_ptr, dx_ptr = <floating *> data(db), <floating *> data(dx)
            keep_ptr, dbn_ptr = <floating *> data(lane_keep[lane]), <floating *> data(dbn)
            drecurrent_ptr = <floating *> data(drecurrent)
            merged_ptr = <floating *> data(merged)
            # W (G·H × H) packed once for the T products dH[t-1] = dR[t] @ W,
            # [W; V] for dH[t-1] = dR[t] @ W + dY[t-1] @ V on the top lane
            top_in_step = outputs_in_step and l == num_layers - 1
            panels_ptr = packed_weight(
                ws, f"W_panels{lane}", False, G, H, K if top_in_step else 0,
                <floating *> data(V) if top_in_step else U_ptr,
                W_ptr) if use_panels else NULL
            with nogil:
                lane_backward(&shape, batch_sizes, x_ptr, token_ptr, U_ptr,
                              W_ptr, panels_ptr, gates_ptr, hs_ptr, cs_ptr, keep_ptr,
                              dh_out_ptr, dh_final_ptr, NULL, dgates_ptr,
                              drecurrent_ptr, dh_ptr, dc_ptr, dU_ptr, dU_T_ptr,
                              dW_ptr, db_ptr, dbn_ptr, dx_ptr, merged_ptr,
                              merged_scratch_rows(merged_elements, kind, D, H),
                              dlogit_ptr if top_in_step else NULL, K,
                              zeros_ptr)
            if dU_T is not None:
                dU += dU_T.T
            memcpy(<floating *> data(dh0) + <Py_ssize_t> lane * B * H, data(dh),
                   B * row_bytes)
            if with_c:
                memcpy(<floating *> data(dc0) + <Py_ssize_t> lane * B * H,
                       data(dc), B * row_bytes)
            grads[lane * per_lane] = dU
            grads[lane * per_lane + 1] = dW
            grads[lane * per_lane + 2] = db
            if separate:
                grads[lane * per_lane + 3] = dbn
            if dx is not None:
                # ∂L/∂(layer below's output): forward lane as is, reverse lane
                # turned back into the original time order.
                source = <floating *> data(dx)
                target = <floating *> data(dlayer_below)
                with nogil:
                    copy_steps(T, B, D, lens, d == 1, d == 1, source, D,
                               target, D)
        if l > 0:
            dlayer = dlayer_below

    return {"outputs": outputs, "h_n": h_n, "c_n": c_n, "loss": loss,
            "grads": grads, "dV": dV, "dc": dc_out, "dh0": dh0, "dc0": dc0}
