/* Calibration for perf/usertime.py: waits for one byte on stdin (the tracer is attached by
 * then), makes N getppid() calls and nothing else, so whatever user time the eBPF accounting
 * reports per call is its fixed per-syscall attribution error.
 * usage: syscall_loop N < trigger */
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    char c;
    if (read(0, &c, 1) != 1) return 1;
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    return 0;
}
