/* The thread team alone (src/crnn/_team.h), no Python: jobs of two parts
 * that each keep a thread busy for PART_NS nanoseconds, at 2 threads; prints
 * the time per job in microseconds (ideally PART_NS plus one handoff).
 *
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I src/crnn \
 *       benchmarks/team_handoff.c -o /tmp/team_handoff -lpthread
 *   /tmp/team_handoff 5000            # parts of 5 µs, 20000 jobs
 *
 * Build it against another checkout's _team.h (-I that/src/crnn) to compare
 * two teams in alternating runs; -DCRNN_LATE_LIMIT=1000000000
 * -DCRNN_LATE_WAIT_NS=1000000000000LL keeps the team from going solo. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "_team.h"

static long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long) now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void busy(void *arg, int part, int parts)
{
    long long until = now_ns() + *(long long *) arg;
    (void) part;
    (void) parts;
    while (now_ns() < until)
        ;
}

int main(int argc, char **argv)
{
    long long part_ns = argc > 1 ? atoll(argv[1]) : 5000;
    int jobs = argc > 2 ? atoi(argv[2]) : 20000;
    crnn_team_set_threads(2);
    for (int i = 0; i < 1000; i++)          /* workers started and spinning */
        crnn_team_run(busy, &part_ns, 2);
    long long start = now_ns();
    for (int i = 0; i < jobs; i++)
        crnn_team_run(busy, &part_ns, 2);
    printf("%.3f\n", (double) (now_ns() - start) / 1e3 / jobs);
    return 0;
}
