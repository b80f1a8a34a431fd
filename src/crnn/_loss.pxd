# Output-layer losses, fused: one pass writes the loss and ∂L/∂o.
from cython cimport floating

cdef double softmax_cross_entropy(int rows, int classes, floating *logits,
                                  const int *labels, floating scale,
                                  floating *dlogits) noexcept nogil

cdef double squared_error(int rows, int width, const floating *predictions,
                          const floating *targets, floating scale,
                          floating *dpredictions) noexcept nogil
