"""The parallel module: crnn's thread team and the products it splits.

It is the only module that knows about threads (the Python side is
threads.py, which holds OpenBLAS at one thread while the team splits):

- the team (_team.h): ``team_run`` runs a task's parts on the threads,
  ``team_parts`` says how many parts a job is worth;
- ``team_gemm``: a large product split by rows, columns or k among the
  team while BLAS runs on one thread (``split_gemms``), else plain BLAS.

Neighbours: below it only the BLAS shim (_blas); the lane, the network and
the stream call it.
"""
from cython cimport floating
from libc.stdlib cimport calloc, free
from ._blas cimport gemm

cdef extern from "_team.h":
    int CRNN_HAVE_TEAM
    int CRNN_MAX_THREADS
    ctypedef struct crnn_team_counts_t:
        long long jobs, solo_jobs, late_jobs, solo_periods
    int crnn_team_gain_limit(double work, int most) nogil
    crnn_team_counts_t crnn_team_counts(int reset) nogil
    void crnn_team_set_threads(int threads) nogil
    int crnn_team_threads() nogil
    ctypedef void (*crnn_task)(void *arg, int part, int parts) noexcept nogil
    void crnn_team_run(crnn_task task, void *arg, int parts) nogil


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
            gemm(job.trans_a, job.trans_b, job.m, job.n, last - first,
                      job.alpha, <const double *> job.A + a_step, job.lda,
                      <const double *> job.B + b_step, job.ldb,
                      job.beta if part == 0 else 0,
                      <double *> job.C if part == 0
                      else <double *> job.partial + c_step,
                      job.ldc if part == 0 else job.n)
        else:
            gemm(job.trans_a, job.trans_b, job.m, job.n, last - first,
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
        gemm(job.trans_a, job.trans_b,
                  last - first if job.by_rows else job.m,
                  job.n if job.by_rows else last - first, job.k, job.alpha,
                  <const double *> job.A + a_step, job.lda,
                  <const double *> job.B + b_step, job.ldb, job.beta,
                  <double *> job.C + c_step, job.ldc)
    else:
        gemm(job.trans_a, job.trans_b,
                  last - first if job.by_rows else job.m,
                  job.n if job.by_rows else last - first, job.k,
                  <float> job.alpha,
                  <const float *> job.A + a_step, job.lda,
                  <const float *> job.B + b_step, job.ldb, <float> job.beta,
                  <float *> job.C + c_step, job.ldc)


cdef void team_gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C,  C (m×n), op(A) (m×k), op(B) (k×n).
    Large products are split by rows or columns among crnn's threads while
    BLAS runs single-threaded (split_gemms)."""
    cdef GemmJob job
    cdef int parts = crnn_team_gain_limit(<double> m * n * k, crnn_team_threads())
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
    gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


# ------------------------------------------------------------ the team

cdef bint team_may_call_blas() noexcept nogil:
    """True while BLAS is held at one thread (split_gemms), so that parts of
    the team may each call it without nesting two thread pools."""
    return splitting


cdef int team_parts(double work, int pieces) noexcept nogil:
    """How many parts to split a job of `work` multiply-adds into, at most
    `pieces`: the team's thread count, capped where another thread's
    handoff costs more than its share saves (_team.h, the cost model; 1
    below CRNN_PARALLEL_MIN_WORK)."""
    return crnn_team_gain_limit(work, min(crnn_team_threads(), pieces))


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
    """The thread count set by set_num_threads (1 on a platform with neither
    POSIX nor Win32 threads)."""
    return crnn_team_threads()


def split_gemms(bint enabled):
    """Let crnn's threads split BLAS products (only while BLAS is held at one
    thread: crnn.threads.single_threaded_blas).  Returns the previous value."""
    global splitting
    previous = splitting
    splitting = enabled
    return previous



# ---------------------------------------------------------------- test hooks

def _gain_limit(double work, int most=CRNN_MAX_THREADS):
    """The cost model's thread count for a job of `work` multiply-adds: the
    most threads, up to `most`, that still gain (_team.h,
    crnn_team_gain_limit)."""
    return crnn_team_gain_limit(work, most)


def _team_counts(bint reset=False):
    """The team's counts since the last reset: jobs posted, jobs run solo,
    late jobs, solo periods (_team.h); `reset` zeroes them."""
    cdef crnn_team_counts_t counts = crnn_team_counts(reset)
    return {"jobs": counts.jobs, "solo_jobs": counts.solo_jobs,
            "late_jobs": counts.late_jobs, "solo_periods": counts.solo_periods}


def _gemm(bint trans_a, bint trans_b, double alpha,
          const floating[:, ::1] A, const floating[:, ::1] B,
          double beta, floating[:, ::1] C):
    """C := alpha * op(A).op(B) + beta * C  (row-major, in place), split
    among the team as team_gemm splits it."""
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
        team_gemm(trans_a, trans_b, m, n, k, <floating> alpha, a, A.shape[1],
             b, B.shape[1], <floating> beta, &C[0, 0], C.shape[1])
