"""Optimizer updates, in place: one fused pass per parameter array, no temporaries.

Every rule reads the raw gradient g of a parameter p and first forms

    d = grad_scale·g + weight_decay·p        (clipping factor, then torch's L2 term)

then updates p and the rule's state buffers in the same loop over the
elements, in the parameter's own precision (float32 arithmetic for float32
models, as torch.optim does).  The formulas are torch.optim's, term by term,
including its ``lerp`` for running means.

Each Python entry point takes lists of C-contiguous arrays of one dtype,
already checked by ``crnn.optim`` (same sizes, writable, state buffers
present), and updates all of them in one call: no Python code runs between
two arrays, so a Ctrl-C cannot leave half of a step applied.  The loops hold
no GIL.

``apply=False`` is a dry run: nothing is written and the function only
reports whether every new parameter value would be finite.  ``crnn.optim``
runs it first, so an update that would overflow is refused before anything
changes.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport sqrt, sqrtf

from ._arrays cimport data

import numpy as np

cnp.import_array()


cdef inline floating sqrt_(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


cdef inline floating lerp(floating start, floating end, floating weight) noexcept nogil:
    """start + weight·(end - start), in torch's two-sided form (exact at both ends)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)



# ---------------------------------------------------------------- kernels
# Each returns True when every new parameter value is finite (always True
# when apply is set: the caller has already run the dry pass).  The check
# is new - new == 0, false exactly for NaN and ±inf; an integer AND keeps
# the dry pass vectorisable (a float sum would fix the order of additions).

cdef bint sgd_kernel(Py_ssize_t n,
                     floating *param,            # IN/OUT p
                     const floating *grad,       # IN g
                     floating *buffer,           # IN/OUT momentum buffer, NULL without momentum
                     floating lr, floating momentum,
                     floating undamped,          # 1 - dampening
                     floating weight_decay, floating grad_scale,
                     bint nesterov, bint first, bint apply) noexcept nogil:
    """b = d (first step) or momentum·b + (1 - dampening)·d;
    p -= lr·(d + momentum·b) (Nesterov) or lr·b (or lr·d without momentum)."""
    cdef Py_ssize_t i
    cdef floating d, b, new
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        if buffer != NULL:
            b = d if first else momentum * buffer[i] + undamped * d
            d = d + momentum * b if nesterov else b
            if apply:
                buffer[i] = b
        new = param[i] - lr * d
        if apply:
            param[i] = new
        else:
            finite &= new - new == 0
    return finite


cdef bint adam_kernel(Py_ssize_t n,
                      floating *param,           # IN/OUT p
                      const floating *grad,      # IN g
                      floating *exp_avg,         # IN/OUT m
                      floating *exp_avg_sq,      # IN/OUT v
                      floating beta1_c,          # 1 - β1
                      floating beta2, floating beta2_c,   # β2, 1 - β2
                      floating eps,
                      floating step_size,        # lr / (1 - beta1^t)
                      floating correction2_sqrt, # sqrt(1 - beta2^t)
                      floating weight_decay, floating grad_scale,
                      bint apply) noexcept nogil:
    """m = lerp(m, d, 1 - β1); v = β2·v + (1 - β2)·d²;
    p -= step_size·m / (sqrt(v)/sqrt(1 - β2^t) + eps)."""
    cdef Py_ssize_t i
    cdef floating d, m, v, denom, new
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        m = lerp(exp_avg[i], d, beta1_c)
        v = beta2 * exp_avg_sq[i] + beta2_c * d * d
        denom = sqrt_(v) / correction2_sqrt + eps
        new = param[i] + (-step_size) * m / denom
        if apply:
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = new
        else:
            finite &= new - new == 0
    return finite


cdef bint rmsprop_kernel(Py_ssize_t n,
                         floating *param,        # IN/OUT p
                         const floating *grad,   # IN g
                         floating *square_avg,   # IN/OUT v
                         floating *grad_avg,     # IN/OUT mean of d, NULL unless centered
                         floating *buffer,       # IN/OUT momentum buffer, NULL without momentum
                         floating lr, floating alpha,
                         floating alpha_c,       # 1 - α
                         floating eps,
                         floating momentum, floating weight_decay,
                         floating grad_scale, bint apply) noexcept nogil:
    """v = α·v + (1 - α)·d²; a = sqrt(v - ḡ²) + eps (centered, ḡ = lerp(ḡ, d, 1 - α))
    or sqrt(v) + eps; p -= lr·b with b = momentum·b + d/a, or lr·d/a."""
    cdef Py_ssize_t i
    cdef floating d, v, mean, avg, b, new
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        v = alpha * square_avg[i] + alpha_c * d * d
        if grad_avg != NULL:
            mean = lerp(grad_avg[i], d, alpha_c)
            avg = sqrt_(v + (-1) * (mean * mean)) + eps
            if apply:
                grad_avg[i] = mean
        else:
            avg = sqrt_(v) + eps
        if buffer != NULL:
            b = momentum * buffer[i] + d / avg
            new = param[i] - lr * b
            if apply:
                buffer[i] = b
        else:
            new = param[i] + (-lr) * d / avg
        if apply:
            square_avg[i] = v
            param[i] = new
        else:
            finite &= new - new == 0
    return finite


cdef bint adagrad_kernel(Py_ssize_t n,
                         floating *param,        # IN/OUT p
                         const floating *grad,   # IN g
                         floating *state_sum,    # IN/OUT Σ d²
                         floating clr,           # lr / (1 + (t - 1)·lr_decay)
                         floating eps, floating weight_decay,
                         floating grad_scale, bint apply) noexcept nogil:
    """s += d²; p -= clr·d / (sqrt(s) + eps)."""
    cdef Py_ssize_t i
    cdef floating d, s, new
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        s = state_sum[i] + d * d
        new = param[i] + (-clr) * d / (sqrt_(s) + eps)
        if apply:
            state_sum[i] = s
            param[i] = new
        else:
            finite &= new - new == 0
    return finite


cdef double squares_kernel(Py_ssize_t n, const floating *x) noexcept nogil:
    """Σ x², accumulated in double (inf or NaN when some x is)."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(n):
        total += <double> x[i] * x[i]
    return total


# ------------------------------------------------------- list-level loops
# One fused specialisation per dtype; the `floating` dummy argument only
# selects it.  Arrays at index i of every list belong to the same parameter.

cdef bint _sgd_all(floating kind, list params, list grads, list buffers,
                   double lr, double momentum, double dampening,
                   double weight_decay, double grad_scale, bint nesterov,
                   bint first, bint apply):
    cdef Py_ssize_t i, n
    cdef bint finite = True
    cdef floating *p
    cdef const floating *g
    cdef floating *b
    for i in range(len(params)):
        n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
        p = <floating *> data(params[i])
        g = <const floating *> data(grads[i])
        b = <floating *> data(buffers[i]) if buffers is not None else NULL
        with nogil:
            finite &= sgd_kernel(n, p, g, b, <floating> lr, <floating> momentum,
                                 <floating> (1 - dampening),
                                 <floating> weight_decay, <floating> grad_scale,
                                 nesterov, first, apply)
    return finite


cdef bint _adam_all(floating kind, list params, list grads, list exp_avgs,
                    list exp_avg_sqs, double beta1, double beta2, double eps,
                    double step_size, double correction2_sqrt,
                    double weight_decay, double grad_scale, bint apply):
    cdef Py_ssize_t i, n
    cdef bint finite = True
    cdef floating *p
    cdef const floating *g
    cdef floating *m
    cdef floating *v
    for i in range(len(params)):
        n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
        p = <floating *> data(params[i])
        g = <const floating *> data(grads[i])
        m = <floating *> data(exp_avgs[i])
        v = <floating *> data(exp_avg_sqs[i])
        with nogil:
            finite &= adam_kernel(n, p, g, m, v, <floating> (1 - beta1),
                                  <floating> beta2, <floating> (1 - beta2),
                                  <floating> eps,
                                  <floating> step_size,
                                  <floating> correction2_sqrt,
                                  <floating> weight_decay,
                                  <floating> grad_scale, apply)
    return finite


cdef bint _rmsprop_all(floating kind, list params, list grads,
                       list square_avgs, list grad_avgs, list buffers,
                       double lr, double alpha, double eps, double momentum,
                       double weight_decay, double grad_scale, bint apply):
    cdef Py_ssize_t i, n
    cdef bint finite = True
    cdef floating *p
    cdef const floating *g
    cdef floating *v
    cdef floating *mean
    cdef floating *b
    for i in range(len(params)):
        n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
        p = <floating *> data(params[i])
        g = <const floating *> data(grads[i])
        v = <floating *> data(square_avgs[i])
        mean = <floating *> data(grad_avgs[i]) if grad_avgs is not None else NULL
        b = <floating *> data(buffers[i]) if buffers is not None else NULL
        with nogil:
            finite &= rmsprop_kernel(n, p, g, v, mean, b, <floating> lr,
                                     <floating> alpha, <floating> (1 - alpha),
                                     <floating> eps,
                                     <floating> momentum,
                                     <floating> weight_decay,
                                     <floating> grad_scale, apply)
    return finite


cdef bint _adagrad_all(floating kind, list params, list grads, list sums,
                       double clr, double eps, double weight_decay,
                       double grad_scale, bint apply):
    cdef Py_ssize_t i, n
    cdef bint finite = True
    cdef floating *p
    cdef const floating *g
    cdef floating *s
    for i in range(len(params)):
        n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
        p = <floating *> data(params[i])
        g = <const floating *> data(grads[i])
        s = <floating *> data(sums[i])
        with nogil:
            finite &= adagrad_kernel(n, p, g, s, <floating> clr, <floating> eps,
                                     <floating> weight_decay,
                                     <floating> grad_scale, apply)
    return finite


cdef inline bint _single(list arrays):
    return (<cnp.ndarray> arrays[0]).dtype == np.float32


# ------------------------------------------------------------ Python API

def sgd(list params, list grads, list buffers, double lr, double momentum,
        double dampening, double weight_decay, double grad_scale,
        bint nesterov, bint first, bint apply):
    """SGD with optional (Nesterov) momentum; ``buffers`` None without
    momentum; ``first``: the buffers hold nothing yet (b = d)."""
    if _single(params):
        return _sgd_all(<float> 0, params, grads, buffers, lr, momentum,
                        dampening, weight_decay, grad_scale, nesterov, first,
                        apply)
    return _sgd_all(<double> 0, params, grads, buffers, lr, momentum,
                    dampening, weight_decay, grad_scale, nesterov, first, apply)


def adam(list params, list grads, list exp_avgs, list exp_avg_sqs,
         double beta1, double beta2, double eps, double step_size,
         double correction2_sqrt, double weight_decay, double grad_scale,
         bint apply):
    """Adam (torch.optim.Adam, amsgrad=False); the bias corrections come
    precomputed as step_size = lr/(1 - β1^t) and sqrt(1 - β2^t)."""
    if _single(params):
        return _adam_all(<float> 0, params, grads, exp_avgs, exp_avg_sqs,
                         beta1, beta2, eps, step_size, correction2_sqrt,
                         weight_decay, grad_scale, apply)
    return _adam_all(<double> 0, params, grads, exp_avgs, exp_avg_sqs, beta1,
                     beta2, eps, step_size, correction2_sqrt, weight_decay,
                     grad_scale, apply)


def rmsprop(list params, list grads, list square_avgs, list grad_avgs,
            list buffers, double lr, double alpha, double eps, double momentum,
            double weight_decay, double grad_scale, bint apply):
    """RMSprop (torch.optim.RMSprop); ``grad_avgs`` None unless centered,
    ``buffers`` None without momentum."""
    if _single(params):
        return _rmsprop_all(<float> 0, params, grads, square_avgs, grad_avgs,
                            buffers, lr, alpha, eps, momentum, weight_decay,
                            grad_scale, apply)
    return _rmsprop_all(<double> 0, params, grads, square_avgs, grad_avgs,
                        buffers, lr, alpha, eps, momentum, weight_decay,
                        grad_scale, apply)


def adagrad(list params, list grads, list sums, double clr, double eps,
            double weight_decay, double grad_scale, bint apply):
    """Adagrad (torch.optim.Adagrad); clr = lr / (1 + (t - 1)·lr_decay)."""
    if _single(params):
        return _adagrad_all(<float> 0, params, grads, sums, clr, eps,
                            weight_decay, grad_scale, apply)
    return _adagrad_all(<double> 0, params, grads, sums, clr, eps,
                        weight_decay, grad_scale, apply)


def sum_squares(list arrays):
    """Σ x² of each array (float32 or float64, C-contiguous), in double:
    a float64 array with one entry per array."""
    cdef Py_ssize_t i, n
    cdef cnp.ndarray array
    cdef double[::1] totals = np.empty(len(arrays))
    for i in range(len(arrays)):
        array = arrays[i]
        n = cnp.PyArray_SIZE(array)
        if array.dtype == np.float32:
            with nogil:
                totals[i] = squares_kernel(n, <const float *> cnp.PyArray_DATA(array))
        else:
            with nogil:
                totals[i] = squares_kernel(n, <const double *> cnp.PyArray_DATA(array))
    return np.asarray(totals)
