/* One generic body of the packed GEMM, included by _packed_gemm.h with REAL
 * and SUFFIX(name) defined.  Layout and purpose: _packed_gemm.h. */

#define NR ((int) (CRNN_PANEL_BYTES / sizeof(REAL)))

/* Elements the panels of a (k × n) matrix take. */
static ptrdiff_t SUFFIX(crnn_panels_size)(int k, int n)
{
    return (ptrdiff_t) ((n + NR - 1) / NR) * NR * k;
}

/* Rows [row0, row0 + k) of panels that hold `rows` rows in all: := B (k × n).
 * B is `source` (k × n, row stride ld), or with `transposed` its transpose:
 * `source` (n × k, row stride ld), B = sourceᵀ.  Two calls stack two
 * matrices in one set of panels (the forward's [Uᵀ; Wᵀ]). */
static void SUFFIX(crnn_pack_panel_rows)(int transposed, int k, int n,
                                         const REAL *CRNN_RESTRICT source, int ld,
                                         REAL *CRNN_RESTRICT panels, int rows,
                                         int row0)
{
    for (int j0 = 0; j0 < n; j0 += NR) {
        REAL *panel = panels + (ptrdiff_t) j0 * rows + (ptrdiff_t) row0 * NR;
        int width = n - j0 < NR ? n - j0 : NR;
        if (transposed) {
            /* column j of B is row j of source: read it contiguously, 64
             * rows of the panel (64 lines, 4 KB: L1-resident) at a time */
            for (int k0 = 0; k0 < k; k0 += 64) {
                int k1 = k - k0 < 64 ? k : k0 + 64;
                for (int j = 0; j < width; j++) {
                    const REAL *row = source + (ptrdiff_t) (j0 + j) * ld;
                    for (int kk = k0; kk < k1; kk++)
                        panel[(ptrdiff_t) kk * NR + j] = row[kk];
                }
            }
        } else {
            for (int kk = 0; kk < k; kk++) {
                const REAL *row = source + (ptrdiff_t) kk * ld + j0;
                for (int j = 0; j < width; j++)
                    panel[(ptrdiff_t) kk * NR + j] = row[j];
            }
        }
        for (int kk = 0; kk < k; kk++)
            for (int j = width; j < NR; j++)
                panel[(ptrdiff_t) kk * NR + j] = 0;
    }
}

#if CRNN_HAVE_VECTOR_TYPES

typedef REAL SUFFIX(crnn_panel_row) __attribute__((vector_size(CRNN_PANEL_BYTES)));
#define VEC SUFFIX(crnn_panel_row)

/* C[0:rows, 0:width] (+)= init + A1[0:rows, :] · panel[0:k1] + A2[0:rows, :] ·
 * panel[k1:k1+k2], rows <= MR.  Inlined with a constant `rows`, so the MR
 * accumulators live in registers. */
static inline __attribute__((always_inline)) void SUFFIX(crnn_panel_kernel)(
    int rows, int k1, const REAL *A1, int lda1, int k2, const REAL *A2,
    int lda2, const REAL *panel, VEC init, int accumulate, REAL *C, int ldc,
    int width)
{
    VEC acc[CRNN_MR];
    for (int i = 0; i < rows; i++)
        acc[i] = init;
    for (int kk = 0; kk < k1; kk++) {
        VEC b;
        memcpy(&b, panel + (ptrdiff_t) kk * NR, sizeof b);
        for (int i = 0; i < rows; i++)
            acc[i] += A1[(ptrdiff_t) i * lda1 + kk] * b;
    }
    panel += (ptrdiff_t) k1 * NR;
    for (int kk = 0; kk < k2; kk++) {
        VEC b;
        memcpy(&b, panel + (ptrdiff_t) kk * NR, sizeof b);
        for (int i = 0; i < rows; i++)
            acc[i] += A2[(ptrdiff_t) i * lda2 + kk] * b;
    }
    for (int i = 0; i < rows; i++) {
        REAL *c = C + (ptrdiff_t) i * ldc;
        if (width == NR) {
            if (accumulate) {
                VEC old;
                memcpy(&old, c, sizeof old);
                acc[i] += old;
            }
            memcpy(c, &acc[i], sizeof acc[i]);
        } else {
            REAL row[NR];
            memcpy(row, &acc[i], sizeof row);
            for (int j = 0; j < width; j++)
                c[j] = accumulate ? c[j] + row[j] : row[j];
        }
    }
}

/* C (m × n, row stride ldc) (+)= bias + A1 (m × k1) · B1 + A2 (m × k2) · B2,
 * with B1 stacked over B2 in one set of panels of k1 + k2 rows; bias (n,)
 * may be NULL, k1 may be 0.  C is overwritten unless `accumulate`. */
static CRNN_WIDE_CLONES void SUFFIX(crnn_packed_gemm)(
    int m, int n, int k1, const REAL *A1, int lda1, int k2, const REAL *A2,
    int lda2, const REAL *panels, const REAL *bias, int accumulate, REAL *C,
    int ldc)
{
    const ptrdiff_t k = (ptrdiff_t) k1 + k2;
    if (m <= 0)
        return;
    for (int j0 = 0; j0 < n; j0 += NR) {
        const REAL *panel = panels + (ptrdiff_t) j0 * k;
        int width = n - j0 < NR ? n - j0 : NR;
        VEC init = {0};
        if (bias != NULL) {
            REAL row[NR] = {0};
            for (int j = 0; j < width; j++)
                row[j] = bias[j0 + j];
            memcpy(&init, row, sizeof init);
        }
        /* One panel (k × NR, L1/L2-resident) against every block of rows.
         * The m rows are cut into ceil(m / MR) blocks of nearly equal size
         * (m = 32: 6 6 5 5 5 5, not 6 6 6 6 6 2): a block of r rows keeps r
         * multiply-add chains in flight, and below 4 the FMA latency, not
         * its throughput, sets the pace. */
        const int blocks = (m + CRNN_MR - 1) / CRNN_MR;
        const int base = m / blocks, extra = m % blocks;
        int i0 = 0;
        for (int block = 0; block < blocks; block++) {
            const int rows = base + (block < extra);
            const REAL *a1 = A1 + (ptrdiff_t) i0 * lda1;
            const REAL *a2 = A2 + (ptrdiff_t) i0 * lda2;
            REAL *c = C + (ptrdiff_t) i0 * ldc + j0;
#define CRNN_BLOCK(r) SUFFIX(crnn_panel_kernel)(r, k1, a1, lda1, k2, a2, lda2, \
                                                panel, init, accumulate, c, ldc, width)
            switch (rows) {   /* constant row counts, so each call is unrolled */
            case 6: CRNN_BLOCK(6); break;
            case 5: CRNN_BLOCK(5); break;
            case 4: CRNN_BLOCK(4); break;
            case 3: CRNN_BLOCK(3); break;
            case 2: CRNN_BLOCK(2); break;
            default: CRNN_BLOCK(1); break;
            }
#undef CRNN_BLOCK
            i0 += rows;
        }
    }
}
#undef VEC

#else  /* no vector types: plain loops, for correctness only */

static void SUFFIX(crnn_packed_gemm)(
    int m, int n, int k1, const REAL *A1, int lda1, int k2, const REAL *A2,
    int lda2, const REAL *panels, const REAL *bias, int accumulate, REAL *C,
    int ldc)
{
    const ptrdiff_t k = (ptrdiff_t) k1 + k2;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const REAL *column = panels + (ptrdiff_t) (j / NR) * NR * k + j % NR;
            REAL sum = bias != NULL ? bias[j] : 0;
            for (int kk = 0; kk < k1; kk++)
                sum += A1[(ptrdiff_t) i * lda1 + kk] * column[(ptrdiff_t) kk * NR];
            for (int kk = 0; kk < k2; kk++)
                sum += A2[(ptrdiff_t) i * lda2 + kk] * column[(ptrdiff_t) (k1 + kk) * NR];
            C[(ptrdiff_t) i * ldc + j] = accumulate ? C[(ptrdiff_t) i * ldc + j] + sum : sum;
        }
}

#endif

#undef NR
