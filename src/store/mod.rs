//! The embedded store (SQLite): realms, tenants, credentials, trunks, numbers and persisted
//! bindings.
//!
//! Owns: the schema, migrations, validation of provisioning input, and building the immutable
//! [`Snapshot`]. Used from the admin thread, the CLI and the binding persister thread, never from
//! a signalling worker. Every write is committed before the call returns (durable before 2xx).

pub mod credentials;
pub mod numbers;
mod schema;
pub mod snapshot;
pub mod trunks;
pub mod validate;

pub use numbers::{NewNumber, NewRoute, Number, NumberPatch, Route};
pub use snapshot::{CredentialAuth, HashPair, Snapshot};
pub use trunks::{NewTrunk, Trunk, TrunkPatch};

use crate::fasthash::InlineKey;
use crate::sip::digest::{self, Algorithm, Hex};
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;
use std::time::Duration;

pub use schema::VERSION as SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad input (HTTP 400); `field` names it (`username`, `[2].realm` in a bulk create).
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// HTTP 409: e.g. `credential alice@sipedge.local`.
    #[error("{0} already exists")]
    Duplicate(String),
    /// HTTP 404: e.g. `realm example.com`.
    #[error("{0} not found")]
    NotFound(String),
    /// HTTP 409: delete forbidden while still referenced; the text says by what.
    #[error("{0}")]
    InUse(String),
    /// HTTP 409: the write would clash with other data (e.g. a CIDR another trunk has); the text
    /// says with what.
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn invalid(field: &str, problem: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Attaches the field name to a problem from [`validate`].
fn check<T>(field: &str, r: Result<T, String>) -> Result<T, StoreError> {
    r.map_err(|problem| invalid(field, problem))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Realm {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub name: String,
}

/// Input of a credential create (API body, CLI flags). Everything is optional: a missing
/// username or password is generated.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ha1: Option<String>,
    pub ha1b: Option<String>,
    pub realm: Option<String>,
    pub tenant: Option<String>,
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
    pub codecs: Option<Vec<String>>,
    pub allowed_cli: Option<Vec<String>>,
}

/// What a create returns: the credential and, only when it was generated, the password.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreatedCredential {
    #[serde(flatten)]
    pub credential: Credential,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A credential as shown to operators: never a password or hash.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Credential {
    pub username: String,
    /// Lower-cased.
    pub realm: String,
    pub tenant: Option<String>,
    /// None: the `[limits]` default.
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
    /// Canonical codec names; empty: no restriction.
    pub codecs: Vec<String>,
    /// E.164 caller ids; empty: no restriction.
    pub allowed_cli: Vec<String>,
    /// The hash families it has: `["MD5", "SHA-256"]` or `["MD5"]`.
    pub algorithms: Vec<String>,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_at: String,
}

/// A partial update. Absent fields are left alone. `tenant`, `max_calls` and `max_cps` may be
/// set to `null` to clear them (back to no tenant / the `[limits]` default); `codecs` and
/// `allowed_cli` are cleared with `[]`. A new password replaces all hashes; `ha1` + `ha1b`
/// replace them with MD5 hashes only.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialPatch {
    pub password: Option<String>,
    pub ha1: Option<String>,
    pub ha1b: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub tenant: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub max_calls: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    pub max_cps: Option<Option<f64>>,
    pub codecs: Option<Vec<String>>,
    pub allowed_cli: Option<Vec<String>>,
}

/// A field that is present (possibly `null`) is `Some(..)`; an absent one stays `None` (default).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A persisted registration binding (the runtime's persister writes these, startup reloads them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRow {
    pub username: String,
    pub realm: String,
    pub contact: String,
    pub source_ip: String,
    pub source_port: u16,
    pub transport: String,
    pub user_agent: String,
    pub call_id: String,
    pub cseq: u32,
    pub registered_at_unix: u64,
    pub expires_at_unix: u64,
}

/// The four digest secrets, or only the MD5 pair.
struct Secrets {
    ha1_md5: String,
    ha1b_md5: String,
    sha256: Option<(String, String)>,
}

impl Secrets {
    fn from_password(username: &str, realm: &str, password: &str) -> Secrets {
        let (u, r, p) = (username.as_bytes(), realm.as_bytes(), password.as_bytes());
        Secrets {
            ha1_md5: digest::ha1(Algorithm::Md5, u, r, p).as_str().to_string(),
            ha1b_md5: digest::ha1b(Algorithm::Md5, u, r, p).as_str().to_string(),
            sha256: Some((
                digest::ha1(Algorithm::Sha256, u, r, p).as_str().to_string(),
                digest::ha1b(Algorithm::Sha256, u, r, p)
                    .as_str()
                    .to_string(),
            )),
        }
    }
}

/// What the caller supplied for the secrets, before hashing.
enum SecretInput {
    Password(String),
    Md5 { ha1: String, ha1b: String },
}

/// Checks the password / ha1 / ha1b combination. `None`: nothing was given.
fn secret_input(
    password: Option<&str>,
    ha1: Option<&str>,
    ha1b: Option<&str>,
    prefix: &str,
) -> Result<Option<SecretInput>, StoreError> {
    let f = |name: &str| format!("{prefix}{name}");
    match (password, ha1, ha1b) {
        (None, None, None) => Ok(None),
        (Some(p), None, None) => {
            check(&f("password"), validate::password(p))?;
            Ok(Some(SecretInput::Password(p.to_string())))
        }
        (Some(_), _, _) => Err(invalid(
            &f("password"),
            "give either a password or ha1 and ha1b, not both",
        )),
        (None, Some(_), None) => Err(invalid(&f("ha1b"), "required together with ha1")),
        (None, None, Some(_)) => Err(invalid(&f("ha1"), "required together with ha1b")),
        (None, Some(a), Some(b)) => Ok(Some(SecretInput::Md5 {
            ha1: check(&f("ha1"), validate::md5_hash(a))?,
            ha1b: check(&f("ha1b"), validate::md5_hash(b))?,
        })),
    }
}

fn secrets(input: SecretInput, username: &str, realm: &str) -> Secrets {
    match input {
        SecretInput::Password(p) => Secrets::from_password(username, realm, &p),
        SecretInput::Md5 { ha1, ha1b } => Secrets {
            ha1_md5: ha1,
            ha1b_md5: ha1b,
            sha256: None,
        },
    }
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";

/// `n` random characters of `alphabet`.
fn random_string(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A generated password: 24 alphanumerics (~142 bits).
pub fn generate_password() -> String {
    random_string(ALNUM, 24)
}

/// A generated username: 12 lower-case alphanumerics starting with a letter.
pub fn generate_username() -> String {
    let mut s = random_string(&LOWER_ALNUM[..26], 1);
    s.push_str(&random_string(LOWER_ALNUM, 11));
    s
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

fn from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

const CREDENTIAL_COLUMNS: &str =
    "username, realm, tenant, max_calls, max_cps, codecs, allowed_cli, ha1_sha256 IS NOT NULL, created_at";

fn credential_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Credential> {
    let has_sha256: bool = row.get(7)?;
    let codecs: String = row.get(5)?;
    let allowed_cli: String = row.get(6)?;
    let mut algorithms = vec![Algorithm::Md5.name().to_string()];
    if has_sha256 {
        algorithms.push(Algorithm::Sha256.name().to_string());
    }
    Ok(Credential {
        username: row.get(0)?,
        realm: row.get(1)?,
        tenant: row.get(2)?,
        max_calls: row.get(3)?,
        max_cps: row.get(4)?,
        codecs: from_json(&codecs),
        allowed_cli: from_json(&allowed_cli),
        algorithms,
        created_at: row.get(8)?,
    })
}

pub struct Store {
    conn: Connection,
    default_realm: String,
}

impl Store {
    /// Opens (creating if needed) the store at `path`: the parent directory, the schema, WAL
    /// journaling with `synchronous=FULL` (a committed write survives power loss), and the
    /// default realm's row.
    pub fn open(path: &Path, default_realm: &str) -> Result<Store, StoreError> {
        let default_realm = check("registrar.realm", validate::realm_name(default_realm))?;
        // The store holds HA1 hashes, which are password-equivalent for digest authentication:
        // a data directory sipedge creates is the owner's only (0700), and so is a new database
        // file (0600; SQLite gives its -wal and -shm files the database file's mode).
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                let mut dir = std::fs::DirBuilder::new();
                dir.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    dir.mode(0o700);
                }
                dir.create(parent)?;
            }
        }
        if !path.exists() {
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                file.mode(0o600);
            }
            match file.open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "store: WAL journaling unavailable");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        conn.execute(
            &format!("INSERT OR IGNORE INTO realms (name, created_at) VALUES (?1, {NOW})"),
            [&default_realm],
        )?;
        Ok(Store {
            conn,
            default_realm,
        })
    }

    /// A provisioning write's transaction. `BEGIN IMMEDIATE` takes SQLite's write lock up front,
    /// waiting (busy timeout) for another writer such as the binding persister; a deferred
    /// transaction that reads first would instead fail with `SQLITE_BUSY_SNAPSHOT` when another
    /// connection committed between its read and its first write.
    fn write_tx(&self) -> Result<Transaction<'_>, StoreError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    /// The default realm (lower-cased), as given to [`Store::open`].
    pub fn default_realm(&self) -> &str {
        &self.default_realm
    }

    /// Changes whenever another connection (e.g. `sipedge credentials add` while `run` is up)
    /// commits to the database; poll it to know when to rebuild the snapshot.
    /// Polled four times a second: the statement is prepared once (parsing it each time was
    /// ~100k instructions, visible in perf/callgrind_calls.sh as "per call" work).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Bumped (by trigger) by every change to realms, tenants, credentials, trunks or numbers;
    /// binding writes leave it alone. Check `data_version` first: it is cheaper.
    pub fn provisioning_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'provisioning_version'")?
            .query_row([], |r| r.get(0))?)
    }

    // ---- realms --------------------------------------------------------------------------

    pub fn create_realm(&self, name: &str) -> Result<Realm, StoreError> {
        let name = check("name", validate::realm_name(name))?;
        let tx = self.write_tx()?;
        if realm_exists(&tx, &name)? {
            return Err(StoreError::Duplicate(format!("realm {name}")));
        }
        tx.execute(
            &format!("INSERT INTO realms (name, created_at) VALUES (?1, {NOW})"),
            [&name],
        )?;
        tx.commit()?;
        Ok(Realm { name })
    }

    pub fn list_realms(&self) -> Result<Vec<Realm>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name FROM realms ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok(Realm { name: r.get(0)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `name` case-insensitively.
    pub fn get_realm(&self, name: &str) -> Result<Realm, StoreError> {
        Ok(Realm {
            name: self.existing_realm(name)?,
        })
    }

    /// The default realm cannot be deleted; a realm that credentials use is [`StoreError::InUse`].
    pub fn delete_realm(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_ascii_lowercase();
        let tx = self.write_tx()?;
        if !realm_exists(&tx, &name)? {
            return Err(StoreError::NotFound(format!("realm {name}")));
        }
        if name == self.default_realm {
            return Err(StoreError::InUse(format!(
                "realm {name} is the default realm (registrar.realm)"
            )));
        }
        let used: i64 = tx.query_row(
            "SELECT COUNT(*) FROM credentials WHERE realm = ?1",
            [&name],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Err(StoreError::InUse(format!(
                "realm {name} is used by {used} credential(s)"
            )));
        }
        tx.execute("DELETE FROM bindings WHERE realm = ?1", [&name])?;
        tx.execute("DELETE FROM realms WHERE name = ?1", [&name])?;
        tx.commit()?;
        Ok(())
    }

    // ---- tenants -------------------------------------------------------------------------

    pub fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let name = check("name", validate::tenant_name(name))?;
        let tx = self.write_tx()?;
        if tenant_exists(&tx, &name)? {
            return Err(StoreError::Duplicate(format!("tenant {name}")));
        }
        tx.execute(
            &format!("INSERT INTO tenants (name, created_at) VALUES (?1, {NOW})"),
            [&name],
        )?;
        tx.commit()?;
        Ok(Tenant { name })
    }

    pub fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM tenants ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok(Tenant { name: r.get(0)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        if tenant_exists(&self.conn, name)? {
            Ok(Tenant {
                name: name.to_string(),
            })
        } else {
            Err(StoreError::NotFound(format!("tenant {name}")))
        }
    }

    /// [`StoreError::InUse`] while the tenant owns credentials, trunks or numbers (SPEC §4).
    pub fn delete_tenant(&self, name: &str) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        if !tenant_exists(&tx, name)? {
            return Err(StoreError::NotFound(format!("tenant {name}")));
        }
        for table in ["credentials", "trunks", "numbers"] {
            let n: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE tenant = ?1"),
                [name],
                |r| r.get(0),
            )?;
            if n > 0 {
                return Err(StoreError::InUse(format!(
                    "tenant {name} still owns {n} of {table}"
                )));
            }
        }
        tx.execute("DELETE FROM tenants WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    // ---- credentials ---------------------------------------------------------------------

    pub fn create_credential(&self, new: NewCredential) -> Result<CreatedCredential, StoreError> {
        let tx = self.write_tx()?;
        let created = self.insert_credential(&tx, new, "")?;
        tx.commit()?;
        Ok(created)
    }

    /// All or nothing, in one transaction (seed 003's bulk load). Errors name the entry:
    /// `[2].username`.
    pub fn create_credentials(
        &self,
        new: Vec<NewCredential>,
    ) -> Result<Vec<CreatedCredential>, StoreError> {
        let tx = self.write_tx()?;
        let mut created = Vec::with_capacity(new.len());
        for (i, n) in new.into_iter().enumerate() {
            created.push(self.insert_credential(&tx, n, &format!("[{i}]."))?);
        }
        tx.commit()?;
        Ok(created)
    }

    fn insert_credential(
        &self,
        tx: &Transaction<'_>,
        new: NewCredential,
        prefix: &str,
    ) -> Result<CreatedCredential, StoreError> {
        let f = |name: &str| format!("{prefix}{name}");
        let username = match &new.username {
            Some(u) => Some(check(&f("username"), validate::username(u))?),
            None => None,
        };
        let input = secret_input(
            new.password.as_deref(),
            new.ha1.as_deref(),
            new.ha1b.as_deref(),
            prefix,
        )?;
        let realm = match &new.realm {
            Some(r) => check(&f("realm"), validate::realm_name(r))?,
            None => self.default_realm.clone(),
        };
        if !realm_exists(tx, &realm)? {
            return Err(invalid(&f("realm"), format!("unknown realm {realm:?}")));
        }
        let tenant = match &new.tenant {
            Some(t) => {
                let t = check(&f("tenant"), validate::tenant_name(t))?;
                if !tenant_exists(tx, &t)? {
                    return Err(invalid(&f("tenant"), format!("unknown tenant {t:?}")));
                }
                Some(t)
            }
            None => None,
        };
        let max_calls = new.max_calls.map(validate::max_calls).transpose();
        let max_calls = check(&f("max_calls"), max_calls)?;
        let max_cps = check(
            &f("max_cps"),
            new.max_cps.map(validate::max_cps).transpose(),
        )?;
        let codecs = check(
            &f("codecs"),
            validate::codecs(new.codecs.as_deref().unwrap_or_default()),
        )?;
        let allowed_cli = check(
            &f("allowed_cli"),
            validate::allowed_cli(new.allowed_cli.as_deref().unwrap_or_default()),
        )?;

        let username = match username {
            Some(u) => {
                if credential_id(tx, &u, &realm)?.is_some() {
                    return Err(StoreError::Duplicate(format!("credential {u}@{realm}")));
                }
                u
            }
            None => loop {
                let u = generate_username();
                if credential_id(tx, &u, &realm)?.is_none() {
                    break u;
                }
            },
        };
        let (input, generated) = match input {
            Some(i) => (i, None),
            None => {
                let p = generate_password();
                (SecretInput::Password(p.clone()), Some(p))
            }
        };
        let s = secrets(input, &username, &realm);
        let (ha1_sha256, ha1b_sha256) = s.sha256.unzip();
        tx.execute(
            &format!(
                "INSERT INTO credentials (username, realm, tenant, ha1_md5, ha1b_md5, ha1_sha256, ha1b_sha256,
                     max_calls, max_cps, codecs, allowed_cli, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, {NOW}, {NOW})"
            ),
            params![
                username,
                realm,
                tenant,
                s.ha1_md5,
                s.ha1b_md5,
                ha1_sha256,
                ha1b_sha256,
                max_calls,
                max_cps,
                to_json(&codecs),
                to_json(&allowed_cli)
            ],
        )?;
        let credential = read_credential(tx, &username, &realm)?;
        Ok(CreatedCredential {
            credential,
            password: generated,
        })
    }

    /// Every credential, or those of `realm` (which must exist: else `NotFound("realm r")`).
    pub fn list_credentials(&self, realm: Option<&str>) -> Result<Vec<Credential>, StoreError> {
        let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials");
        match realm {
            None => {
                let mut stmt = self
                    .conn
                    .prepare(&format!("{sql} ORDER BY realm, username"))?;
                let rows = stmt.query_map([], credential_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Some(r) => {
                let realm = self.existing_realm(r)?;
                let mut stmt = self
                    .conn
                    .prepare(&format!("{sql} WHERE realm = ?1 ORDER BY username"))?;
                let rows = stmt.query_map([&realm], credential_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
        }
    }

    /// `realm` None: the default realm.
    pub fn get_credential(
        &self,
        username: &str,
        realm: Option<&str>,
    ) -> Result<Credential, StoreError> {
        let realm = self.realm_or_default(realm)?;
        read_credential(&self.conn, username, &realm)
    }

    pub fn update_credential(
        &self,
        username: &str,
        realm: Option<&str>,
        patch: CredentialPatch,
    ) -> Result<Credential, StoreError> {
        let realm = self.realm_or_default(realm)?;
        let tx = self.write_tx()?;
        let id = credential_id(&tx, username, &realm)?
            .ok_or_else(|| StoreError::NotFound(format!("credential {username}@{realm}")))?;
        // Validate everything before writing anything.
        let input = secret_input(
            patch.password.as_deref(),
            patch.ha1.as_deref(),
            patch.ha1b.as_deref(),
            "",
        )?;
        let tenant = match patch.tenant {
            Some(Some(t)) => {
                let t = check("tenant", validate::tenant_name(&t))?;
                if !tenant_exists(&tx, &t)? {
                    return Err(invalid("tenant", format!("unknown tenant {t:?}")));
                }
                Some(Some(t))
            }
            other => other,
        };
        let max_calls = match patch.max_calls {
            Some(Some(n)) => Some(Some(check("max_calls", validate::max_calls(n))?)),
            other => other,
        };
        let max_cps = match patch.max_cps {
            Some(Some(x)) => Some(Some(check("max_cps", validate::max_cps(x))?)),
            other => other,
        };
        let codecs = patch
            .codecs
            .map(|c| check("codecs", validate::codecs(&c)))
            .transpose()?;
        let allowed_cli = patch
            .allowed_cli
            .map(|c| check("allowed_cli", validate::allowed_cli(&c)))
            .transpose()?;

        if let Some(input) = input {
            let s = secrets(input, username, &realm);
            let (ha1_sha256, ha1b_sha256) = s.sha256.unzip();
            tx.execute(
                "UPDATE credentials SET ha1_md5 = ?2, ha1b_md5 = ?3, ha1_sha256 = ?4, ha1b_sha256 = ?5 WHERE id = ?1",
                params![id, s.ha1_md5, s.ha1b_md5, ha1_sha256, ha1b_sha256],
            )?;
        }
        if let Some(t) = tenant {
            tx.execute(
                "UPDATE credentials SET tenant = ?2 WHERE id = ?1",
                params![id, t],
            )?;
        }
        if let Some(n) = max_calls {
            tx.execute(
                "UPDATE credentials SET max_calls = ?2 WHERE id = ?1",
                params![id, n],
            )?;
        }
        if let Some(x) = max_cps {
            tx.execute(
                "UPDATE credentials SET max_cps = ?2 WHERE id = ?1",
                params![id, x],
            )?;
        }
        if let Some(c) = codecs {
            tx.execute(
                "UPDATE credentials SET codecs = ?2 WHERE id = ?1",
                params![id, to_json(&c)],
            )?;
        }
        if let Some(c) = allowed_cli {
            tx.execute(
                "UPDATE credentials SET allowed_cli = ?2 WHERE id = ?1",
                params![id, to_json(&c)],
            )?;
        }
        tx.execute(
            &format!("UPDATE credentials SET updated_at = {NOW} WHERE id = ?1"),
            [id],
        )?;
        let credential = read_credential(&tx, username, &realm)?;
        tx.commit()?;
        Ok(credential)
    }

    /// Deletes the credential and its persisted bindings (SPEC §4).
    pub fn delete_credential(&self, username: &str, realm: Option<&str>) -> Result<(), StoreError> {
        let realm = self.realm_or_default(realm)?;
        let tx = self.write_tx()?;
        let id = credential_id(&tx, username, &realm)?
            .ok_or_else(|| StoreError::NotFound(format!("credential {username}@{realm}")))?;
        let routed: i64 = tx.query_row(
            "SELECT COUNT(*) FROM numbers WHERE route_kind = 'credential' AND route_target = ?1
                 AND (route_realm IS NULL OR route_realm = ?2)",
            params![username, realm],
            |r| r.get(0),
        )?;
        if routed > 0 {
            return Err(StoreError::InUse(format!(
                "credential {username}@{realm} is the route of {routed} number(s)"
            )));
        }
        tx.execute(
            "DELETE FROM bindings WHERE username = ?1 AND realm = ?2",
            params![username, realm],
        )?;
        tx.execute("DELETE FROM credentials WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    // ---- snapshot ------------------------------------------------------------------------

    /// The immutable view workers read: realms lower-cased, credentials keyed by
    /// [`snapshot::credential_key`].
    /// The provisioning snapshot, read in one transaction together with the provisioning counter
    /// it reflects: `generation` is that counter, so of two snapshots the higher generation is
    /// always the newer data, whoever built them (see `runtime::Shared::publish`).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut snap = self.snapshot_in_read_tx()?;
        tx.commit()?;
        // Outside the read transaction: resolution may take a while.
        snap.resolve_hosts();
        Ok(snap)
    }

    fn snapshot_in_read_tx(&self) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::empty(&self.default_realm);
        snap.generation = self.provisioning_version()?.max(0) as u64;
        for realm in self.list_realms()? {
            snap.realms.insert(
                realm
                    .name
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice(),
            );
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, username, realm, tenant, ha1_md5, ha1b_md5, ha1_sha256, ha1b_sha256, max_calls, max_cps,
                    codecs, allowed_cli
             FROM credentials",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let username: String = row.get(1)?;
            let realm: String = row.get::<_, String>(2)?.to_ascii_lowercase();
            let what = format!("credential {username}@{realm}");
            let md5 = hash_pair(&what, row.get(4)?, row.get(5)?)?;
            let sha256 = match (
                row.get::<_, Option<String>>(6)?,
                row.get::<_, Option<String>>(7)?,
            ) {
                (Some(a), Some(b)) => Some(hash_pair(&what, a, b)?),
                _ => None,
            };
            let tenant: Option<String> = row.get(3)?;
            let mut key = smallvec::SmallVec::<[u8; 128]>::new();
            snapshot::credential_key(username.as_bytes(), realm.as_bytes(), &mut key);
            snap.credentials.insert(
                InlineKey::from_slice(&key),
                CredentialAuth {
                    id: row.get(0)?,
                    username: username.into(),
                    realm: realm.into(),
                    tenant: tenant.map(Into::into),
                    md5: Some(md5),
                    sha256,
                    max_calls: row.get(8)?,
                    max_cps: row.get(9)?,
                    policy: account_policy(
                        &what,
                        &json_list(&row.get::<_, String>(10)?),
                        &json_list(&row.get::<_, String>(11)?),
                    )?,
                },
            );
        }
        drop(rows);
        drop(stmt);
        let mut trunk_index = crate::fasthash::FastMap::<String, u32>::default();
        for t in self.list_trunks()? {
            let i = snap.trunks.len() as u32;
            let what = format!("trunk {}", t.name);
            for cidr in &t.cidrs {
                let (net, len) =
                    crate::routing::cidr::parse_cidr(cidr).map_err(|p| StoreError::Invalid {
                        field: format!("{what}: cidrs"),
                        problem: p,
                    })?;
                snap.trunk_sources.insert(net, len, i);
            }
            snap.trunks.push(snapshot::TrunkPolicy {
                name: t.name.as_str().into(),
                tenant: t.tenant.map(Into::into),
                destination: t.destination.into(),
                max_calls: t.max_calls,
                max_cps: t.max_cps,
                policy: account_policy(&what, &t.codecs, &t.allowed_cli)?,
            });
            trunk_index.insert(t.name, i);
        }
        for n in self.list_numbers()? {
            let Some(number) = crate::routing::numbers::E164::parse(&n.number) else {
                return Err(StoreError::Invalid {
                    field: format!("number {}", n.number),
                    problem: "not E.164".into(),
                });
            };
            let target = match n.route {
                numbers::Route::Credential { username, realm } => {
                    let mut key = smallvec::SmallVec::<[u8; 128]>::new();
                    snapshot::credential_key(username.as_bytes(), realm.as_bytes(), &mut key);
                    snapshot::RouteTarget::Credential(Box::from(&key[..]))
                }
                numbers::Route::Trunk(name) => match trunk_index.get(&name) {
                    Some(&i) => snapshot::RouteTarget::Trunk(i),
                    None => {
                        return Err(StoreError::Invalid {
                            field: format!("number {}: route.trunk", n.number),
                            problem: format!("no trunk {name}"),
                        })
                    }
                },
                numbers::Route::Uri(template) => snapshot::RouteTarget::Uri(template.into()),
            };
            snap.numbers.insert(
                number,
                snapshot::NumberRoute {
                    tenant: n.tenant.map(Into::into),
                    target,
                    headers: n
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                        .collect(),
                },
            );
        }
        Ok(snap)
    }

    // ---- bindings ------------------------------------------------------------------------

    /// Upserts and removes persisted bindings in one transaction.
    pub fn save_bindings(
        &self,
        upserts: &[BindingRow],
        removals: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        {
            insert_bindings(&tx, upserts)?;
            let mut remove = tx.prepare_cached(
                "DELETE FROM bindings WHERE username = ?1 AND realm = ?2 AND contact = ?3",
            )?;
            for (username, realm, contact) in removals {
                remove.execute(params![username, realm, contact])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces, per credential `(username, realm)`, the persisted bindings with the complete
    /// current set (empty: all removed); all credentials in one transaction. This is what the
    /// runtime's persister sends (`runtime::PersistBatch`).
    pub fn replace_bindings(
        &self,
        batch: &[(String, String, Vec<BindingRow>)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut clear =
                tx.prepare_cached("DELETE FROM bindings WHERE username = ?1 AND realm = ?2")?;
            for (username, realm, rows) in batch {
                clear.execute(params![username, realm])?;
                insert_bindings(&tx, rows)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The bindings still live at `now_unix` whose credential still exists; deletes the others.
    pub fn load_bindings(&self, now_unix: u64) -> Result<Vec<BindingRow>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM bindings WHERE expires_at <= ?1 OR NOT EXISTS
                 (SELECT 1 FROM credentials c WHERE c.username = bindings.username AND c.realm = bindings.realm)",
            [unix_to_sql(now_unix)],
        )?;
        let rows = {
            let mut stmt = tx.prepare(
                "SELECT username, realm, contact, source_ip, source_port, transport, user_agent, call_id, cseq,
                     registered_at, expires_at
                 FROM bindings ORDER BY username, realm, registered_at, contact",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(BindingRow {
                    username: r.get(0)?,
                    realm: r.get(1)?,
                    contact: r.get(2)?,
                    source_ip: r.get(3)?,
                    source_port: r.get(4)?,
                    transport: r.get(5)?,
                    user_agent: r.get(6)?,
                    call_id: r.get(7)?,
                    cseq: r.get(8)?,
                    registered_at_unix: r.get::<_, i64>(9)?.max(0) as u64,
                    expires_at_unix: r.get::<_, i64>(10)?.max(0) as u64,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(rows)
    }

    // ---- helpers -------------------------------------------------------------------------

    fn realm_or_default(&self, realm: Option<&str>) -> Result<String, StoreError> {
        match realm {
            None => Ok(self.default_realm.clone()),
            Some(r) => self.existing_realm(r),
        }
    }

    fn existing_realm(&self, realm: &str) -> Result<String, StoreError> {
        let lower = realm.to_ascii_lowercase();
        if realm_exists(&self.conn, &lower)? {
            Ok(lower)
        } else {
            Err(StoreError::NotFound(format!("realm {realm}")))
        }
    }
}

/// Upserts binding rows, keyed by (username, realm, contact).
fn insert_bindings(conn: &Connection, rows: &[BindingRow]) -> Result<(), StoreError> {
    let mut upsert = conn.prepare_cached(
        "INSERT OR REPLACE INTO bindings (username, realm, contact, source_ip, source_port, transport,
             user_agent, call_id, cseq, registered_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for b in rows {
        upsert.execute(params![
            b.username,
            b.realm,
            b.contact,
            b.source_ip,
            b.source_port,
            b.transport,
            b.user_agent,
            b.call_id,
            b.cseq,
            unix_to_sql(b.registered_at_unix),
            unix_to_sql(b.expires_at_unix)
        ])?;
    }
    Ok(())
}

fn unix_to_sql(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn hash_pair(what: &str, ha1: String, ha1b: String) -> Result<HashPair, StoreError> {
    let parse = |s: &str| {
        Hex::from_hex_str(s).ok_or_else(|| {
            invalid(
                "store",
                format!("{what} has a corrupt hash in the database"),
            )
        })
    };
    Ok(HashPair {
        ha1: parse(&ha1)?,
        ha1b: parse(&ha1b)?,
    })
}

fn realm_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM realms WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn tenant_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM tenants WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn credential_id(
    conn: &Connection,
    username: &str,
    realm: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM credentials WHERE username = ?1 AND realm = ?2",
            [username, realm],
            |r| r.get(0),
        )
        .optional()?)
}

fn read_credential(
    conn: &Connection,
    username: &str,
    realm: &str,
) -> Result<Credential, StoreError> {
    conn.query_row(
        &format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE username = ?1 AND realm = ?2"),
        [username, realm],
        credential_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("credential {username}@{realm}")))
}

#[cfg(test)]
mod tests;

/// A JSON array of strings as stored in `codecs` / `allowed_cli` (validated on the way in).
fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn account_policy(
    what: &str,
    codecs: &[String],
    allowed_cli: &[String],
) -> Result<snapshot::AccountPolicy, StoreError> {
    let allowed_cli = allowed_cli
        .iter()
        .map(|c| {
            crate::routing::numbers::E164::parse(c).ok_or_else(|| StoreError::Invalid {
                field: format!("{what}: allowed_cli"),
                problem: format!("{c} is not E.164"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(snapshot::AccountPolicy {
        codecs: codecs.iter().map(|c| c.as_str().into()).collect(),
        allowed_cli: allowed_cli.into_boxed_slice(),
    })
}
