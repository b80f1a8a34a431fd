/* One generic body of the packed GEMM, included by _packed_gemm.h with REAL
 * and SUFFIX(name) defined.  Layout and purpose: _packed_gemm.h. */

#define NR ((int) (CRNN_PANEL_BYTES / sizeof(REAL)))

/* Elements the panels of a (k × n) matrix take. */
static ptrdiff_t SUFFIX(crnn_panels_size)(int k, int n)
{
    return (ptrdiff_t) ((n + NR - 1) / NR) * NR * k;
}

/* panels := B (k × n) in panels.  B is `source` (k × n, row stride ld), or
 * with `transposed` its transpose: `source` (n × k, row stride ld), B = sourceᵀ. */
static void SUFFIX(crnn_pack_panels)(int transposed, int k, int n,
                                     const REAL *CRNN_RESTRICT source, int ld,
                                     REAL *CRNN_RESTRICT panels)
{
    for (int j0 = 0; j0 < n; j0 += NR) {
        REAL *panel = panels + (ptrdiff_t) j0 * k;
        int width = n - j0 < NR ? n - j0 : NR;
        if (transposed) {
            /* column j of B is row j of source: read it contiguously */
            for (int j = 0; j < width; j++) {
                const REAL *row = source + (ptrdiff_t) (j0 + j) * ld;
                for (int kk = 0; kk < k; kk++)
                    panel[(ptrdiff_t) kk * NR + j] = row[kk];
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

/* C[0:rows, 0:width] (+)= A[0:rows, :] · panel, rows <= MR.  Inlined with a
 * constant `rows`, so the MR accumulators live in registers. */
static inline __attribute__((always_inline)) void SUFFIX(crnn_panel_kernel)(
    int rows, int k, const REAL *A, int lda, const REAL *panel,
    int accumulate, REAL *C, int ldc, int width)
{
    VEC acc[CRNN_MR];
    for (int i = 0; i < rows; i++)
        acc[i] = (VEC) {0};
    for (int kk = 0; kk < k; kk++) {
        VEC b;
        memcpy(&b, panel + (ptrdiff_t) kk * NR, sizeof b);
        for (int i = 0; i < rows; i++)
            acc[i] += A[(ptrdiff_t) i * lda + kk] * b;
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
#undef VEC

/* C (m × n, row stride ldc) (+)= A (m × k, row stride lda) · B, B given as
 * panels; C is overwritten unless `accumulate`. */
static CRNN_WIDE_CLONES void SUFFIX(crnn_packed_gemm)(
    int m, int n, int k, const REAL *A, int lda, const REAL *panels,
    int accumulate, REAL *C, int ldc)
{
    for (int j0 = 0; j0 < n; j0 += NR) {
        const REAL *panel = panels + (ptrdiff_t) j0 * k;
        int width = n - j0 < NR ? n - j0 : NR;
        int i0 = 0;
        /* one panel (k × NR, L1/L2-resident) against every block of rows */
        for (; i0 + CRNN_MR <= m; i0 += CRNN_MR)
            SUFFIX(crnn_panel_kernel)(CRNN_MR, k, A + (ptrdiff_t) i0 * lda, lda,
                                      panel, accumulate, C + (ptrdiff_t) i0 * ldc + j0,
                                      ldc, width);
        const REAL *a = A + (ptrdiff_t) i0 * lda;
        REAL *c = C + (ptrdiff_t) i0 * ldc + j0;
        switch (m - i0) {   /* constant row counts, so each call is unrolled */
        case 5: SUFFIX(crnn_panel_kernel)(5, k, a, lda, panel, accumulate, c, ldc, width); break;
        case 4: SUFFIX(crnn_panel_kernel)(4, k, a, lda, panel, accumulate, c, ldc, width); break;
        case 3: SUFFIX(crnn_panel_kernel)(3, k, a, lda, panel, accumulate, c, ldc, width); break;
        case 2: SUFFIX(crnn_panel_kernel)(2, k, a, lda, panel, accumulate, c, ldc, width); break;
        case 1: SUFFIX(crnn_panel_kernel)(1, k, a, lda, panel, accumulate, c, ldc, width); break;
        default: break;
        }
    }
}

#else  /* no vector types: plain loops, for correctness only */

static void SUFFIX(crnn_packed_gemm)(
    int m, int n, int k, const REAL *A, int lda, const REAL *panels,
    int accumulate, REAL *C, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const REAL *column = panels + (ptrdiff_t) (j / NR) * NR * k + j % NR;
            REAL sum = 0;
            for (int kk = 0; kk < k; kk++)
                sum += A[(ptrdiff_t) i * lda + kk] * column[(ptrdiff_t) kk * NR];
            C[(ptrdiff_t) i * ldc + j] = accumulate ? C[(ptrdiff_t) i * ldc + j] + sum : sum;
        }
}

#endif

#undef NR
