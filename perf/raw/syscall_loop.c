/* Calibration for perf/usertime.py: waits for one byte on stdin (the tracer is attached by
 * then), makes N getppid() calls and nothing else, so whatever user time the eBPF accounting
 * reports per call is its fixed per-syscall attribution error. Prints the loop's wall time in
 * ns: run untraced on an idle CPU that is its CPU time, and the traced run's on-CPU time per
 * call minus it is what the probes add to each syscall.
 * usage: syscall_loop N < trigger */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    char c;
    struct timespec t0, t1;
    if (read(0, &c, 1) != 1) return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
