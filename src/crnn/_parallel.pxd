# The parallel module: crnn's thread team (_team.h) and the BLAS products it
# splits.  The only module that knows about threads; see _parallel.pyx.
from cython cimport floating

# team_run runs task(arg, part, parts) for every part, part 0 on the
# caller; team_parts says how many parts a job of `work` multiply-adds in
# at most `pieces` pieces should be split into.
ctypedef void (*Task)(void *arg, int part, int parts) noexcept nogil
cdef int team_parts(double work, int pieces) noexcept nogil
# the team's thread count, the caller included
cdef int team_threads() noexcept nogil
# True while BLAS is held at one thread, so the team's parts may call it
cdef bint team_may_call_blas() noexcept nogil
cdef void team_run(Task task, void *arg, int parts) noexcept nogil

# C := alpha * op(A).op(B) + beta * C, split among the team while BLAS is
# held at one thread and the product is large (_blas.gemm otherwise)
cdef void team_gemm(bint trans_a, bint trans_b, int m, int n, int k,
                    floating alpha, const floating *A, int lda,
                    const floating *B, int ldb,
                    floating beta, floating *C, int ldc) noexcept nogil
