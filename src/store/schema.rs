//! The SQLite schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to `i + 1`; a fresh database runs them all.
//! Never edit a released migration: append a new one.

use super::StoreError;
use rusqlite::Connection;

/// Version 1: realms, tenants, credentials, bindings; trunks and numbers (SPEC §4) are created
/// empty so later work plugs in without a migration.
const V1: &str = "
CREATE TABLE realms (
    name        TEXT PRIMARY KEY NOT NULL,          -- lower-cased host name
    created_at  TEXT NOT NULL
);
CREATE TABLE tenants (
    name        TEXT PRIMARY KEY NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY,
    username    TEXT NOT NULL,
    realm       TEXT NOT NULL REFERENCES realms(name),
    tenant      TEXT REFERENCES tenants(name),
    -- Passwords are never stored (SPEC 3.2): HA1 = H(user:realm:pass), HA1b = H(user@realm:realm:pass).
    ha1_md5     TEXT NOT NULL,
    ha1b_md5    TEXT NOT NULL,
    ha1_sha256  TEXT,                               -- NULL when provisioned from MD5 hashes only
    ha1b_sha256 TEXT,
    max_calls   INTEGER,                            -- NULL: limits.max_calls
    max_cps     REAL,                               -- NULL: limits.max_cps
    codecs      TEXT NOT NULL DEFAULT '[]',         -- JSON array; empty: no restriction
    allowed_cli TEXT NOT NULL DEFAULT '[]',         -- JSON array of E.164; empty: no restriction
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (username, realm)
);
CREATE INDEX credentials_tenant ON credentials(tenant);
CREATE TABLE bindings (
    username      TEXT NOT NULL,
    realm         TEXT NOT NULL,
    contact       TEXT NOT NULL,
    source_ip     TEXT NOT NULL,
    source_port   INTEGER NOT NULL,
    transport     TEXT NOT NULL,
    user_agent    TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    cseq          INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,                 -- unix seconds
    expires_at    INTEGER NOT NULL,                 -- unix seconds
    PRIMARY KEY (username, realm, contact)
);
CREATE INDEX bindings_expires ON bindings(expires_at);
CREATE TABLE trunks (
    id          INTEGER PRIMARY KEY,
    name        TEXT UNIQUE NOT NULL,
    tenant      TEXT REFERENCES tenants(name),
    cidrs       TEXT NOT NULL,                      -- JSON array
    destination TEXT NOT NULL,                      -- SIP URI
    max_calls   INTEGER,
    max_cps     REAL,
    codecs      TEXT NOT NULL DEFAULT '[]',
    allowed_cli TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE numbers (
    number      TEXT PRIMARY KEY NOT NULL,          -- E.164
    tenant      TEXT REFERENCES tenants(name),
    route_kind  TEXT NOT NULL CHECK (route_kind IN ('credential', 'trunk', 'uri')),
    route_target TEXT NOT NULL,                     -- username, trunk name or URI template
    route_realm TEXT,                               -- for route_kind = 'credential'
    headers     TEXT NOT NULL DEFAULT '{}',         -- JSON object
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
";

/// Version 2: a provisioning counter that every change to provisioned data bumps (by trigger),
/// so the runtime rebuilds its snapshot only when provisioning changed — not when the binding
/// persister writes, which also moves SQLite's `data_version`.
const V2: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('provisioning_version', 0);
CREATE TRIGGER realms_ins AFTER INSERT ON realms BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER realms_del AFTER DELETE ON realms BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER tenants_ins AFTER INSERT ON tenants BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER tenants_del AFTER DELETE ON tenants BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER credentials_ins AFTER INSERT ON credentials BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER credentials_upd AFTER UPDATE ON credentials BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER credentials_del AFTER DELETE ON credentials BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER trunks_ins AFTER INSERT ON trunks BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER trunks_upd AFTER UPDATE ON trunks BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER trunks_del AFTER DELETE ON trunks BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER numbers_ins AFTER INSERT ON numbers BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER numbers_upd AFTER UPDATE ON numbers BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
CREATE TRIGGER numbers_del AFTER DELETE ON numbers BEGIN UPDATE meta SET value = value + 1 WHERE key = 'provisioning_version'; END;
";

/// Version 3: indexes for the lookups the trunk and number work does: "which numbers route to
/// this credential or trunk" (delete checks) and "what does this tenant own" (tenant delete).
/// No new tables, so V2's provisioning triggers cover everything.
const V3: &str = "
CREATE INDEX numbers_route ON numbers(route_kind, route_target);
CREATE INDEX numbers_tenant ON numbers(tenant);
CREATE INDEX trunks_tenant ON trunks(tenant);
";

pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`VERSION`], each step in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(StoreError::Invalid {
            field: "store.path".to_string(),
            problem: format!("the store has schema version {current}, newer than this sipedge supports ({VERSION})"),
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
