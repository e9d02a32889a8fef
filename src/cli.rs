//! The command line (SPEC §1): `run`, `check-config`, `hash`, and offline provisioning of
//! credentials, realms and tenants straight into the store.
//!
//! Owns: argument parsing and how results and errors are printed. Errors are reported once,
//! here, as one line on stderr starting `error: `, with exit status 1; never a panic. The
//! validation itself lives in [`crate::config`] and [`crate::store::validate`], shared with the API.

use crate::config::Config;
use crate::sip::digest::{self, Algorithm};
use crate::store::{Credential, NewCredential, Store};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sipedge",
    version,
    about = "Carrier-edge SIP Session Border Controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SBC.
    Run {
        /// Config file; default: ./sipedge.toml if present, else built-in defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints `ok`, or the key and the problem.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print HA1, HA1B and their SHA-256 forms for a username, realm and password.
    Hash {
        username: String,
        realm: String,
        /// May start with `-`.
        #[arg(allow_hyphen_values = true)]
        password: String,
    },
    /// Provision credentials in the store.
    Credentials {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: CredentialsAction,
    },
    /// Provision realms in the store.
    Realms {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: NamedAction,
    },
    /// Provision tenants in the store.
    Tenants {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: NamedAction,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Config file naming the store (store.path) and the default realm (registrar.realm).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CredentialsAction {
    /// Add a credential (a missing username or password is generated and printed once).
    Add {
        #[arg(long)]
        username: Option<String>,
        #[arg(long, conflicts_with_all = ["ha1", "ha1b"])]
        password: Option<String>,
        /// md5(user:realm:pass), 32 hex digits; requires --ha1b.
        #[arg(long, requires = "ha1b")]
        ha1: Option<String>,
        /// md5(user@realm:realm:pass), 32 hex digits; requires --ha1.
        #[arg(long, requires = "ha1")]
        ha1b: Option<String>,
        #[arg(long)]
        realm: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        max_calls: Option<u32>,
        #[arg(long)]
        max_cps: Option<f64>,
        /// Comma-separated codec names, e.g. PCMU,PCMA,telephone-event.
        #[arg(long, value_delimiter = ',')]
        codecs: Option<Vec<String>>,
        /// Comma-separated E.164 caller ids the credential may present.
        #[arg(long, value_delimiter = ',')]
        allowed_cli: Option<Vec<String>>,
        /// Print the created credential as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List credentials: `username@realm tenant algorithms`, one per line (`-` for no tenant).
    List {
        /// Only this realm (it must exist).
        #[arg(long)]
        realm: Option<String>,
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Remove a credential and its bindings.
    Remove {
        #[arg(long)]
        username: String,
        #[arg(long)]
        realm: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NamedAction {
    Add { name: String },
    List,
    Remove { name: String },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to stderr with status 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line; a cause already quoted by its parent is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = load_config(config.as_deref())?;
            init_tracing();
            crate::runtime::run(config)
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("ok");
            Ok(())
        }
        Command::Hash {
            username,
            realm,
            password,
        } => {
            print!("{}", hash_lines(&username, &realm, &password));
            Ok(())
        }
        Command::Credentials { store, action } => credentials(&open_store(store)?, action),
        Command::Realms { store, action } => {
            let store = open_store(store)?;
            match action {
                NamedAction::Add { name } => {
                    println!("added realm {}", store.create_realm(&name)?.name)
                }
                NamedAction::List => store
                    .list_realms()?
                    .iter()
                    .for_each(|r| println!("{}", r.name)),
                NamedAction::Remove { name } => {
                    store.delete_realm(&name)?;
                    println!("removed realm {}", name.to_ascii_lowercase());
                }
            }
            Ok(())
        }
        Command::Tenants { store, action } => {
            let store = open_store(store)?;
            match action {
                NamedAction::Add { name } => {
                    println!("added tenant {}", store.create_tenant(&name)?.name)
                }
                NamedAction::List => store
                    .list_tenants()?
                    .iter()
                    .for_each(|t| println!("{}", t.name)),
                NamedAction::Remove { name } => {
                    store.delete_tenant(&name)?;
                    println!("removed tenant {name}");
                }
            }
            Ok(())
        }
    }
}

/// SPEC §1: four lines, the realm exactly as given.
pub fn hash_lines(username: &str, realm: &str, password: &str) -> String {
    let (u, r, p) = (username.as_bytes(), realm.as_bytes(), password.as_bytes());
    format!(
        "HA1 {}\nHA1B {}\nHA1-SHA256 {}\nHA1B-SHA256 {}\n",
        digest::ha1(Algorithm::Md5, u, r, p).as_str(),
        digest::ha1b(Algorithm::Md5, u, r, p).as_str(),
        digest::ha1(Algorithm::Sha256, u, r, p).as_str(),
        digest::ha1b(Algorithm::Sha256, u, r, p).as_str(),
    )
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::load_default_location()?,
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn open_store(args: StoreArgs) -> anyhow::Result<Store> {
    let config = load_config(args.config.as_deref())?;
    let path = &config.store.path;
    Store::open(path, &config.registrar.realm)
        .map_err(|e| anyhow::anyhow!("cannot open store {}: {e}", path.display()))
}

fn credentials(store: &Store, action: CredentialsAction) -> anyhow::Result<()> {
    match action {
        CredentialsAction::Add {
            username,
            password,
            ha1,
            ha1b,
            realm,
            tenant,
            max_calls,
            max_cps,
            codecs,
            allowed_cli,
            json,
        } => {
            let new = NewCredential {
                username,
                password,
                ha1,
                ha1b,
                realm,
                tenant,
                max_calls,
                max_cps,
                codecs,
                allowed_cli,
            };
            let created = store.create_credential(new)?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                let c = &created.credential;
                println!(
                    "added {}@{} {}",
                    c.username,
                    c.realm,
                    c.algorithms.join(",")
                );
                if let Some(p) = &created.password {
                    // Shown once: only its hashes are stored.
                    println!("password {p}");
                }
            }
        }
        CredentialsAction::List { realm, json } => {
            let list = store.list_credentials(realm.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for c in &list {
                    println!("{}", list_line(c));
                }
            }
        }
        CredentialsAction::Remove { username, realm } => {
            store.delete_credential(&username, realm.as_deref())?;
            let realm = realm.map_or_else(
                || store.default_realm().to_string(),
                |r| r.to_ascii_lowercase(),
            );
            println!("removed {username}@{realm}");
        }
    }
    Ok(())
}

/// `username@realm tenant algorithms`, `-` for no tenant.
fn list_line(c: &Credential) -> String {
    format!(
        "{}@{} {} {}",
        c.username,
        c.realm,
        c.tenant.as_deref().unwrap_or("-"),
        c.algorithms.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn hash_lines_match_python() {
        // python3 -c "import hashlib; print(hashlib.md5(b'alice:sipedge.local:secretpass').hexdigest())" etc.
        assert_eq!(
            hash_lines("alice", "sipedge.local", "secretpass"),
            "HA1 7d09fdf85d77e265892b5233ea856448\n\
             HA1B 79dfed047d61f523159605ad7b777fe4\n\
             HA1-SHA256 2432b47e0779277b440deca7a123108da592445552cac50c60761ada8077da33\n\
             HA1B-SHA256 29e7f625f23026e10743089b0ff4833b8fe6bddf90c2fb4f76d7f6efbe94497a\n"
        );
    }

    #[test]
    fn parses_subcommands() {
        let cli = Cli::try_parse_from([
            "sipedge",
            "credentials",
            "add",
            "--username",
            "u",
            "--ha1",
            "a",
            "--ha1b",
            "b",
        ]);
        assert!(cli.is_ok());
        let cli = Cli::try_parse_from(["sipedge", "credentials", "add", "--ha1", "a"]);
        assert!(cli.is_err(), "--ha1 needs --ha1b");
        let cli = Cli::try_parse_from([
            "sipedge",
            "credentials",
            "add",
            "--password",
            "p",
            "--ha1",
            "a",
            "--ha1b",
            "b",
        ]);
        assert!(cli.is_err());
        let cli =
            Cli::try_parse_from(["sipedge", "credentials", "list", "--config", "x.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Credentials {
                store: StoreArgs { config: Some(_) },
                ..
            }
        ));
    }
}
