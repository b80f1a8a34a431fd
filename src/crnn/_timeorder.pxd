# Time order of time-major, length-sorted batches (T, B, width): each
# sequence reversed within its own length, and the directions' columns
# gathered or scattered.  Header-only (inline), like _arrays; the network
# uses it.
from cython cimport floating
from libc.string cimport memcpy, memset


cdef inline void copy_steps(int T, int B, int width, const int *lengths,
                            bint reverse, bint accumulate,
                            const floating *source, int source_stride,
                            floating *target, int target_stride) noexcept nogil:
    """target[t', b] (+)= source[t, b] for t < lengths[b]; t' = t, or
    lengths[b]-1-t with `reverse` (each sequence reversed within its own
    length).  Without `accumulate`, target rows past a length are zeroed."""
    cdef Py_ssize_t t, b, k, to
    cdef const floating *s
    cdef floating *d
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                to = lengths[b] - 1 - t if reverse else t
                s = source + (t * B + b) * source_stride
                d = target + (to * B + b) * target_stride
                if accumulate:
                    for k in range(width):
                        d[k] += s[k]
                else:
                    memcpy(d, s, width * sizeof(floating))
            elif not accumulate:
                memset(target + (t * B + b) * target_stride, 0,
                       width * sizeof(floating))


cdef inline void reverse_tokens(int T, int B, const int *lengths,
                                const int *source, int *target) noexcept nogil:
    cdef Py_ssize_t t, b
    for t in range(T):
        for b in range(B):
            target[t * B + b] = (source[(lengths[b] - 1 - t) * B + b]
                                 if t < lengths[b] else 0)
