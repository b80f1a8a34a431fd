# A lane: one direction of one layer over a time-major, length-sorted batch
# -- the forward scan, and BPTT with its weight gradients.  See _lane.pyx.
# Buffers are void pointers of the call's type; `tag` picks float or double.
# h (hs, dh, dh_outputs, ...) is S = plan.state_width wide, the cell's
# buffers (gates, cs, keep, ms, dc) H: S = H but for a projected LSTM.
from cython cimport floating
from ._plan cimport LanePlan


cdef struct LaneInputs:
    const int *batch_sizes  # (T,) live rows per step (sequences longer than t)
    const void *x           # (T·B × D) inputs, or NULL for tokens
    const int *tokens       # (T·B,) token ids, or NULL

cdef struct LaneWeights:
    const void *U           # (G·H × D)
    const void *U_T         # (D × G·H) Uᵀ for token inputs, or NULL: gather from U
    const void *W           # (G·H × H)
    const void *b           # (G·H,)
    const void *recurrent_bias  # (H,) for cells with one, else NULL
    const void *peepholes   # (peephole_blocks × H) for cells with them, else NULL
    const void *panels      # packed for this pass (pack_weights), or NULL: BLAS
    const void *R           # (S × H) the projection h = m·Rᵀ (read only when
                            # plan.state_width S < H)

cdef struct LaneStates:
    # the forward's OUT, BPTT's IN
    void *gates             # (T·B × G·H) what BPTT needs of Z; (B × G·H) when
                            # the plan keeps no gates and fuses the inputs
    void *recurrent         # scratch (B × G·H), separate_recurrent cells
    void *hs                # ((T+1)·B × H): slot 0 = h0 on entry, t+1 = h(t)
    void *cs                # ((T+1)·B × H): the same for C (pair_state)
    void *keep              # (T·B × H) extra values a cell keeps, or NULL
    void *ms                # (T·B × H) m(t), h before the projection (S < H)
    # recurrent dropout (training only; its plan runs the products on BLAS,
    # plan_recurrent_dropout): the recurrent product reads h(t-1) ⊙ mask
    const void *recurrent_mask  # (B × S) 0 or 1/(1-p), or NULL: no dropout
    void *dropped           # ((T+1)·B × S) h ⊙ mask, slots as hs; with the mask

cdef struct LaneGradients:
    # IN: the gradient arriving from above
    const void *dh_outputs  # (T·B × H) ∂L/∂h(t) from outputs or the layer above, or NULL
    const void *dh_final    # (B × H) ∂L/∂(final h), or NULL
    const void *dc_final    # (B × H) ∂L/∂(final C), or NULL
    const void *doutputs    # (T·B × K) ∂L/∂y(t), into the step product
                            # (panels are [W; V], V (K × H)), or NULL
    int K                   # y's width
    const void *zeros       # (B × max(G·H, K)) zeros, with doutputs
    # OUT, and scratch
    void *dgates            # (T·B × G·H) ∂L/∂Z
    void *drecurrent        # (T·B × G·H) ∂L/∂R, separate_recurrent cells
    void *dh                # (B × H) ∂L/∂h0
    void *dc                # (B × H) ∂L/∂c0 (pair_state)
    void *dU                # += (G·H × D), dense inputs
    void *dU_T              # += (D × G·H), token inputs
    void *dW                # += (G·H × H)
    void *db                # += (G·H,)
    void *d_recurrent_bias  # += (H,), or NULL
    void *dpeepholes        # += (peephole_blocks × H), or NULL
    # with a projection (S < H) only:
    void *dhs               # (T·B × S) the whole ∂L/∂h(t) of each step
    void *dm                # (B × H) scratch: ∂L/∂m(t) = ∂L/∂h(t)·R
    void *dR                # += (S × H)
    void *dx                # (T·B × D) ∂L/∂x, or NULL
    void *merged            # scratch (merged_size elements), or NULL
    Py_ssize_t merged_rows  # rows [x | h] that `merged` holds


cdef void lane_forward(floating tag, const LanePlan *plan,
                       const LaneInputs *inputs, const LaneWeights *weights,
                       LaneStates *states) noexcept nogil
cdef void lane_backward(floating tag, const LanePlan *plan,
                        const LaneInputs *inputs, const LaneWeights *weights,
                        const LaneStates *states,
                        LaneGradients *grads) noexcept nogil
