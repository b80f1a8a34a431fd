"""One call of the network: its arguments and the buffers each stage
leaves for the next (``NetworkCall``), and the ``Workspace`` every buffer
comes from, reused across calls.

Neighbours: the plan and the cell table below; the network's stages
(``_network``), which read and fill a call, above.
"""
cimport numpy as cnp

from ._arrays cimport data
from ._cells cimport cell_spec
from ._plan cimport LanePlan, plan_lane, plan_projection, plan_recurrent_dropout

import numpy as np

cnp.import_array()

cdef enum:
    # Workspace views kept for reuse (many batch shapes: the cache restarts)
    MAX_CACHED_VIEWS = 512
    CACHE_LINE = 64


def aligned_empty(Py_ssize_t size, dtype):
    """An uninitialised 1-d array of `size` elements whose data starts on a
    64-byte boundary (a cache line): threads writing neighbouring columns
    of a row then never share a line at a part's edge."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size + CACHE_LINE // itemsize, dtype=dtype)
    skip = (-raw.ctypes.data % CACHE_LINE) // itemsize
    return raw[skip:skip + size]


cdef class Workspace:
    """Every buffer the network uses, by name, grown only when a call needs more.

    ``get(name, shape, dtype)`` returns a C-contiguous view of a flat buffer
    that is allocated on first use and reallocated only when a larger call
    (or another dtype) arrives; calls of the same or smaller size reuse it.
    Contents are not initialised: the engine writes every element it reads.
    The views are cached too, so a call shaped like the last ones makes no
    new array objects.
    """

    def __init__(self):
        self.buffers = {}
        self.views = {}
        self.calls = 0

    cpdef cnp.ndarray get(self, str name, tuple shape, object dtype):
        key = (name, shape, dtype)
        view = self.views.get(key)
        if view is not None:
            return view
        cdef Py_ssize_t size = 1
        for extent in shape:
            size *= extent
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[0] < size or buffer.dtype != dtype:
            buffer = aligned_empty(max(size, 1), dtype)
            self.buffers[name] = buffer
            # views of the old buffer would keep it alive
            self.views = {k: v for k, v in self.views.items() if k[0] != name}
        if len(self.views) >= MAX_CACHED_VIEWS:
            self.views.clear()
        view = buffer[:size].reshape(shape)
        self.views[key] = view
        return view

    def nbytes(self):
        """Total bytes held (for tests and diagnostics)."""
        return sum(b.nbytes for b in self.buffers.values())

    def __reduce__(self):
        # A workspace is scratch memory: copies start empty.
        return (Workspace, ())


cdef class NetworkCall:
    """One call of ``run``: its arguments, and the buffers each stage
    leaves for the next (every per-lane list is indexed lane = layer ·
    directions + direction)."""
    cdef void setup(self, Workspace ws, int kind, int H, int num_layers,
                    int directions, list lanes, cnp.ndarray inputs,
                    cnp.ndarray lengths) except *:
        cdef int t, b
        self.ws, self.kind, self.H = ws, kind, H
        ws.calls += 1
        self.generation = ws.calls
        self.num_layers, self.directions = num_layers, directions
        self.n_lanes = num_layers * directions
        self.lanes, self.inputs, self.lengths = lanes, inputs, lengths
        self.T, self.B = inputs.shape[0], inputs.shape[1]
        # h is as wide as W's columns: S = H, or a projected LSTM's P < H
        self.S = lanes[0][1].shape[1]
        self.Hd = self.S * directions
        self.with_c = cell_spec(kind).pair_state
        self.separate = cell_spec(kind).separate_recurrent
        self.with_bn = cell_spec(kind).recurrent_bias
        self.with_p = cell_spec(kind).peephole_blocks != 0
        self.dtype = lanes[0][0].dtype
        # The arrays returned to the caller are made through numpy's C API
        # (PyArray_EMPTY / PyArray_ZEROS) and filled here with memcpy: on a
        # small call each np.zeros_like / fancy index / broadcast assignment
        # costs thousands of instructions, more than the copy itself.
        self.typenum = (cnp.NPY_FLOAT if self.dtype == np.float32
                        else cnp.NPY_DOUBLE)
        self.state_dims[0] = self.cell_dims[0] = self.n_lanes
        self.state_dims[1], self.state_dims[2] = self.B, self.S
        self.cell_dims[1], self.cell_dims[2] = self.B, H
        self.lens = <const int *> data(lengths)
        # batch_sizes[t] = number of sequences longer than t
        self.batch_array = ws.get("batch_sizes", (self.T,), np.int32)
        cdef int *batch_sizes = <int *> data(self.batch_array)
        for t in range(self.T):
            batch_sizes[t] = 0
        for b in range(self.B):
            for t in range(self.lens[b]):
                batch_sizes[t] += 1
        self.batch_sizes = batch_sizes
        self.loss = 0

    cdef object peepholes(self, int lane):
        """The lane's peephole weights P, after U, W, b (and bn), or None."""
        return self.lanes[lane][3 + self.with_bn] if self.with_p else None

    cdef object projection(self, int lane):
        """The lane's projection R (S × H), last of its arrays, or None."""
        return self.lanes[lane][3 + self.with_bn + self.with_p] if self.S != self.H else None

    cdef void plan(self, LanePlan *plan, int layer, bint tokens) noexcept:
        """The plan of a lane of `layer` (its input width is the model's
        input size or the layer below's H·dirs)."""
        cdef int D = self.lanes[layer * self.directions][0].shape[1]
        plan_lane(plan, self.kind, self.T, self.B, D, self.H, tokens,
                  self.need_grad)
        if self.S != self.H:
            plan_projection(plan, self.S)
        if self.recurrent_masks is not None:
            plan_recurrent_dropout(plan)
