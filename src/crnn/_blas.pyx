"""The BLAS shim: row-major GEMM, GEMV, AXPY and SCAL over float32/float64,
and crnn's own packed GEMM for the recurrent product.  No policy and no
threads: _parallel.pyx splits products among the team.

C = A·B in row-major memory is Cᵀ = Bᵀ·Aᵀ in column-major memory, so a
row-major product is the column-major product with the operands (and their
transpose flags) swapped; leading dimensions keep their meaning.

The recurrent product, the same few-row GEMM against one weight at every
time step, has its own kernel on the weight packed once per call
(``packed_gemm``, C in _packed_gemm.h).

The ``def`` wrappers at the bottom exist for the tests only.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv
from scipy.linalg.cython_blas cimport saxpy, daxpy, sscal, dscal

import numpy as np

cdef extern from "_packed_gemm.h":
    int CRNN_PACKED_GEMM_FAST
    Py_ssize_t crnn_panels_size_f32(int k, int n) nogil
    Py_ssize_t crnn_panels_size_f64(int k, int n) nogil
    void crnn_pack_panel_rows_f32(int transposed, int k, int n, const float *source,
                                  int ld, float *panels, int rows, int row0) nogil
    void crnn_pack_panel_rows_f64(int transposed, int k, int n, const double *source,
                                  int ld, double *panels, int rows, int row0) nogil
    void crnn_packed_gemm_f32(int m, int n, int k1, const float *A1, int lda1,
                              int k2, const float *A2, int lda2,
                              const float *panels, const float *bias,
                              int accumulate, float *C, int ldc) nogil
    void crnn_packed_gemm_f64(int m, int n, int k1, const double *A1, int lda1,
                              int k2, const double *A2, int lda2,
                              const double *panels, const double *bias,
                              int accumulate, double *C, int ldc) nogil

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                    floating alpha, const floating *A, int lda,
                    const floating *B, int ldb,
                    floating beta, floating *C, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C,  C (m×n), op(A) (m×k), op(B) (k×n),
    on the calling thread (BLAS's own threads as BLAS decides)."""
    if m <= 0 or n <= 0:
        return
    if m == 1 and k > 0:
        # One row: c = alpha·op(B)ᵀ·a + beta·c as a GEMV, several times faster
        # than a one-row GEMM in OpenBLAS.  a is A's row (or A's column,
        # stride lda, when A is transposed).
        if trans_b:
            # op(B)ᵀ = B (n×k)
            gemv(False, n, k, alpha, B, ldb, A, lda if trans_a else 1, beta, C, 1)
        else:
            # op(B)ᵀ = Bᵀ, B (k×n)
            gemv(True, k, n, alpha, B, ldb, A, lda if trans_a else 1, beta, C, 1)
        return
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    # Fortran needs leading dimensions >= 1 even for empty operands.
    cdef blas_int m_ = m, n_ = n, k_ = k
    cdef blas_int lda_ = lda if lda > 1 else 1
    cdef blas_int ldb_ = ldb if ldb > 1 else 1
    cdef blas_int ldc_ = ldc if ldc > 1 else 1
    # Column-major: Cᵀ (n×m) = op(B)ᵀ (n×k) · op(A)ᵀ (k×m)
    if floating is float:
        sgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <float *> B, &ldb_,
              <float *> A, &lda_, &beta, C, &ldc_)
    else:
        dgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <double *> B, &ldb_,
              <double *> A, &lda_, &beta, C, &ldc_)


cdef void gemv(bint trans_a, int m, int n,
               floating alpha, const floating *A, int lda,
               const floating *x, int incx,
               floating beta, floating *y, int incy) noexcept nogil:
    """y := alpha * op(A).x + beta * y,  A (m×n) row-major."""
    if m <= 0 or n <= 0:
        return
    # Row-major A (m×n) is column-major Aᵀ (n×m): flip the transpose flag.
    cdef char t = b'N' if trans_a else b'T'
    cdef blas_int rows = n, cols = m
    cdef blas_int lda_ = lda if lda > 1 else 1
    cdef blas_int incx_ = incx, incy_ = incy
    if floating is float:
        sgemv(&t, &rows, &cols, &alpha, <float *> A, &lda_, <float *> x,
              &incx_, &beta, y, &incy_)
    else:
        dgemv(&t, &rows, &cols, &alpha, <double *> A, &lda_, <double *> x,
              &incx_, &beta, y, &incy_)


cdef void axpy(int n, floating alpha, const floating *x, int incx,
               floating *y, int incy) noexcept nogil:
    """y := alpha * x + y"""
    if n <= 0:
        return
    cdef blas_int n_ = n, incx_ = incx, incy_ = incy
    if floating is float:
        saxpy(&n_, &alpha, <float *> x, &incx_, y, &incy_)
    else:
        daxpy(&n_, &alpha, <double *> x, &incx_, y, &incy_)


cdef void scal(int n, floating alpha, floating *x, int incx) noexcept nogil:
    """x := alpha * x"""
    if n <= 0:
        return
    cdef blas_int n_ = n, incx_ = incx
    if floating is float:
        sscal(&n_, &alpha, x, &incx_)
    else:
        dscal(&n_, &alpha, x, &incx_)


# ------------------------------------------------ the packed recurrent GEMM

cdef bint packed_gemm_fast() noexcept nogil:
    """True when packed_gemm is the vectorised kernel (GCC, Clang)."""
    return CRNN_PACKED_GEMM_FAST != 0


cdef Py_ssize_t panels_size(floating tag, int k, int n) noexcept nogil:
    """Elements the panels of a (k × n) matrix take (`tag` picks the dtype)."""
    if floating is float:
        return crnn_panels_size_f32(k, n)
    else:
        return crnn_panels_size_f64(k, n)


cdef void pack_panels(bint transposed, int k, int n, const floating *source,
                      int ld, floating *panels) noexcept nogil:
    """panels := B (k × n) = source (k × n), or sourceᵀ with `source` (n × k)."""
    pack_panel_rows(transposed, k, n, source, ld, panels, k, 0)


cdef void pack_panel_rows(bint transposed, int k, int n, const floating *source,
                          int ld, floating *panels, int rows,
                          int row0) noexcept nogil:
    """Rows [row0, row0 + k) of panels of `rows` rows := B (k × n), as
    pack_panels: two calls stack two matrices in one set of panels."""
    if floating is float:
        crnn_pack_panel_rows_f32(transposed, k, n, source, ld, panels, rows, row0)
    else:
        crnn_pack_panel_rows_f64(transposed, k, n, source, ld, panels, rows, row0)


cdef void packed_gemm(int m, int n, int k, const floating *A, int lda,
                      const floating *panels, bint accumulate,
                      floating *C, int ldc) noexcept nogil:
    """C (m × n) := A (m × k) · B, or += with `accumulate`; B in panels.
    On the calling thread: the driver shares a step out among the team."""
    packed_gemm_pair(m, n, 0, NULL, 0, k, A, lda, panels, NULL, accumulate, C, ldc)


cdef void packed_gemm_pair(int m, int n, int k1, const floating *A1, int lda1,
                           int k2, const floating *A2, int lda2,
                           const floating *panels, const floating *bias,
                           bint accumulate, floating *C, int ldc) noexcept nogil:
    """C (m × n) := bias + A1 (m × k1) · B1 + A2 (m × k2) · B2, or += with
    `accumulate`; B1 stacked over B2 in panels of k1 + k2 rows (two
    pack_panel_rows calls).  A1 is not read when k1 = 0, bias may be NULL."""
    if m <= 0 or n <= 0:
        return
    if k1 == 0:
        A1, lda1 = A2, 0    # never read; keeps the kernel's pointer sums defined
    if floating is float:
        crnn_packed_gemm_f32(m, n, k1, A1, lda1, k2, A2, lda2, panels, bias,
                             accumulate, C, ldc)
    else:
        crnn_packed_gemm_f64(m, n, k1, A1, lda1, k2, A2, lda2, panels, bias,
                             accumulate, C, ldc)


# ---------------------------------------------------------------- test hooks
# Python wrappers so the tests can check the shim against numpy.  They take
# C-contiguous 2-D / 1-D arrays of one dtype and update the output in place.

def _gemv(bint trans_a, double alpha, const floating[:, ::1] A,
          const floating[::1] x, double beta, floating[::1] y):
    """y := alpha * op(A).x + beta * y  (row-major, in place)."""
    cdef int m = A.shape[0], n = A.shape[1]
    if (x.shape[0], y.shape[0]) != ((m, n) if trans_a else (n, m)):
        raise ValueError("gemv: operand shapes do not match")
    if m == 0 or n == 0:
        return
    with nogil:
        gemv(trans_a, m, n, <floating> alpha, &A[0, 0], n, &x[0], 1,
             <floating> beta, &y[0], 1)


def _axpy(double alpha, const floating[::1] x, floating[::1] y):
    """y := alpha * x + y  (in place)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("axpy: x and y differ in length")
    if x.shape[0] == 0:
        return
    with nogil:
        axpy(x.shape[0], <floating> alpha, &x[0], 1, &y[0], 1)


def _packed_gemm(bint transposed, const floating[:, ::1] A,
                 const floating[:, ::1] source, bint accumulate,
                 floating[:, ::1] C):
    """C (+)= A · B through the panels, B = source or sourceᵀ (in place)."""
    cdef int m = C.shape[0], n = C.shape[1], k = A.shape[1]
    if (A.shape[0] != m
            or (source.shape[1] if transposed else source.shape[0]) != k
            or (source.shape[0] if transposed else source.shape[1]) != n):
        raise ValueError("packed_gemm: operand shapes do not match")
    if m == 0 or n == 0 or k == 0:
        raise ValueError("packed_gemm: empty operands are not tested here")
    panels = np.empty(panels_size(A[0, 0], k, n), dtype=np.asarray(A).dtype)
    cdef floating[::1] p = panels
    with nogil:
        pack_panels(transposed, k, n, &source[0, 0], source.shape[1], &p[0])
        packed_gemm(m, n, k, &A[0, 0], A.shape[1], &p[0], accumulate,
                    &C[0, 0], C.shape[1])
    return panels


def _packed_gemm_pair(const floating[:, ::1] A1, const floating[:, ::1] S1,
                      const floating[:, ::1] A2, const floating[:, ::1] S2,
                      bias, bint accumulate, floating[:, ::1] C):
    """C (+)= bias + A1 · S1ᵀ + A2 · S2ᵀ through one set of stacked panels,
    packed from S1 (n × k1) and S2 (n × k2) as the driver packs U_g and W_g
    (in place); k1 may be 0, bias (n,) may be None.  Returns the panels."""
    cdef int m = C.shape[0], n = C.shape[1]
    cdef int k1 = A1.shape[1], k2 = A2.shape[1]
    if (A1.shape[0] != m or A2.shape[0] != m or S1.shape[0] != n
            or S2.shape[0] != n or S1.shape[1] != k1 or S2.shape[1] != k2):
        raise ValueError("packed_gemm_pair: operand shapes do not match")
    if m == 0 or n == 0 or k2 == 0:
        raise ValueError("packed_gemm_pair: empty operands are not tested here")
    cdef const floating[::1] bias_view
    cdef const floating *bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        if bias_view.shape[0] != n:
            raise ValueError("packed_gemm_pair: bias must have n elements")
        bias_ptr = &bias_view[0]
    panels = np.empty(panels_size(A2[0, 0], k1 + k2, n), dtype=np.asarray(A2).dtype)
    cdef floating[::1] p = panels
    cdef const floating *a1 = &A1[0, 0] if k1 > 0 else NULL
    cdef const floating *s1 = &S1[0, 0] if k1 > 0 else NULL
    with nogil:
        if k1 > 0:
            pack_panel_rows(True, k1, n, s1, k1, &p[0], k1 + k2, 0)
        pack_panel_rows(True, k2, n, &S2[0, 0], k2, &p[0], k1 + k2, k1)
        packed_gemm_pair(m, n, k1, a1, k1, k2, &A2[0, 0], k2, &p[0], bias_ptr,
                         accumulate, &C[0, 0], C.shape[1])
    return panels


def _packed_gemm_fast():
    return packed_gemm_fast()
