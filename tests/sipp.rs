//! sipp end to end: 200 PBXs register with digest (REGISTER -> 401 -> REGISTER -> 200) through the
//! real SIPp (Debian package sip-tester; `scripts/test.sh` installs it) against a running sipedge.
//!
//! The scenario is perf/sipp/register.xml (the perf tooling's), or tests/sipp/register.xml while
//! that one does not exist. Every run is bounded: `-m` calls, `-timeout`, and a wall-clock kill.
//! Set SIPEDGE_SKIP_SIPP=1 to skip when sipp cannot be installed.

mod api_common;
mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// One bounded sipp run: `-sf scenario` plus `args`, with stats and errors traced to files.
struct Sipp {
    status: std::process::ExitStatus,
    scenario: PathBuf,
    stdout: String,
    stderr: String,
    stat: String,
    errors: String,
}

impl Sipp {
    fn spawn(work: &Path, scenario: &Path, args: &[String], stat: &Path, errors: &Path) -> Child {
        Command::new("sipp")
            .current_dir(work)
            .arg("-sf")
            .arg(scenario)
            .args(args)
            .args(["-timeout", "30s", "-timeout_error", "-recv_timeout", "5000"])
            .args(["-nostdin", "-trace_stat", "-fd", "1"])
            .arg("-stf")
            .arg(stat)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(errors)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipp")
    }

    fn run(work: &Path, scenario: &Path, args: &[String], stat: &Path, errors: &Path) -> Sipp {
        let child = Sipp::spawn(work, scenario, args, stat, errors);
        Sipp::wait(child, scenario, stat, errors)
    }

    /// Waits at most 60 s (then kills it, by PID: our own child) and gathers its output.
    fn wait(mut child: Child, scenario: &Path, stat: &Path, errors: &Path) -> Sipp {
        // Drain output in threads so sipp never blocks on a full pipe.
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        let out_t = drain(child.stdout.take().map(|o| Box::new(o) as _));
        let err_t = drain(child.stderr.take().map(|e| Box::new(e) as _));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sipp did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Sipp {
            status,
            scenario: scenario.to_path_buf(),
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
            stat: std::fs::read_to_string(stat).unwrap_or_default(),
            errors: std::fs::read_to_string(errors).unwrap_or_default(),
        }
    }

    fn diag(&self, s: &Server) -> String {
        let tail = |t: &str| -> String {
            let n = t.chars().count();
            t.chars().skip(n.saturating_sub(3000)).collect()
        };
        format!(
            "scenario {}\nsipp stdout (tail):\n{}\nsipp stderr:\n{}\nsipp errors (tail):\n{}\nsipedge stderr (tail):\n{}",
            self.scenario.display(),
            tail(&self.stdout),
            self.stderr,
            tail(&self.errors),
            tail(&s.log())
        )
    }
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
    let mut args: Vec<String> = vec!["-inf".into(), users.display().to_string(), target];
    args.extend(
        [
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            &USERS.to_string(),
            "-r",
            "100",
        ]
        .map(String::from),
    );
    let run = Sipp::run(&work, &sf, &args, &stat, &errors);
    let diag = || run.diag(&s);
    let status = run.status;
    assert_eq!(
        status.code(),
        Some(0),
        "sipp exit status {status:?} (0 = all calls successful)\n{}",
        diag()
    );
    let ok = stat_column(&run.stat, "SuccessfulCall(C)");
    let failed = stat_column(&run.stat, "FailedCall(C)");
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

/// A port free on 127.0.0.1 right now (for a sipp that must listen on a known port).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

/// 40 calls (INVITE/100/180/200/ACK/BYE/200 with SDP) from a sipp PBX on a provisioned trunk
/// (127.0.0.2) through sipedge to a sipp core gateway, all answered, one CDR each.
#[test]
fn sipp_calls_through_a_trunk_to_a_sipp_gateway() {
    if std::env::var("SIPEDGE_SKIP_SIPP").as_deref() == Ok("1") {
        eprintln!("SIPEDGE_SKIP_SIPP=1: skipping the sipp test");
        return;
    }
    sipp_trunk_calls(40, 20, 200, 40);
}

/// SPEC §3.8: a call's four media ports go back to the pool when it ends. 10,000 calls through a
/// server whose range holds 50 calls' ports (the test harness gives each server 200 ports):
/// none is refused for lack of ports, and none is left allocated afterwards.
#[test]
fn ten_thousand_calls_leave_no_media_port_behind() {
    if std::env::var("SIPEDGE_SKIP_SIPP").as_deref() == Ok("1") {
        eprintln!("SIPEDGE_SKIP_SIPP=1: skipping the sipp test");
        return;
    }
    let s = sipp_trunk_calls(10_000, 1_000, 0, 30);
    assert_eq!(
        s.metric_or_zero("sipedge_calls_rejected_total{reason=\"media_ports\"}"),
        0.0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metric_or_zero("sipedge_media_sessions_active") > 0.0 {
        assert!(Instant::now() < deadline, "media blocks still allocated");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `calls` calls from a sipp PBX on trunk 127.0.0.2 through sipedge to a sipp gateway, at
/// `rate` calls/s, each held `hold_ms`, at most `limit` at once; every one answered, relayed and
/// recorded (CDR `caller_bye`, 200). Returns the server for further checks.
fn sipp_trunk_calls(calls: u64, rate: u64, hold_ms: u64, limit: u64) -> Server {
    assert!(
        sipp_available(),
        "sipp is not installed: run scripts/test.sh"
    );
    let calls_s = calls.to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gw_port = free_udp_port();
    let s = Server::start(&format!(
        "[core]\ngateways = [{{ uri = \"sip:127.0.0.1:{gw_port}\", priority = 1, weight = 1 }}]\n\
         qualify_s = 0\n[limits]\nmax_cps = 100000.0\n[security]\nsource_rate_limit = 100000\n"
    ));
    let api = api_common::Api::new(s.admin, ADMIN_TOKEN);
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "perf"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/trunks",
        Some(
            json!({"name": "sipp-pbx", "tenant": "perf", "cidrs": ["127.0.0.2/32"],
                    "destination": "sip:127.0.0.2:5060"}),
        ),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230001", "tenant": "perf", "route": {"trunk": "sipp-pbx"}})),
        201,
    );

    let dir = |name: &str| {
        let d = s.dir().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (gw_dir, pbx_dir) = (dir("sipp-gw"), dir("sipp-pbx"));
    let uas_sf = root.join("tests/sipp/call_uas.xml");
    let uas = Sipp::spawn(
        &gw_dir,
        &uas_sf,
        &[
            "-i",
            "127.0.0.1",
            "-p",
            &gw_port.to_string(),
            "-m",
            &calls_s,
        ]
        .map(String::from),
        &gw_dir.join("stat.csv"),
        &gw_dir.join("errors.log"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac_sf = root.join("perf/sipp/call_uac_trunk.xml");
    let uac = Sipp::run(
        &pbx_dir,
        &uac_sf,
        &[
            &s.sip.to_string(),
            "-i",
            "127.0.0.2",
            "-p",
            "0",
            "-s",
            "+4930123456",
            "-m",
            &calls_s,
            "-r",
            &rate.to_string(),
            "-l",
            &limit.to_string(),
            "-d",
            &hold_ms.to_string(),
        ]
        .map(String::from),
        &pbx_dir.join("stat.csv"),
        &pbx_dir.join("errors.log"),
    );
    let uas = Sipp::wait(
        uas,
        &uas_sf,
        &gw_dir.join("stat.csv"),
        &gw_dir.join("errors.log"),
    );
    assert_eq!(uac.status.code(), Some(0), "PBX sipp\n{}", uac.diag(&s));
    assert_eq!(
        stat_column(&uac.stat, "SuccessfulCall(C)"),
        Some(calls),
        "{}",
        uac.diag(&s)
    );
    assert_eq!(uas.status.code(), Some(0), "gateway sipp\n{}", uas.diag(&s));
    assert_eq!(
        s.metric_or_zero("sipedge_calls_total{direction=\"termination\",result=\"answered\"}"),
        calls as f64
    );
    let cdr_path = s.data_dir().join("cdr.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&cdr_path).unwrap_or_default();
        let n = text.lines().count() as u64;
        if n >= calls || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len() as u64, calls);
    assert!(records
        .iter()
        .all(|r| r["end_reason"] == "caller_bye" && r["final_code"] == 200));
    s
}
