/* The types of the cell table: the buffers of one point-wise pass and a
 * table row.  The table itself (crnn_cell_table) and the kernels are in
 * _kernels.h, compiled into _cells only; other modules reach a row through
 * _cells.pxd's cell_spec(). */
#ifndef CRNN_CELL_TABLE_H
#define CRNN_CELL_TABLE_H

/* The buffers of one point-wise pass over `rows` live rows, units
 * [first, first + count) of every row (rows are `hidden` units wide).  The
 * shapes and the math are in _cells.pyx; a cell reads and writes only the
 * fields it uses (the others may be NULL).  Pointers hold the kernel's type. */
typedef struct crnn_cell_args {
    int rows, hidden, first, count;
    void *gates;                  /* (rows x G*H) forward: IN Z, OUT what BPTT needs */
    const void *recurrent;        /* (rows x G*H) IN h_prev W^T (separate_recurrent) */
    const void *recurrent_bias;   /* (H,) inside the recurrent product */
    const void *h_prev;           /* (rows x H) */
    const void *c_prev;           /* (rows x H) */
    void *h;                      /* (rows x H) forward OUT h(t); BPTT IN */
    void *c;                      /* (rows x H) forward OUT C(t); BPTT IN */
    void *keep;                   /* (rows x H) extra values BPTT needs */
    const void *dh_outputs;       /* (rows x H) dL/dh(t) from above, or NULL */
    void *dh;                     /* IN carried dL/dh(t); OUT direct part to t-1 */
    void *dc;                     /* IN carried dL/dC(t); OUT carried to t-1 */
    void *dgates;                 /* OUT dL/dZ */
    void *drecurrent;             /* OUT dL/dR (separate_recurrent) */
    const void *peepholes;        /* (peephole_blocks x H) peephole weights */
    void *dpeepholes;             /* BPTT += (peephole_blocks x H) dL/dP */
} crnn_cell_args;

typedef void (*crnn_cell_kernel)(const crnn_cell_args *args);

/* A cell's point-wise passes: the forward and backward kernels, and the
 * gate passes between two products (cells with gated_blocks only). */
enum crnn_cell_pass {
    CRNN_FORWARD = 0,
    CRNN_BACKWARD = 1,
    CRNN_FORWARD_GATE = 2,
    CRNN_BACKWARD_GATE = 3,
    CRNN_CELL_PASSES = 4
};

/* One row per cell, in the order of _cells.pxd's CellKind:
 *   name, gate blocks G (weights have G*H rows), whether the state is a
 *   pair (h, C), whether h W^T stays apart from Z (separate_recurrent), whether
 *   a bias sits inside the recurrent product (GRU's b_hn), whether the cell
 *   keeps a (rows x H) buffer per step for BPTT (`keep`), how many of the
 *   last gate blocks multiply the cell's keep instead of h(t-1) in the
 *   recurrent product (gated_blocks: 0, or 1 for the GRU that resets before
 *   the product; such a cell has a gate pass between its two products, and
 *   runs its products on BLAS), how many rows of peephole weights P the
 *   cell reads (peephole_blocks: 0, or 3 for the peephole LSTM, whose gates
 *   i, o, f also see C: args.peepholes, args.dpeepholes), and the
 *   point-wise kernels by pass
 *   (crnn_cell_pass) and type ([0] float, [1] double; NULL for a pass the
 *   cell does not have). */
typedef struct crnn_cell_spec {
    const char *name;
    int gate_blocks;
    int pair_state;
    int separate_recurrent;
    int recurrent_bias;
    int keeps;
    int gated_blocks;
    int peephole_blocks;
    crnn_cell_kernel kernels[CRNN_CELL_PASSES][2];
} crnn_cell_spec;

#endif
