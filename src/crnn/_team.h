/* A small team of worker threads for the time steps and the split products.
 *
 * The work of one time step is too short (10-300 µs) for a thread pool that
 * sleeps between calls, so the workers spin for a while (about a third of a
 * millisecond) after each job before they sleep on a condition variable:
 * through a time loop they stay awake, after it they go quiet and leave the
 * cores to BLAS.  crnn_team_run(task, arg, parts) runs task(arg, part,
 * parts) for every part and returns when all are done.  Results never
 * depend on who runs a part (each part writes its own outputs), so:
 *
 * - parts are claimed, not assigned: the caller runs part 0, then claims
 *   every part no worker has claimed yet; a worker that arrives late finds
 *   nothing left and the caller never waits for it.  It waits only for
 *   parts a worker has started.
 * - one caller at a time owns the team; another thread calling meanwhile
 *   (or a team of one) runs every part itself.
 * - on a busy machine (another process on the cores) a worker can be off
 *   its core for a whole time slice.  The caller notices (a job it ran
 *   alone, or one where it waited at the join longer than it worked itself)
 *   and after CRNN_LATE_LIMIT such jobs in a row, or one wait past
 *   CRNN_LATE_WAIT_NS, runs alone for a while ("solo"): 8 ms first, twice
 *   as long each time the team is late again within the next period, up to
 *   CRNN_SOLO_MAX_NS.  The idle workers fall asleep, leaving the cores to
 *   the other work.  docs/performance.md, "Threads on a busy machine".
 *
 * The threads and locks come from a small platform layer below: POSIX
 * threads, or Win32 threads with an SRW lock and a condition variable.
 * Elsewhere the team is always one thread.  After a fork() the POSIX child
 * starts with no workers (pthread_atfork).
 */
#ifndef CRNN_TEAM_H
#define CRNN_TEAM_H

#define CRNN_MAX_THREADS 16
/* The cost model (docs/performance.md, "How many threads"): a job of W
 * multiply-adds on t threads takes about W·c/t + h·(t - 1), c the time of
 * one multiply-add, h one handoff (waking a worker and joining it).  A t-th
 * thread pays while W·c/(t·(t-1)) > h, i.e. t·(t-1)/2 <= W / MIN_WORK with
 * MIN_WORK = 2h/c: the work at which two threads break even.  Jobs below it
 * stay on one thread; crnn_team_gain_limit gives the largest t that pays. */
#define CRNN_PARALLEL_MIN_WORK (1 << 18)

typedef void (*crnn_task)(void *arg, int part, int parts);

/* The largest thread count that still gains on a job of `work`
 * multiply-adds, at most `most`: the largest t <= most with
 * t·(t-1)/2·MIN_WORK <= work (1 when most < 1). */
static int crnn_team_gain_limit(double work, int most)
{
    int threads = 1;
    while (threads < most
           && (double) (threads + 1) * threads / 2 * CRNN_PARALLEL_MIN_WORK <= work)
        threads++;
    return threads;
}

/* ------------------------------------------------------ platform layer */

#if defined(_WIN32)
#define CRNN_HAVE_TEAM 1
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
typedef SRWLOCK crnn_mutex;
typedef CONDITION_VARIABLE crnn_cond;
#define CRNN_MUTEX_INIT SRWLOCK_INIT
#define CRNN_COND_INIT CONDITION_VARIABLE_INIT
#define crnn_mutex_lock(m) AcquireSRWLockExclusive(m)
#define crnn_mutex_trylock(m) (TryAcquireSRWLockExclusive(m) != 0)
#define crnn_mutex_unlock(m) ReleaseSRWLockExclusive(m)
#define crnn_cond_wait(c, m) SleepConditionVariableSRW((c), (m), INFINITE, 0)
#define crnn_cond_broadcast(c) WakeAllConditionVariable(c)
#define CRNN_CPU_RELAX() YieldProcessor()
#define crnn_yield() ((void) SwitchToThread())
typedef DWORD crnn_thread_result;
#define CRNN_THREAD_CALL WINAPI
#define CRNN_THREAD_RETURN 0
static int crnn_thread_start(crnn_thread_result (CRNN_THREAD_CALL *body)(void *),
                             void *arg)
{
    HANDLE thread = CreateThread(NULL, 0, body, arg, 0, NULL);
    if (thread == NULL)
        return 0;
    CloseHandle(thread);       /* detached: it runs until the process ends */
    return 1;
}
static long long crnn_now_ns(void)
{
    static LARGE_INTEGER frequency;
    LARGE_INTEGER now;
    if (frequency.QuadPart == 0)
        QueryPerformanceFrequency(&frequency);
    QueryPerformanceCounter(&now);
    return (long long) ((double) now.QuadPart * 1e9 / (double) frequency.QuadPart);
}

#elif defined(__unix__) || defined(__APPLE__)
#define CRNN_HAVE_TEAM 1
#include <pthread.h>
#include <sched.h>
#include <time.h>
typedef pthread_mutex_t crnn_mutex;
typedef pthread_cond_t crnn_cond;
#define CRNN_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define CRNN_COND_INIT PTHREAD_COND_INITIALIZER
#define crnn_mutex_lock(m) pthread_mutex_lock(m)
#define crnn_mutex_trylock(m) (pthread_mutex_trylock(m) == 0)
#define crnn_mutex_unlock(m) pthread_mutex_unlock(m)
#define crnn_cond_wait(c, m) pthread_cond_wait((c), (m))
#define crnn_cond_broadcast(c) pthread_cond_broadcast(c)
#if defined(__x86_64__) || defined(__i386__)
#define CRNN_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CRNN_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CRNN_CPU_RELAX() ((void) 0)
#endif
#define crnn_yield() ((void) sched_yield())
typedef void *crnn_thread_result;
#define CRNN_THREAD_CALL
#define CRNN_THREAD_RETURN NULL
static int crnn_thread_start(crnn_thread_result (*body)(void *), void *arg)
{
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&thread, &attr, body, arg);
    pthread_attr_destroy(&attr);
    return !failed;
}
static long long crnn_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long) now.tv_sec * 1000000000LL + now.tv_nsec;
}

#else
#define CRNN_HAVE_TEAM 0
#endif

/* Atomics: GCC and Clang builtins (MinGW too), else MSVC's intrinsics
 * (CRNN_TEAM_INTERLOCKED picks those with MinGW, whose <intrin.h> has
 * them: tools/team_test.sh tests MSVC's branch that way). */
#if CRNN_HAVE_TEAM
#if (defined(__GNUC__) || defined(__clang__)) && !defined(CRNN_TEAM_INTERLOCKED)
#define crnn_load_ticket(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define crnn_store_ticket(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define crnn_load_int(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define crnn_store_int(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define crnn_add(p, v) ((void) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL))
#define crnn_fence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define crnn_cas(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, \
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#elif defined(_MSC_VER) || (defined(_WIN32) && defined(CRNN_TEAM_INTERLOCKED))
#include <intrin.h>
/* Every Interlocked operation is a full barrier.  Loads: on x86-64 an
 * aligned load already has acquire order, so a plain volatile read and a
 * compiler barrier (no locked instruction in the workers' spin loop);
 * elsewhere an OR with 0. */
#if defined(_M_X64) || defined(__x86_64__)
static unsigned long long crnn_load_ticket(volatile unsigned long long *p)
{
    unsigned long long value = *p;
    _ReadWriteBarrier();
    return value;
}
static int crnn_load_int(volatile int *p)
{
    int value = *p;
    _ReadWriteBarrier();
    return value;
}
#else
#define crnn_load_ticket(p) \
    ((unsigned long long) _InterlockedOr64((volatile __int64 *) (p), 0))
#define crnn_load_int(p) ((int) _InterlockedOr((volatile long *) (p), 0))
#endif
#define crnn_store_ticket(p, v) \
    ((void) _InterlockedExchange64((volatile __int64 *) (p), (__int64) (v)))
#define crnn_store_int(p, v) ((void) _InterlockedExchange((volatile long *) (p), (long) (v)))
#define crnn_add(p, v) ((void) _InterlockedExchangeAdd((volatile long *) (p), (long) (v)))
static int crnn_cas_u64(volatile unsigned long long *p, unsigned long long *expected,
                        unsigned long long desired)
{
    unsigned long long seen = (unsigned long long) _InterlockedCompareExchange64(
        (volatile __int64 *) p, (__int64) desired, (__int64) *expected);
    if (seen == *expected)
        return 1;
    *expected = seen;
    return 0;
}
#define crnn_fence() MemoryBarrier()
#define crnn_cas(p, expected, desired) crnn_cas_u64((p), (expected), (desired))
#else
#error "crnn's thread team needs GCC/Clang atomics or MSVC's intrinsics"
#endif
#endif

/* ------------------------------------------------------------ the team */

#if CRNN_HAVE_TEAM

/* The tunables (each may be set with -D for an experiment).
 * Pause instructions a worker spins through before it sleeps (about
 * 25 ns each on x86-64), and the caller before it yields at the join: */
#ifndef CRNN_TEAM_SPINS
#define CRNN_TEAM_SPINS (1 << 14)
#endif
/* late jobs in a row that send the caller solo (2 and 8 ms below, against
 * 3 and 2 ms before: LSTM (100,32,32,128,32) beside one spinning process,
 * 2 threads over 1: 1.30-1.31 -> 1.07-1.11, quiet 2 threads unchanged;
 * docs/performance.md) */
#ifndef CRNN_LATE_LIMIT
#define CRNN_LATE_LIMIT 2
#endif
/* a join this long (and longer than the caller's own work) is a worker
 * taken off its core: solo at once */
#ifndef CRNN_LATE_WAIT_NS
#define CRNN_LATE_WAIT_NS 200000LL
#endif
/* the first solo period, and the longest */
#ifndef CRNN_SOLO_MIN_NS
#define CRNN_SOLO_MIN_NS 8000000LL
#endif
#ifndef CRNN_SOLO_MAX_NS
#define CRNN_SOLO_MAX_NS 128000000LL
#endif

/* The job ticket: job number << 16 | parts << 8 | the next part to claim.
 * Workers and caller claim a part by moving the last field on with a
 * compare-and-swap; a ticket of an older job no longer matches. */
#define CRNN_TICKET(job, parts, next) \
    (((unsigned long long) (job) << 16) | ((unsigned long long) (parts) << 8) | (next))
#define CRNN_TICKET_JOB(ticket) ((ticket) >> 16)
#define CRNN_TICKET_PARTS(ticket) ((int) (((ticket) >> 8) & 0xff))
#define CRNN_TICKET_NEXT(ticket) ((int) ((ticket) & 0xff))

/* counts for tests and benchmarks (crnn_team_counts) */
typedef struct {
    long long jobs;          /* jobs posted to the team */
    long long solo_jobs;     /* jobs the caller ran alone while solo */
    long long late_jobs;     /* posted jobs that came out late */
    long long solo_periods;  /* times the caller went solo */
} crnn_team_counts_t;

static struct {
    crnn_mutex owner;            /* held by the caller running a job */
    crnn_mutex sleep_lock;
    crnn_cond wake;
    int threads;                 /* wanted, the caller included */
    int started;                 /* workers running */
    int forked_hook;             /* pthread_atfork registered */
    crnn_task task;
    void *arg;
    unsigned long long ticket;   /* (atomic) */
    int finished;                /* parts finished by workers (atomic) */
    int sleepers;                /* workers gone to sleep since the last
                                    broadcast (atomic) */
    int drowsy;                  /* workers asleep, or woken and not yet
                                    running again (atomic) */
    /* the owner's view of lateness (touched only under `owner`) */
    int late_streak;
    long long solo_until;        /* ns: run alone until then */
    long long solo_length;       /* ns: the last solo period */
    crnn_team_counts_t counts;
} crnn_team = {.owner = CRNN_MUTEX_INIT, .sleep_lock = CRNN_MUTEX_INIT,
               .wake = CRNN_COND_INIT, .threads = 1};

/* a worker's number and the ticket it has seen (set before it starts) */
typedef struct { int index; unsigned long long seen; } crnn_worker_id;
static crnn_worker_id crnn_worker_ids[CRNN_MAX_THREADS];

/* Claim the next part of job `job`: its number (and *parts the job's
 * part count), or -1 when every part is taken or the job is over. */
static int crnn_team_claim(unsigned long long job, int *parts)
{
    unsigned long long ticket = crnn_load_ticket(&crnn_team.ticket);
    while (CRNN_TICKET_JOB(ticket) == job
           && CRNN_TICKET_NEXT(ticket) < CRNN_TICKET_PARTS(ticket)) {
        if (crnn_cas(&crnn_team.ticket, &ticket, ticket + 1)) {
            *parts = CRNN_TICKET_PARTS(ticket);
            return CRNN_TICKET_NEXT(ticket);
        }
    }
    return -1;
}

static crnn_thread_result CRNN_THREAD_CALL crnn_team_worker(void *id)
{
    unsigned long long seen = CRNN_TICKET_JOB(((crnn_worker_id *) id)->seen);
    for (;;) {
        unsigned long long job;
        int spins = 0;
        while ((job = CRNN_TICKET_JOB(crnn_load_ticket(&crnn_team.ticket))) == seen) {
            if (++spins < CRNN_TEAM_SPINS) {
                CRNN_CPU_RELAX();
                continue;
            }
            /* counted among the sleepers before it reads the ticket (the
             * caller stores the ticket before it reads the count), so a
             * caller either wakes it or it sees the job; the caller's
             * broadcast zeroes the count */
            crnn_add(&crnn_team.drowsy, 1);
            crnn_mutex_lock(&crnn_team.sleep_lock);
            for (;;) {
                crnn_add(&crnn_team.sleepers, 1);
                crnn_fence();
                if (CRNN_TICKET_JOB(crnn_load_ticket(&crnn_team.ticket)) != seen)
                    break;
                crnn_cond_wait(&crnn_team.wake, &crnn_team.sleep_lock);
                if (CRNN_TICKET_JOB(crnn_load_ticket(&crnn_team.ticket)) != seen)
                    break;
            }
            crnn_mutex_unlock(&crnn_team.sleep_lock);
            crnn_add(&crnn_team.drowsy, -1);
            spins = 0;
        }
        seen = job;
        int part, parts;
        while ((part = crnn_team_claim(job, &parts)) >= 0) {
            /* the claim holds the job: the caller waits for this part
             * before it posts another, so task and arg are this job's */
            crnn_team.task(crnn_team.arg, part, parts);
            crnn_add(&crnn_team.finished, 1);
        }
    }
    return CRNN_THREAD_RETURN;
}

#if !defined(_WIN32)
static void crnn_team_after_fork(void)
{
    /* the child has only the forking thread: no workers, free locks */
    crnn_mutex fresh = CRNN_MUTEX_INIT;
    crnn_cond fresh_cond = CRNN_COND_INIT;
    crnn_team.owner = fresh;
    crnn_team.sleep_lock = fresh;
    crnn_team.wake = fresh_cond;
    crnn_team.started = 0;
    crnn_team.sleepers = 0;
    crnn_team.drowsy = 0;
}
#endif

/* The wanted thread count (1..CRNN_MAX_THREADS), the caller included. */
static void crnn_team_set_threads(int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > CRNN_MAX_THREADS)
        threads = CRNN_MAX_THREADS;
    crnn_mutex_lock(&crnn_team.owner);
    crnn_team.threads = threads;
    crnn_mutex_unlock(&crnn_team.owner);
}

static int crnn_team_threads(void) { return crnn_team.threads; }

/* A copy of the team's counts (reset = 1: then zero them). */
static crnn_team_counts_t crnn_team_counts(int reset)
{
    crnn_mutex_lock(&crnn_team.owner);
    crnn_team_counts_t counts = crnn_team.counts;
    if (reset) {
        crnn_team_counts_t zero = {0, 0, 0, 0};
        crnn_team.counts = zero;
    }
    crnn_mutex_unlock(&crnn_team.owner);
    return counts;
}

/* Start workers up to threads - 1 (the owner lock held).  Returns the
 * team's size: fewer than asked if a thread could not be created. */
static int crnn_team_grow(void)
{
#if !defined(_WIN32)
    if (!crnn_team.forked_hook) {
        pthread_atfork(NULL, NULL, crnn_team_after_fork);
        crnn_team.forked_hook = 1;
    }
#endif
    while (crnn_team.started < crnn_team.threads - 1) {
        int index = crnn_team.started + 1;
        crnn_worker_ids[index].index = index;
        crnn_worker_ids[index].seen = crnn_load_ticket(&crnn_team.ticket);
        if (!crnn_thread_start(crnn_team_worker, &crnn_worker_ids[index]))
            break;
        crnn_team.started++;
    }
    return crnn_team.started + 1;
}

/* After a posted job: was it late?  Either the caller ran every part
 * while the workers were awake (a worker asleep or waking at the post is
 * only slow to wake, not late), or it waited at the join longer than it
 * worked.
 * CRNN_LATE_LIMIT late jobs in a row, or one wait past CRNN_LATE_WAIT_NS,
 * send it solo. */
static void crnn_team_judge(int ran_alone, int waking, long long worked,
                            long long waited, long long now)
{
    if (ran_alone && waking)
        return;
    if (!ran_alone && waited <= worked) {
        crnn_team.late_streak = 0;
        return;
    }
    crnn_team.counts.late_jobs++;
    if (++crnn_team.late_streak < CRNN_LATE_LIMIT && waited <= CRNN_LATE_WAIT_NS)
        return;
    /* late again within one period of the last solo: twice as long */
    long long length = CRNN_SOLO_MIN_NS;
    if (crnn_team.solo_length && now - crnn_team.solo_until < crnn_team.solo_length)
        length = crnn_team.solo_length * 2 < CRNN_SOLO_MAX_NS
                 ? crnn_team.solo_length * 2 : CRNN_SOLO_MAX_NS;
    crnn_team.solo_length = length;
    crnn_team.solo_until = now + length;
    crnn_team.late_streak = 0;
    crnn_team.counts.solo_periods++;
}

/* Post the job to the workers, run part 0 and whatever parts are left,
 * wait for the parts the workers took (the owner lock held). */
static void crnn_team_post(crnn_task task, void *arg, int parts)
{
    unsigned long long job = CRNN_TICKET_JOB(crnn_team.ticket) + 1;
    crnn_team.task = task;
    crnn_team.arg = arg;
    crnn_store_int(&crnn_team.finished, 0);
    crnn_store_ticket(&crnn_team.ticket, CRNN_TICKET(job, parts, 1));
    /* the ticket before the sleepers' count: a worker going to sleep
     * either sees this job or is counted and woken here */
    crnn_fence();
    /* a worker woken a moment ago may take tens of µs to run again: jobs
     * it misses meanwhile are not held against the team */
    int waking = crnn_load_int(&crnn_team.drowsy) > 0;
    if (crnn_load_int(&crnn_team.sleepers) > 0) {
        crnn_mutex_lock(&crnn_team.sleep_lock);
        crnn_store_int(&crnn_team.sleepers, 0);
        crnn_cond_broadcast(&crnn_team.wake);
        crnn_mutex_unlock(&crnn_team.sleep_lock);
    }
    long long start = crnn_now_ns();
    int own = 1, part, claimed_parts;
    task(arg, 0, parts);
    while ((part = crnn_team_claim(job, &claimed_parts)) >= 0) {
        task(arg, part, parts);
        own++;
    }
    long long joined = crnn_now_ns();
    int spins = 0;
    while (crnn_load_int(&crnn_team.finished) < parts - own) {
        if (++spins < CRNN_TEAM_SPINS)
            CRNN_CPU_RELAX();
        else
            crnn_yield();
    }
    long long now = own < parts ? crnn_now_ns() : joined;
    crnn_team.counts.jobs++;
    crnn_team_judge(own == parts, waking, joined - start, now - joined, now);
}

static void crnn_team_run(crnn_task task, void *arg, int parts)
{
    if (parts > 1 && crnn_team.threads > 1 && crnn_mutex_trylock(&crnn_team.owner)) {
        int size = crnn_team_grow();
        if (parts > size)
            parts = size;
        if (parts > 1 && crnn_team.solo_until
                && crnn_now_ns() < crnn_team.solo_until) {
            crnn_team.counts.solo_jobs++;
        } else if (parts > 1) {
            crnn_team_post(task, arg, parts);
            crnn_mutex_unlock(&crnn_team.owner);
            return;
        }
        crnn_mutex_unlock(&crnn_team.owner);
    }
    for (int part = 0; part < parts; part++)
        task(arg, part, parts);
}

#else  /* no threads: a team of one */
typedef struct { long long jobs, solo_jobs, late_jobs, solo_periods; } crnn_team_counts_t;
static void crnn_team_set_threads(int threads) { (void) threads; }
static int crnn_team_threads(void) { return 1; }
static crnn_team_counts_t crnn_team_counts(int reset)
{
    crnn_team_counts_t zero = {0, 0, 0, 0};
    (void) reset;
    return zero;
}
static void crnn_team_run(crnn_task task, void *arg, int parts)
{
    for (int part = 0; part < parts; part++)
        task(arg, part, parts);
}
#endif

#endif
