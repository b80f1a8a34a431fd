# Variational dropout's masks applied to rows: one helper for the lane
# (recurrent dropout: h(t-1) inside the recurrent product, and its
# gradient) and the network (a layer's input, the top layer's output).
#
# A mask is (B × width): one row per sequence of the length-sorted batch,
# each entry 0 (dropped) or 1/(1-p) (kept, inverted scaling), drawn once
# per call and held for every time step (Gal & Ghahramani 2016; Keras's
# `dropout` and `recurrent_dropout`).  The math is in docs/model.md.
from cython cimport floating


cdef inline void mask_rows(Py_ssize_t rows, Py_ssize_t width,
                           const floating *mask,     # (rows × width)
                           const floating *source,   # (rows × width)
                           floating *target,         # OUT (rows × width)
                           bint accumulate) noexcept nogil:
    """target = source ⊙ mask, or target += source ⊙ mask (`accumulate`);
    `target` may be `source`."""
    cdef Py_ssize_t i, n = rows * width
    if accumulate:
        for i in range(n):
            target[i] += source[i] * mask[i]
    else:
        for i in range(n):
            target[i] = source[i] * mask[i]


cdef inline void mask_steps(Py_ssize_t steps, Py_ssize_t rows,
                            Py_ssize_t width, const floating *mask,
                            const floating *source,
                            floating *target) noexcept nogil:
    """target[t] = source[t] ⊙ mask for each of `steps` time-major blocks
    (rows × width): the same mask at every step."""
    cdef Py_ssize_t t, block = rows * width
    for t in range(steps):
        mask_rows(rows, width, mask, source + t * block, target + t * block,
                  False)
