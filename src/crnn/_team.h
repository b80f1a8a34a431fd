/* A small team of worker threads for the packed recurrent GEMM.
 *
 * The recurrent product of one time step is too short (10-300 µs) for a
 * thread pool that sleeps between calls, so the workers spin for a while
 * (about a third of a millisecond) after each job before they sleep on a
 * condition variable: through a time loop they stay awake, after it they
 * go quiet and leave the cores to BLAS.  crnn_team_run(task, arg, parts)
 * runs task(arg, part, parts) for every part, part 0 on the caller, and
 * returns when all are done.  One caller at a time owns the team; another
 * thread calling meanwhile (or a team of one) runs every part itself, so
 * results never depend on the thread count (each part writes its own
 * output columns).
 *
 * POSIX threads only; elsewhere the team is always one thread.  After a
 * fork() the child starts with no workers (pthread_atfork).
 */
#ifndef CRNN_TEAM_H
#define CRNN_TEAM_H

#define CRNN_MAX_THREADS 16
/* jobs smaller than this (multiply-adds) stay on one thread (_parallel.pyx
 * team_parts) */
#define CRNN_PARALLEL_MIN_WORK (1 << 18)

typedef void (*crnn_task)(void *arg, int part, int parts);

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#define CRNN_HAVE_TEAM 1

#if defined(__x86_64__) || defined(__i386__)
#define CRNN_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CRNN_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CRNN_CPU_RELAX() ((void) 0)
#endif

/* pause instructions a worker spins through before it sleeps */
#define CRNN_TEAM_SPINS (1 << 14)

static struct {
    pthread_mutex_t owner;       /* held by the caller running a job */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    int threads;                 /* wanted, the caller included */
    int started;                 /* workers running */
    int forked_hook;             /* pthread_atfork registered */
    crnn_task task;
    void *arg;
    int parts;
    unsigned long posted;        /* job number (atomic) */
    int remaining;               /* workers yet to finish the job (atomic) */
} crnn_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
               PTHREAD_COND_INITIALIZER, 1, 0, 0, 0, 0, 0, 0, 0};

/* a worker's number and the last job it has seen (set before it starts) */
typedef struct { int index; unsigned long seen; } crnn_worker_id;
static crnn_worker_id crnn_worker_ids[CRNN_MAX_THREADS];

static void *crnn_team_worker(void *id)
{
    int index = ((crnn_worker_id *) id)->index;
    unsigned long seen = ((crnn_worker_id *) id)->seen;
    for (;;) {
        unsigned long job;
        int spins = 0;
        while ((job = __atomic_load_n(&crnn_team.posted, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < CRNN_TEAM_SPINS) {
                CRNN_CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&crnn_team.sleep_lock);
            while (__atomic_load_n(&crnn_team.posted, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&crnn_team.wake, &crnn_team.sleep_lock);
            pthread_mutex_unlock(&crnn_team.sleep_lock);
            spins = 0;
        }
        seen = job;
        if (index < crnn_team.parts)
            crnn_team.task(crnn_team.arg, index, crnn_team.parts);
        __atomic_sub_fetch(&crnn_team.remaining, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void crnn_team_after_fork(void)
{
    /* the child has only the forking thread: no workers, free locks */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    crnn_team.owner = fresh;
    crnn_team.sleep_lock = fresh;
    crnn_team.wake = fresh_cond;
    crnn_team.started = 0;
}

/* The wanted thread count (1..CRNN_MAX_THREADS), the caller included. */
static void crnn_team_set_threads(int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > CRNN_MAX_THREADS)
        threads = CRNN_MAX_THREADS;
    pthread_mutex_lock(&crnn_team.owner);
    crnn_team.threads = threads;
    pthread_mutex_unlock(&crnn_team.owner);
}

static int crnn_team_threads(void) { return crnn_team.threads; }

/* Start workers up to threads - 1 (the owner lock held).  Returns the
 * team's size: fewer than asked if a thread could not be created. */
static int crnn_team_grow(void)
{
    if (!crnn_team.forked_hook) {
        pthread_atfork(NULL, NULL, crnn_team_after_fork);
        crnn_team.forked_hook = 1;
    }
    while (crnn_team.started < crnn_team.threads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        int index = crnn_team.started + 1;
        crnn_worker_ids[index].index = index;
        crnn_worker_ids[index].seen = __atomic_load_n(&crnn_team.posted, __ATOMIC_ACQUIRE);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, crnn_team_worker,
                                    &crnn_worker_ids[index]);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        crnn_team.started++;
    }
    return crnn_team.started + 1;
}

static void crnn_team_run(crnn_task task, void *arg, int parts)
{
    if (parts > 1 && crnn_team.threads > 1
            && pthread_mutex_trylock(&crnn_team.owner) == 0) {
        int size = crnn_team_grow();
        if (parts > size)
            parts = size;
        if (parts > 1) {
            crnn_team.task = task;
            crnn_team.arg = arg;
            crnn_team.parts = parts;
            __atomic_store_n(&crnn_team.remaining, crnn_team.started, __ATOMIC_RELAXED);
            __atomic_add_fetch(&crnn_team.posted, 1, __ATOMIC_RELEASE);
            pthread_mutex_lock(&crnn_team.sleep_lock);
            pthread_cond_broadcast(&crnn_team.wake);
            pthread_mutex_unlock(&crnn_team.sleep_lock);
            task(arg, 0, parts);
            int spins = 0;
            while (__atomic_load_n(&crnn_team.remaining, __ATOMIC_ACQUIRE) > 0) {
                if (++spins < CRNN_TEAM_SPINS)
                    CRNN_CPU_RELAX();
                else
                    sched_yield();
            }
            pthread_mutex_unlock(&crnn_team.owner);
            return;
        }
        pthread_mutex_unlock(&crnn_team.owner);
    }
    for (int part = 0; part < parts; part++)
        task(arg, part, parts);
}

#else  /* no POSIX threads: a team of one */
#define CRNN_HAVE_TEAM 0
static void crnn_team_set_threads(int threads) { (void) threads; }
static int crnn_team_threads(void) { return 1; }
static void crnn_team_run(crnn_task task, void *arg, int parts)
{
    for (int part = 0; part < parts; part++)
        task(arg, part, parts);
}
#endif

#endif
