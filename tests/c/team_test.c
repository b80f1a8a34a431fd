/* A standalone test of crnn's thread team (src/crnn/_team.h), no Python:
 * built natively and with MinGW (run under Wine) by tools/team_test.sh.
 *
 * - parts write disjoint ranges of an array, many jobs in a row: after each
 *   crnn_team_run every element was written exactly once by that job (the
 *   join), for thread counts 1-16 and part counts 1-16;
 * - two callers at once: one owns the team, the other runs alone, both
 *   correct;
 * - workers made late (each worker's part sleeps): the caller goes solo,
 *   and every job still runs every part once;
 * - the cost model's thread limit against its closed form;
 * - shutdown: back to one thread, then the process exits with the workers
 *   asleep.
 * Prints the handoff time (an empty job at 2 threads) for the cost model.
 * Exit status 0 when every check passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_team.h"

#define LENGTH 4099              /* not a multiple of any part count */

static int failures = 0;
#define CHECK(condition, ...) do { if (!(condition)) { \
    failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct {
    int *values;                 /* LENGTH: each part adds 1 to its range */
    int length;
    int slow_workers;            /* a part run off the calling thread sleeps */
} Job;

#if defined(_MSC_VER)
#define THREAD_LOCAL __declspec(thread)
#else
#define THREAD_LOCAL _Thread_local
#endif
static THREAD_LOCAL int on_caller = 0;

static void sleep_ms(int ms)
{
#if defined(_WIN32)
    Sleep(ms);
#else
    struct timespec pause = {0, ms * 1000000L};
    nanosleep(&pause, NULL);
#endif
}

static void add_one(void *arg, int part, int parts)
{
    Job *job = (Job *) arg;
    int first = (int) ((long long) job->length * part / parts);
    int last = (int) ((long long) job->length * (part + 1) / parts);
    if (job->slow_workers && !on_caller)
        sleep_ms(1);
    for (int i = first; i < last; i++)
        job->values[i] += 1;
}

/* `jobs` runs of `parts` parts at `threads` threads: every element must be
 * exactly the job count after each run (each part once, all joined). */
static void check_jobs(Job *job, int threads, int parts, int jobs)
{
    crnn_team_set_threads(threads);
    memset(job->values, 0, sizeof(int) * (size_t) job->length);
    for (int run = 1; run <= jobs; run++) {
        crnn_team_run(add_one, job, parts);
        for (int i = 0; i < job->length; i++)
            if (job->values[i] != run) {
                CHECK(0, "threads %d parts %d job %d: element %d is %d", threads,
                      parts, run, i, job->values[i]);
                return;
            }
    }
}

static void test_disjoint_ranges(void)
{
    static int values[LENGTH];
    Job job = {values, LENGTH, 0};
    int counts[] = {1, 2, 3, 4, 7, 16};
    for (int t = 0; t < 6; t++)
        for (int p = 0; p < 6; p++)
            check_jobs(&job, counts[t], counts[p], 2000);
    CHECK(crnn_team_threads() == 16, "threads %d, wanted 16", crnn_team_threads());
    crnn_team_set_threads(99);
    CHECK(crnn_team_threads() == CRNN_MAX_THREADS, "not capped at %d", CRNN_MAX_THREADS);
    crnn_team_set_threads(0);
    CHECK(crnn_team_threads() == 1, "threads 0 gives %d, wanted 1", crnn_team_threads());
}

/* a second caller on its own thread while the first runs jobs */
static int second_done = 0, second_failed = 0;
static crnn_thread_result CRNN_THREAD_CALL second_caller(void *unused)
{
    static int values[LENGTH];
    Job job = {values, LENGTH, 0};
    (void) unused;
    for (int run = 1; run <= 3000; run++) {
        crnn_team_run(add_one, &job, 3);
        for (int i = 0; i < LENGTH; i++)
            if (values[i] != run)
                second_failed = 1;
    }
    crnn_store_int(&second_done, 1);
    return CRNN_THREAD_RETURN;
}

static void test_two_callers(void)
{
    static int values[LENGTH];
    Job job = {values, LENGTH, 0};
    crnn_team_set_threads(3);
    memset(values, 0, sizeof(values));
    CHECK(crnn_thread_start(second_caller, NULL), "no second thread");
    int run = 0;
    while (!crnn_load_int(&second_done)) {
        crnn_team_run(add_one, &job, 3);
        run++;
        for (int i = 0; i < LENGTH; i++)
            if (values[i] != run) {
                CHECK(0, "first caller, job %d: element %d is %d", run, i, values[i]);
                return;
            }
    }
    CHECK(!second_failed, "the second caller's results were wrong");
}

/* let any solo period of an earlier test (16 threads on fewer cores can be
 * late) run out */
static void wait_out_solo(void)
{
    sleep_ms((int) (CRNN_SOLO_MAX_NS / 1000000) + 10);
}

static void test_late_workers_send_the_caller_solo(void)
{
    static int values[LENGTH];
    Job job = {values, LENGTH, 1};
    wait_out_solo();
    /* On a loaded machine a worker can be slow to wake for every job of a
     * round (slow to wake is not late): up to five rounds of 300 jobs. */
    crnn_team_counts_t counts = {0, 0, 0, 0};
    for (int round = 0; round < 5 && counts.solo_periods == 0; round++) {
        crnn_team_counts(1);
        check_jobs(&job, 2, 2, 300);
        counts = crnn_team_counts(1);
        printf("late workers: %lld jobs posted, %lld late, %lld solo periods, "
               "%lld jobs solo\n", counts.jobs, counts.late_jobs,
               counts.solo_periods, counts.solo_jobs);
    }
    CHECK(counts.solo_periods >= 1, "never went solo");
    CHECK(counts.solo_jobs > 0, "no job ran solo");
    CHECK(counts.jobs + counts.solo_jobs == 300, "jobs %lld + solo %lld != 300",
          counts.jobs, counts.solo_jobs);
    /* on time again: after the solo period the team is used again */
    job.slow_workers = 0;
    wait_out_solo();
    check_jobs(&job, 2, 2, 200);
    counts = crnn_team_counts(1);
    CHECK(counts.jobs > 0, "the team was not used again after solo");
}

static void test_gain_limit(void)
{
    /* the largest t with t(t-1)/2 <= W/MIN_WORK: t = floor((1 + sqrt(1 + 8W/M)) / 2) */
    double works[] = {0, 1, CRNN_PARALLEL_MIN_WORK - 1.0, CRNN_PARALLEL_MIN_WORK,
                      3.0 * CRNN_PARALLEL_MIN_WORK - 1, 3.0 * CRNN_PARALLEL_MIN_WORK,
                      6.0 * CRNN_PARALLEL_MIN_WORK, 27.9 * CRNN_PARALLEL_MIN_WORK,
                      28.0 * CRNN_PARALLEL_MIN_WORK, 119.0 * CRNN_PARALLEL_MIN_WORK,
                      120.0 * CRNN_PARALLEL_MIN_WORK, 1e15};
    int expected[] = {1, 1, 1, 2, 2, 3, 4, 7, 8, 15, 16, 16};
    for (int i = 0; i < 12; i++) {
        int closed = (int) floor((1 + sqrt(1 + 8 * works[i] / CRNN_PARALLEL_MIN_WORK)) / 2);
        if (closed > CRNN_MAX_THREADS)
            closed = CRNN_MAX_THREADS;
        int limit = crnn_team_gain_limit(works[i], CRNN_MAX_THREADS);
        CHECK(limit == expected[i] && closed == expected[i],
              "gain limit of %g: %d (closed form %d), wanted %d", works[i], limit,
              closed, expected[i]);
        CHECK(crnn_team_gain_limit(works[i], 2) == (expected[i] < 2 ? expected[i] : 2),
              "gain limit of %g at most 2", works[i]);
    }
}

/* a part that keeps its thread busy for *arg nanoseconds */
static void busy(void *arg, int part, int parts)
{
    long long until = crnn_now_ns() + *(long long *) arg;
    (void) part; (void) parts;
    while (crnn_now_ns() < until)
        ;
}

/* the time of `jobs` jobs of two busy parts at `threads` threads, per job */
static double job_time(int threads, long long part_ns, int jobs)
{
    crnn_team_set_threads(threads);
    crnn_team_run(busy, &part_ns, 2);
    long long start = crnn_now_ns();
    for (int i = 0; i < jobs; i++)
        crnn_team_run(busy, &part_ns, 2);
    return (double) (crnn_now_ns() - start) / jobs;
}

/* The cost model's h: a job of two 5 µs parts takes 10 µs on one thread,
 * 5 µs + h on two.  Printed, not checked (the machine may be busy). */
static void print_handoff(void)
{
    wait_out_solo();
    crnn_team_counts(1);
    double one = job_time(1, 5000, 4000), two = job_time(2, 5000, 4000);
    crnn_team_counts_t counts = crnn_team_counts(1);
    printf("handoff: two 5 us parts take %.2f us at 1 thread, %.2f us at 2: "
           "h = %.2f us (%lld of %lld jobs late)\n", one / 1e3, two / 1e3,
           (two - one / 2) / 1e3, counts.late_jobs, counts.jobs);
}

int main(void)
{
    on_caller = 1;
    if (!CRNN_HAVE_TEAM) {
        printf("no thread team on this platform\n");
        return 1;
    }
    test_gain_limit();
    test_disjoint_ranges();
    test_two_callers();
    test_late_workers_send_the_caller_solo();
    print_handoff();
    crnn_team_set_threads(1);          /* shutdown: workers fall asleep */
    static int values[LENGTH];
    Job job = {values, LENGTH, 0};
    crnn_team_counts(1);
    check_jobs(&job, 1, 4, 10);
    CHECK(crnn_team_counts(1).jobs == 0, "one thread still posted jobs");
    printf(failures ? "team test: %d FAILED\n" : "team test: all passed\n", failures);
    return failures != 0;
}
