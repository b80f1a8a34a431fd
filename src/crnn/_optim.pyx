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
changes.  Each kernel is inlined twice, `apply` a constant in each: two
loops without its branches, which the compiler vectorises (with
-fno-math-errno for sqrt, setup.py).
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



# ------------------------------------------------- the hyperparameters

cdef struct Hyper:
    # One update's hyperparameters (doubles, cast to the dtype in a kernel;
    # the ones an optimizer does not use are 0).
    double lr               # SGD, RMSprop; Adagrad: lr / (1 + (t - 1)·lr_decay)
    double momentum         # SGD, RMSprop
    double dampening        # SGD
    double alpha            # RMSprop
    double beta1, beta2     # Adam
    double step_size        # Adam: lr / (1 - beta1^t)
    double correction2_sqrt  # Adam: sqrt(1 - beta2^t)
    double eps
    double weight_decay
    double grad_scale       # g is grad_scale · the gradient given
    bint nesterov           # SGD
    bint first              # SGD: the buffers hold nothing yet (b = d)
    bint apply              # False: a dry pass that only checks finiteness


cdef Hyper read_hyper(dict values) except *:
    """The Hyper of a dict with any of its field names (others 0)."""
    cdef Hyper h
    h.lr = values.get("lr", 0)
    h.momentum = values.get("momentum", 0)
    h.dampening = values.get("dampening", 0)
    h.alpha = values.get("alpha", 0)
    h.beta1 = values.get("beta1", 0)
    h.beta2 = values.get("beta2", 0)
    h.step_size = values.get("step_size", 0)
    h.correction2_sqrt = values.get("correction2_sqrt", 0)
    h.eps = values.get("eps", 0)
    h.weight_decay = values.get("weight_decay", 0)
    h.grad_scale = values.get("grad_scale", 1)
    h.nesterov = values.get("nesterov", False)
    h.first = values.get("first", False)
    h.apply = values.get("apply", True)
    return h


# ---------------------------------------------------------------- kernels
# Each returns True when every new parameter value is finite (always True
# when applying: the caller has already run the dry pass).  The check
# is new - new == 0, false exactly for NaN and ±inf; an integer AND keeps
# the dry pass vectorisable (a float sum would fix the order of additions).

cdef inline int settle(bint apply, floating *param, floating new) noexcept nogil:
    """param := new when applying (1); in a dry pass, whether new is finite."""
    if apply:
        param[0] = new
        return 1
    return new - new == 0


cdef inline bint sgd_kernel(Py_ssize_t n,
                            floating *param,            # IN/OUT p
                            const floating *grad,       # IN g
                            floating *buffer,           # IN/OUT momentum, or NULL
                            const Hyper *h, bint apply) noexcept nogil:
    """b = d (first step) or momentum·b + (1 - dampening)·d;
    p -= lr·(d + momentum·b) (Nesterov) or lr·b (or lr·d without momentum)."""
    cdef floating lr = <floating> h.lr, momentum = <floating> h.momentum
    cdef floating undamped = <floating> (1 - h.dampening)
    cdef floating weight_decay = <floating> h.weight_decay
    cdef floating grad_scale = <floating> h.grad_scale
    cdef bint nesterov = h.nesterov, first = h.first
    cdef Py_ssize_t i
    cdef floating d, b
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        if buffer != NULL:
            b = d if first else momentum * buffer[i] + undamped * d
            d = d + momentum * b if nesterov else b
            if apply:
                buffer[i] = b
        finite &= settle(apply, &param[i], param[i] - lr * d)
    return finite


cdef inline bint adam_kernel(Py_ssize_t n,
                             floating *param,           # IN/OUT p
                             const floating *grad,      # IN g
                             floating *exp_avg,         # IN/OUT m
                             floating *exp_avg_sq,      # IN/OUT v
                             const Hyper *h, bint apply) noexcept nogil:
    """m = lerp(m, d, 1 - β1); v = β2·v + (1 - β2)·d²;
    p -= step_size·m / (sqrt(v)/sqrt(1 - β2^t) + eps)."""
    cdef floating beta1_c = <floating> (1 - h.beta1)
    cdef floating beta2 = <floating> h.beta2, beta2_c = <floating> (1 - h.beta2)
    cdef floating eps = <floating> h.eps, step_size = <floating> h.step_size
    cdef floating correction2_sqrt = <floating> h.correction2_sqrt
    cdef floating weight_decay = <floating> h.weight_decay
    cdef floating grad_scale = <floating> h.grad_scale
    cdef Py_ssize_t i
    cdef floating d, m, v, denom
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        m = lerp(exp_avg[i], d, beta1_c)
        v = beta2 * exp_avg_sq[i] + beta2_c * d * d
        denom = sqrt_(v) / correction2_sqrt + eps
        if apply:
            exp_avg[i] = m
            exp_avg_sq[i] = v
        finite &= settle(apply, &param[i], param[i] + (-step_size) * m / denom)
    return finite


cdef inline bint rmsprop_kernel(Py_ssize_t n,
                                floating *param,        # IN/OUT p
                                const floating *grad,   # IN g
                                floating *square_avg,   # IN/OUT v
                                floating *grad_avg,     # IN/OUT mean of d; NULL unless centered
                                floating *buffer,       # IN/OUT momentum, or NULL
                                const Hyper *h, bint apply) noexcept nogil:
    """v = α·v + (1 - α)·d²; a = sqrt(v - ḡ²) + eps (centered, ḡ = lerp(ḡ, d, 1 - α))
    or sqrt(v) + eps; p -= lr·b with b = momentum·b + d/a, or lr·d/a."""
    cdef floating lr = <floating> h.lr, alpha = <floating> h.alpha
    cdef floating alpha_c = <floating> (1 - h.alpha), eps = <floating> h.eps
    cdef floating momentum = <floating> h.momentum
    cdef floating weight_decay = <floating> h.weight_decay
    cdef floating grad_scale = <floating> h.grad_scale
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
        finite &= settle(apply, &param[i], new)
    return finite


cdef inline bint adagrad_kernel(Py_ssize_t n,
                                floating *param,        # IN/OUT p
                                const floating *grad,   # IN g
                                floating *state_sum,    # IN/OUT Σ d²
                                const Hyper *h, bint apply) noexcept nogil:
    """s += d²; p -= clr·d / (sqrt(s) + eps), clr = h.lr."""
    cdef floating clr = <floating> h.lr, eps = <floating> h.eps
    cdef floating weight_decay = <floating> h.weight_decay
    cdef floating grad_scale = <floating> h.grad_scale
    cdef Py_ssize_t i
    cdef floating d, s
    cdef int finite = 1
    for i in range(n):
        d = grad_scale * grad[i] + weight_decay * param[i]
        s = state_sum[i] + d * d
        if apply:
            state_sum[i] = s
        finite &= settle(apply, &param[i], param[i] + (-clr) * d / (sqrt_(s) + eps))
    return finite


cdef double squares_kernel(Py_ssize_t n, const floating *x) noexcept nogil:
    """Σ x², accumulated in double (inf or NaN when some x is): eight
    interleaved partial sums, so that eight additions are in flight (one
    chain waits for each addition), in a fixed order."""
    cdef Py_ssize_t i, k, whole = n - n % 8
    cdef double partial[8]
    for k in range(8):
        partial[k] = 0
    for i in range(0, whole, 8):
        for k in range(8):
            partial[k] += <double> x[i + k] * x[i + k]
    for i in range(whole, n):
        partial[0] += <double> x[i] * x[i]
    return (((partial[0] + partial[1]) + (partial[2] + partial[3]))
            + ((partial[4] + partial[5]) + (partial[6] + partial[7])))


# ------------------------------------------------------- list-level loop

cdef enum:
    SGD = 0
    ADAM = 1
    RMSPROP = 2
    ADAGRAD = 3


cdef inline bint run_kernel(int method, Py_ssize_t n, floating *p,
                            const floating *g, floating **state,
                            const Hyper *h, bint apply) noexcept nogil:
    """One array's update by `method`'s kernel (state[k]: its k-th buffer
    or NULL); inlined where `apply` is a constant, so that each copy is a
    loop without branches on it, which vectorises."""
    if method == SGD:
        return sgd_kernel(n, p, g, state[0], h, apply)
    if method == ADAM:
        return adam_kernel(n, p, g, state[0], state[1], h, apply)
    if method == RMSPROP:
        return rmsprop_kernel(n, p, g, state[0], state[1], state[2], h, apply)
    return adagrad_kernel(n, p, g, state[0], h, apply)


cdef bint update_all(floating tag, int method, list params, list grads,
                     list buffers, const Hyper *h):
    """One optimizer's kernel over every parameter (one fused
    specialisation per dtype; `tag` only selects it).  buffers[k] is the
    k-th state list (None where the optimizer runs without it), its i-th
    array belonging to params[i]."""
    cdef Py_ssize_t i, k, n
    cdef bint finite = True
    cdef floating *p
    cdef const floating *g
    cdef floating *state[3]
    for i in range(len(params)):
        n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
        p = <floating *> data(params[i])
        g = <const floating *> data(grads[i])
        for k in range(3):
            state[k] = (<floating *> data(buffers[k][i])
                        if k < len(buffers) and buffers[k] is not None else NULL)
        with nogil:
            # `apply` a constant in each call: two loops without its branches
            if h.apply:
                run_kernel(method, n, p, g, state, h, True)
            else:
                finite &= run_kernel(method, n, p, g, state, h, False)
    return finite


cdef bint update(int method, list params, list grads, list buffers,
                 dict hyper) except *:
    cdef Hyper h = read_hyper(hyper)
    if (<cnp.ndarray> params[0]).dtype == np.float32:
        return update_all(<float> 0, method, params, grads, buffers, &h)
    return update_all(<double> 0, method, params, grads, buffers, &h)


# ------------------------------------------------------------ Python API
# `hyper`: a dict of Hyper's fields; each returns True when every new value
# is finite (see the kernels).

def sgd(list params, list grads, list buffers, dict hyper):
    """SGD with optional (Nesterov) momentum; ``buffers`` None without
    momentum; hyper["first"]: the buffers hold nothing yet (b = d)."""
    return update(SGD, params, grads, [buffers], hyper)


def adam(list params, list grads, list exp_avgs, list exp_avg_sqs, dict hyper):
    """Adam (torch.optim.Adam, amsgrad=False); the bias corrections come
    precomputed as step_size = lr/(1 - β1^t) and sqrt(1 - β2^t)."""
    return update(ADAM, params, grads, [exp_avgs, exp_avg_sqs], hyper)


def rmsprop(list params, list grads, list square_avgs, list grad_avgs,
            list buffers, dict hyper):
    """RMSprop (torch.optim.RMSprop); ``grad_avgs`` None unless centered,
    ``buffers`` None without momentum."""
    return update(RMSPROP, params, grads, [square_avgs, grad_avgs, buffers],
                  hyper)


def adagrad(list params, list grads, list sums, dict hyper):
    """Adagrad (torch.optim.Adagrad); hyper["lr"] = lr / (1 + (t - 1)·lr_decay)."""
    return update(ADAGRAD, params, grads, [sums], hyper)


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
