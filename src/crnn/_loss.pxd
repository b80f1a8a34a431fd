# Output-layer losses, fused: one pass writes the loss and ∂L/∂o.
from cython cimport floating

cdef double softmax_cross_entropy(int rows, int classes, floating *logits,
                                  const int *labels, floating scale,
                                  floating *dlogits) noexcept nogil

cdef double squared_error(int rows, int width, const floating *predictions,
                          const floating *targets, floating scale,
                          floating *dpredictions) noexcept nogil

# The output layer's kind: what a network's (and a stream's) outputs are.
cpdef enum OutputKind:
    OUTPUT_NONE = 0      # outputs are the top layer's h
    OUTPUT_SOFTMAX = 1   # softmax + cross-entropy
    OUTPUT_LINEAR = 2    # linear + ½‖o - y‖²


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


# The output job on the team, or on this thread when it is small or when
# BLAS keeps its own threads (its parts call BLAS).
cdef void run_output(OutputJob *job) noexcept nogil
