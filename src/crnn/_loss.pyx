"""The output layer and its losses: softmax + cross-entropy and ½‖o - y‖², fused.

``run_output`` forms O = H_top·Vᵀ + c and the loss of a network's top
layer, its time steps shared out on the team (below); the kernels under it:

Each kernel works on `rows` rows of a row-major (rows × K) block, returns the
summed loss of those rows in double precision, and (when the gradient pointer
is not NULL) writes scale·∂L/∂o, where scale is 1/(positions with a target)
for the mean reduction and 1 for the sum.
"""
from cython cimport floating
from libc.math cimport exp, log
from libc.string cimport memcpy, memset

from ._blas cimport gemm
from ._parallel cimport team_may_call_blas, team_parts, team_run

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
    gemm(False, True, m, K, Hd, 1,
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


# ------------------------------------------------------------- the network
