"""User-mode and total CPU time of a set of processes, measured exactly with eBPF (bpftrace).

Why: /proc's utime/stime split is sampled by the timer tick, and on a VM the tick is delivered
on a VM entry, which mostly follows an exit the guest kernel caused: ticks land in kernel mode
and user time is under-counted (Kamailio measured "0.08 µs user" per registration at 24k/s).
Here a thread's user time is the on-CPU time between leaving a syscall and entering the next
one: `raw_syscalls:sys_exit` starts a user-mode interval, `sys_enter` ends it, and
`sched:sched_switch` pauses it while the thread is preempted. Interrupts taken in user mode are
counted as user time, as the kernel's own precise accounting would (small: split placement
keeps the generator's network work off the system's CPU).

The probes sit inside the kernel's entry and exit paths, and the slow paths they force plus the
probes' own map updates count as user time: a fixed amount per syscall, ~220 ns on the 2-vCPU
VM of perf/RESULTS.md. Each measurement calibrates it in the same tracing session: a process
that makes nothing but `getppid` calls (perf/raw/syscall_loop.c) is traced with the watched
ones before the step, and its user time per syscall is the bias. `user_s` is the raw figure,
`user_corrected_s` subtracts bias x the watched processes' syscalls.

Total CPU the same way: on-CPU time from `sched_switch` to `sched_switch` of the watched
threads (`oncpu_s`). /proc's utime+stime is tick-sampled (CONFIG_TICK_CPU_ACCOUNTING, 250 Hz on
the VM of perf/RESULTS.md), and it overcharges a process that sleeps on timers: a loop of 200 µs
`clock_nanosleep`s measures 21 CPU-µs per sleep by getrusage and 7.7 by `sched_switch`
(RESULTS.md, session 12). The probes add their own cost to every syscall; the calibrator's
on-CPU time per call, less its untraced time per call (it times its loop, run once before
tracing on the idle machine), is that cost, and `oncpu_corrected_s` subtracts it x the watched
processes' syscalls.

usage (from bench.py): t = UserTime(pids); t.start(); ...; t.stop() -> dict (see stop)
"""
import hashlib
import os
import signal
import subprocess
import tempfile
import time

SCRIPT = r"""
tracepoint:raw_syscalls:sys_exit /WATCH/ { @u0[tid] = nsecs; }
tracepoint:raw_syscalls:sys_enter /WATCH/ {
  $t = nsecs;
  $s = @u0[tid];
  if ($s != 0) { @user[pid == CAL] = sum($t - $s); @by_thread[comm] = sum($t - $s); delete(@u0[tid]); }
  @syscalls[pid == CAL] = count();
}
tracepoint:sched:sched_switch /WATCH/ {
  // preempted in user mode: pause the interval until the thread runs again
  if (@u0[args->prev_pid] != 0) {
    $d = nsecs - @u0[args->prev_pid];
    @user[pid == CAL] = sum($d); @by_thread[comm] = sum($d); delete(@u0[args->prev_pid]);
    @paused[args->prev_pid] = 1;
  }
}
tracepoint:sched:sched_switch /@paused[args->next_pid] == 1/ {
  @u0[args->next_pid] = nsecs; delete(@paused[args->next_pid]);
}
tracepoint:sched:sched_switch /WATCH/ {
  $in = @in[tid];
  if ($in != 0) { @oncpu[pid == CAL] = sum(nsecs - $in); delete(@in[tid]); }
}
tracepoint:sched:sched_switch /NEXT_WATCH/ { @in[args->next_pid] = nsecs; }
END { clear(@u0); clear(@paused); clear(@in); }
"""


def tids(pids):
    """Every thread of these processes."""
    out = []
    for p in pids:
        try:
            out += [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            out.append(p)
    return out


def tgids(roots):
    """The roots and all their descendant processes (Kamailio forks its workers)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        kids.setdefault(int(s[s.rfind(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return sorted(set(out))


CALIBRATION_CALLS = 200_000


def calibrator():
    """perf/raw/syscall_loop.c built once into /tmp (by content hash)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw", "syscall_loop.c")
    digest = hashlib.sha256(open(src, "rb").read()).hexdigest()[:12]
    exe = f"/tmp/sipedge-syscall-loop-{digest}"
    if not os.path.exists(exe):
        subprocess.run(["gcc", "-O2", "-o", exe + ".tmp", src], check=True)
        os.replace(exe + ".tmp", exe)
    return exe


TRACEFS = "/sys/kernel/tracing"


def ensure_tracefs():
    """bpftrace attaches tracepoints through tracefs; a freshly booted machine may not have it
    mounted (the probes then fail with "tracepoint not found"). Mount it if we can."""
    if os.path.exists(os.path.join(TRACEFS, "available_events")):
        return
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True)


class UserTime:
    def __init__(self, roots):
        self.pids = tgids(roots)
        self.proc = None
        self.err = ""

    def start(self):
        ensure_tracefs()
        untraced = subprocess.run([calibrator(), str(CALIBRATION_CALLS)], input=b"x",
                                  capture_output=True, timeout=60)
        self.untraced_ns = int(untraced.stdout.split()[0]) / CALIBRATION_CALLS
        self.cal = subprocess.Popen([calibrator(), str(CALIBRATION_CALLS)], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL)
        watch = " || ".join(f"pid == {p}" for p in self.pids + [self.cal.pid])
        next_watch = " || ".join(f"args->next_pid == {t}" for t in tids(self.pids + [self.cal.pid]))
        self.script = tempfile.NamedTemporaryFile("w", suffix=".bt", delete=False)
        self.script.write(SCRIPT.replace("NEXT_WATCH", next_watch).replace("WATCH", watch)
                          .replace("CAL", str(self.cal.pid)))
        self.script.close()
        self.proc = subprocess.Popen(["bpftrace", self.script.name], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        # bpftrace prints "Attaching N probes..." once the probes are in (after warnings such
        # as a failed RLIMIT_MEMLOCK raise, harmless on kernels that account BPF memory by cgroup)
        for _ in range(20):
            line = self.proc.stdout.readline()
            if not line or "Attaching" in line:
                break
            self.err = line.strip()[:200]
        time.sleep(0.2)
        self.cal.communicate(b"x", timeout=60)

    def stop(self):
        """{"user_s", "syscalls", "bias_ns", "user_corrected_s", "by_thread_s", "oncpu_s",
        "probe_ns", "oncpu_corrected_s"} of the watched processes (by_thread_s: uncorrected, by
        thread name), or {"usertime_error": str}."""
        if self.proc is None:
            return {"usertime_error": "not started"}
        self.proc.send_signal(signal.SIGINT)
        try:
            out = self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return {"usertime_error": "bpftrace did not stop"}
        finally:
            os.unlink(self.script.name)
        vals = {}  # "user[0]" (watched) / "user[1]" (calibrator), "syscalls[..]" -> int
        threads = {}  # thread name (comm) -> user ns, uncorrected
        for line in out.splitlines():
            if line.startswith("@") and ":" in line:
                k, v = line.rsplit(":", 1)
                try:
                    n = int(v.strip())
                except ValueError:
                    continue
                if k.startswith("@by_thread["):
                    threads[k[len("@by_thread["):-1]] = n
                else:
                    vals[k.strip("@ ")] = n
        if not vals.get("syscalls[1]"):
            return {"usertime_error": (self.err or out.strip())[:200]}
        bias = vals.get("user[1]", 0) / vals["syscalls[1]"]
        user, calls = vals.get("user[0]", 0), vals.get("syscalls[0]", 0)
        threads.pop(os.path.basename(calibrator())[:15], None)
        oncpu = vals.get("oncpu[0]", 0)
        probe = max(vals.get("oncpu[1]", 0) / vals["syscalls[1]"] - self.untraced_ns, 0)
        return {"user_s": user / 1e9, "syscalls": calls, "bias_ns": bias,
                "user_corrected_s": max(user - bias * calls, 0) / 1e9,
                "oncpu_s": oncpu / 1e9, "probe_ns": probe,
                "oncpu_corrected_s": max(oncpu - probe * calls, 0) / 1e9,
                "by_thread_s": {k: v / 1e9 for k, v in sorted(threads.items(), key=lambda kv: -kv[1])}}
