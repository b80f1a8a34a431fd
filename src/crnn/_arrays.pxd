# numpy arrays handed to compiled code: the one helper every module uses.
cimport numpy as cnp


cdef inline void *data(object array):
    """The array's data pointer, or NULL for None."""
    return NULL if array is None else cnp.PyArray_DATA(<cnp.ndarray> array)
