"""The BLAS shim: row-major GEMM, GEMV, AXPY and SCAL over float32/float64.

C = A·B in row-major memory is Cᵀ = Bᵀ·Aᵀ in column-major memory, so a
row-major product is the column-major product with the operands (and their
transpose flags) swapped; leading dimensions keep their meaning.

The recurrent product, the same few-row GEMM against one weight at every
time step, has its own kernel on the weight packed once per call
(``packed_gemm``, C in _packed_gemm.h).

The ``def`` wrappers at the bottom exist for the tests only.
"""
from libc.stdlib cimport calloc, free
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
    int CRNN_HAVE_TEAM
    int CRNN_MAX_THREADS
    void crnn_team_set_threads(int threads) nogil
    int crnn_team_threads() nogil
    ctypedef void (*crnn_task)(void *arg, int part, int parts) noexcept nogil
    void crnn_team_run(crnn_task task, void *arg, int parts) nogil
    int CRNN_PARALLEL_MIN_WORK

# Products at least this large (m·n·k multiply-adds) are split among crnn's
# threads when BLAS itself runs on one thread (see split_gemms).
cdef enum:
    SPLIT_MIN_WORK = 1 << 20
    # ... and split by k when k is at least this many times max(m, n)
    K_SPLIT_RATIO = 4

# True while crnn's threads may split BLAS products: set by
# crnn.threads.single_threaded_blas, which holds OpenBLAS at one thread, so
# the split never nests two thread pools.
cdef bint splitting = False


cdef bint k_split_enabled = True


def use_k_split(bint enabled):
    """Turn the split of long thin products by k on or off (off: bands of
    rows or columns).  Returns the previous setting."""
    global k_split_enabled
    previous = k_split_enabled
    k_split_enabled = enabled
    return previous


cdef struct GemmJob:
    # one row-major product for gemm_part; pointers of the job's type
    bint is_double, trans_a, trans_b, by_rows, by_k
    int m, n, k, lda, ldb, ldc
    double alpha, beta
    const void *A
    const void *B
    void *C
    void *partial   # by_k: parts 1.. write (m × n) blocks here, beta 0


cdef void gemm_part(void *arg, int part, int parts) noexcept nogil:
    """Part `part` of `parts` of a GemmJob: a band of C's rows (by_rows) or
    columns, each an independent product with its own slice of A or B; or
    (by_k) a range of k, a product of both operands' slices into C (part 0)
    or into the part's own block of `partial`, which gemm adds to C."""
    cdef GemmJob *job = <GemmJob *> arg
    cdef int extent = job.k if job.by_k else (job.m if job.by_rows else job.n)
    cdef int first = <int> (<long long> extent * part // parts)
    cdef int last = <int> (<long long> extent * (part + 1) // parts)
    cdef Py_ssize_t a_step = 0, b_step = 0, c_step
    if last <= first:
        return
    if job.by_k:
        # k = [first, last) of op(A)'s columns and op(B)'s rows; part 0
        # into C (with beta), the others into their own block (beta 0)
        a_step = <Py_ssize_t> first * job.lda if job.trans_a else first
        b_step = first if job.trans_b else <Py_ssize_t> first * job.ldb
        c_step = <Py_ssize_t> (part - 1) * job.m * job.n
        if job.is_double:
            blas_gemm(job.trans_a, job.trans_b, job.m, job.n, last - first,
                      job.alpha, <const double *> job.A + a_step, job.lda,
                      <const double *> job.B + b_step, job.ldb,
                      job.beta if part == 0 else 0,
                      <double *> job.C if part == 0
                      else <double *> job.partial + c_step,
                      job.ldc if part == 0 else job.n)
        else:
            blas_gemm(job.trans_a, job.trans_b, job.m, job.n, last - first,
                      <float> job.alpha, <const float *> job.A + a_step, job.lda,
                      <const float *> job.B + b_step, job.ldb,
                      <float> (job.beta if part == 0 else 0),
                      <float *> job.C if part == 0
                      else <float *> job.partial + c_step,
                      job.ldc if part == 0 else job.n)
        return
    if job.by_rows:
        # rows [first, last) of C and of op(A)
        a_step = first if job.trans_a else <Py_ssize_t> first * job.lda
        c_step = <Py_ssize_t> first * job.ldc
    else:
        # columns [first, last) of C and of op(B)
        b_step = <Py_ssize_t> first * job.ldb if job.trans_b else first
        c_step = first
    if job.is_double:
        blas_gemm(job.trans_a, job.trans_b,
                  last - first if job.by_rows else job.m,
                  job.n if job.by_rows else last - first, job.k, job.alpha,
                  <const double *> job.A + a_step, job.lda,
                  <const double *> job.B + b_step, job.ldb, job.beta,
                  <double *> job.C + c_step, job.ldc)
    else:
        blas_gemm(job.trans_a, job.trans_b,
                  last - first if job.by_rows else job.m,
                  job.n if job.by_rows else last - first, job.k,
                  <float> job.alpha,
                  <const float *> job.A + a_step, job.lda,
                  <const float *> job.B + b_step, job.ldb, <float> job.beta,
                  <float *> job.C + c_step, job.ldc)


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C,  C (m×n), op(A) (m×k), op(B) (k×n).
    Large products are split by rows or columns among crnn's threads while
    BLAS runs single-threaded (split_gemms)."""
    cdef GemmJob job
    cdef int parts = crnn_team_threads()
    cdef Py_ssize_t r, j, p
    cdef floating *partial
    if (splitting and parts > 1 and m > 1
            and <double> m * n * k >= SPLIT_MIN_WORK):
        job.is_double = floating is double
        job.trans_a, job.trans_b = trans_a, trans_b
        job.by_rows = m >= n
        job.m, job.n, job.k = m, n, k
        job.lda, job.ldb, job.ldc = lda, ldb, ldc
        job.alpha, job.beta = alpha, beta
        job.A, job.B, job.C = A, B, C
        # A long thin product (the weight gradients: k = T·B rows) is split
        # by k: bands of C's rows or columns would each pack all of the
        # other operand, by k each part packs only its own rows of both.
        job.by_k = k_split_enabled and k >= K_SPLIT_RATIO * max(m, n)
        job.partial = NULL
        if job.by_k:
            # zeroed: a smaller team than asked leaves some blocks unwritten
            job.partial = calloc(<size_t> (parts - 1) * m * n, sizeof(floating))
            job.by_k = job.partial != NULL
        crnn_team_run(gemm_part, &job, parts)
        if job.by_k:
            # C += Σ the other parts' blocks, in part order
            partial = <floating *> job.partial
            for p in range(parts - 1):
                for r in range(m):
                    for j in range(n):
                        C[r * ldc + j] += partial[(p * m + r) * n + j]
            free(job.partial)
        return
    blas_gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


cdef void blas_gemm(bint trans_a, bint trans_b, int m, int n, int k,
                    floating alpha, const floating *A, int lda,
                    const floating *B, int ldb,
                    floating beta, floating *C, int ldc) noexcept nogil:
    """gemm on the calling thread (BLAS's own threads as BLAS decides)."""
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


# ------------------------------------------------------------ the team

cdef bint team_may_call_blas() noexcept nogil:
    """True while BLAS is held at one thread (split_gemms), so that parts of
    the team may each call it without nesting two thread pools."""
    return splitting


cdef int team_parts(double work, int pieces) noexcept nogil:
    """How many parts to split a job of `work` multiply-adds into, at most
    `pieces`: 1 below the threshold where a handoff costs more than it saves,
    else the team's thread count."""
    if work < CRNN_PARALLEL_MIN_WORK:
        return 1
    return max(1, min(crnn_team_threads(), pieces))


cdef int team_threads() noexcept nogil:
    """The team's thread count, the caller included."""
    return crnn_team_threads()


cdef void team_run(Task task, void *arg, int parts) noexcept nogil:
    """task(arg, part, parts) for every part, on the team's threads (see
    _team.h); returns when all are done."""
    crnn_team_run(<crnn_task> task, arg, parts)


def set_num_threads(int threads):
    """Threads for crnn's own parallel work (the packed recurrent GEMM), the
    caller included; BLAS keeps its own setting (OPENBLAS_NUM_THREADS)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    crnn_team_set_threads(min(threads, CRNN_MAX_THREADS) if CRNN_HAVE_TEAM else 1)


def get_num_threads():
    """The thread count set by set_num_threads (1 without POSIX threads)."""
    return crnn_team_threads()


def split_gemms(bint enabled):
    """Let crnn's threads split BLAS products (only while BLAS is held at one
    thread: crnn.threads.single_threaded_blas).  Returns the previous value."""
    global splitting
    previous = splitting
    splitting = enabled
    return previous


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
