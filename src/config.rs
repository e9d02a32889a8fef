//! Configuration: TOML -> typed, validated [`Config`] (SPEC §2).
//!
//! Owns: the key set, defaults, and validation. Unknown keys are errors; every error names the
//! key (`section.key`) and the problem. Nothing here touches sockets or files beyond reading the
//! config file.

use crate::sip::digest::Algorithm;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where `run` looks for a config when `--config` is not given.
pub const DEFAULT_LOCATION: &str = "sipedge.toml";

/// The values `core.called_number_from` may list.
pub const CALLED_NUMBER_SOURCES: [&str; 3] = ["request-uri", "to", "p-called-party-id"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `key` is dotted (`registrar.min_expires_s`), or empty when the TOML itself is broken.
    #[error("{}", display_invalid(key, problem))]
    Invalid { key: String, problem: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    /// Port 0 means "pick an ephemeral port" (tests); the runtime reports the bound port.
    pub addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    Replace,
    Reject,
}

#[derive(Clone, Debug)]
pub struct SipConfig {
    pub listen: Vec<Listen>,
    pub advertise: String,
    pub workers: usize,
    pub tls_cert: String,
    pub tls_key: String,
    /// After a loop turn that found more than one datagram queued, a worker sleeps this long
    /// before reading again instead of waking per arrival (zero: never).
    pub coalesce_us: u32,
}

#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    pub realm: String,
    pub min_interval_s: u32,
    pub throttle_status: u16,
    pub max_expires_s: u32,
    pub min_expires_s: u32,
    pub nonce_ttl_s: u32,
    pub max_contacts: u32,
    pub on_conflict: OnConflict,
    /// In preference order; each is "MD5" or "SHA-256".
    pub algorithms: Vec<crate::sip::digest::Algorithm>,
}

#[derive(Clone, Debug)]
pub struct SecurityConfig {
    pub window_s: u32,
    pub auth_fail_limit: u32,
    pub throttle_ban_limit: u32,
    pub ban_s: u32,
    pub source_rate_limit: u32,
    pub drop_unknown: bool,
    /// Lower-cased.
    pub scanner_user_agents: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub max_calls: u32,
    pub max_cps: f64,
}

#[derive(Clone, Debug)]
pub struct NumbersConfig {
    pub default_country_code: String,
    pub international_prefix: String,
    pub national_prefix: String,
    pub short_codes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    pub uri: String,
    pub priority: u32,
    pub weight: u32,
}

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub gateways: Vec<Gateway>,
    /// CIDR strings, validated ("198.51.100.0/24", "2001:db8::/32", or a bare address).
    pub trusted: Vec<String>,
    pub qualify_s: u32,
    pub gateway_timeout_ms: u32,
    /// Each of "request-uri", "to", "p-called-party-id".
    pub called_number_from: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct MediaConfig {
    pub address: String,
    pub advertise: String,
    pub port_min: u16,
    pub port_max: u16,
    pub workers: usize,
    pub timeout_s: u32,
    /// The interface whose media frames go through AF_XDP sockets ("" = none; `media::xdp`).
    pub xdp_interface: String,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct CdrConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub sip: SipConfig,
    pub registrar: RegistrarConfig,
    pub security: SecurityConfig,
    pub limits: LimitsConfig,
    pub numbers: NumbersConfig,
    pub core: CoreConfig,
    pub media: MediaConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub cdr: CdrConfig,
}

impl Default for Config {
    /// The embedded defaults of SPEC §2.
    fn default() -> Config {
        match RawConfig::default().validate() {
            Ok(config) => config,
            // The raw defaults are constants checked by the tests; this cannot fail.
            Err(e) => panic!("built-in defaults are invalid: {e}"),
        }
    }
}

impl Config {
    /// Parses and validates TOML text. Relative paths stay relative (to the working directory).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        RawConfig::from_table(table)?.validate()
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// `run` without `--config`: `./sipedge.toml` if present, else the defaults.
    pub fn load_default_location() -> Result<Config, ConfigError> {
        let path = Path::new(DEFAULT_LOCATION);
        if path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// The data directory: the folder holding `store.path`.
    pub fn data_dir(&self) -> PathBuf {
        match self.store.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

fn display_invalid(key: &str, problem: &str) -> String {
    if key.is_empty() {
        problem.to_string()
    } else {
        format!("{key}: {problem}")
    }
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A TOML syntax error as one line: `invalid TOML at line L, column C: message`.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', "; ");
    let problem = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    };
    invalid("", problem)
}

/// Turns serde's message for one key into a short problem: unknown keys and wrong types.
fn serde_problem(message: &str) -> String {
    let message = message.trim();
    if message.starts_with("unknown field") {
        return "unknown key".to_string();
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let expected = match expected.trim() {
                "i64" | "u64" | "u32" | "i32" | "usize" | "u16" => "an integer",
                "f64" | "f32" => "a number",
                "a boolean" => "a boolean",
                "a string" => "a string",
                "a sequence" => "an array",
                e if e.starts_with("struct ") || e == "a map" => "a table",
                e => e,
            };
            return format!("expected {expected}, found {found}");
        }
    }
    message.lines().next().unwrap_or(message).to_string()
}

/// Deserializes one section (or one array-of-tables entry) named `prefix`. Each key is first
/// tried alone so that an unknown key or a wrong type is reported with its dotted name.
fn section<T: DeserializeOwned + Default>(
    prefix: &str,
    value: Option<toml::Value>,
) -> Result<T, ConfigError> {
    let table = match value {
        None => return Ok(T::default()),
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            return Err(invalid(
                prefix,
                format!("expected a table, found {}", other.type_str()),
            ))
        }
    };
    for (key, value) in &table {
        let mut single = toml::Table::new();
        single.insert(key.clone(), value.clone());
        if let Err(e) = T::deserialize(toml::Value::Table(single)) {
            return Err(invalid(
                format!("{prefix}.{key}"),
                serde_problem(e.message()),
            ));
        }
    }
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| invalid(prefix, serde_problem(e.message())))
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) sections. Integers are read as i64 so that range errors get our own message.

#[derive(Debug)]
struct RawConfig {
    sip: RawSip,
    registrar: RawRegistrar,
    security: RawSecurity,
    limits: RawLimits,
    numbers: RawNumbers,
    core: RawCore,
    media: RawMedia,
    admin: RawAdmin,
    store: RawPath,
    cdr: RawPath,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSip {
    listen: Vec<String>,
    advertise: String,
    workers: i64,
    tls_cert: String,
    tls_key: String,
    coalesce_us: i64,
}

impl Default for RawSip {
    fn default() -> RawSip {
        RawSip {
            listen: vec!["udp:0.0.0.0:5060".to_string()],
            advertise: String::new(),
            workers: 0,
            tls_cert: String::new(),
            tls_key: String::new(),
            coalesce_us: 200,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRegistrar {
    realm: String,
    min_interval_s: i64,
    throttle_status: i64,
    max_expires_s: i64,
    min_expires_s: i64,
    nonce_ttl_s: i64,
    max_contacts: i64,
    on_conflict: String,
    algorithms: Vec<String>,
}

impl Default for RawRegistrar {
    fn default() -> RawRegistrar {
        RawRegistrar {
            realm: "sipedge.local".to_string(),
            min_interval_s: 100,
            throttle_status: 429,
            max_expires_s: 300,
            min_expires_s: 60,
            nonce_ttl_s: 300,
            max_contacts: 1,
            on_conflict: "replace".to_string(),
            algorithms: vec!["MD5".to_string(), "SHA-256".to_string()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSecurity {
    window_s: i64,
    auth_fail_limit: i64,
    throttle_ban_limit: i64,
    ban_s: i64,
    source_rate_limit: i64,
    drop_unknown: bool,
    scanner_user_agents: Vec<String>,
}

impl Default for RawSecurity {
    fn default() -> RawSecurity {
        RawSecurity {
            window_s: 60,
            auth_fail_limit: 10,
            throttle_ban_limit: 5,
            ban_s: 600,
            source_rate_limit: 200,
            drop_unknown: false,
            scanner_user_agents: ["friendly-scanner", "sipvicious", "sipcli", "sip-scan"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_calls: i64,
    max_cps: f64,
}

impl Default for RawLimits {
    fn default() -> RawLimits {
        RawLimits {
            max_calls: 100,
            max_cps: 1.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNumbers {
    default_country_code: String,
    international_prefix: String,
    national_prefix: String,
    short_codes: Vec<String>,
}

impl Default for RawNumbers {
    fn default() -> RawNumbers {
        RawNumbers {
            default_country_code: "1".to_string(),
            international_prefix: "011".to_string(),
            national_prefix: String::new(),
            short_codes: vec!["911".to_string(), "933".to_string()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCore {
    /// Kept as TOML values so each entry's errors can be named `core.gateways[i].key`.
    gateways: Vec<toml::Value>,
    trusted: Vec<String>,
    qualify_s: i64,
    gateway_timeout_ms: i64,
    called_number_from: Vec<String>,
}

impl Default for RawCore {
    fn default() -> RawCore {
        RawCore {
            gateways: Vec::new(),
            trusted: Vec::new(),
            qualify_s: 60,
            gateway_timeout_ms: 2000,
            called_number_from: CALLED_NUMBER_SOURCES.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawGateway {
    uri: String,
    priority: i64,
    weight: i64,
}

impl Default for RawGateway {
    fn default() -> RawGateway {
        RawGateway {
            uri: String::new(),
            priority: 1,
            weight: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMedia {
    address: String,
    advertise: String,
    port_min: i64,
    port_max: i64,
    workers: i64,
    timeout_s: i64,
    xdp_interface: String,
}

impl Default for RawMedia {
    fn default() -> RawMedia {
        RawMedia {
            address: "0.0.0.0".to_string(),
            advertise: String::new(),
            port_min: 10000,
            port_max: 60000,
            workers: 1,
            timeout_s: 60,
            xdp_interface: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token: String,
}

impl Default for RawAdmin {
    fn default() -> RawAdmin {
        RawAdmin {
            listen: "127.0.0.1:8080".to_string(),
            token: String::new(),
        }
    }
}

/// `[store]` and `[cdr]`: a single `path`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    path: String,
}

impl RawConfig {
    fn default() -> RawConfig {
        RawConfig {
            sip: RawSip::default(),
            registrar: RawRegistrar::default(),
            security: RawSecurity::default(),
            limits: RawLimits::default(),
            numbers: RawNumbers::default(),
            core: RawCore::default(),
            media: RawMedia::default(),
            admin: RawAdmin::default(),
            store: RawPath {
                path: "sipedge-data/sipedge.db".to_string(),
            },
            cdr: RawPath {
                path: "sipedge-data/cdr.jsonl".to_string(),
            },
        }
    }

    fn from_table(mut table: toml::Table) -> Result<RawConfig, ConfigError> {
        const SECTIONS: [&str; 10] = [
            "sip",
            "registrar",
            "security",
            "limits",
            "numbers",
            "core",
            "media",
            "admin",
            "store",
            "cdr",
        ];
        if let Some(unknown) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(invalid(unknown.as_str(), "unknown key"));
        }
        let defaults = RawConfig::default();
        Ok(RawConfig {
            sip: section("sip", table.remove("sip"))?,
            registrar: section("registrar", table.remove("registrar"))?,
            security: section("security", table.remove("security"))?,
            limits: section("limits", table.remove("limits"))?,
            numbers: section("numbers", table.remove("numbers"))?,
            core: section("core", table.remove("core"))?,
            media: section("media", table.remove("media"))?,
            admin: section("admin", table.remove("admin"))?,
            store: path_section("store", table.remove("store"), defaults.store)?,
            cdr: path_section("cdr", table.remove("cdr"), defaults.cdr)?,
        })
    }

    fn validate(self) -> Result<Config, ConfigError> {
        Ok(Config {
            sip: self.sip.validate()?,
            registrar: self.registrar.validate()?,
            security: self.security.validate()?,
            limits: self.limits.validate()?,
            numbers: self.numbers.validate()?,
            core: self.core.validate()?,
            media: self.media.validate()?,
            admin: self.admin.validate()?,
            store: StoreConfig {
                path: non_empty_path("store.path", self.store.path)?,
            },
            cdr: CdrConfig {
                path: non_empty_path("cdr.path", self.cdr.path)?,
            },
        })
    }
}

/// `[store]`/`[cdr]` with `path` defaulting to `default` when the section omits it.
fn path_section(
    prefix: &str,
    value: Option<toml::Value>,
    default: RawPath,
) -> Result<RawPath, ConfigError> {
    #[derive(Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Partial {
        path: Option<String>,
    }
    let partial: Partial = section(prefix, value)?;
    Ok(RawPath {
        path: partial.path.unwrap_or(default.path),
    })
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the sections.

/// `v` within `min..=max`, as the target integer type.
fn int<T: TryFrom<i64>>(key: &str, v: i64, min: i64, max: i64) -> Result<T, ConfigError> {
    if v < min {
        return Err(invalid(key, format!("must be at least {min}, got {v}")));
    }
    if v > max {
        return Err(invalid(key, format!("must be at most {max}, got {v}")));
    }
    T::try_from(v).map_err(|_| invalid(key, format!("out of range: {v}")))
}

const U32_MAX: i64 = u32::MAX as i64;

fn digits(key: &str, v: &str, allow_empty: bool, max_len: usize) -> Result<String, ConfigError> {
    if v.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(invalid(key, "must not be empty"))
        };
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(key, format!("must be digits only, got {v:?}")));
    }
    if v.len() > max_len {
        return Err(invalid(key, format!("at most {max_len} digits, got {v:?}")));
    }
    Ok(v.to_string())
}

fn no_whitespace(key: &str, v: String) -> Result<String, ConfigError> {
    if v.chars().any(char::is_whitespace) {
        return Err(invalid(
            key,
            format!("must not contain whitespace, got {v:?}"),
        ));
    }
    Ok(v)
}

fn non_empty_path(key: &str, v: String) -> Result<PathBuf, ConfigError> {
    if v.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(PathBuf::from(v))
}

/// `udp:|tcp:|tls:` followed by `IP:PORT` (IPv6 in brackets).
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let bad =
        || format!("{s:?} must be udp:, tcp: or tls: followed by IP:PORT (IPv6 as [::1]:5060)");
    let (scheme, addr) = s.split_once(':').ok_or_else(bad)?;
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => return Err(bad()),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    Ok(Listen { transport, addr })
}

/// A CIDR (`198.51.100.0/24`, `2001:db8::/32`) or a bare address; returns the address and the
/// prefix length (32/128 for a bare address).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max as u8,
        Some(l) => {
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                return Err(format!("{s:?}: prefix length must be a number"));
            }
            let n: u16 = l
                .parse()
                .map_err(|_| format!("{s:?}: prefix length must be a number"))?;
            if n > max {
                return Err(format!("{s:?}: prefix length must be at most {max}"));
            }
            n as u8
        }
    };
    Ok((ip, len))
}

// ---------------------------------------------------------------------------------------------
// Section validation.

impl RawSip {
    fn validate(self) -> Result<SipConfig, ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("sip.listen", "needs at least one listener"));
        }
        let mut listen = Vec::with_capacity(self.listen.len());
        for entry in &self.listen {
            let l = parse_listen(entry.trim()).map_err(|p| invalid("sip.listen", p))?;
            if listen.contains(&l) {
                return Err(invalid("sip.listen", format!("{entry:?} is listed twice")));
            }
            listen.push(l);
        }
        if listen.iter().any(|l| l.transport == Transport::Tls) {
            if self.tls_cert.trim().is_empty() {
                return Err(invalid(
                    "sip.tls_cert",
                    "required when a tls listener is configured",
                ));
            }
            if self.tls_key.trim().is_empty() {
                return Err(invalid(
                    "sip.tls_key",
                    "required when a tls listener is configured",
                ));
            }
        }
        Ok(SipConfig {
            listen,
            advertise: no_whitespace("sip.advertise", self.advertise)?,
            workers: int("sip.workers", self.workers, 0, 4096)?,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            coalesce_us: int("sip.coalesce_us", self.coalesce_us, 0, 10_000)?,
        })
    }
}

/// Realm names are hostname-like: labels of letters, digits and `-`, joined by dots.
fn realm_name(key: &str, v: &str) -> Result<String, ConfigError> {
    crate::store::validate::realm_name(v).map_err(|p| invalid(key, p))
}

impl RawRegistrar {
    fn validate(self) -> Result<RegistrarConfig, ConfigError> {
        let throttle_status = match self.throttle_status {
            429 => 429,
            503 => 503,
            other => {
                return Err(invalid(
                    "registrar.throttle_status",
                    format!("must be 429 or 503, got {other}"),
                ))
            }
        };
        let max_expires_s = int("registrar.max_expires_s", self.max_expires_s, 1, U32_MAX)?;
        let min_expires_s = int("registrar.min_expires_s", self.min_expires_s, 1, U32_MAX)?;
        if min_expires_s > max_expires_s {
            return Err(invalid(
                "registrar.min_expires_s",
                format!(
                    "must not exceed registrar.max_expires_s ({min_expires_s} > {max_expires_s})"
                ),
            ));
        }
        let on_conflict = match self.on_conflict.to_ascii_lowercase().as_str() {
            "replace" => OnConflict::Replace,
            "reject" => OnConflict::Reject,
            _ => {
                return Err(invalid(
                    "registrar.on_conflict",
                    format!(
                        "must be \"replace\" or \"reject\", got {:?}",
                        self.on_conflict
                    ),
                ))
            }
        };
        if self.algorithms.is_empty() {
            return Err(invalid(
                "registrar.algorithms",
                "must list at least one of \"MD5\", \"SHA-256\"",
            ));
        }
        let mut algorithms = Vec::with_capacity(2);
        for name in &self.algorithms {
            let alg = Algorithm::parse(name.as_bytes()).ok_or_else(|| {
                invalid(
                    "registrar.algorithms",
                    format!("unknown algorithm {name:?} (use \"MD5\" or \"SHA-256\")"),
                )
            })?;
            if algorithms.contains(&alg) {
                return Err(invalid(
                    "registrar.algorithms",
                    format!("{name:?} is listed twice"),
                ));
            }
            algorithms.push(alg);
        }
        Ok(RegistrarConfig {
            realm: realm_name("registrar.realm", &self.realm)?,
            min_interval_s: int("registrar.min_interval_s", self.min_interval_s, 0, U32_MAX)?,
            throttle_status,
            max_expires_s,
            min_expires_s,
            nonce_ttl_s: int("registrar.nonce_ttl_s", self.nonce_ttl_s, 1, U32_MAX)?,
            max_contacts: int("registrar.max_contacts", self.max_contacts, 1, U32_MAX)?,
            on_conflict,
            algorithms,
        })
    }
}

impl RawSecurity {
    fn validate(self) -> Result<SecurityConfig, ConfigError> {
        let mut scanner_user_agents = Vec::with_capacity(self.scanner_user_agents.len());
        for ua in self.scanner_user_agents {
            // An empty substring would match every User-Agent and drop all traffic.
            if ua.trim().is_empty() {
                return Err(invalid(
                    "security.scanner_user_agents",
                    "entries must not be empty",
                ));
            }
            scanner_user_agents.push(ua.to_lowercase());
        }
        Ok(SecurityConfig {
            window_s: int("security.window_s", self.window_s, 1, U32_MAX)?,
            auth_fail_limit: int("security.auth_fail_limit", self.auth_fail_limit, 1, U32_MAX)?,
            throttle_ban_limit: int(
                "security.throttle_ban_limit",
                self.throttle_ban_limit,
                1,
                U32_MAX,
            )?,
            ban_s: int("security.ban_s", self.ban_s, 1, U32_MAX)?,
            source_rate_limit: int(
                "security.source_rate_limit",
                self.source_rate_limit,
                1,
                U32_MAX,
            )?,
            drop_unknown: self.drop_unknown,
            scanner_user_agents,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<LimitsConfig, ConfigError> {
        if !(self.max_cps.is_finite() && self.max_cps > 0.0) {
            return Err(invalid(
                "limits.max_cps",
                format!("must be greater than 0, got {}", self.max_cps),
            ));
        }
        Ok(LimitsConfig {
            max_calls: int("limits.max_calls", self.max_calls, 1, U32_MAX)?,
            max_cps: self.max_cps,
        })
    }
}

impl RawNumbers {
    fn validate(self) -> Result<NumbersConfig, ConfigError> {
        let mut short_codes = Vec::with_capacity(self.short_codes.len());
        for code in &self.short_codes {
            short_codes.push(digits("numbers.short_codes", code, false, 15)?);
        }
        Ok(NumbersConfig {
            default_country_code: digits(
                "numbers.default_country_code",
                &self.default_country_code,
                false,
                3,
            )?,
            international_prefix: digits(
                "numbers.international_prefix",
                &self.international_prefix,
                false,
                6,
            )?,
            national_prefix: digits("numbers.national_prefix", &self.national_prefix, true, 6)?,
            short_codes,
        })
    }
}

impl RawCore {
    fn validate(self) -> Result<CoreConfig, ConfigError> {
        let mut gateways = Vec::with_capacity(self.gateways.len());
        for (i, value) in self.gateways.into_iter().enumerate() {
            let key = format!("core.gateways[{i}]");
            let raw: RawGateway = section(&key, Some(value))?;
            let lower = raw.uri.to_ascii_lowercase();
            if raw.uri.is_empty() {
                return Err(invalid(format!("{key}.uri"), "required"));
            }
            if !(lower.starts_with("sip:") || lower.starts_with("sips:")) || lower.ends_with(':') {
                return Err(invalid(
                    format!("{key}.uri"),
                    format!("must be a sip: or sips: URI, got {:?}", raw.uri),
                ));
            }
            let uri = no_whitespace(&format!("{key}.uri"), raw.uri)?;
            gateways.push(Gateway {
                uri,
                priority: int(&format!("{key}.priority"), raw.priority, 0, U32_MAX)?,
                weight: int(&format!("{key}.weight"), raw.weight, 1, U32_MAX)?,
            });
        }
        let mut trusted = Vec::with_capacity(self.trusted.len());
        for entry in self.trusted {
            parse_cidr(entry.trim()).map_err(|p| invalid("core.trusted", p))?;
            trusted.push(entry.trim().to_string());
        }
        if self.called_number_from.is_empty() {
            return Err(invalid(
                "core.called_number_from",
                "must list at least one source",
            ));
        }
        let mut called_number_from = Vec::with_capacity(self.called_number_from.len());
        for source in &self.called_number_from {
            let lower = source.to_ascii_lowercase();
            if !CALLED_NUMBER_SOURCES.contains(&lower.as_str()) {
                return Err(invalid(
                    "core.called_number_from",
                    format!("unknown source {source:?} (use \"request-uri\", \"to\", \"p-called-party-id\")"),
                ));
            }
            if called_number_from.contains(&lower) {
                return Err(invalid(
                    "core.called_number_from",
                    format!("{source:?} is listed twice"),
                ));
            }
            called_number_from.push(lower);
        }
        Ok(CoreConfig {
            gateways,
            trusted,
            qualify_s: int("core.qualify_s", self.qualify_s, 0, U32_MAX)?,
            gateway_timeout_ms: int(
                "core.gateway_timeout_ms",
                self.gateway_timeout_ms,
                1,
                U32_MAX,
            )?,
            called_number_from,
        })
    }
}

impl RawMedia {
    fn validate(self) -> Result<MediaConfig, ConfigError> {
        if self.address.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "media.address",
                format!("must be an IP address, got {:?}", self.address),
            ));
        }
        let port_min: u16 = int("media.port_min", self.port_min, 1024, 65534)?;
        let port_max: u16 = int("media.port_max", self.port_max, 1025, 65535)?;
        if port_min >= port_max {
            return Err(invalid(
                "media.port_min",
                format!("must be below media.port_max ({port_min} >= {port_max})"),
            ));
        }
        Ok(MediaConfig {
            address: self.address,
            advertise: no_whitespace("media.advertise", self.advertise)?,
            port_min,
            port_max,
            workers: int("media.workers", self.workers, 1, 1024)?,
            timeout_s: int("media.timeout_s", self.timeout_s, 1, U32_MAX)?,
            xdp_interface: interface_name("media.xdp_interface", self.xdp_interface)?,
        })
    }
}

/// A network interface's name as the kernel takes it: at most 15 bytes (IFNAMSIZ - 1), none
/// of them '/', ':', NUL or white space; "" for none. Whether it exists is checked at start.
fn interface_name(field: &str, name: String) -> Result<String, ConfigError> {
    let bad = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | ':' | '\0'));
    match bad {
        _ if name.len() > 15 => Err(invalid(
            field,
            format!("{name:?} is longer than an interface name can be (15 bytes)"),
        )),
        Some(c) => Err(invalid(
            field,
            format!("{name:?} holds {c:?}, which no interface name does"),
        )),
        None if name == "." || name == ".." => {
            Err(invalid(field, format!("{name:?} is not an interface name")))
        }
        None => Ok(name),
    }
}

impl RawAdmin {
    fn validate(self) -> Result<AdminConfig, ConfigError> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "admin.listen",
                format!(
                    "must be IP:PORT (IPv6 as [::1]:8080), got {:?}",
                    self.listen
                ),
            )
        })?;
        Ok(AdminConfig {
            listen,
            token: no_whitespace("admin.token", self.token)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (String, String) {
        match Config::from_toml_str(text) {
            Err(ConfigError::Invalid { key, problem }) => (key, problem),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    fn key_of(text: &str) -> String {
        err(text).0
    }

    #[test]
    fn defaults_match_spec() {
        let c = Config::default();
        assert_eq!(
            c.sip.listen,
            vec![Listen {
                transport: Transport::Udp,
                addr: "0.0.0.0:5060".parse().unwrap()
            }]
        );
        assert_eq!(c.sip.advertise, "");
        assert_eq!(c.sip.workers, 0);
        assert_eq!(c.registrar.realm, "sipedge.local");
        assert_eq!(c.registrar.min_interval_s, 100);
        assert_eq!(c.registrar.throttle_status, 429);
        assert_eq!(c.registrar.max_expires_s, 300);
        assert_eq!(c.registrar.min_expires_s, 60);
        assert_eq!(c.registrar.nonce_ttl_s, 300);
        assert_eq!(c.registrar.max_contacts, 1);
        assert_eq!(c.registrar.on_conflict, OnConflict::Replace);
        assert_eq!(
            c.registrar.algorithms,
            vec![Algorithm::Md5, Algorithm::Sha256]
        );
        assert_eq!(c.security.window_s, 60);
        assert_eq!(c.security.auth_fail_limit, 10);
        assert_eq!(c.security.throttle_ban_limit, 5);
        assert_eq!(c.security.ban_s, 600);
        assert_eq!(c.security.source_rate_limit, 200);
        assert!(!c.security.drop_unknown);
        assert_eq!(
            c.security.scanner_user_agents,
            ["friendly-scanner", "sipvicious", "sipcli", "sip-scan"]
        );
        assert_eq!(c.limits.max_calls, 100);
        assert_eq!(c.limits.max_cps, 1.0);
        assert_eq!(c.numbers.default_country_code, "1");
        assert_eq!(c.numbers.international_prefix, "011");
        assert_eq!(c.numbers.national_prefix, "");
        assert_eq!(c.numbers.short_codes, ["911", "933"]);
        assert!(c.core.gateways.is_empty());
        assert!(c.core.trusted.is_empty());
        assert_eq!(c.core.qualify_s, 60);
        assert_eq!(c.core.gateway_timeout_ms, 2000);
        assert_eq!(
            c.core.called_number_from,
            ["request-uri", "to", "p-called-party-id"]
        );
        assert_eq!(c.media.address, "0.0.0.0");
        assert_eq!(
            (
                c.media.port_min,
                c.media.port_max,
                c.media.workers,
                c.media.timeout_s
            ),
            (10000, 60000, 1, 60)
        );
        assert_eq!(c.admin.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.admin.token, "");
        assert_eq!(c.store.path, PathBuf::from("sipedge-data/sipedge.db"));
        assert_eq!(c.cdr.path, PathBuf::from("sipedge-data/cdr.jsonl"));
        assert_eq!(c.data_dir(), PathBuf::from("sipedge-data"));
    }

    #[test]
    fn empty_file_is_defaults() {
        for text in ["", "\n# only a comment\n", "[sip]\n[registrar]\n[store]\n"] {
            let c = Config::from_toml_str(text).unwrap();
            let d = Config::default();
            assert_eq!(format!("{c:?}"), format!("{d:?}"));
        }
    }

    #[test]
    fn full_config() {
        let text = r#"
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:[::1]:5070", "TLS:192.0.2.1:5061"]
advertise = "sbc.example.com"
workers = 4
tls_cert = "/etc/sipedge/cert.pem"
tls_key = "/etc/sipedge/key.pem"

[registrar]
realm = "Voice.Example.COM"
min_interval_s = 0
throttle_status = 503
max_expires_s = 3600
min_expires_s = 3600
nonce_ttl_s = 30
max_contacts = 2
on_conflict = "reject"
algorithms = ["sha-256", "md5"]

[security]
window_s = 30
auth_fail_limit = 3
throttle_ban_limit = 2
ban_s = 60
source_rate_limit = 50
drop_unknown = true
scanner_user_agents = ["Friendly-Scanner", "VaxSIPUserAgent"]

[limits]
max_calls = 10
max_cps = 2

[numbers]
default_country_code = "44"
international_prefix = "00"
national_prefix = "0"
short_codes = ["999", "112"]

[core]
gateways = [
  { uri = "sip:198.51.100.20:5060;transport=udp", priority = 1, weight = 3 },
  { uri = "sips:core.example.net" },
]
trusted = ["198.51.100.0/24", "2001:db8::/32", "203.0.113.7"]
qualify_s = 0
gateway_timeout_ms = 500
called_number_from = ["To", "request-uri"]

[media]
address = "192.0.2.1"
advertise = "203.0.113.1"
port_min = 20000
port_max = 20100
workers = 2
timeout_s = 120

[admin]
listen = "[::1]:9090"
token = "s3cret"

[store]
path = "/var/lib/sipedge/db.sqlite"

[cdr]
path = "/var/log/sipedge/cdr.jsonl"
"#;
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.sip.listen.len(), 3);
        assert_eq!(
            c.sip.listen[1],
            Listen {
                transport: Transport::Tcp,
                addr: "[::1]:5070".parse().unwrap()
            }
        );
        assert_eq!(c.sip.listen[2].transport, Transport::Tls);
        assert_eq!(c.sip.workers, 4);
        assert_eq!(c.registrar.realm, "voice.example.com");
        assert_eq!(c.registrar.throttle_status, 503);
        assert_eq!(c.registrar.on_conflict, OnConflict::Reject);
        assert_eq!(
            c.registrar.algorithms,
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        assert_eq!(
            c.security.scanner_user_agents,
            ["friendly-scanner", "vaxsipuseragent"]
        );
        assert!(c.security.drop_unknown);
        assert_eq!(c.limits.max_cps, 2.0);
        assert_eq!(c.numbers.national_prefix, "0");
        assert_eq!(
            c.core.gateways,
            vec![
                Gateway {
                    uri: "sip:198.51.100.20:5060;transport=udp".into(),
                    priority: 1,
                    weight: 3
                },
                Gateway {
                    uri: "sips:core.example.net".into(),
                    priority: 1,
                    weight: 1
                },
            ]
        );
        assert_eq!(c.core.trusted.len(), 3);
        assert_eq!(c.core.called_number_from, ["to", "request-uri"]);
        assert_eq!(
            (c.media.port_min, c.media.port_max, c.media.workers),
            (20000, 20100, 2)
        );
        assert_eq!(c.admin.listen, "[::1]:9090".parse().unwrap());
        assert_eq!(c.data_dir(), PathBuf::from("/var/lib/sipedge"));
        assert_eq!(c.cdr.path, PathBuf::from("/var/log/sipedge/cdr.jsonl"));
    }

    #[test]
    fn unknown_key_in_every_section() {
        for section in [
            "sip",
            "registrar",
            "security",
            "limits",
            "numbers",
            "core",
            "media",
            "admin",
            "store",
            "cdr",
        ] {
            let (key, problem) = err(&format!("[{section}]\nbogus = 1\n"));
            assert_eq!(key, format!("{section}.bogus"));
            assert_eq!(problem, "unknown key");
        }
        assert_eq!(
            err("[nope]\nx = 1\n"),
            ("nope".to_string(), "unknown key".to_string())
        );
        assert_eq!(
            err("top = 1\n"),
            ("top".to_string(), "unknown key".to_string())
        );
        assert_eq!(
            key_of("[core]\ngateways = [{ uri = \"sip:a\", bogus = 1 }]\n"),
            "core.gateways[0].bogus"
        );
        let e = Config::from_toml_str("[registrar]\nbogus = 1\n").unwrap_err();
        assert_eq!(e.to_string(), "registrar.bogus: unknown key");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (key, problem) = err("[sip]\nworkers = \"four\"\n");
        assert_eq!(key, "sip.workers");
        assert!(problem.starts_with("expected an integer"), "{problem}");
        let (key, problem) = err("[sip]\nlisten = \"udp:0.0.0.0:5060\"\n");
        assert_eq!(key, "sip.listen");
        assert!(problem.starts_with("expected an array"), "{problem}");
        let (key, problem) = err("[security]\ndrop_unknown = \"yes\"\n");
        assert_eq!(key, "security.drop_unknown");
        assert!(problem.starts_with("expected a boolean"), "{problem}");
        let (key, problem) = err("[limits]\nmax_cps = \"x\"\n");
        assert_eq!(key, "limits.max_cps");
        assert!(problem.starts_with("expected a number"), "{problem}");
        let (key, problem) = err("[admin]\nlisten = 8080\n");
        assert_eq!(key, "admin.listen");
        assert!(problem.starts_with("expected a string"), "{problem}");
        assert_eq!(key_of("sip = 1\n"), "sip");
        assert_eq!(key_of("[core]\ngateways = [1]\n"), "core.gateways[0]");
        assert_eq!(
            key_of("[core]\ngateways = [{ uri = \"sip:a\", weight = \"x\" }]\n"),
            "core.gateways[0].weight"
        );
    }

    #[test]
    fn broken_toml_is_one_line() {
        let e = Config::from_toml_str("[sip\nworkers = 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("invalid TOML at line 1"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let e = Config::from_toml_str("[sip]\nworkers = = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("invalid TOML at line 2"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nlisten = []", "sip.listen"),
            ("[sip]\nlisten = [\"udp:0.0.0.0\"]", "sip.listen"),
            ("[sip]\nlisten = [\"sctp:0.0.0.0:5060\"]", "sip.listen"),
            ("[sip]\nlisten = [\"udp:::1:5060\"]", "sip.listen"),
            ("[sip]\nlisten = [\"udp:host.example:5060\"]", "sip.listen"),
            ("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]", "sip.tls_cert"),
            (
                "[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\ntls_cert = \"c.pem\"",
                "sip.tls_key",
            ),
            ("[sip]\nworkers = -1", "sip.workers"),
            ("[sip]\ncoalesce_us = -1", "sip.coalesce_us"),
            ("[sip]\ncoalesce_us = 10001", "sip.coalesce_us"),
            ("[sip]\nadvertise = \"a b\"", "sip.advertise"),
            ("[registrar]\nrealm = \"\"", "registrar.realm"),
            ("[registrar]\nrealm = \"bad realm\"", "registrar.realm"),
            (
                "[registrar]\nthrottle_status = 403",
                "registrar.throttle_status",
            ),
            ("[registrar]\nmin_expires_s = 0", "registrar.min_expires_s"),
            ("[registrar]\nmax_expires_s = 0", "registrar.max_expires_s"),
            (
                "[registrar]\nmin_expires_s = 400",
                "registrar.min_expires_s",
            ),
            ("[registrar]\nnonce_ttl_s = 0", "registrar.nonce_ttl_s"),
            ("[registrar]\nmax_contacts = 0", "registrar.max_contacts"),
            (
                "[registrar]\nmin_interval_s = -5",
                "registrar.min_interval_s",
            ),
            (
                "[registrar]\non_conflict = \"ignore\"",
                "registrar.on_conflict",
            ),
            ("[registrar]\nalgorithms = []", "registrar.algorithms"),
            (
                "[registrar]\nalgorithms = [\"SHA-512\"]",
                "registrar.algorithms",
            ),
            (
                "[registrar]\nalgorithms = [\"MD5\", \"md5\"]",
                "registrar.algorithms",
            ),
            ("[security]\nwindow_s = 0", "security.window_s"),
            (
                "[security]\nauth_fail_limit = 0",
                "security.auth_fail_limit",
            ),
            (
                "[security]\nthrottle_ban_limit = 0",
                "security.throttle_ban_limit",
            ),
            ("[security]\nban_s = 0", "security.ban_s"),
            (
                "[security]\nsource_rate_limit = 0",
                "security.source_rate_limit",
            ),
            (
                "[security]\nscanner_user_agents = [\"\"]",
                "security.scanner_user_agents",
            ),
            ("[limits]\nmax_calls = 0", "limits.max_calls"),
            ("[limits]\nmax_cps = 0", "limits.max_cps"),
            ("[limits]\nmax_cps = -1.5", "limits.max_cps"),
            ("[limits]\nmax_cps = nan", "limits.max_cps"),
            (
                "[numbers]\ndefault_country_code = \"+1\"",
                "numbers.default_country_code",
            ),
            (
                "[numbers]\ndefault_country_code = \"\"",
                "numbers.default_country_code",
            ),
            (
                "[numbers]\ninternational_prefix = \"0x1\"",
                "numbers.international_prefix",
            ),
            (
                "[numbers]\nnational_prefix = \"a\"",
                "numbers.national_prefix",
            ),
            (
                "[numbers]\nshort_codes = [\"9-1-1\"]",
                "numbers.short_codes",
            ),
            (
                "[core]\ngateways = [{ uri = \"http://x\" }]",
                "core.gateways[0].uri",
            ),
            (
                "[core]\ngateways = [{ priority = 1 }]",
                "core.gateways[0].uri",
            ),
            (
                "[core]\ngateways = [{ uri = \"sip:a\" }, { uri = \"sip:b\", weight = 0 }]",
                "core.gateways[1].weight",
            ),
            (
                "[core]\ngateways = [{ uri = \"sip:a\", priority = -1 }]",
                "core.gateways[0].priority",
            ),
            ("[core]\ntrusted = [\"10.0.0.0/33\"]", "core.trusted"),
            ("[core]\ntrusted = [\"2001:db8::/129\"]", "core.trusted"),
            ("[core]\ntrusted = [\"10.0.0.0/\"]", "core.trusted"),
            ("[core]\ntrusted = [\"10.0.0/8\"]", "core.trusted"),
            ("[core]\ntrusted = [\"example.com\"]", "core.trusted"),
            ("[core]\ngateway_timeout_ms = 0", "core.gateway_timeout_ms"),
            ("[core]\nqualify_s = -1", "core.qualify_s"),
            ("[core]\ncalled_number_from = []", "core.called_number_from"),
            (
                "[core]\ncalled_number_from = [\"from\"]",
                "core.called_number_from",
            ),
            (
                "[core]\ncalled_number_from = [\"to\", \"TO\"]",
                "core.called_number_from",
            ),
            ("[media]\naddress = \"any\"", "media.address"),
            ("[media]\nport_min = 80", "media.port_min"),
            ("[media]\nport_max = 70000", "media.port_max"),
            (
                "[media]\nport_min = 20000\nport_max = 20000",
                "media.port_min",
            ),
            ("[media]\nworkers = 0", "media.workers"),
            ("[media]\ntimeout_s = 0", "media.timeout_s"),
            (
                "[media]\nxdp_interface = \"a-name-longer-than-15\"",
                "media.xdp_interface",
            ),
            ("[media]\nxdp_interface = \"eth 0\"", "media.xdp_interface"),
            ("[admin]\nlisten = \"localhost:8080\"", "admin.listen"),
            ("[admin]\nlisten = \"127.0.0.1\"", "admin.listen"),
            ("[store]\npath = \"\"", "store.path"),
            ("[cdr]\npath = \" \"", "cdr.path"),
        ];
        for (text, key) in cases {
            let (got, problem) = err(text);
            assert_eq!(&got, key, "{text}: {problem}");
            assert!(
                !problem.is_empty() && !problem.contains('\n'),
                "{text}: {problem:?}"
            );
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.0/8").unwrap(),
            ("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(parse_cidr("203.0.113.7").unwrap().1, 32);
        assert_eq!(parse_cidr("::1").unwrap().1, 128);
        assert_eq!(parse_cidr("2001:db8::/32").unwrap().1, 32);
        assert!(parse_cidr("10.0.0.0/+8").is_err());
    }

    #[test]
    fn load_reads_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[sip]\nworkers = 2\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().sip.workers, 2);
        let missing = Config::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
        assert!(missing.to_string().contains("missing.toml"));
    }

    #[test]
    fn data_dir_of_bare_file_is_cwd() {
        let c = Config::from_toml_str("[store]\npath = \"db.sqlite\"\n").unwrap();
        assert_eq!(c.data_dir(), PathBuf::from("."));
    }
}
