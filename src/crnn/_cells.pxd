# The cell table: one row per cell type (gate blocks, flags and the
# point-wise forward/backward kernels for float and double), read by the
# lane, which never branches on the cell.  Rows and kernels: _kernels.h and
# _kernels_impl.h; the math: _cells.pyx.  To add a cell: one kernel pair in
# _kernels_impl.h, one row in _kernels.h's table and one CellKind here.

cdef extern from "_cell_table.h" nogil:
    ctypedef struct CellArgs "crnn_cell_args":
        int rows, hidden, first, count
        void *gates
        const void *recurrent
        const void *recurrent_bias
        const void *h_prev
        const void *c_prev
        void *h
        void *c
        void *keep
        const void *dh_outputs
        void *dh
        void *dc
        void *dgates
        void *drecurrent
        const void *peepholes
        void *dpeepholes
    ctypedef void (*CellKernel)(const CellArgs *args) noexcept nogil
    ctypedef struct CellSpec "crnn_cell_spec":
        const char *name
        int gate_blocks         # G: the weights have G·H rows
        int pair_state          # the state is (h, C)
        int separate_recurrent  # h(t-1)·Wᵀ kept apart from Z
        int recurrent_bias      # a bias inside the recurrent product (bn)
        int keeps               # a (rows × H) buffer per step kept for BPTT
        int gated_blocks        # last blocks whose product takes keep, not h
        int peephole_blocks     # rows of peephole weights P (3: i, o, f)
        CellKernel kernels[4][2]  # [pass][0 float, 1 double], NULL: no such pass
    # the passes (crnn_cell_pass)
    enum:
        CRNN_FORWARD
        CRNN_BACKWARD
        CRNN_FORWARD_GATE       # between the two products (gated_blocks)
        CRNN_BACKWARD_GATE

cpdef enum CellKind:
    CELL_RNN_TANH = 0
    CELL_RNN_RELU = 1
    CELL_LSTM = 2
    CELL_GRU = 3
    CELL_GRU_RESET_BEFORE = 4
    CELL_LSTM_PEEPHOLE = 5

# The table row of `kind` (a CellKind; the caller has checked it).
cdef const CellSpec *cell_spec(int kind) noexcept nogil
# True for a kind the table has a row for.
cdef bint known_cell(int kind) noexcept nogil


# A point-wise pass of the cell (CRNN_FORWARD, ...), from its table row.
cdef inline void run_cell(const CellSpec *cell, int cell_pass, bint single,
                          const CellArgs *args) noexcept nogil:
    cell.kernels[cell_pass][0 if single else 1](args)
