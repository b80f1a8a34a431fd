# Point-wise cell kernels: one time step of one cell type over `rows` live
# rows, after the driver has done the matrix products.  A new cell type is a
# new pair of kernels here and a new CellKind, nothing else.
from cython cimport floating

cpdef enum CellKind:
    CELL_RNN_TANH = 0
    CELL_RNN_RELU = 1
    CELL_LSTM = 2
    CELL_GRU = 3

# Gate blocks per cell: the weight matrices have gate_blocks(kind) * H rows.
cdef int gate_blocks(int kind) noexcept nogil
# True when the cell carries a second state (the LSTM's C).
cdef bint has_cell_state(int kind) noexcept nogil
# True when the cell needs h_prev·Wᵀ apart from the input projection (GRU's
# n gate multiplies it by r); otherwise the driver accumulates it into gates.
cdef bint separate_recurrent(int kind) noexcept nogil

cdef void cell_forward(int kind, int rows, int hidden, int first, int count,
                       floating *gates,
                       const floating *recurrent,
                       const floating *recurrent_bias,
                       const floating *h_prev,
                       const floating *c_prev,
                       floating *h,
                       floating *c,
                       floating *keep) noexcept nogil

cdef void cell_backward(int kind, int rows, int hidden, int first, int count,
                        const floating *gates,
                        const floating *h,
                        const floating *h_prev,
                        const floating *c_prev,
                        const floating *c,
                        const floating *keep,
                        const floating *dh_from_outputs,
                        floating *dh,
                        floating *dc,
                        floating *dgates,
                        floating *drecurrent) noexcept nogil
