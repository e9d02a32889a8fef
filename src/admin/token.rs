//! The bearer token guarding `/api` (SPEC §2 `admin.token`).
//!
//! Configured token wins; else `admin.token` in the data directory; else a new random token is
//! written there with mode 0600 (created exclusively, so two starts cannot race) and printed once.

use crate::config::Config;
use anyhow::Context as _;
use std::io::Write as _;
use std::path::PathBuf;

pub const FILE_NAME: &str = "admin.token";

pub struct Token {
    pub value: String,
    /// Set when this start generated it: the caller prints it once.
    pub generated_at: Option<PathBuf>,
}

pub fn load_or_create(config: &Config) -> anyhow::Result<Token> {
    if !config.admin.token.is_empty() {
        return Ok(Token {
            value: config.admin.token.clone(),
            generated_at: None,
        });
    }
    let dir = config.data_dir();
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            return Ok(Token {
                value: s.trim().to_string(),
                generated_at: None,
            })
        }
        Ok(_) => anyhow::bail!(
            "admin token file {} is empty: delete it to generate a new one, or set admin.token",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read admin token {}", path.display()))
        }
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let value = generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("cannot create admin token {}", path.display()))?;
    f.write_all(value.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write admin token {}", path.display()))?;
    Ok(Token {
        value,
        generated_at: Some(path),
    })
}

fn generate() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Constant-time comparison of a presented bearer token with the expected one.
pub fn matches(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
