# The generic sequence driver: one lane (one layer, one direction) of any
# cell type over a time-major, length-sorted batch.  See _sequence.pyx.
from cython cimport floating


cdef struct LaneShape:
    int steps       # T: time steps of the padded batch
    int batch       # B: rows, sorted by length, longest first
    int inputs      # D: input features (or vocabulary size for tokens)
    int hidden      # H: hidden units
    int kind        # CellKind


cdef void lane_forward(const LaneShape *shape, const int *batch_sizes,
                       const floating *x, const int *tokens,
                       const floating *U, const floating *U_T,
                       const floating *W, const floating *W_panels,
                       int input_width,
                       const floating *b, const floating *recurrent_bias,
                       floating *gates, floating *recurrent,
                       floating *hs, floating *cs,
                       floating *keep, bint keep_gates) noexcept nogil

cdef void project_inputs(const LaneShape *shape, int rows,
                         const floating *x, const int *tokens,
                         const floating *U, const floating *U_T,
                         const floating *b, floating *gates) noexcept nogil

cdef void lane_recur(const LaneShape *shape, const int *batch_sizes,
                     const floating *x, int input_width, const floating *b,
                     const floating *W, const floating *W_panels,
                     const floating *recurrent_bias,
                     floating *gates, floating *recurrent,
                     floating *hs, floating *cs, floating *keep,
                     bint keep_gates) noexcept nogil

cdef void lane_backward(const LaneShape *shape, const int *batch_sizes,
                        const floating *x, const int *tokens,
                        const floating *U, const floating *W,
                        const floating *W_panels, const floating *gates, const floating *hs,
                        const floating *cs, const floating *keep,
                        const floating *dh_outputs,
                        const floating *dh_final, const floating *dc_final,
                        floating *dgates, floating *drecurrent,
                        floating *dh, floating *dc,
                        floating *dU, floating *dU_T, floating *dW,
                        floating *db, floating *d_recurrent_bias,
                        floating *dx, floating *merged,
                        Py_ssize_t merged_rows,
                        const floating *doutputs, int K,
                        const floating *zeros) noexcept nogil

# Elements of lane_backward's `merged` scratch (dU and dW in one product) at
# the team's thread count, 0 where they keep two products; and the elements
# that hold it at any thread count and item size (for a workspace sized once).
cdef Py_ssize_t merged_size(int kind, int T, int B, int D, int H,
                            size_t itemsize) noexcept nogil
cdef Py_ssize_t merged_room(int kind, int T, int B, int D,
                            int H) noexcept nogil

# True when a lane of `steps` × `batch` should run its recurrent products on
# packed weights (the packing costs about one product; see _packed_gemm.h).
cdef bint panels_pay(int steps, int batch) noexcept nogil

# The weights packed for lane_forward's and lane_backward's W_panels, on
# the thread team: forward (for lane_forward), [U_gᵀ; W_gᵀ] gate block by
# gate block (G blocks of (D + H) × H panels), D = fused_input_width (0: Wᵀ
# alone, and lane_forward's input_width is 0), gate_panels_size elements;
# else W itself (G·H × H) for BPTT, _blas.panels_size(G·H, H) elements, or
# with D > 0 [W; U], U then the output layer's V (D × H), for lane_backward's
# doutputs (_blas.panels_size(G·H + D, H) elements).
cdef int fused_input_width(int kind, int inputs, int hidden,
                           bint tokens) noexcept nogil
cdef Py_ssize_t gate_panels_size(floating tag, int G, int H,
                                 int D) noexcept nogil
cdef void pack_weights(bint forward, int G, int H, int D, const floating *U,
                       const floating *W, floating *panels) noexcept nogil
