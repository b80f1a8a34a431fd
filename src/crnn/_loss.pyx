"""Output-layer losses: softmax + cross-entropy and ½‖o - y‖², fused.

Each kernel works on `rows` rows of a row-major (rows × K) block, returns the
summed loss of those rows in double precision, and (when the gradient pointer
is not NULL) writes scale·∂L/∂o, where scale is 1/(positions with a target)
for the mean reduction and 1 for the sum.
"""
from libc.math cimport exp, log

cdef extern from "_fastmath.h" nogil:
    # o[k] := exp(o[k] - shift), vectorised, a few ulp (float32 only)
    void crnn_exp_shifted_f32(Py_ssize_t n, float *o, float shift)


cdef double softmax_cross_entropy(int rows, int classes,
                                  floating *logits,      # IN o; OUT softmax(o)
                                  const int *labels,     # IN class ids, or NULL (no loss)
                                  floating scale,
                                  floating *dlogits) noexcept nogil:  # OUT scale·(ŷ - onehot(y)), or NULL
    """Σ_rows -log softmax(o)[y], by log-sum-exp: -o[y] + max(o) + log Σ exp(o - max)."""
    cdef Py_ssize_t r, k
    cdef floating *o
    cdef floating top, inverse
    cdef double total, loss = 0
    for r in range(rows):
        o = logits + r * classes
        top = o[0]
        for k in range(1, classes):
            if o[k] > top:
                top = o[k]
        if labels != NULL:
            # -log ŷ[y] = log Σ exp(o - max) - (o[y] - max)
            loss -= <double> o[labels[r]] - top
        # e = exp(o - max) <= 1: no overflow
        if floating is float:
            crnn_exp_shifted_f32(classes, o, top)
        else:
            for k in range(classes):
                o[k] = exp(o[k] - top)
        total = 0
        for k in range(classes):
            total += o[k]
        if labels != NULL:
            loss += log(total)
        inverse = <floating> (1.0 / total)
        for k in range(classes):
            o[k] *= inverse
        if dlogits != NULL:
            for k in range(classes):
                dlogits[r * classes + k] = scale * o[k]
            dlogits[r * classes + labels[r]] -= scale
    return loss


cdef double squared_error(int rows, int width,
                          const floating *predictions,   # IN o
                          const floating *targets,       # IN y
                          floating scale,
                          floating *dpredictions) noexcept nogil:  # OUT scale·(o - y), or NULL
    """Σ_rows ½‖o - y‖²"""
    cdef Py_ssize_t i, n = <Py_ssize_t> rows * width
    cdef floating diff
    cdef double loss = 0
    for i in range(n):
        diff = predictions[i] - targets[i]
        loss += 0.5 * (<double> diff) * diff
        if dpredictions != NULL:
            dpredictions[i] = scale * diff
    return loss


# ------------------------------------------------- for the tests only

def _exp_shifted(float[::1] values, float shift):
    """exp(values - shift) in place, by the float32 kernel softmax uses."""
    crnn_exp_shifted_f32(values.shape[0], &values[0], shift)
