/* One generic body of the point-wise cell kernels, included by _kernels.h
 * with REAL, SUFFIX(name), TANH, SIGMOID and CLONES defined.  The math and
 * the buffer shapes are documented in _cells.pyx; here each cell is a pair
 * of functions: a per-row inner loop on restrict pointers (vectorised) and
 * a loop over the `rows` live rows.  Each covers the units
 * [first, first + count) of every row (rows are `hidden` units wide): a
 * thread of the team takes its own units.  Optional inputs (dh_out) may be
 * NULL: the row functions take `with_out` and are always inlined, called
 * with a constant 1 or 0, so every loop is free of the test (GCC left it
 * in the loop of the baseline x86-64 build, which then did not vectorise).
 */

/* ---------------------------------------------------------------- RNN */

static inline void SUFFIX(crnn_rnn_forward_run)(
    int relu, ptrdiff_t n, const REAL *CRNN_RESTRICT z, REAL *CRNN_RESTRICT h)
{
    if (relu) {
        for (ptrdiff_t i = 0; i < n; i++)
            h[i] = z[i] > 0 ? z[i] : 0;
    } else {
        for (ptrdiff_t i = 0; i < n; i++)
            h[i] = TANH(z[i]);
    }
}

static CLONES void SUFFIX(crnn_rnn_forward)(
    int relu, int rows, int hidden, int first, int count,
    const REAL *z, REAL *h)
{
    const ptrdiff_t H = hidden;
    if (count == hidden) {   /* whole rows: one run over rows · H */
        SUFFIX(crnn_rnn_forward_run)(relu, rows * H, z, h);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; r++)
        SUFFIX(crnn_rnn_forward_run)(relu, count, z + r * H + first,
                                     h + r * H + first);
}

static CRNN_ALWAYS_INLINE void SUFFIX(crnn_rnn_backward_run)(
    int relu, ptrdiff_t n, int with_out,
    const REAL *CRNN_RESTRICT h, const REAL *CRNN_RESTRICT dh_out,
    const REAL *CRNN_RESTRICT dh, REAL *CRNN_RESTRICT dz)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL delta = dh[i] + (with_out ? dh_out[i] : 0);
        if (relu)
            dz[i] = h[i] > 0 ? delta : 0;
        else
            dz[i] = delta * (1 - h[i] * h[i]);
    }
}

static CLONES void SUFFIX(crnn_rnn_backward)(
    int relu, int rows, int hidden, int first, int count, const REAL *h,
    const REAL *dh_out, const REAL *dh, REAL *dz)
{
    const ptrdiff_t H = hidden;
    if (count == hidden) {
        if (dh_out != NULL)
            SUFFIX(crnn_rnn_backward_run)(relu, rows * H, 1, h, dh_out, dh, dz);
        else
            SUFFIX(crnn_rnn_backward_run)(relu, rows * H, 0, h, NULL, dh, dz);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; r++) {
        ptrdiff_t at = r * H + first;
        if (dh_out != NULL)
            SUFFIX(crnn_rnn_backward_run)(relu, count, 1, h + at, dh_out + at,
                                          dh + at, dz + at);
        else
            SUFFIX(crnn_rnn_backward_run)(relu, count, 0, h + at, NULL,
                                          dh + at, dz + at);
    }
}

/* ---------------------------------------------------------------- LSTM
 * The LSTM, and ONNX's LSTM with peepholes: P holds three rows of H in
 * ONNX's order i, o, f (the gate blocks stay i, f, a, o); i and f also see
 * C(t-1), o sees C(t).  Their backward passes share one body (the row takes
 * `peep`, always inlined with a constant 1 or 0, so the plain LSTM's loop
 * holds no peephole term); it adds dP, summed over the rows unit by unit,
 * so a thread that owns units [first, first + count) owns their dP too.
 * Their forward rows are two functions: one body with `peep` changed the
 * plain LSTM's float32 results in the last bits (tools/bit_identity.py
 * found it; the compiled code differs, the arithmetic as written does not),
 * and the plain LSTM keeps its results to the bit. */

static inline void SUFFIX(crnn_lstm_forward_row)(
    ptrdiff_t H, REAL *CRNN_RESTRICT gi, REAL *CRNN_RESTRICT gf,
    REAL *CRNN_RESTRICT ga, REAL *CRNN_RESTRICT go,
    const REAL *CRNN_RESTRICT c_prev, REAL *CRNN_RESTRICT h,
    REAL *CRNN_RESTRICT c)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL i = SIGMOID(gi[j]), f = SIGMOID(gf[j]);
        REAL a = TANH(ga[j]), o = SIGMOID(go[j]);
        REAL cell = f * c_prev[j] + i * a;
        gi[j] = i;
        gf[j] = f;
        ga[j] = a;
        go[j] = o;
        c[j] = cell;
        h[j] = o * TANH(cell);
    }
}

static CLONES void SUFFIX(crnn_lstm_forward)(
    int rows, int hidden, int first, int count, REAL *gates,
    const REAL *c_prev, REAL *h, REAL *c)
{
    const ptrdiff_t H = hidden;
    for (ptrdiff_t r = 0; r < rows; r++) {
        REAL *g = gates + r * 4 * H + first;
        ptrdiff_t at = r * H + first;
        SUFFIX(crnn_lstm_forward_row)(count, g, g + H, g + 2 * H, g + 3 * H,
                                      c_prev + at, h + at, c + at);
    }
}

static inline void SUFFIX(crnn_lstm_peephole_forward_row)(
    ptrdiff_t H, REAL *CRNN_RESTRICT gi, REAL *CRNN_RESTRICT gf,
    REAL *CRNN_RESTRICT ga, REAL *CRNN_RESTRICT go,
    const REAL *CRNN_RESTRICT pi, const REAL *CRNN_RESTRICT po,
    const REAL *CRNN_RESTRICT pf, const REAL *CRNN_RESTRICT c_prev,
    REAL *CRNN_RESTRICT h, REAL *CRNN_RESTRICT c)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL cp = c_prev[j];
        REAL i = SIGMOID(gi[j] + pi[j] * cp), f = SIGMOID(gf[j] + pf[j] * cp);
        REAL a = TANH(ga[j]);
        REAL cell = f * cp + i * a;
        REAL o = SIGMOID(go[j] + po[j] * cell);
        gi[j] = i;
        gf[j] = f;
        ga[j] = a;
        go[j] = o;
        c[j] = cell;
        h[j] = o * TANH(cell);
    }
}

static CLONES void SUFFIX(crnn_lstm_peephole_forward)(
    int rows, int hidden, int first, int count, REAL *gates,
    const REAL *peepholes, const REAL *c_prev, REAL *h, REAL *c)
{
    const ptrdiff_t H = hidden;
    const REAL *p = peepholes + first;
    for (ptrdiff_t r = 0; r < rows; r++) {
        REAL *g = gates + r * 4 * H + first;
        ptrdiff_t at = r * H + first;
        SUFFIX(crnn_lstm_peephole_forward_row)(
            count, g, g + H, g + 2 * H, g + 3 * H, p, p + H, p + 2 * H,
            c_prev + at, h + at, c + at);
    }
}

/* With peepholes: dz_o first, and dC gets dz_o P_o; what reaches C(t-1)
 * gets dz_i P_i + dz_f P_f; dP_i += dz_i C(t-1), dP_o += dz_o C(t),
 * dP_f += dz_f C(t-1). */
static CRNN_ALWAYS_INLINE void SUFFIX(crnn_lstm_backward_row)(
    ptrdiff_t H, int with_out, int peep, const REAL *CRNN_RESTRICT gi,
    const REAL *CRNN_RESTRICT gf, const REAL *CRNN_RESTRICT ga,
    const REAL *CRNN_RESTRICT go, const REAL *CRNN_RESTRICT pi,
    const REAL *CRNN_RESTRICT po, const REAL *CRNN_RESTRICT pf,
    const REAL *CRNN_RESTRICT c_prev, const REAL *CRNN_RESTRICT c,
    const REAL *CRNN_RESTRICT dh_out, const REAL *CRNN_RESTRICT dh,
    REAL *CRNN_RESTRICT dc, REAL *CRNN_RESTRICT di, REAL *CRNN_RESTRICT df,
    REAL *CRNN_RESTRICT da, REAL *CRNN_RESTRICT dout,
    REAL *CRNN_RESTRICT dpi, REAL *CRNN_RESTRICT dpo, REAL *CRNN_RESTRICT dpf)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL i = gi[j], f = gf[j], a = ga[j], o = go[j];
        REAL tc = TANH(c[j]);
        REAL delta = dh[j] + (with_out ? dh_out[j] : 0);
        REAL dzo = delta * tc * o * (1 - o);
        REAL dcell = delta * o * (1 - tc * tc) + dc[j];
        if (peep)
            dcell += dzo * po[j];
        REAL dzi = dcell * a * i * (1 - i);
        REAL dzf = dcell * c_prev[j] * f * (1 - f);
        di[j] = dzi;
        df[j] = dzf;
        da[j] = dcell * i * (1 - a * a);
        dout[j] = dzo;
        dc[j] = peep ? dcell * f + dzi * pi[j] + dzf * pf[j] : dcell * f;
        if (peep) {
            dpi[j] += dzi * c_prev[j];
            dpo[j] += dzo * c[j];
            dpf[j] += dzf * c_prev[j];
        }
    }
}

/* The rows of one backward pass, for constant with_out and peep. */
static CRNN_ALWAYS_INLINE void SUFFIX(crnn_lstm_backward_rows)(
    int with_out, int peep, int rows, int hidden, int first, int count,
    const REAL *gates, const REAL *peepholes, const REAL *c_prev,
    const REAL *c, const REAL *dh_out, const REAL *dh, REAL *dc,
    REAL *dgates, REAL *dpeepholes)
{
    const ptrdiff_t H = hidden;
    const REAL *p = peep ? peepholes + first : NULL;
    REAL *dp = peep ? dpeepholes + first : NULL;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const REAL *g = gates + r * 4 * H + first;
        REAL *dg = dgates + r * 4 * H + first;
        ptrdiff_t at = r * H + first;
        SUFFIX(crnn_lstm_backward_row)(
            count, with_out, peep, g, g + H, g + 2 * H, g + 3 * H,
            p, peep ? p + H : NULL, peep ? p + 2 * H : NULL,
            c_prev + at, c + at, with_out ? dh_out + at : NULL, dh + at,
            dc + at, dg, dg + H, dg + 2 * H, dg + 3 * H,
            dp, peep ? dp + H : NULL, peep ? dp + 2 * H : NULL);
    }
}

static CLONES void SUFFIX(crnn_lstm_backward)(
    int rows, int hidden, int first, int count, const REAL *gates,
    const REAL *peepholes, const REAL *c_prev, const REAL *c,
    const REAL *dh_out, const REAL *dh, REAL *dc, REAL *dgates,
    REAL *dpeepholes)
{
#define CRNN_LSTM_BACKWARD_ROWS(with_out, peep) \
    SUFFIX(crnn_lstm_backward_rows)(with_out, peep, rows, hidden, first, count, \
                                    gates, peepholes, c_prev, c, dh_out, dh, dc, \
                                    dgates, dpeepholes)
    if (peepholes != NULL) {
        if (dh_out != NULL)
            CRNN_LSTM_BACKWARD_ROWS(1, 1);
        else
            CRNN_LSTM_BACKWARD_ROWS(0, 1);
    } else if (dh_out != NULL) {
        CRNN_LSTM_BACKWARD_ROWS(1, 0);
    } else {
        CRNN_LSTM_BACKWARD_ROWS(0, 0);
    }
#undef CRNN_LSTM_BACKWARD_ROWS
}

/* ---------------------------------------------------------------- GRU */

static inline void SUFFIX(crnn_gru_forward_row)(
    ptrdiff_t H, REAL *CRNN_RESTRICT gr, REAL *CRNN_RESTRICT gz,
    REAL *CRNN_RESTRICT gn, const REAL *CRNN_RESTRICT rr,
    const REAL *CRNN_RESTRICT rz, const REAL *CRNN_RESTRICT rn,
    const REAL *CRNN_RESTRICT bn, const REAL *CRNN_RESTRICT h_prev,
    REAL *CRNN_RESTRICT h, REAL *CRNN_RESTRICT keep)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL r = SIGMOID(gr[j] + rr[j]);
        REAL z = SIGMOID(gz[j] + rz[j]);
        REAL hn = rn[j] + bn[j];
        REAL n = TANH(gn[j] + r * hn);
        gr[j] = r;
        gz[j] = z;
        gn[j] = n;
        keep[j] = hn;
        h[j] = (1 - z) * n + z * h_prev[j];
    }
}

static CLONES void SUFFIX(crnn_gru_forward)(
    int rows, int hidden, int first, int count, REAL *gates,
    const REAL *recurrent, const REAL *recurrent_bias, const REAL *h_prev,
    REAL *h, REAL *keep)
{
    const ptrdiff_t H = hidden;
    for (ptrdiff_t r = 0; r < rows; r++) {
        REAL *g = gates + r * 3 * H + first;
        const REAL *rec = recurrent + r * 3 * H + first;
        ptrdiff_t at = r * H + first;
        SUFFIX(crnn_gru_forward_row)(count, g, g + H, g + 2 * H, rec, rec + H,
                                     rec + 2 * H, recurrent_bias + first,
                                     h_prev + at, h + at, keep + at);
    }
}

static CRNN_ALWAYS_INLINE void SUFFIX(crnn_gru_backward_row)(
    ptrdiff_t H, int with_out, const REAL *CRNN_RESTRICT gr, const REAL *CRNN_RESTRICT gz,
    const REAL *CRNN_RESTRICT gn, const REAL *CRNN_RESTRICT h_prev,
    const REAL *CRNN_RESTRICT keep, const REAL *CRNN_RESTRICT dh_out,
    REAL *CRNN_RESTRICT dh, REAL *CRNN_RESTRICT dgr, REAL *CRNN_RESTRICT dgz,
    REAL *CRNN_RESTRICT dgn, REAL *CRNN_RESTRICT drr,
    REAL *CRNN_RESTRICT drz, REAL *CRNN_RESTRICT drn)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL r = gr[j], z = gz[j], n = gn[j];
        REAL delta = dh[j] + (with_out ? dh_out[j] : 0);
        REAL dpre_n = delta * (1 - z) * (1 - n * n);
        REAL dpre_z = delta * (h_prev[j] - n) * z * (1 - z);
        REAL dpre_r = dpre_n * keep[j] * r * (1 - r);
        dgr[j] = dpre_r;
        dgz[j] = dpre_z;
        dgn[j] = dpre_n;
        drr[j] = dpre_r;
        drz[j] = dpre_z;
        drn[j] = dpre_n * r;
        dh[j] = delta * z;
    }
}

static CLONES void SUFFIX(crnn_gru_backward)(
    int rows, int hidden, int first, int count, const REAL *gates,
    const REAL *h_prev, const REAL *keep, const REAL *dh_out, REAL *dh,
    REAL *dgates, REAL *drecurrent)
{
    const ptrdiff_t H = hidden;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const REAL *g = gates + r * 3 * H + first;
        REAL *dg = dgates + r * 3 * H + first;
        REAL *dr = drecurrent + r * 3 * H + first;
        ptrdiff_t at = r * H + first;
        if (dh_out != NULL)
            SUFFIX(crnn_gru_backward_row)(
                count, 1, g, g + H, g + 2 * H, h_prev + at, keep + at,
                dh_out + at, dh + at,
                dg, dg + H, dg + 2 * H, dr, dr + H, dr + 2 * H);
        else
            SUFFIX(crnn_gru_backward_row)(
                count, 0, g, g + H, g + 2 * H, h_prev + at, keep + at,
                NULL, dh + at,
                dg, dg + H, dg + 2 * H, dr, dr + H, dr + 2 * H);
    }
}

/* ------------------------------------- GRU, reset before the product
 * The original GRU (Cho et al.; ONNX linear_before_reset = 0; Keras
 * reset_after = False): n = tanh(x U_n' + b_n + (r * h_prev) W_n'.  Its step
 * has two products (_lane.pyx): Z[r, z] += h_prev W_rz', then the gate pass
 * (r, z; keep = r * h_prev), then Z[n] += keep W_n', then the forward
 * pass (n, h).  BPTT likewise: the backward pass (dZ_n, dZ_z, the direct
 * dh), the lane's d(r h) = dZ_n W_n into `recurrent`, then the gate pass
 * (dZ_r, dh += d(r h) * r). */

static inline void SUFFIX(crnn_gru_rb_gate_row)(
    ptrdiff_t H, REAL *CRNN_RESTRICT gr, REAL *CRNN_RESTRICT gz,
    const REAL *CRNN_RESTRICT h_prev, REAL *CRNN_RESTRICT keep)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL r = SIGMOID(gr[j]);
        gr[j] = r;
        gz[j] = SIGMOID(gz[j]);
        keep[j] = r * h_prev[j];
    }
}

static inline void SUFFIX(crnn_gru_rb_forward_row)(
    ptrdiff_t H, const REAL *CRNN_RESTRICT gz, REAL *CRNN_RESTRICT gn,
    const REAL *CRNN_RESTRICT h_prev, REAL *CRNN_RESTRICT h)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL z = gz[j], n = TANH(gn[j]);
        gn[j] = n;
        h[j] = (1 - z) * n + z * h_prev[j];
    }
}

static CRNN_ALWAYS_INLINE void SUFFIX(crnn_gru_rb_backward_row)(
    ptrdiff_t H, int with_out, const REAL *CRNN_RESTRICT gz,
    const REAL *CRNN_RESTRICT gn, const REAL *CRNN_RESTRICT h_prev,
    const REAL *CRNN_RESTRICT dh_out, REAL *CRNN_RESTRICT dh,
    REAL *CRNN_RESTRICT dgz, REAL *CRNN_RESTRICT dgn)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL z = gz[j], n = gn[j];
        REAL delta = dh[j] + (with_out ? dh_out[j] : 0);
        dgn[j] = delta * (1 - z) * (1 - n * n);
        dgz[j] = delta * (h_prev[j] - n) * z * (1 - z);
        dh[j] = delta * z;
    }
}

static inline void SUFFIX(crnn_gru_rb_backward_gate_row)(
    ptrdiff_t H, const REAL *CRNN_RESTRICT gr, const REAL *CRNN_RESTRICT h_prev,
    const REAL *CRNN_RESTRICT drh, REAL *CRNN_RESTRICT dh,
    REAL *CRNN_RESTRICT dgr)
{
    for (ptrdiff_t j = 0; j < H; j++) {
        REAL r = gr[j];
        dgr[j] = drh[j] * h_prev[j] * r * (1 - r);
        dh[j] += drh[j] * r;
    }
}

/* ------------------------------------------ the cell table's entry points
 * One signature for every cell (crnn_cell_args, _kernels.h), so that the
 * lane calls a table row's pointer and never branches on the cell. */

static void SUFFIX(crnn_rnn_tanh_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_rnn_forward)(0, a->rows, a->hidden, a->first, a->count,
                             (const REAL *) a->gates, (REAL *) a->h);
}

static void SUFFIX(crnn_rnn_relu_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_rnn_forward)(1, a->rows, a->hidden, a->first, a->count,
                             (const REAL *) a->gates, (REAL *) a->h);
}

static void SUFFIX(crnn_rnn_tanh_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_rnn_backward)(0, a->rows, a->hidden, a->first, a->count,
                              (const REAL *) a->h, (const REAL *) a->dh_outputs,
                              (const REAL *) a->dh, (REAL *) a->dgates);
}

static void SUFFIX(crnn_rnn_relu_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_rnn_backward)(1, a->rows, a->hidden, a->first, a->count,
                              (const REAL *) a->h, (const REAL *) a->dh_outputs,
                              (const REAL *) a->dh, (REAL *) a->dgates);
}

/* The LSTM's entry points pass no peepholes (NULL), the peephole LSTM's
 * its P and dP. */
static void SUFFIX(crnn_lstm_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_lstm_forward)(a->rows, a->hidden, a->first, a->count,
                              (REAL *) a->gates, (const REAL *) a->c_prev,
                              (REAL *) a->h, (REAL *) a->c);
}

static void SUFFIX(crnn_lstm_peephole_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_lstm_peephole_forward)(a->rows, a->hidden, a->first, a->count,
                                       (REAL *) a->gates,
                                       (const REAL *) a->peepholes,
                                       (const REAL *) a->c_prev, (REAL *) a->h,
                                       (REAL *) a->c);
}

static void SUFFIX(crnn_lstm_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_lstm_backward)(a->rows, a->hidden, a->first, a->count,
                               (const REAL *) a->gates, NULL,
                               (const REAL *) a->c_prev, (const REAL *) a->c,
                               (const REAL *) a->dh_outputs, (const REAL *) a->dh,
                               (REAL *) a->dc, (REAL *) a->dgates, NULL);
}

static void SUFFIX(crnn_lstm_peephole_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_lstm_backward)(a->rows, a->hidden, a->first, a->count,
                               (const REAL *) a->gates, (const REAL *) a->peepholes,
                               (const REAL *) a->c_prev, (const REAL *) a->c,
                               (const REAL *) a->dh_outputs, (const REAL *) a->dh,
                               (REAL *) a->dc, (REAL *) a->dgates,
                               (REAL *) a->dpeepholes);
}

static void SUFFIX(crnn_gru_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_forward)(a->rows, a->hidden, a->first, a->count,
                             (REAL *) a->gates, (const REAL *) a->recurrent,
                             (const REAL *) a->recurrent_bias,
                             (const REAL *) a->h_prev, (REAL *) a->h,
                             (REAL *) a->keep);
}

static void SUFFIX(crnn_gru_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_backward)(a->rows, a->hidden, a->first, a->count,
                              (const REAL *) a->gates, (const REAL *) a->h_prev,
                              (const REAL *) a->keep, (const REAL *) a->dh_outputs,
                              (REAL *) a->dh, (REAL *) a->dgates,
                              (REAL *) a->drecurrent);
}

/* The original GRU's two forward passes over the rows: the gate pass (r, z,
 * keep = r * h_prev) between the products, then n and h. */
static void SUFFIX(crnn_gru_rb_forward_passes)(const crnn_cell_args *a, int gate)
{
    const ptrdiff_t H = a->hidden;
    for (ptrdiff_t r = 0; r < a->rows; r++) {
        REAL *g = (REAL *) a->gates + r * 3 * H + a->first;
        ptrdiff_t at = r * H + a->first;
        if (gate)
            SUFFIX(crnn_gru_rb_gate_row)(a->count, g, g + H,
                                         (const REAL *) a->h_prev + at,
                                         (REAL *) a->keep + at);
        else
            SUFFIX(crnn_gru_rb_forward_row)(a->count, g + H, g + 2 * H,
                                            (const REAL *) a->h_prev + at,
                                            (REAL *) a->h + at);
    }
}

static void SUFFIX(crnn_gru_rb_forward_gate_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_rb_forward_passes)(a, 1);
}

static void SUFFIX(crnn_gru_rb_forward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_rb_forward_passes)(a, 0);
}

/* Its two backward passes over the rows: dZ_n, dZ_z and the direct dh,
 * then (with d(r h) in `recurrent`) the gate pass: dZ_r, dh += d(r h) * r. */
static void SUFFIX(crnn_gru_rb_backward_passes)(const crnn_cell_args *a, int gate)
{
    const ptrdiff_t H = a->hidden;
    for (ptrdiff_t r = 0; r < a->rows; r++) {
        const REAL *g = (const REAL *) a->gates + r * 3 * H + a->first;
        REAL *dg = (REAL *) a->dgates + r * 3 * H + a->first;
        ptrdiff_t at = r * H + a->first;
        if (gate)
            SUFFIX(crnn_gru_rb_backward_gate_row)(
                a->count, g, (const REAL *) a->h_prev + at,
                (const REAL *) a->recurrent + at, (REAL *) a->dh + at, dg);
        else if (a->dh_outputs != NULL)
            SUFFIX(crnn_gru_rb_backward_row)(
                a->count, 1, g + H, g + 2 * H, (const REAL *) a->h_prev + at,
                (const REAL *) a->dh_outputs + at, (REAL *) a->dh + at,
                dg + H, dg + 2 * H);
        else
            SUFFIX(crnn_gru_rb_backward_row)(
                a->count, 0, g + H, g + 2 * H, (const REAL *) a->h_prev + at,
                NULL, (REAL *) a->dh + at, dg + H, dg + 2 * H);
    }
}

static void SUFFIX(crnn_gru_rb_backward_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_rb_backward_passes)(a, 0);
}

static void SUFFIX(crnn_gru_rb_backward_gate_cell)(const crnn_cell_args *a)
{
    SUFFIX(crnn_gru_rb_backward_passes)(a, 1);
}
