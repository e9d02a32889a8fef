/// mimalloc: per-thread free lists without glibc's arena trimming (`mprotect`/`madvise` calls
/// per call under load, seen with `strace -c` in perf/calls.sh runs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sipedge::cli::main()
}
