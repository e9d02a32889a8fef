//! The shell and Python scripts of scripts/ and perf/ at least parse.
//!
//! Most of them drive minutes-long load runs that CI cannot afford (perf/README.md), so a syntax
//! error in one would otherwise surface only when somebody next measures. `bash -n` and
//! `py_compile` read each file without running it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// Runs `tool args.. file`; Python writes its bytecode under `cache`, not into the tree.
fn parses(tool: &str, args: &[&str], file: &Path, cache: &Path) {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .env("PYTHONPYCACHEPREFIX", cache)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{} does not parse:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shell_scripts_parse() {
    let scripts: Vec<PathBuf> = ["scripts", "perf"]
        .iter()
        .flat_map(|d| files(d, "sh"))
        .collect();
    // The ones the closing notes and README name must be among them.
    for name in [
        "test.sh",
        "build-pgo.sh",
        "register.sh",
        "media.sh",
        "xsk_probe.sh",
    ] {
        assert!(
            scripts.iter().any(|p| p.ends_with(name)),
            "{name} not found"
        );
    }
    let cache = tempfile::tempdir().expect("tempdir");
    for s in &scripts {
        parses("bash", &["-n"], s, cache.path());
    }
}

#[test]
fn python_scripts_parse() {
    let scripts = files("perf", "py");
    assert!(scripts.iter().any(|p| p.ends_with("usertime.py")));
    let cache = tempfile::tempdir().expect("tempdir");
    for s in &scripts {
        parses("python3", &["-m", "py_compile"], s, cache.path());
    }
}
