//! Runs the built `sipedge` binary: hash, check-config and offline credential provisioning.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sipedge(dir: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run sipedge");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// Exit 1 and exactly one stderr line starting `error: ` that contains `needle`; no panic.
fn assert_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "stdout: {} stderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.starts_with("error: "), "{:?}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "{needle:?} not in {:?}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
        "{:?}",
        run.stderr
    );
}

/// A temp dir with `sipedge.toml` whose store lives in `data/`.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipedge.toml");
    std::fs::write(
        &config,
        "[registrar]\nrealm = \"sipedge.local\"\n\n[store]\npath = \"data/sipedge.db\"\n",
    )
    .unwrap();
    (dir, config)
}

fn creds(dir: &Path, config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["credentials", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    sipedge(dir, &all)
}

#[test]
fn hash_prints_four_lines() {
    let dir = tempfile::tempdir().unwrap();
    // Values from python3 hashlib / md5sum over "alice:sipedge.local:secretpass" and
    // "alice@sipedge.local:sipedge.local:secretpass".
    let run = sipedge(
        dir.path(),
        &["hash", "alice", "sipedge.local", "secretpass"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "HA1 7d09fdf85d77e265892b5233ea856448\n\
         HA1B 79dfed047d61f523159605ad7b777fe4\n\
         HA1-SHA256 2432b47e0779277b440deca7a123108da592445552cac50c60761ada8077da33\n\
         HA1B-SHA256 29e7f625f23026e10743089b0ff4833b8fe6bddf90c2fb4f76d7f6efbe94497a\n"
    );
    // The realm is used exactly as given; the password may hold spaces and colons.
    let run = sipedge(dir.path(), &["hash", "bob", "Example.COM", "p@ss w0rd:x"]);
    assert_eq!(
        run.stdout,
        "HA1 6ea73b471bf4f758d0c07070ce78af75\n\
         HA1B aa017bad61634bf5a503a83d29e77dd5\n\
         HA1-SHA256 9dffaed4d748d4f84726a9c6c6fd87b1f81ba50510593f55bb0c3455b005fd64\n\
         HA1B-SHA256 fd3da3ecc0dad1a9acc566ba252b263e27ce5ac429fecc6f7bbb56d7b283793b\n"
    );
}

#[test]
fn hash_accepts_a_password_starting_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    // python3: hashlib.md5(b"u:r:-secret-").hexdigest()
    let run = sipedge(dir.path(), &["hash", "u", "r", "-secret-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        "HA1 b5d3362580ad9ab0918f223fdf688343"
    );
}

#[test]
fn check_config_ok_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write(
        "good.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:[::1]:5060\"]\nworkers = 2\n",
    );
    let run = sipedge(dir.path(), &["check-config", &good]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "ok\n", "")
    );
    let empty = write("empty.toml", "");
    assert_eq!(
        sipedge(dir.path(), &["check-config", &empty]).stdout,
        "ok\n"
    );

    let bad = write(
        "bad.toml",
        "[registrar]\nmin_expires_s = 600\nmax_expires_s = 300\n",
    );
    assert_error(
        &sipedge(dir.path(), &["check-config", &bad]),
        "error: registrar.min_expires_s: ",
    );
    let unknown = write("unknown.toml", "[registrar]\nbogus = 1\n");
    let run = sipedge(dir.path(), &["check-config", &unknown]);
    assert_error(&run, "registrar.bogus");
    assert_eq!(run.stderr, "error: registrar.bogus: unknown key\n");
    let wrong = write("wrong.toml", "[sip]\nworkers = \"many\"\n");
    assert_error(
        &sipedge(dir.path(), &["check-config", &wrong]),
        "error: sip.workers: expected an integer",
    );
    let status = write("status.toml", "[registrar]\nthrottle_status = 404\n");
    assert_error(
        &sipedge(dir.path(), &["check-config", &status]),
        "registrar.throttle_status",
    );
    let syntax = write("syntax.toml", "[sip\nworkers = 1\n");
    assert_error(
        &sipedge(dir.path(), &["check-config", &syntax]),
        "invalid TOML at line 1",
    );
    assert_error(
        &sipedge(dir.path(), &["check-config", "missing.toml"]),
        "missing.toml",
    );
}

#[test]
fn credentials_add_list_remove() {
    let (dir, config) = workdir();
    let dir = dir.path();

    let run = creds(
        dir,
        &config,
        &["add", "--username", "alice", "--password", "secretpass"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "added alice@sipedge.local MD5,SHA-256\n");
    assert!(!run.stdout.contains("secretpass"));
    assert!(dir.join("data/sipedge.db").exists());

    // Seed 003: MD5 hashes only.
    let run = creds(
        dir,
        &config,
        &[
            "add",
            "--username",
            "bob",
            "--ha1",
            "7D09FDF85D77E265892B5233EA856448",
            "--ha1b",
            "79dfed047d61f523159605ad7b777fe4",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "added bob@sipedge.local MD5\n");

    assert_error(
        &creds(
            dir,
            &config,
            &["add", "--username", "alice", "--password", "otherpass1"],
        ),
        "already exists",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &["add", "--username", "a@b", "--password", "secretpass"],
        ),
        "error: username: ",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &["add", "--username", "carol", "--password", "short"],
        ),
        "error: password: ",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &[
                "add",
                "--username",
                "carol",
                "--ha1",
                "xyz",
                "--ha1b",
                "abc",
            ],
        ),
        "error: ha1: ",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &[
                "add",
                "--username",
                "carol",
                "--password",
                "secretpass",
                "--realm",
                "nope.example",
            ],
        ),
        "error: realm: ",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &[
                "add",
                "--username",
                "carol",
                "--password",
                "secretpass",
                "--tenant",
                "acme",
            ],
        ),
        "error: tenant: ",
    );

    // A second realm, with a credential in it.
    let run = sipedge(
        dir,
        &[
            "realms",
            "--config",
            config.to_str().unwrap(),
            "add",
            "Other.Example",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = sipedge(
        dir,
        &[
            "tenants",
            "--config",
            config.to_str().unwrap(),
            "add",
            "acme",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = creds(
        dir,
        &config,
        &[
            "add",
            "--username",
            "carol",
            "--password",
            "secretpass",
            "--realm",
            "other.example",
            "--tenant",
            "acme",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    let run = creds(dir, &config, &["list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "carol@other.example acme MD5,SHA-256\nalice@sipedge.local - MD5,SHA-256\nbob@sipedge.local - MD5\n");
    let run = creds(dir, &config, &["list", "--realm", "sipedge.local"]);
    assert_eq!(
        run.stdout,
        "alice@sipedge.local - MD5,SHA-256\nbob@sipedge.local - MD5\n"
    );
    let run = creds(
        dir,
        &config,
        &["list", "--realm", "OTHER.example", "--json"],
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["username"], "carol");
    assert_eq!(json[0]["tenant"], "acme");
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_error(
        &creds(dir, &config, &["list", "--realm", "nope.example"]),
        "realm nope.example",
    );

    let run = creds(dir, &config, &["remove", "--username", "alice"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "removed alice@sipedge.local\n")
    );
    assert_error(
        &creds(dir, &config, &["remove", "--username", "alice"]),
        "credential alice@sipedge.local not found",
    );
    assert_error(
        &creds(
            dir,
            &config,
            &["remove", "--username", "carol", "--realm", "nope.example"],
        ),
        "nope.example",
    );
    let run = creds(
        dir,
        &config,
        &["remove", "--username", "carol", "--realm", "other.example"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        creds(dir, &config, &["list"]).stdout,
        "bob@sipedge.local - MD5\n"
    );

    // The store never holds the password, in any of its files.
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"secretpass"));
    }
}

#[test]
fn generated_password_is_printed_once() {
    let (dir, config) = workdir();
    let run = creds(dir.path(), &config, &["add"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    let user = lines[0]
        .strip_prefix("added ")
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let password = lines[1].strip_prefix("password ").unwrap();
    assert!(password.len() >= 20);
    let list = creds(dir.path(), &config, &["list"]).stdout;
    assert!(
        list.starts_with(&format!("{user}@sipedge.local ")),
        "{list}"
    );
    assert!(!list.contains(password));
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(password.len())
            .any(|w| w == password.as_bytes()));
    }
    let run = creds(
        dir.path(),
        &config,
        &["add", "--username", "dave", "--json"],
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["username"], "dave");
    assert!(json["password"].as_str().unwrap().len() >= 20);
}

#[test]
fn credentials_use_default_location_and_report_bad_config() {
    // Without --config: ./sipedge.toml in the working directory.
    let (dir, _config) = workdir();
    let run = sipedge(
        dir.path(),
        &[
            "credentials",
            "add",
            "--username",
            "erin",
            "--password",
            "secretpass",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(dir.path().join("data/sipedge.db").exists());
    // Neither file: built-in defaults (sipedge-data/sipedge.db).
    let bare = tempfile::tempdir().unwrap();
    let run = sipedge(bare.path(), &["credentials", "list"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);
    assert!(bare.path().join("sipedge-data/sipedge.db").exists());
    // A bad config is reported naming the key.
    let cfg = bare.path().join("bad.toml");
    std::fs::write(&cfg, "[store]\npaht = \"x.db\"\n").unwrap();
    assert_error(
        &sipedge(
            bare.path(),
            &["credentials", "list", "--config", cfg.to_str().unwrap()],
        ),
        "store.paht: unknown key",
    );
    assert_error(
        &sipedge(bare.path(), &["run", "--config", cfg.to_str().unwrap()]),
        "store.paht: unknown key",
    );
}

/// SPEC §1: a bad config, a port in use or an unwritable data directory end `run` at start with
/// exit 1 and one `error:` line naming the cause, with nothing printed before it (at the default
/// log level) and no panic.
#[test]
fn run_fails_at_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();

    write("bad.toml", "[sip]\nworkerz = 2\n");
    let r = sipedge(dir.path(), &["run", "--config", "bad.toml"]);
    assert_error(&r, "sip.workerz");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);

    // A port someone else holds (SO_REUSEPORT must not silently share it).
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    write(
        "busy.toml",
        &format!("[sip]\nlisten = [\"udp:127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"busy/sipedge.db\"\n"),
    );
    let r = sipedge(dir.path(), &["run", "--config", "busy.toml"]);
    assert_error(&r, &format!("127.0.0.1:{port}"));
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);

    // The data directory cannot be created (its parent is a regular file).
    write("not-a-dir", "x");
    write(
        "ro.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"not-a-dir/data/sipedge.db\"\n",
    );
    let r = sipedge(dir.path(), &["run", "--config", "ro.toml"]);
    assert_error(&r, "not-a-dir/data/sipedge.db");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);

    // An AF_XDP interface that does not exist: a typo, reported before any media port is taken.
    write(
        "xdp.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"xdp/sipedge.db\"\n[media]\nxdp_interface = \"nosuch0\"\n",
    );
    let r = sipedge(dir.path(), &["run", "--config", "xdp.toml"]);
    assert_error(&r, "media.xdp_interface: no interface \"nosuch0\"");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);
}
