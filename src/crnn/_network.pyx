"""The network: lanes stacked over layers and directions, the output layer
and its loss, and BPTT back down.

``run`` drives the lanes of a whole network (layers bottom-up, the reverse
direction on a per-sequence time-reversed copy of its input), the output
layer and the loss (shared out by time steps on the team), and BPTT back
down.  Its buffers come from a ``Workspace`` and are reused across calls.
One call is a ``NetworkCall`` (both in ``_call``): its arguments and
per-lane buffers, which the four stages here fill (forward_layers,
final_states, output_layer, backward_layers).

Neighbours: the lane (and its plan), the output losses, the parallel
module and the BLAS shim below; the Python models above.
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from ._arrays cimport data
from ._call cimport NetworkCall, Workspace
from ._cells cimport cell_spec
from ._dropout cimport mask_steps
from ._lane cimport (LaneGradients, LaneInputs, LaneStates, LaneWeights,
                     lane_backward, lane_forward)
from ._loss cimport OUTPUT_NONE, OUTPUT_SOFTMAX, OutputJob, run_output
from ._parallel cimport team_gemm
from ._plan cimport (LanePlan, PATH_OUTPUTS_IN_STEP, PATH_PANELS, merged_size,
                     merged_scratch_rows)
from ._step cimport pack_weights, packed_size
from ._timeorder cimport copy_steps, reverse_tokens

import numpy as np

cnp.import_array()

cdef void forward_call(floating tag, NetworkCall call) except *:
    """The forward stages: every lane, the final states, the output layer
    (with its loss and ∂L/∂O when the call has targets)."""
    cdef LanePlan plan
    call.plan(&plan, 0, call.inputs.ndim == 2)
    # The recurrent products run on packed weights when the packing, about
    # one product's cost, is shared by enough time steps (the same for
    # every lane: it depends on T and B).
    call.use_panels = plan.paths & PATH_PANELS != 0
    call.paths = plan.paths
    forward_layers(tag, call)
    final_states(tag, call)
    if call.output_kind == OUTPUT_NONE:
        call.outputs = call.top_h   # (T, B, H·dirs) with return_sequences
    else:
        output_layer(tag, call)


cdef object backward_call(floating tag, NetworkCall call, object dtop):
    """The backward stages from call.dlogits (an output layer) or `dtop`
    (∂L/∂top h, without one): BPTT down every lane."""
    dV = dc = None
    if call.output_kind != OUTPUT_NONE:
        dtop, dV, dc = output_gradients(tag, call)
    grads, dh0, dc0 = backward_layers(tag, call, dtop)
    return {"outputs": call.outputs, "h_n": call.h_n, "c_n": call.c_n,
            "loss": call.loss, "grads": grads, "dV": dV, "dc": dc,
            "dh0": dh0, "dc0": dc0, "dX": call.dinputs}


cdef object run_call(floating tag, NetworkCall call):
    forward_call(tag, call)
    if not call.need_grad:
        return {"outputs": call.outputs, "h_n": call.h_n, "c_n": call.c_n}
    return backward_call(tag, call, None)


def run(Workspace ws, tuple network, cnp.ndarray inputs, cnp.ndarray lengths,
        tuple state, targets, double scale, bint need_grad, masks=None):
    """Forward (and with `need_grad` the loss and BPTT) of a whole network.

    network     (kind, hidden, num_layers, directions, lanes, V, c,
                output_kind, return_sequences): the model's structure, with
      lanes     list of (U, W, b) per lane, layer-major then direction;
                (U, W, b, bn) for cells with a recurrent bias (GRU),
                (U, W, b, P) for cells with peepholes, then R (S × H) for a
                projected LSTM (W (G·H × S): h is S wide)
      V, c      output layer (K × H·dirs), (K,), or None
    inputs      (T, B, D) floats in the model's dtype, or (T, B) int32 tokens
    lengths     (B,) int32, sorted descending, each in [1, T]
    state       (h0, c0): (lanes, B, H) initial states, or None for zeros
    targets     int32 labels (T, B) / (B,), float (T, B, K) / (B, K), or None
    scale       1 / (positions with a target) for the mean, 1 for the sum
    masks       dropout's masks (inputs, lanes', output) sorted, or None (_dropout.py)

    Returns a dict: "outputs" (T, B, K) or (B, K) (rows past a length are 0;
    a view of the workspace: copy before the next call), "h_n", "c_n"
    (lanes, B, H), and with `need_grad` "loss", "grads" (one list, lane
    after lane: dU, dW, db, and dbn for cells with a recurrent bias, dP
    for cells with peepholes, dR for a projection), "dV",
    "dc", "dh0", "dc0".
    """
    if need_grad and network[7] == OUTPUT_NONE:
        raise ValueError("a model without an output layer has no loss")
    cdef NetworkCall call = new_call(ws, network, inputs, lengths, state, masks)
    call.targets, call.scale, call.need_grad = targets, scale, need_grad
    call.with_loss = need_grad
    if call.dtype == np.float32:
        return run_call(<float> 0, call)
    return run_call(<double> 0, call)


cdef NetworkCall new_call(Workspace ws, tuple network, cnp.ndarray inputs,
                          cnp.ndarray lengths, tuple state, masks):
    (kind, hidden, num_layers, directions, lanes, V, c, output_kind,
     return_sequences) = network
    # __new__ and a C-level set-up: no Python-level argument parsing, which
    # a small call would notice
    cdef NetworkCall call = NetworkCall.__new__(NetworkCall)
    call.setup(ws, kind, hidden, num_layers, directions, lanes, inputs, lengths)
    call.V, call.c = V, c
    call.h0, call.c0 = state
    call.output_kind, call.return_sequences = output_kind, return_sequences
    call.K = V.shape[0] if V is not None else call.Hd
    call.input_masks, call.recurrent_masks, call.output_mask = (
        masks if masks is not None else (None, None, None))
    return call


def forward(Workspace ws, tuple network, cnp.ndarray inputs,
            cnp.ndarray lengths, tuple state, masks=None):
    """``run``'s forward without a loss, keeping what BPTT needs:
    (``run``'s result, the call for ``backward``)."""
    cdef NetworkCall call = new_call(ws, network, inputs, lengths, state, masks)
    call.scale, call.need_grad = 1.0, True
    if call.dtype == np.float32:
        forward_call(<float> 0, call)
    else:
        forward_call(<double> 0, call)
    return {"outputs": call.outputs, "h_n": call.h_n, "c_n": call.c_n}, call


def backward(NetworkCall call, dlogits, dtop, dh_n, dc_n, bint want_dx):
    """BPTT of a `forward` call (while call.generation == ws.calls) from
    ∂L/∂O `dlogits` (T·B, K) / (B, K), or without an output layer ∂L/∂(top
    h) `dtop` (T, B, S·dirs) / (B, S·dirs); ∂L/∂(final state) (lanes, B,
    S) and (lanes, B, H), or None; sorted, time-major, C-contiguous, the
    call's dtype.  Returns ``run``'s need_grad dict, with ∂L/∂X in "dX" by
    `want_dx`."""
    call.dlogits, call.dh_n, call.dc_n = dlogits, dh_n, dc_n
    call.want_dx = want_dx
    call.dinputs = None
    if call.dtype == np.float32:
        return backward_call(<float> 0, call, dtop)
    return backward_call(<double> 0, call, dtop)


# --------------------------------------------------------------- dropout

cdef object dropped(floating tag, NetworkCall call, list masks, int at,
                    object rows, str name):
    """`rows` (steps·B × w), time-major, ⊙ masks[at] (B × w) at every step,
    into the workspace's `name` (may be `rows`); `rows` without a mask."""
    if masks is None or masks[at] is None:
        return rows
    target = call.ws.get(name, rows.shape, call.dtype)
    cdef Py_ssize_t width = rows.shape[rows.ndim - 1]   # (no wraparound)
    cdef Py_ssize_t steps = rows.size // (call.B * width)
    # X̃[t] = X[t] ⊙ M   (B × w), every step t
    mask_steps(steps, call.B, width,
               <const floating *> data(masks[at]),
               <const floating *> data(rows), <floating *> data(target))
    return target


cdef void recurrent_dropout(floating tag, NetworkCall call, int lane,
                            LaneStates *states) except *:
    """The lane's recurrent mask, and the slots of h ⊙ mask its products
    read (one buffer for the forward and BPTT); NULL without one."""
    mask = call.recurrent_masks[lane] if call.recurrent_masks else None
    states.recurrent_mask = data(mask)
    states.dropped = (NULL if mask is None else data(call.ws.get(
        f"dropped_hs{lane}", (call.T + 1, call.B, call.S), call.dtype)))


# --------------------------------------------------------------- forward

cdef cnp.ndarray lane_input(floating tag, NetworkCall call, int lane, int d,
                            cnp.ndarray layer_input):
    """The lane's input: the layer's as is (forward direction), or each
    sequence reversed within its own length (reverse direction)."""
    cdef cnp.ndarray reversed_input
    cdef int T = call.T, B = call.B
    if d == 0:
        return layer_input
    if layer_input.ndim == 2:
        reversed_input = call.ws.get(f"input{lane}", (T, B), np.int32)
        reverse_tokens(T, B, call.lens, <int *> data(layer_input),
                       <int *> data(reversed_input))
        return reversed_input
    cdef int D = layer_input.shape[2]
    reversed_input = call.ws.get(f"input{lane}", (T, B, D), call.dtype)
    cdef floating *source = <floating *> data(layer_input)
    cdef floating *target = <floating *> data(reversed_input)
    with nogil:
        copy_steps(T, B, D, call.lens, True, False, source, D, target, D)
    return reversed_input


cdef object state_slots(floating tag, NetworkCall call, str name, int lane,
                        object initial, int width):
    """A lane's ((T+1), B, width) slots of h (or C): slot 0 the initial state
    (zeros without one), slots 1.. filled by the lane."""
    slots = call.ws.get(f"{name}{lane}", (call.T + 1, call.B, width), call.dtype)
    if initial is None:
        memset(data(slots), 0, <size_t> call.B * width * sizeof(floating))
    else:
        slots[0] = initial[lane]
    return slots


cdef void forward_lane(floating tag, NetworkCall call, int l, int d,
                       cnp.ndarray layer_input) except *:
    """The forward of lane (l, d); its buffers go to the call's lists."""
    cdef int lane = l * call.directions + d
    cdef int T = call.T, B = call.B, H = call.H
    cdef LanePlan plan
    cdef LaneInputs inputs
    cdef LaneWeights weights
    cdef LaneStates states
    U, W, bias = call.lanes[lane][:3]
    recurrent_bias = call.lanes[lane][3] if call.with_bn else None
    x = lane_input(tag, call, lane, d, layer_input)
    tokens = x.ndim == 2
    call.plan(&plan, l, tokens)
    cdef int D = plan.inputs, GH = plan.gate_columns
    hs = state_slots(tag, call, "hs", lane, call.h0, call.S)
    cs = state_slots(tag, call, "cs", lane, call.c0, H) if call.with_c else None
    # a projected lane's m(t), h before the projection
    ms = call.ws.get(f"ms{lane}", (T, B, H), call.dtype) if call.S != H else None
    U_T = None
    if tokens:
        U_T = call.ws.get(f"U_T{lane}", (D, GH), call.dtype)
        np.copyto(U_T, U.T)
    keep = (call.ws.get(f"keep{lane}", (T, B, H), call.dtype)
            if plan.cell.keeps else None)
    inputs.batch_sizes = call.batch_sizes
    inputs.x = NULL if tokens else data(x)
    inputs.tokens = <int *> data(x) if tokens else NULL
    weights.U, weights.U_T, weights.W = data(U), data(U_T), data(W)
    weights.b, weights.recurrent_bias = data(bias), data(recurrent_bias)
    weights.peepholes = data(call.peepholes(lane))
    weights.R = data(call.projection(lane))
    weights.panels = NULL
    if call.use_panels:
        # [Uᵀ;] Wᵀ packed once for the T steps' products
        panels = call.ws.get(f"W_panels_T{lane}",
                             (packed_size(tag, &plan, True, 0),), call.dtype)
        weights.panels = data(panels)
        with nogil:
            pack_weights(tag, &plan, True, 0, weights.U, weights.W,
                         <void *> weights.panels)
    # Z of every step, for BPTT; a forward pass alone that forms Z step by
    # step (fused) reuses one step's block (lane_recur)
    gates = call.ws.get(f"gates{lane}",
                        (T if call.need_grad or plan.fused_width == 0 else 1,
                         B, GH), call.dtype)
    states.gates, states.hs, states.cs = data(gates), data(hs), data(cs)
    states.keep, states.ms = data(keep), data(ms)
    states.recurrent = data(call.ws.get("recurrent", (B, GH), call.dtype))
    recurrent_dropout(tag, call, lane, &states)
    with nogil:
        lane_forward(tag, &plan, &inputs, &weights, &states)
    call.lane_keep[lane], call.lane_ms[lane] = keep, ms
    call.lane_inputs[lane] = x
    call.lane_gates[lane] = gates
    call.lane_hs[lane] = hs
    call.lane_cs[lane] = cs


cdef void forward_layers(floating tag, NetworkCall call) except *:
    """Every lane's forward, layers bottom-up; each layer's output (the
    directions' h side by side, in the original time order) feeds the next."""
    cdef int l, d, T = call.T, B = call.B, S = call.S, Hd = call.Hd
    cdef cnp.ndarray layer_input = call.inputs, concat
    cdef floating *source
    cdef floating *target
    call.lane_inputs = [None] * call.n_lanes
    call.lane_gates = [None] * call.n_lanes
    call.lane_hs = [None] * call.n_lanes
    call.lane_cs = [None] * call.n_lanes
    call.lane_keep = [None] * call.n_lanes
    call.lane_ms = [None] * call.n_lanes
    call.layer_outputs = [None] * call.num_layers
    for l in range(call.num_layers):
        if call.input_masks is not None:        # dropout on the layer's input
            layer_input = dropped(tag, call, call.input_masks, l, layer_input,
                                  f"dropped_input{l}")
        for d in range(call.directions):
            forward_lane(tag, call, l, d, layer_input)
        if call.directions == 1:
            call.layer_outputs[l] = call.lane_hs[l][1:]
        else:
            concat = call.ws.get(f"output{l}", (T, B, Hd), call.dtype)
            for d in range(call.directions):
                source = (<floating *> data(call.lane_hs[l * call.directions + d])
                          + <Py_ssize_t> B * S)
                target = <floating *> data(concat) + d * S
                with nogil:
                    copy_steps(T, B, S, call.lens, d == 1, False, source, S,
                               target, Hd)
            call.layer_outputs[l] = concat
        layer_input = call.layer_outputs[l]


cdef void final_states(floating tag, NetworkCall call) except *:
    """Each sequence's state after its own last position, h_n[lane, b] =
    hs[lengths[b], b] (row b of step lengths[b]), and the top h the output
    layer reads."""
    cdef int lane, b, B = call.B, H = call.H, S = call.S
    cdef size_t row_bytes = H * sizeof(floating), h_bytes = S * sizeof(floating)
    cdef floating *source
    cdef floating *target
    cdef int top = (call.num_layers - 1) * call.directions
    call.h_n = cnp.PyArray_EMPTY(3, call.state_dims, call.typenum, 0)
    call.c_n = (cnp.PyArray_EMPTY(3, call.cell_dims, call.typenum, 0)
                if call.with_c else None)
    for lane in range(call.n_lanes):
        source = <floating *> data(call.lane_hs[lane])
        target = <floating *> data(call.h_n) + <Py_ssize_t> lane * B * S
        for b in range(B):
            memcpy(target + b * S,
                   source + (<Py_ssize_t> call.lens[b] * B + b) * S, h_bytes)
        if call.with_c:
            source = <floating *> data(call.lane_cs[lane])
            target = <floating *> data(call.c_n) + <Py_ssize_t> lane * B * H
            for b in range(B):
                memcpy(target + b * H,
                       source + (<Py_ssize_t> call.lens[b] * B + b) * H,
                       row_bytes)
    # Both are C-contiguous already: hs[1:] of a (T+1, B, H) buffer, the
    # workspace's concatenation, a lane of h_n.
    if call.return_sequences:
        call.top_h = call.layer_outputs[call.num_layers - 1]
    elif call.directions == 1:
        call.top_h = call.h_n[top]
    else:
        call.top_h = np.concatenate([call.h_n[top + d]
                                     for d in range(call.directions)], axis=1)
    if call.output_mask is not None:    # output dropout: V reads H_top ⊙ M_o
        call.top_h = dropped(tag, call, [call.output_mask], 0, call.top_h,
                             "dropped_top")


# --------------------------------------------------- output and loss

cdef void output_layer(floating tag, NetworkCall call) except *:
    """O = H_top·Vᵀ + c and, with targets (with_loss), the loss and
    scale·∂L/∂O."""
    cdef int T = call.T, B = call.B, K = call.K, t
    cdef OutputJob job
    cdef double loss = 0
    # in the outputs' shape from the start: (T, B, K) or (B, K)
    if call.return_sequences:
        logits = call.ws.get("logits", (T, B, K), call.dtype)
    else:
        logits = call.ws.get("logits", (B, K), call.dtype)
    memset(&job, 0, sizeof(OutputJob))
    if call.with_loss:
        call.dlogits = call.ws.get(
            "dlogits", (T * B if call.return_sequences else B, K), call.dtype)
        job.doutputs = data(call.dlogits)
        if call.output_kind == OUTPUT_SOFTMAX:
            job.labels = <const int *> data(call.targets)
        else:
            job.targets = data(call.targets)
    job.single = floating is float
    job.kind = call.output_kind
    job.steps = T if call.return_sequences else 1
    job.rows = B
    job.classes = K
    job.width = call.Hd
    # many-to-one: one step of B rows, every one of them live
    job.live = call.batch_sizes if call.return_sequences else NULL
    job.top_h = data(call.top_h)
    job.V = data(call.V)
    job.c = data(call.c)
    job.scale = call.scale
    job.outputs = data(logits)
    job.step_loss = <double *> malloc(job.steps * sizeof(double))
    if job.step_loss == NULL:
        raise MemoryError()
    with nogil:
        run_output(&job)
        for t in range(job.steps):
            loss += job.step_loss[t]
    free(job.step_loss)
    call.loss = loss
    call.outputs = logits


cdef tuple output_gradients(floating tag, NetworkCall call):
    """dV, dc and dH_top = dO·V (None when the top lane's BPTT takes dO·V
    into its step product: one direction, an output at every step, packed
    weights)."""
    cdef int K = call.K, Hd = call.Hd, b, t
    cdef int out_rows = call.T * call.B if call.return_sequences else call.B
    # (not with ∂L/∂h_n from outside: the step product would overwrite it)
    call.outputs_in_step = (call.use_panels and call.directions == 1
                            and call.return_sequences and call.dh_n is None
                            and call.output_mask is None
                            and call.paths & PATH_OUTPUTS_IN_STEP != 0)
    dtop = (None if call.outputs_in_step
            else call.ws.get("dtop", (out_rows, Hd), call.dtype))
    # every element is written by the first GEMM below (beta = 0)
    dV = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray> call.V),
                           call.typenum, 0)
    cdef const floating *dlogits = <const floating *> data(call.dlogits)
    cdef const floating *top_h = <const floating *> data(call.top_h)
    cdef const floating *V = <const floating *> data(call.V)
    cdef floating *dV_ptr = <floating *> data(dV)
    cdef floating *dtop_ptr = <floating *> data(dtop)
    # dc = Σ_rows dO, summed in float64 row after row: numpy's order for
    # dlogits.sum(axis=0, dtype=np.float64) when K > 1.  With K = 1 numpy
    # sums the single column pairwise, so that case stays numpy's own call.
    cdef cnp.npy_intp K_dim = K
    cdef double *dc_sum = NULL
    cdef floating *dc_ptr = NULL
    if K == 1:
        dc = call.dlogits.sum(axis=0, dtype=np.float64).astype(call.dtype)
    else:
        dc_acc = cnp.PyArray_EMPTY(1, &K_dim, cnp.NPY_DOUBLE, 0)
        dc = cnp.PyArray_EMPTY(1, &K_dim, call.typenum, 0)
        dc_sum = <double *> data(dc_acc)
        dc_ptr = <floating *> data(dc)
    with nogil:
        # dV = dO.T @ H_top   (K × H·dirs) = (rows × K)ᵀ (rows × H·dirs)
        team_gemm(True, False, K, Hd, out_rows, 1, dlogits, K, top_h, Hd, 0,
                  dV_ptr, Hd)
        if dtop_ptr != NULL:
            # dH_top = dO @ V     (rows × H·dirs) = (rows × K)(K × H·dirs)
            team_gemm(False, False, out_rows, Hd, K, 1, dlogits, K, V, Hd,
                      0, dtop_ptr, Hd)
        if dc_sum != NULL:
            for b in range(K):
                dc_sum[b] = dlogits[b]
            for t in range(1, out_rows):
                for b in range(K):
                    dc_sum[b] += dlogits[<Py_ssize_t> t * K + b]
            for b in range(K):
                dc_ptr[b] = <floating> dc_sum[b]
    if call.output_mask is not None:
        # ∂L/∂H_top = (dO @ V) ⊙ M_o
        dropped(tag, call, [call.output_mask], 0, dtop, "dtop")
    return dtop, dV, dc



# ------------------------------------------------------------------ BPTT

cdef void backward_lane(floating tag, NetworkCall call, int l, int d,
                        object dlayer, object dlayer_below, object dtop,
                        list grads) except *:
    """BPTT of lane (l, d): its parameter gradients into `grads`, its dh0
    (dc0) into the call's, and ∂L/∂(layer below's output) added into
    dlayer_below (turned back into the original time order)."""
    cdef int lane = l * call.directions + d
    cdef int T = call.T, B = call.B, H = call.H, Hd = call.Hd, K = call.K
    cdef int S = call.S
    cdef LanePlan plan
    cdef LaneInputs inputs
    cdef LaneWeights weights
    cdef LaneStates states
    cdef LaneGradients g
    cdef Py_ssize_t merged_elements
    cdef floating *source
    cdef floating *target
    dh_final = dc_final = None
    U, W, bias = call.lanes[lane][:3]
    x = call.lane_inputs[lane]
    tokens = x.ndim == 2
    call.plan(&plan, l, tokens)
    cdef int D = plan.inputs, GH = plan.gate_columns
    memset(&g, 0, sizeof(LaneGradients))
    # This lane's share of the gradient from above, in its own time order.
    if call.return_sequences or l < call.num_layers - 1:
        if call.directions == 1:
            dh_out = dlayer
        else:
            dh_out = call.ws.get(f"dh_out{lane}", (T, B, S), call.dtype)
            source = <floating *> data(dlayer) + d * S
            target = <floating *> data(dh_out)
            with nogil:
                copy_steps(T, B, S, call.lens, d == 1, False, source, Hd,
                           target, S)
        g.dh_outputs = data(dh_out)
    else:
        dh_final = np.ascontiguousarray(dtop[:, d * S:(d + 1) * S])
    if call.dh_n is not None:
        # ∂L/∂h_n from outside, on top of a many-to-one output's
        dh_final = (call.dh_n[lane] if dh_final is None
                    else dh_final + call.dh_n[lane])
    g.dh_final = data(dh_final)
    if call.dc_n is not None:
        dc_final = call.dc_n[lane]
        g.dc_final = data(dc_final)
    dgates = call.ws.get(f"dgates{lane}", (T, B, GH), call.dtype)
    dh = call.ws.get(f"dh{lane}", (B, S), call.dtype)
    dc = call.ws.get(f"dc{lane}", (B, H), call.dtype) if call.with_c else None
    dU = cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> U), call.typenum, 0)
    dW = cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> W), call.typenum, 0)
    db = cnp.PyArray_ZEROS(1, cnp.PyArray_DIMS(<cnp.ndarray> bias), call.typenum, 0)
    dbn = (cnp.PyArray_ZEROS(1, cnp.PyArray_DIMS(<cnp.ndarray> call.lanes[lane][3]),
                             call.typenum, 0) if call.with_bn else None)
    peepholes = call.peepholes(lane)
    dP = (cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> peepholes),
                            call.typenum, 0) if call.with_p else None)
    R = call.projection(lane)
    dR = (cnp.PyArray_ZEROS(2, cnp.PyArray_DIMS(<cnp.ndarray> R), call.typenum, 0)
          if R is not None else None)
    if R is not None:   # ∂L/∂h(t) of every step, and ∂L/∂m(t) of one
        g.dhs = data(call.ws.get(f"dhs{lane}", (T, B, S), call.dtype))
        g.dm = data(call.ws.get("dm", (B, H), call.dtype))
    drecurrent = (call.ws.get(f"drecurrent{lane}", (T, B, GH), call.dtype)
                  if call.separate else None)
    dU_T = None
    if tokens:
        dU_T = call.ws.get(f"dU_T{lane}", (D, GH), call.dtype)
        memset(data(dU_T), 0, <size_t> D * GH * sizeof(floating))
    dx = (call.ws.get(f"dx{lane}", (T, B, D), call.dtype)
          if dlayer_below is not None else None)
    # scratch for dU and dW in one product (lane_backward), every lane in turn
    merged_elements = merged_size(&plan, sizeof(floating))
    merged = (call.ws.get("merged", (merged_elements,), call.dtype)
              if not tokens and merged_elements > 0 else None)
    inputs.batch_sizes = call.batch_sizes
    inputs.x = NULL if tokens else data(x)
    inputs.tokens = <int *> data(x) if tokens else NULL
    weights.U, weights.U_T, weights.W = data(U), NULL, data(W)
    weights.b, weights.recurrent_bias = data(bias), NULL
    weights.peepholes, weights.R = data(peepholes), data(R)
    states.ms = data(call.lane_ms[lane])
    states.gates, states.hs = data(call.lane_gates[lane]), data(call.lane_hs[lane])
    states.cs, states.keep = data(call.lane_cs[lane]), data(call.lane_keep[lane])
    # scratch for a gated cell's d(keep), or the masked product's (B × H)
    states.recurrent = data(call.ws.get("recurrent", (B, GH), call.dtype))
    recurrent_dropout(tag, call, lane, &states)
    g.dgates, g.drecurrent = data(dgates), data(drecurrent)
    g.dh, g.dc, g.dU, g.dU_T = data(dh), data(dc), data(dU), data(dU_T)
    g.dW, g.db, g.d_recurrent_bias, g.dx = data(dW), data(db), data(dbn), data(dx)
    g.dpeepholes, g.dR = data(dP), data(dR)
    g.merged = data(merged)
    g.merged_rows = merged_scratch_rows(&plan, merged_elements)
    g.K = K
    # W (G·H × H) packed once for the T products dH[t-1] = dR[t] @ W,
    # [W; V] for dH[t-1] = dR[t] @ W + dY[t-1] @ V on the top lane
    cdef bint top_in_step = call.outputs_in_step and l == call.num_layers - 1
    cdef int V_rows = K if top_in_step else 0
    cdef const void *V = data(call.V) if top_in_step else weights.U
    weights.panels = NULL
    if call.use_panels:
        panels = call.ws.get(f"W_panels{lane}",
                             (packed_size(tag, &plan, False, V_rows),), call.dtype)
        weights.panels = data(panels)
        with nogil:
            pack_weights(tag, &plan, False, V_rows, V, weights.W,
                         <void *> weights.panels)
    if top_in_step:
        g.doutputs = data(call.dlogits)
        g.zeros = data(call.zeros)
    with nogil:
        lane_backward(tag, &plan, &inputs, &weights, &states, &g)
    if dU_T is not None:
        dU += dU_T.T
    lane_grads = [grad for grad in (dU, dW, db, dbn, dP, dR) if grad is not None]
    per_lane = len(lane_grads)
    grads[lane * per_lane:(lane + 1) * per_lane] = lane_grads
    if dx is not None:
        # ∂L/∂(layer below's output): forward lane as is, reverse lane
        # turned back into the original time order.
        source = <floating *> data(dx)
        target = <floating *> data(dlayer_below)
        with nogil:
            copy_steps(T, B, D, call.lens, d == 1, d == 1, source, D, target, D)
    memcpy(<floating *> data(call.dh0) + <Py_ssize_t> lane * B * S, data(dh),
           <size_t> B * S * sizeof(floating))
    if call.with_c:
        memcpy(<floating *> data(call.dc0) + <Py_ssize_t> lane * B * H,
               data(dc), <size_t> B * H * sizeof(floating))


cdef tuple backward_layers(floating tag, NetworkCall call, object dtop):
    """BPTT of every lane, layers top-down: (grads, dh0, dc0), grads one
    list lane after lane (dU, dW, db, and dbn or dP, dR), like the model's keys."""
    cdef int l, d, T = call.T, B = call.B
    cdef int size
    call.dh0 = cnp.PyArray_EMPTY(3, call.state_dims, call.typenum, 0)
    call.dc0 = (cnp.PyArray_EMPTY(3, call.cell_dims, call.typenum, 0)
                if call.with_c else None)
    call.zeros = None
    if call.outputs_in_step:
        size = B * max(cell_spec(call.kind).gate_blocks * call.H, call.K)
        call.zeros = call.ws.get("zeros", (size,), call.dtype)
        memset(data(call.zeros), 0, <size_t> size * sizeof(floating))
    grads = [None] * (call.n_lanes * len(call.lanes[0]))
    dlayer = dtop           # ∂L/∂(this layer's output)
    for l in range(call.num_layers - 1, -1, -1):
        dlayer_below = None
        if l > 0:
            dlayer_below = call.ws.get(f"dlayer{l - 1}", (T, B, call.Hd),
                                       call.dtype)
        elif call.want_dx:
            dlayer_below = call.dinputs = call.ws.get(
                "dinputs", (T, B, call.inputs.shape[2]), call.dtype)
        for d in range(call.directions):
            backward_lane(tag, call, l, d, dlayer, dlayer_below, dtop, grads)
        if dlayer_below is not None and call.input_masks is not None:
            # ∂L/∂(the layer's input: the output below, or X) = ∂L/∂x̃ ⊙ M_l
            dropped(tag, call, call.input_masks, l, dlayer_below,
                    f"dlayer{l - 1}" if l > 0 else "dinputs")
        dlayer = dlayer_below
    return grads, call.dh0, call.dc0
