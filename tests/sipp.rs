//! sipp end to end: 200 PBXs register with digest (REGISTER -> 401 -> REGISTER -> 200) through the
//! real SIPp (Debian package sip-tester; `scripts/test.sh` installs it) against a running sipedge.
//!
//! The scenario is perf/sipp/register.xml (the perf tooling's), or tests/sipp/register.xml while
//! that one does not exist. Every run is bounded: `-m` calls, `-timeout`, and a wall-clock kill.
//! Set SIPEDGE_SKIP_SIPP=1 to skip when sipp cannot be installed.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USERS: usize = 200;
const REALM: &str = "sbc.test";

fn sipp_available() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn scenario() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let perf = root.join("perf/sipp/register.xml");
    if perf.exists() {
        perf
    } else {
        root.join("tests/sipp/register.xml")
    }
}

/// The last value of a column of sipp's `-trace_stat` CSV (`;`-separated, header line first).
fn stat_column(csv: &str, column: &str) -> Option<u64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let idx = header.iter().position(|h| h.trim() == column)?;
    let last = lines.next_back()?;
    last.split(';').nth(idx)?.trim().parse().ok()
}

#[test]
fn sipp_registers_200_users_with_digest() {
    if std::env::var("SIPEDGE_SKIP_SIPP").as_deref() == Ok("1") {
        eprintln!("SIPEDGE_SKIP_SIPP=1: skipping the sipp test");
        return;
    }
    assert!(
        sipp_available(),
        "sipp is not installed: run scripts/test.sh (installs the Debian package sip-tester), \
         or set SIPEDGE_SKIP_SIPP=1 to skip this test"
    );

    let mut s = Server::prepare(&format!(
        "[registrar]\nrealm = \"{REALM}\"\n[security]\nsource_rate_limit = 100000\n"
    ));
    assert_eq!(s.realm, REALM);
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..USERS {
        let user = format!("pbx{i:04}");
        let pw = format!("pw-{i:04}-{}", rand_token());
        s.add_credential(&user, &pw, None);
        csv.push_str(&format!(
            "{user};[authentication username={user} password={pw}]\n"
        ));
    }
    s.launch();

    let work = s.dir().join("sipp");
    std::fs::create_dir_all(&work).unwrap();
    let users = work.join("users.csv");
    std::fs::write(&users, csv).unwrap();
    let stat = work.join("stat.csv");
    let errors = work.join("errors.log");
    let target = s.sip.to_string();
    let sf = scenario();
    let mut child = Command::new("sipp")
        .current_dir(&work)
        .arg("-sf")
        .arg(&sf)
        .arg("-inf")
        .arg(&users)
        .arg(&target)
        .args(["-i", "127.0.0.1", "-p", "0"])
        .args(["-m", &USERS.to_string(), "-r", "100"])
        .args(["-timeout", "30s", "-timeout_error", "-recv_timeout", "5000"])
        .args(["-nostdin", "-trace_stat", "-fd", "1"])
        .arg("-stf")
        .arg(&stat)
        .arg("-trace_err")
        .arg("-error_file")
        .arg(&errors)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sipp");
    // Drain output in threads so sipp never blocks on a full pipe.
    let out_t = {
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut v);
            v
        })
    };
    let err_t = {
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut v);
            v
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // by PID: our own child
            let _ = child.wait();
            panic!("sipp did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).to_string();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).to_string();
    let stat_text = std::fs::read_to_string(&stat).unwrap_or_default();
    let err_text = std::fs::read_to_string(&errors).unwrap_or_default();
    let diag = || {
        let tail: String = err_text
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "scenario {}\nsipp stdout (tail):\n{}\nsipp stderr:\n{}\nsipp errors (tail):\n{}\nsipedge stderr (tail):\n{}",
            sf.display(),
            stdout.chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>(),
            stderr,
            tail,
            s.log().chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>()
        )
    };

    assert_eq!(
        status.code(),
        Some(0),
        "sipp exit status {status:?} (0 = all calls successful)\n{}",
        diag()
    );
    let ok = stat_column(&stat_text, "SuccessfulCall(C)");
    let failed = stat_column(&stat_text, "FailedCall(C)");
    assert_eq!(
        ok,
        Some(USERS as u64),
        "successful calls per sipp's stats\n{}",
        diag()
    );
    assert_eq!(failed, Some(0), "failed calls per sipp's stats\n{}", diag());

    assert_eq!(
        s.metric_or_zero("sipedge_registrations_active"),
        USERS as f64,
        "{}",
        diag()
    );
    assert!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"REGISTER\"}") >= (2 * USERS) as f64
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        0.0
    );
}

#[test]
fn stat_column_reads_the_last_line() {
    let csv = "StartTime;SuccessfulCall(P);SuccessfulCall(C);FailedCall(C);\n\
               x;1;1;0;\n\
               y;5;200;0;\n";
    assert_eq!(stat_column(csv, "SuccessfulCall(C)"), Some(200));
    assert_eq!(stat_column(csv, "FailedCall(C)"), Some(0));
}
