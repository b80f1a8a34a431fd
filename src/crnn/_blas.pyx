"""The BLAS shim: row-major GEMM, GEMV, AXPY and SCAL over float32/float64.

C = A·B in row-major memory is Cᵀ = Bᵀ·Aᵀ in column-major memory, so a
row-major product is the column-major product with the operands (and their
transpose flags) swapped; leading dimensions keep their meaning.

The ``def`` wrappers at the bottom exist for the tests only.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv
from scipy.linalg.cython_blas cimport saxpy, daxpy, sscal, dscal



cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C,  C (m×n), op(A) (m×k), op(B) (k×n)."""
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


# ---------------------------------------------------------------- test hooks
# Python wrappers so the tests can check the shim against numpy.  They take
# C-contiguous 2-D / 1-D arrays of one dtype and update the output in place.

def _gemm(bint trans_a, bint trans_b, double alpha,
          const floating[:, ::1] A, const floating[:, ::1] B,
          double beta, floating[:, ::1] C):
    """C := alpha * op(A).op(B) + beta * C  (row-major, in place)."""
    cdef int m = C.shape[0], n = C.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    if ((A.shape[1] if trans_a else A.shape[0]) != m
            or (B.shape[1] if trans_b else B.shape[0]) != k
            or (B.shape[0] if trans_b else B.shape[1]) != n):
        raise ValueError("gemm: operand shapes do not match")
    if m == 0 or n == 0:
        return
    cdef const floating *a = &A[0, 0] if k > 0 else NULL
    cdef const floating *b = &B[0, 0] if k > 0 else NULL
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha, a, A.shape[1],
             b, B.shape[1], <floating> beta, &C[0, 0], C.shape[1])


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
