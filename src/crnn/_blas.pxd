# The BLAS shim: the only module that cimports scipy.linalg.cython_blas,
# and the home of the one GEMM crnn does itself (the recurrent product on
# weights packed once per call, _packed_gemm.h).  No threads, no policy:
# _parallel.pxd splits products among crnn's team.
#
# Every routine is row-major (numpy's layout): callers pass C-contiguous
# matrices and leading dimensions in elements, and the shim swaps operands
# to call the column-major Fortran BLAS.  Over the fused `floating` type,
# `noexcept nogil`, inputs `const`.
from cython cimport floating

include "_blas_int.pxi"


# C := alpha * op(A).op(B) + beta * C  on the calling thread
cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil

cdef void gemv(bint trans_a, int m, int n,
               floating alpha, const floating *A, int lda,
               const floating *x, int incx,
               floating beta, floating *y, int incy) noexcept nogil

cdef void axpy(int n, floating alpha, const floating *x, int incx,
               floating *y, int incy) noexcept nogil

cdef void scal(int n, floating alpha, floating *x, int incx) noexcept nogil


# The packed recurrent GEMM (_packed_gemm.h).  `packed_gemm_fast()` is False
# where the compiler lacks vector types (MSVC): callers then use gemm.
cdef bint packed_gemm_fast() noexcept nogil
cdef Py_ssize_t panels_size(floating tag, int k, int n) noexcept nogil
cdef void pack_panels(bint transposed, int k, int n, const floating *source,
                      int ld, floating *panels) noexcept nogil
cdef void pack_panel_rows(bint transposed, int k, int n, const floating *source,
                          int ld, floating *panels, int rows,
                          int row0) noexcept nogil
cdef void packed_gemm(int m, int n, int k, const floating *A, int lda,
                      const floating *panels, bint accumulate,
                      floating *C, int ldc) noexcept nogil
cdef void packed_gemm_pair(int m, int n, int k1, const floating *A1, int lda1,
                           int k2, const floating *A2, int lda2,
                           const floating *panels, const floating *bias,
                           bint accumulate, floating *C, int ldc) noexcept nogil
