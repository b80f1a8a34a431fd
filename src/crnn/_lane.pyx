"""A lane: one direction of one layer, over any cell of the table.

Layout, shared by every buffer here:

- time-major and C-contiguous: a (T, B, width) array is T·B rows of `width`;
- the batch is sorted by length, longest first, so the sequences alive at
  step t are the rows [0, batch_sizes[t]) and padding costs nothing;
- rows past a sequence's end hold zeros (h, C, gradients), so the products
  over all T·B rows after the time loop need no mask.

``lane_forward`` runs per step one product on the live rows and one
point-wise kernel (the cell's table row).  On packed weights the LSTM's and
RNN's step product includes the input projection, Z(t) = b + x(t)·Uᵀ +
h(t-1)·Wᵀ; otherwise the projection is hoisted into one GEMM over all T·B
rows (a gather for tokens) and the step adds h(t-1)·Wᵀ.  ``lane_backward``
runs BPTT computing only dgates and dh(t-1) in the loop; the weight
gradients are single GEMMs after it (dU and dW in one when they share dZ).
What pays is the plan's (_plan.pyx); the lane never branches on the cell.

Neighbours: the plan, the cell table, the step on the team (_step), the
parallel module below; the network (_network.pyx), the C API and the
stream above.
"""
from cython cimport floating
from libc.string cimport memcpy, memset

from ._dropout cimport mask_rows
from ._cells cimport (CRNN_BACKWARD, CRNN_BACKWARD_GATE, CRNN_FORWARD,
                      CRNN_FORWARD_GATE, CellArgs, CellSpec, run_cell)
from ._parallel cimport team_gemm
from ._plan cimport (LanePlan, PATH_STEP_SUMS, chunk_steps, chunks_pay,
                     shared_gate_columns)
from ._step cimport StepJob, add_rows, start_step_job, run_step

# ------------------------------------------------------------ the forward

cdef inline const void *recurrent_rows(const LaneStates *states) noexcept nogil:
    """The rows h(t-1) that the recurrent product reads (and dW
    multiplies): h, or h ⊙ mask under recurrent dropout."""
    return states.dropped if states.recurrent_mask != NULL else states.hs


cdef void lane_forward(floating tag, const LanePlan *plan,
                       const LaneInputs *inputs, const LaneWeights *weights,
                       LaneStates *states) noexcept nogil:
    """Every step of the lane: states.hs (and cs) slots 1..T, the gates
    (and keep) BPTT needs.  Without plan.fused_width the input projection
    Z = X·Uᵀ + b is one product first; with it, each step's packed product
    forms it."""
    if plan.fused_width == 0:
        project_inputs(plan, plan.steps * plan.batch,
                       <const floating *> inputs.x, inputs.tokens,
                       <const floating *> weights.U,
                       <const floating *> weights.U_T,
                       <const floating *> weights.b, <floating *> states.gates)
    lane_recur(tag, plan, inputs, weights, states)


cdef void project_inputs(const LanePlan *plan, int rows,
                         const floating *x,         # (rows × D), or NULL for tokens
                         const int *tokens,         # (rows,), or NULL
                         const floating *U,         # (G·H × D)
                         const floating *U_T,       # (D × G·H) for tokens, or NULL: gather from U
                         const floating *b,         # (G·H,)
                         floating *gates) noexcept nogil:  # OUT (rows × G·H)
    """The input projection of every row at once: Z = X @ U.T + b."""
    cdef int D = plan.inputs, GH = plan.gate_columns
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
        team_gemm(False, True, rows, GH, D, 1, x, D, U, D, 1, gates, GH)


cdef void lane_recur(floating tag, const LanePlan *plan,
                     const LaneInputs *inputs, const LaneWeights *weights,
                     LaneStates *states) noexcept nogil:
    """The time loop: per step one recurrent GEMM on the live rows (with
    plan.fused_width, the input projection too) and one point-wise pass.

    Without plan.keep_gates and with fused_width (a forward pass that no
    BPTT follows), every step forms its Z in the same (B × G·H) block of
    `gates`: it stays in cache, where T blocks would each be written to
    fresh memory."""
    cdef int T = plan.steps, B = plan.batch, H = plan.hidden
    cdef int GH = plan.gate_columns, input_width = plan.fused_width
    cdef int S = plan.state_width
    cdef bint projected = S != H
    cdef const CellSpec *cell = plan.cell
    cdef Py_ssize_t gate_step = (<Py_ssize_t> B * GH
                                 if plan.keep_gates or input_width == 0 else 0)
    cdef Py_ssize_t t
    cdef Py_ssize_t state = <Py_ssize_t> B * S, cell_state = <Py_ssize_t> B * H
    cdef floating *ms = <floating *> states.ms
    cdef bint separate = cell.separate_recurrent
    cdef bint with_c = cell.pair_state
    cdef int live
    cdef floating *gates = <floating *> states.gates
    cdef floating *hs = <floating *> states.hs
    cdef floating *cs = <floating *> states.cs
    cdef floating *keep = <floating *> states.keep
    cdef floating *recurrent = <floating *> states.recurrent
    cdef const floating *x = <const floating *> inputs.x
    cdef const floating *W = <const floating *> weights.W
    # recurrent dropout: the products read h̃(t-1) = h(t-1) ⊙ mask (its own
    # slots), the cell and the state carried on the undropped h(t-1)
    cdef const floating *mask = <const floating *> states.recurrent_mask
    cdef floating *product_hs = <floating *> recurrent_rows(states)
    cdef StepJob job
    cdef CellArgs *args = &job.args
    memset(&job, 0, sizeof(StepJob))
    if weights.panels != NULL:
        start_step_job(&job, False, plan, <const floating *> weights.panels,
                       input_width, <const floating *> weights.b)
    if mask != NULL:
        # h̃(-1) = h0 ⊙ M   (B × S)
        mask_rows(B, S, mask, hs, product_hs, False)
    args.hidden, args.first, args.count = H, 0, H
    args.recurrent = recurrent
    args.recurrent_bias = weights.recurrent_bias
    args.peepholes = weights.peepholes
    for t in range(T):
        live = inputs.batch_sizes[t]
        args.rows = live
        args.gates = gates + t * gate_step
        args.h_prev = hs + t * state
        # a projected cell's h is m, projected after its pass
        args.h = ms + t * cell_state if projected else hs + (t + 1) * state
        args.c_prev = cs + t * cell_state if with_c else NULL
        args.c = cs + (t + 1) * cell_state if with_c else NULL
        args.keep = keep + t * cell_state if keep != NULL else NULL
        if weights.panels != NULL:
            # products and point-wise pass, unit by unit, on the team
            job.product_rows = live
            job.product_in = product_hs + t * state
            job.inputs = x + t * B * input_width if input_width > 0 else NULL
            run_step(&job)
        elif cell.gated_blocks:
            # the products and the gate pass (keep = r ⊙ h̃) read h̃(t-1),
            # the blend h(t-1); the same slots without recurrent dropout
            args.h_prev = product_hs + t * state
            gated_products(tag, plan, args, W)
            args.h_prev = hs + t * state
            run_cell(cell, CRNN_FORWARD, floating is float, args)
        else:
            # R = H[t-1] @ W.T   (B_t × G·H) = (B_t × S)(G·H × S)ᵀ, into its
            # own buffer (separate) or added to Z[t] (Z[t] += R)
            team_gemm(False, True, live, GH, S, 1, product_hs + t * state, S,
                      W, S, 0 if separate else 1,
                      recurrent if separate else <floating *> args.gates, GH)
            run_cell(cell, CRNN_FORWARD, floating is float, args)
        if projected:
            # H[t] = M[t] @ R.T   (B_t × S) = (B_t × H)(S × H)ᵀ
            team_gemm(False, True, live, S, H, 1, <const floating *> args.h, H,
                      <const floating *> weights.R, H, 0, hs + (t + 1) * state, S)
            memset(ms + t * cell_state + <Py_ssize_t> live * H, 0,
                   (B - live) * H * sizeof(floating))
        # Finished sequences: h(t) = 0 (and C(t) = 0) keeps padding inert.
        memset(hs + (t + 1) * state + <Py_ssize_t> live * S, 0,
               (B - live) * S * sizeof(floating))
        if with_c:
            memset(cs + (t + 1) * cell_state + <Py_ssize_t> live * H, 0,
                   (B - live) * H * sizeof(floating))
        if keep != NULL:
            # and its keep: a gated cell's dW reads every row of it
            memset(keep + t * cell_state + <Py_ssize_t> live * H, 0,
                   (B - live) * H * sizeof(floating))
        if mask != NULL:
            # h̃(t) = h(t) ⊙ M   (B × S), what step t+1's product reads
            mask_rows(B, S, mask, hs + (t + 1) * state,
                      product_hs + (t + 1) * state, False)


cdef void gated_products(floating tag, const LanePlan *plan, CellArgs *args,
                         const floating *W) noexcept nogil:
    """A step's products for a cell whose last gate blocks multiply its
    keep (r ⊙ h(t-1)) instead of h(t-1), with its gate pass between them."""
    cdef int H = plan.hidden, GH = plan.gate_columns, live = args.rows
    cdef int G1 = GH - plan.cell.gated_blocks * H
    cdef floating *z = <floating *> args.gates
    # Z[t][:, :G1] += H[t-1] @ W[:G1].T   (B_t × G1) += (B_t × H)(G1 × H)ᵀ
    team_gemm(False, True, live, G1, H, 1, <const floating *> args.h_prev, H,
              W, H, 1, z, GH)
    run_cell(plan.cell, CRNN_FORWARD_GATE, floating is float, args)
    # Z[t][:, G1:] += keep @ W[G1:].T   (B_t × (G·H-G1)) += (B_t × H)(G·H-G1 × H)ᵀ
    team_gemm(False, True, live, GH - G1, H, 1, <const floating *> args.keep, H,
              W + <Py_ssize_t> G1 * H, H, 1, z + G1, GH)


cdef void gated_back_products(floating tag, const LanePlan *plan,
                              CellArgs *args, const floating *W,
                              const floating *mask,
                              floating *scratch) noexcept nogil:
    """BPTT's products of such a cell, after its backward pass: d(keep)
    into `scratch` (B × H), the gate pass, then dH(t-1) += dZ[:, :G1]·W.
    Under recurrent dropout (`mask`, else NULL) both reach h(t-1) through
    h̃ = h ⊙ M: d(keep) ⊙ M takes the gate pass (keep = r ⊙ h ⊙ M, so it
    gives dZ_r and dH(t-1) += r ⊙ d(keep) ⊙ M from h), and the product's
    term is masked."""
    cdef int H = plan.hidden, GH = plan.gate_columns, live = args.rows
    cdef int G1 = GH - plan.cell.gated_blocks * H
    cdef const floating *dz = <const floating *> args.dgates
    # d(keep) = dZ[:, G1:] @ W[G1:]   (B_t × H) = (B_t × G·H-G1)(G·H-G1 × H)
    team_gemm(False, False, live, H, GH - G1, 1, dz + G1, GH,
              W + <Py_ssize_t> G1 * H, H, 0, scratch, H)
    if mask != NULL:
        mask_rows(live, H, mask, scratch, scratch, False)
    args.recurrent = scratch
    run_cell(plan.cell, CRNN_BACKWARD_GATE, floating is float, args)
    if mask == NULL:
        # dH[t-1] += dZ[:, :G1] @ W[:G1]   (B_t × H) += (B_t × G1)(G1 × H)
        team_gemm(False, False, live, H, G1, 1, dz, GH, W, H, 1,
                  <floating *> args.dh, H)
    else:
        # S̃ = dZ[:, :G1] @ W[:G1] (B_t × H), ∂L/∂h̃(t-1): dH[t-1] += S̃ ⊙ M
        team_gemm(False, False, live, H, G1, 1, dz, GH, W, H, 0, scratch, H)
        mask_rows(live, H, mask, scratch, <floating *> args.dh, True)


# ------------------------------------------------------------------- BPTT

cdef void merged_weight_gradients(floating tag, const LanePlan *plan,
                                  Py_ssize_t first, Py_ssize_t count,
                                  bint accumulate, const LaneInputs *inputs,
                                  const LaneStates *states,
                                  const LaneGradients *grads) noexcept nogil:
    """dU and dW of rows [first, first + count) where they share dZ.

    dU and dW share their left operand dZ: one product packs dZ once
    (OpenBLAS's copy of dZ is a third of a separate dU's time).  With a
    separate dR (the GRU) they share it in the r and z blocks, where dR =
    dZ; the n block's two products go straight into dU and dW (so for a
    cell with gated blocks, whose dW[n] multiplies its keep).  The result
    block [dU | dW] (shared × (D+H)) is `merged`, = or += (accumulate); the
    rows [x | h(t-1)] (count × (D+H)) follow it."""
    cdef int D = plan.inputs, H = plan.hidden
    cdef int DH = D + H, GH = plan.gate_columns
    cdef int shared = shared_gate_columns(plan)
    cdef bint own_last_block = shared < GH
    cdef Py_ssize_t r
    cdef const floating *x = <const floating *> inputs.x + first * D
    cdef const floating *hs = <const floating *> states.hs + first * H
    cdef const floating *dgates = <const floating *> grads.dgates + first * GH
    cdef floating *dUW = <floating *> grads.merged
    cdef floating *xh = dUW + <Py_ssize_t> GH * DH
    for r in range(count):
        memcpy(xh + r * DH, x + r * D, D * sizeof(floating))
        memcpy(xh + r * DH + D, hs + r * H, H * sizeof(floating))
    # [dU | dW][:shared] (+)= dZ[:, :shared].T @ [X | H_prev]
    #   (shared × (D+H)) (+)= (rows × shared)ᵀ (rows × (D+H))
    team_gemm(True, False, shared, DH, <int> count, 1, dgates, GH, xh, DH,
              1 if accumulate else 0, dUW, DH)
    if own_last_block:
        # dU[n] += dZ[:, n].T @ X        (H × D) += (rows × H)ᵀ (rows × D)
        team_gemm(True, False, GH - shared, D, <int> count, 1, dgates + shared,
                  GH, x, D, 1, <floating *> grads.dU + shared * D, D)
        last_block_weight_gradient(tag, plan, first, count, states, grads)


cdef void last_block_weight_gradient(floating tag, const LanePlan *plan,
                                     Py_ssize_t first, Py_ssize_t count,
                                     const LaneStates *states,
                                     const LaneGradients *grads) noexcept nogil:
    """dW of the last gate block(s) over rows [first, first + count), where
    it has its own operands: the GRU's dR_n with h(t-1), or a gated cell's
    dZ with its keep (r ⊙ h(t-1))."""
    cdef int H = plan.hidden, GH = plan.gate_columns
    cdef int shared = shared_gate_columns(plan)
    cdef bint gated = plan.cell.gated_blocks != 0
    cdef const floating *left = <const floating *> (grads.dgates if gated
                                                    else grads.drecurrent)
    cdef const floating *right = <const floating *> (states.keep if gated
                                                     else recurrent_rows(states))
    # dW[n] += dR[:, n].T @ H_prev (or keep)   (H × H) += (rows × H)ᵀ (rows × H)
    team_gemm(True, False, GH - shared, H, <int> count, 1,
              left + first * GH + shared, GH, right + first * H, H, 1,
              <floating *> grads.dW + shared * H, H)


cdef void start_rows(floating tag, const LanePlan *plan, int first, int last,
                     LaneGradients *grads) noexcept nogil:
    """Rows [first, last), whose last position is this step, start their
    BPTT from the gradient reaching their final state (many-to-one) or 0."""
    cdef int H = plan.hidden, S = plan.state_width, r
    cdef size_t row_bytes = H * sizeof(floating), h_bytes = S * sizeof(floating)
    cdef floating *dh = <floating *> grads.dh
    cdef floating *dc = <floating *> grads.dc
    for r in range(first, last):
        if grads.dh_final != NULL:
            memcpy(dh + r * S, <const floating *> grads.dh_final + r * S, h_bytes)
        else:
            memset(dh + r * S, 0, h_bytes)
        if plan.cell.pair_state:
            if grads.dc_final != NULL:
                memcpy(dc + r * H, <const floating *> grads.dc_final + r * H,
                       row_bytes)
            else:
                memset(dc + r * H, 0, row_bytes)


cdef void set_step_args(floating tag, const LanePlan *plan, Py_ssize_t t,
                        int live, const LaneStates *states,
                        const LaneGradients *grads, CellArgs *args) noexcept nogil:
    """The point-wise kernel's buffers at step t of BPTT (dh, dc are set
    once, the dgates/drecurrent of the step by the caller)."""
    cdef Py_ssize_t state = <Py_ssize_t> plan.batch * plan.state_width
    cdef Py_ssize_t cell_state = <Py_ssize_t> plan.batch * plan.hidden
    cdef bint with_c = plan.cell.pair_state
    args.rows = live
    args.gates = <floating *> states.gates + t * plan.batch * plan.gate_columns
    args.h = <floating *> states.hs + (t + 1) * state
    args.h_prev = <floating *> states.hs + t * state
    args.c_prev = <floating *> states.cs + t * cell_state if with_c else NULL
    args.c = <floating *> states.cs + (t + 1) * cell_state if with_c else NULL
    args.keep = (<floating *> states.keep + t * cell_state
                 if states.keep != NULL else NULL)
    args.dh_outputs = (<const floating *> grads.dh_outputs + t * state
                       if grads.dh_outputs != NULL else NULL)


cdef void project_back(floating tag, const LanePlan *plan, Py_ssize_t t,
                       int live, const LaneWeights *weights,
                       const LaneGradients *grads, CellArgs *args) noexcept nogil:
    """Step t of a projected lane (h = m·Rᵀ): the whole ∂L/∂h(t), carried
    plus from above, kept in dhs (for dR), and ∂L/∂m(t) = ∂L/∂h(t)·R, which
    the cell's backward pass takes as its dh (with nothing from above)."""
    cdef int B = plan.batch, H = plan.hidden, S = plan.state_width
    cdef Py_ssize_t r, j
    cdef floating *dh_t = <floating *> grads.dhs + t * B * S
    cdef const floating *dh = <const floating *> grads.dh
    cdef const floating *above = <const floating *> args.dh_outputs
    for r in range(live):
        for j in range(S):
            dh_t[r * S + j] = dh[r * S + j] + (above[r * S + j] if above != NULL
                                               else 0)
    memset(dh_t + <Py_ssize_t> live * S, 0, (B - live) * S * sizeof(floating))
    # dM[t] = dH[t] @ R   (B_t × H) = (B_t × S)(S × H)
    team_gemm(False, False, live, H, S, 1, dh_t, S, <const floating *> weights.R,
              H, 0, <floating *> grads.dm, H)
    args.dh = grads.dm
    args.dh_outputs = NULL


cdef void lane_backward(floating tag, const LanePlan *plan,
                        const LaneInputs *inputs, const LaneWeights *weights,
                        const LaneStates *states,
                        LaneGradients *grads) noexcept nogil:
    """BPTT of the lane: dgates (and drecurrent) step by step from T-1 down
    to 0, dh0 (and dc0) in grads.dh (dc), then the weight gradients.
    weights.panels: W packed for BPTT (or [W; V] with grads.doutputs)."""
    cdef int T = plan.steps, B = plan.batch, H = plan.hidden
    cdef int GH = plan.gate_columns, K = grads.K, S = plan.state_width
    cdef Py_ssize_t rows = <Py_ssize_t> T * B, t
    cdef bint separate = plan.cell.separate_recurrent
    cdef int live, starting
    cdef floating *dz
    cdef floating *dr
    cdef StepJob job
    cdef CellArgs *args = &job.args
    cdef const floating *doutputs = <const floating *> grads.doutputs
    cdef const void *panels = weights.panels
    # with doutputs, the output layer's dY(t)·V joins the step product
    cdef bint outputs_in_step = doutputs != NULL and panels != NULL
    cdef bint sums_in_steps = panels != NULL and plan.paths & PATH_STEP_SUMS
    # recurrent dropout (its plan keeps the products on BLAS), and the
    # (B × S) scratch of its masked product (a gated cell's d(keep) too):
    # `recurrent` is free in BPTT
    cdef const floating *mask = <const floating *> states.recurrent_mask
    cdef floating *scratch = <floating *> states.recurrent
    memset(&job, 0, sizeof(StepJob))
    if panels != NULL:
        start_step_job(&job, True, plan, <const floating *> panels,
                       K if outputs_in_step else 0, <const floating *> NULL)
        # db and the recurrent bias's gradient summed step by step, each
        # part its own units
        if sums_in_steps:
            job.db = grads.db
            job.d_recurrent_bias = grads.d_recurrent_bias
    args.hidden, args.first, args.count = H, 0, H
    args.dh = grads.dh
    args.dc = grads.dc if plan.cell.pair_state else NULL
    args.peepholes = weights.peepholes
    args.dpeepholes = grads.dpeepholes
    # dU and dW in one product (merged): taken every chunk_steps steps
    # inside the loop while those steps' dZ are in cache, or after it
    if grads.merged_rows < B or mask != NULL:
        # not even one step's rows, or a product that must read h̃: two
        grads.merged = NULL
    # in chunks where they pay, or where the scratch holds fewer rows than
    # T·B (so a path forbidden since it was sized cannot overrun it)
    cdef bint chunked = (grads.merged != NULL and inputs.tokens == NULL
                         and (chunks_pay(plan, sizeof(floating))
                              or grads.merged_rows < rows))
    cdef Py_ssize_t steps_per_chunk = max(1, min(chunk_steps(B),
                                                 grads.merged_rows // B))
    cdef Py_ssize_t chunk_end = T       # steps [t + 1, chunk_end) wait

    t = T - 1
    while t >= 0:
        live = inputs.batch_sizes[t]
        starting = inputs.batch_sizes[t + 1] if t + 1 < T else 0
        start_rows(tag, plan, starting, live, grads)
        dz = <floating *> grads.dgates + t * B * GH
        dr = <floating *> grads.drecurrent + t * B * GH if separate else dz
        memset(dz + <Py_ssize_t> live * GH, 0, (B - live) * GH * sizeof(floating))
        if separate:
            memset(dr + <Py_ssize_t> live * GH, 0,
                   (B - live) * GH * sizeof(floating))
        set_step_args(tag, plan, t, live, states, grads, args)
        args.dgates = dz
        args.drecurrent = dr
        if S != H:
            project_back(tag, plan, t, live, weights, grads, args)
        if panels != NULL:
            # on the team: step t+1's product dH(t) = dR(t+1) @ W (rows
            # alive at t+1), then this step's point-wise pass, unit by unit
            job.product_rows = starting
            job.product_in = dr + <Py_ssize_t> B * GH
            if outputs_in_step:
                # dH(t) = dR(t+1) @ W + dY(t) @ V for every row alive at t
                # (dR(t+1) is zero past the rows alive at t+1; none at T)
                job.product_rows = live
                if t + 1 == T:
                    job.product_in = grads.zeros
                job.inputs = doutputs + t * B * K
            run_step(&job)
        else:
            run_cell(plan.cell, CRNN_BACKWARD, floating is float, args)
            if plan.cell.gated_blocks:
                gated_back_products(tag, plan, args, <const floating *> weights.W,
                                    mask, scratch)
            elif mask == NULL:
                # dH[t-1] = dR[t] @ W   (B_t × S) = (B_t × G·H)(G·H × S)
                # (+= when the cell left a direct h(t-1) → h(t) term in dh)
                team_gemm(False, False, live, S, GH, 1, dr, GH,
                          <const floating *> weights.W, S, 1 if separate else 0,
                          <floating *> grads.dh, S)
            else:
                # recurrent dropout: S̃ = dR[t] @ W   (B_t × S) = (B_t × G·H)(G·H × S)
                # is ∂L/∂h̃(t-1); dH[t-1] (+)= S̃ ⊙ M, the mask of h̃ = h ⊙ M
                team_gemm(False, False, live, S, GH, 1, dr, GH,
                          <const floating *> weights.W, S, 0, scratch, S)
                mask_rows(live, S, mask, scratch, <floating *> grads.dh,
                          separate)
        if chunked and (chunk_end - t >= steps_per_chunk or t == 0):
            # steps [t, chunk_end): dZ(t) is final once its pass is done
            merged_weight_gradients(tag, plan, t * B, (chunk_end - t) * B,
                                    chunk_end < T, inputs, states, grads)
            chunk_end = t
        t -= 1
    if panels != NULL:
        # the last product: dH(-1) = ∂L/∂h0 = dR(0) @ W
        job.product_rows = inputs.batch_sizes[0]
        job.product_in = grads.drecurrent if separate else grads.dgates
        job.inputs = grads.zeros    # no output at t = -1
        args.rows = 0
        run_step(&job)
    weight_gradients(tag, plan, chunked, not sums_in_steps, inputs, weights,
                     states, grads)


cdef void weight_gradients(floating tag, const LanePlan *plan, bint chunked,
                           bint sum_biases, const LaneInputs *inputs,
                           const LaneWeights *weights,
                           const LaneStates *states,
                           const LaneGradients *grads) noexcept nogil:
    """After the BPTT loop: GEMMs over all T·B rows (dead rows are zero)
    for dU, dW (unless the chunks took them), the bias sums and dX."""
    cdef int D = plan.inputs, H = plan.hidden, GH = plan.gate_columns
    cdef int DH = D + H, shared = shared_gate_columns(plan), S = plan.state_width
    cdef Py_ssize_t rows = <Py_ssize_t> plan.steps * plan.batch, r, j
    cdef const floating *dgates = <const floating *> grads.dgates
    cdef const floating *drecurrent = <const floating *> grads.drecurrent
    cdef const floating *dUW = <const floating *> grads.merged
    cdef floating *dU = <floating *> grads.dU
    cdef floating *dW = <floating *> grads.dW
    cdef floating *target
    cdef const floating *source
    if grads.merged != NULL and inputs.tokens == NULL:
        if not chunked:
            merged_weight_gradients(tag, plan, 0, rows, False, inputs, states,
                                    grads)
        for r in range(shared):
            for j in range(D):
                dU[r * D + j] += dUW[r * DH + j]
            for j in range(H):
                dW[r * H + j] += dUW[r * DH + D + j]
    else:
        # dW += dR.T @ H_prev   (G·H × S) += (T·B × G·H)ᵀ (T·B × S), but
        # for the blocks a gated cell's keep multiplies (H_prev ⊙ M under
        # recurrent dropout)
        team_gemm(True, False, GH - plan.cell.gated_blocks * H, S, <int> rows,
                  1, drecurrent if plan.cell.separate_recurrent else dgates, GH,
                  <const floating *> recurrent_rows(states), S, 1, dW, S)
        if plan.cell.gated_blocks:
            last_block_weight_gradient(tag, plan, 0, rows, states, grads)
        if inputs.tokens != NULL:
            # One-hot x: dU.T[x] += dZ row, a scatter-add.
            for r in range(rows):
                target = <floating *> grads.dU_T + <Py_ssize_t> inputs.tokens[r] * GH
                source = dgates + r * GH
                for j in range(GH):
                    target[j] += source[j]
        else:
            # dU += dZ.T @ X   (G·H × D) += (T·B × G·H)ᵀ (T·B × D)
            team_gemm(True, False, GH, D, <int> rows, 1, dgates, GH,
                      <const floating *> inputs.x, D, 1, dU, D)
    if S != H:
        # dR += dH.T @ M   (S × H) += (T·B × S)ᵀ (T·B × H)
        team_gemm(True, False, S, H, <int> rows, 1, <const floating *> grads.dhs,
                  S, <const floating *> states.ms, H, 1, <floating *> grads.dR, H)
    if sum_biases:
        # db += Σ_rows dZ
        add_rows(rows, GH, dgates, GH, <floating *> grads.db)
        if grads.d_recurrent_bias != NULL:
            # the recurrent bias is added to the last block of R: Σ_rows dR[:, (G-1)·H:]
            add_rows(rows, H, drecurrent + GH - H, GH,
                     <floating *> grads.d_recurrent_bias)
    if grads.dx != NULL:
        # dX = dZ @ U   (T·B × D) = (T·B × G·H)(G·H × D)
        team_gemm(False, False, <int> rows, D, GH, 1, dgates, GH,
                  <const floating *> weights.U, D, 0, <floating *> grads.dx, D)
