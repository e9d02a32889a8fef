//! IP trunks (SPEC §3.3, §4, seed 004): customer PBXs authenticated by their source networks
//! instead of digest credentials, and reached at a fixed destination URI.
//!
//! Owns: trunk rows, their validation and the rules that keep them referentially sound (a
//! trunk a number routes to cannot be deleted; a CIDR belongs to at most one trunk). Does not
//! classify traffic: the runtime builds its own lookup from [`Store::list_trunks`].

use super::{check, from_json, invalid, tenant_exists, to_json, validate, Store, StoreError, NOW};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// A trunk as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trunk {
    pub name: String,
    pub tenant: Option<String>,
    /// Canonical `ADDR/LEN`, in the order given.
    pub cidrs: Vec<String>,
    /// SIP URI that origination traffic for the trunk's numbers is sent to.
    pub destination: String,
    /// None: the `[limits]` default.
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
    /// Canonical codec names; empty: no restriction.
    pub codecs: Vec<String>,
    /// E.164 caller ids; empty: no restriction.
    pub allowed_cli: Vec<String>,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_at: String,
}

/// Input of a trunk create.
#[derive(Clone, Debug, Default)]
pub struct NewTrunk {
    pub name: String,
    pub tenant: Option<String>,
    pub cidrs: Vec<String>,
    pub destination: String,
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
    pub codecs: Option<Vec<String>>,
    pub allowed_cli: Option<Vec<String>>,
}

/// A partial update; absent fields are left alone. `tenant`, `max_calls` and `max_cps` may be
/// cleared (`Some(None)`); `codecs` and `allowed_cli` are cleared with an empty list. The name
/// cannot change (numbers refer to it).
#[derive(Clone, Debug, Default)]
pub struct TrunkPatch {
    pub tenant: Option<Option<String>>,
    pub cidrs: Option<Vec<String>>,
    pub destination: Option<String>,
    pub max_calls: Option<Option<u32>>,
    pub max_cps: Option<Option<f64>>,
    pub codecs: Option<Vec<String>>,
    pub allowed_cli: Option<Vec<String>>,
}

/// At most this many networks per trunk.
pub const MAX_CIDRS: usize = 256;

const TRUNK_COLUMNS: &str =
    "name, tenant, cidrs, destination, max_calls, max_cps, codecs, allowed_cli, created_at";

fn trunk_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Trunk> {
    Ok(Trunk {
        name: row.get(0)?,
        tenant: row.get(1)?,
        cidrs: from_json(&row.get::<_, String>(2)?),
        destination: row.get(3)?,
        max_calls: row.get(4)?,
        max_cps: row.get(5)?,
        codecs: from_json(&row.get::<_, String>(6)?),
        allowed_cli: from_json(&row.get::<_, String>(7)?),
        created_at: row.get(8)?,
    })
}

/// Validates a CIDR list (`cidrs[1]: ...` names the entry) and checks that no other trunk
/// already has one of them: a source network must say which trunk is calling.
fn checked_cidrs(
    conn: &Connection,
    list: &[String],
    this_trunk: &str,
) -> Result<Vec<String>, StoreError> {
    if list.is_empty() {
        return Err(invalid("cidrs", "give at least one network"));
    }
    if list.len() > MAX_CIDRS {
        return Err(invalid(
            "cidrs",
            format!("at most {MAX_CIDRS} networks, got {}", list.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let field = format!("cidrs[{i}]");
        let c = check(&field, validate::cidr(c.trim()))?;
        if out.contains(&c) {
            return Err(invalid(&field, format!("{c} is listed twice")));
        }
        out.push(c);
    }
    let mut stmt = conn.prepare("SELECT name, cidrs FROM trunks WHERE name <> ?1")?;
    let mut rows = stmt.query([this_trunk])?;
    while let Some(row) = rows.next()? {
        let other: String = row.get(0)?;
        let theirs = from_json(&row.get::<_, String>(1)?);
        if let Some((i, c)) = out.iter().enumerate().find(|(_, c)| theirs.contains(c)) {
            return Err(StoreError::Conflict(format!(
                "cidrs[{i}]: {c} already belongs to trunk {other}"
            )));
        }
    }
    Ok(out)
}

fn checked_tenant(conn: &Connection, tenant: &str) -> Result<String, StoreError> {
    let t = check("tenant", validate::tenant_name(tenant))?;
    if !tenant_exists(conn, &t)? {
        return Err(invalid("tenant", format!("unknown tenant {t:?}")));
    }
    Ok(t)
}

pub(super) fn trunk_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM trunks WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn read_trunk(conn: &Connection, name: &str) -> Result<Trunk, StoreError> {
    conn.query_row(
        &format!("SELECT {TRUNK_COLUMNS} FROM trunks WHERE name = ?1"),
        [name],
        trunk_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("trunk {name}")))
}

impl Store {
    pub fn create_trunk(&self, new: NewTrunk) -> Result<Trunk, StoreError> {
        let name = check("name", validate::trunk_name(&new.name))?;
        let tx = self.write_tx()?;
        let tenant = new
            .tenant
            .as_deref()
            .map(|t| checked_tenant(&tx, t))
            .transpose()?;
        let destination = check("destination", validate::sip_uri(&new.destination))?;
        let max_calls = check(
            "max_calls",
            new.max_calls.map(validate::max_calls).transpose(),
        )?;
        let max_cps = check("max_cps", new.max_cps.map(validate::max_cps).transpose())?;
        let codecs = check(
            "codecs",
            validate::codecs(new.codecs.as_deref().unwrap_or_default()),
        )?;
        let allowed_cli = check(
            "allowed_cli",
            validate::allowed_cli(new.allowed_cli.as_deref().unwrap_or_default()),
        )?;
        if trunk_exists(&tx, &name)? {
            return Err(StoreError::Duplicate(format!("trunk {name}")));
        }
        let cidrs = checked_cidrs(&tx, &new.cidrs, &name)?;
        tx.execute(
            &format!(
                "INSERT INTO trunks (name, tenant, cidrs, destination, max_calls, max_cps, codecs,
                     allowed_cli, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {NOW}, {NOW})"
            ),
            params![
                name,
                tenant,
                to_json(&cidrs),
                destination,
                max_calls,
                max_cps,
                to_json(&codecs),
                to_json(&allowed_cli)
            ],
        )?;
        let trunk = read_trunk(&tx, &name)?;
        tx.commit()?;
        Ok(trunk)
    }

    pub fn list_trunks(&self) -> Result<Vec<Trunk>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {TRUNK_COLUMNS} FROM trunks ORDER BY name"))?;
        let rows = stmt.query_map([], trunk_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_trunk(&self, name: &str) -> Result<Trunk, StoreError> {
        read_trunk(&self.conn, name)
    }

    pub fn update_trunk(&self, name: &str, patch: TrunkPatch) -> Result<Trunk, StoreError> {
        let tx = self.write_tx()?;
        if !trunk_exists(&tx, name)? {
            return Err(StoreError::NotFound(format!("trunk {name}")));
        }
        // Validate everything before writing anything.
        let tenant = match patch.tenant {
            Some(Some(t)) => Some(Some(checked_tenant(&tx, &t)?)),
            other => other,
        };
        let cidrs = patch
            .cidrs
            .map(|c| checked_cidrs(&tx, &c, name))
            .transpose()?;
        let destination = patch
            .destination
            .map(|d| check("destination", validate::sip_uri(&d)))
            .transpose()?;
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

        let set = |column: &str, value: &dyn rusqlite::ToSql| -> Result<(), StoreError> {
            tx.execute(
                &format!("UPDATE trunks SET {column} = ?2 WHERE name = ?1"),
                params![name, value],
            )?;
            Ok(())
        };
        if let Some(t) = tenant {
            set("tenant", &t)?;
        }
        if let Some(c) = cidrs {
            set("cidrs", &to_json(&c))?;
        }
        if let Some(d) = destination {
            set("destination", &d)?;
        }
        if let Some(n) = max_calls {
            set("max_calls", &n)?;
        }
        if let Some(x) = max_cps {
            set("max_cps", &x)?;
        }
        if let Some(c) = codecs {
            set("codecs", &to_json(&c))?;
        }
        if let Some(c) = allowed_cli {
            set("allowed_cli", &to_json(&c))?;
        }
        tx.execute(
            &format!("UPDATE trunks SET updated_at = {NOW} WHERE name = ?1"),
            [name],
        )?;
        let trunk = read_trunk(&tx, name)?;
        tx.commit()?;
        Ok(trunk)
    }

    /// [`StoreError::InUse`] while a number routes to the trunk (SPEC §4).
    pub fn delete_trunk(&self, name: &str) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        if !trunk_exists(&tx, name)? {
            return Err(StoreError::NotFound(format!("trunk {name}")));
        }
        let routed: i64 = tx.query_row(
            "SELECT COUNT(*) FROM numbers WHERE route_kind = 'trunk' AND route_target = ?1",
            [name],
            |r| r.get(0),
        )?;
        if routed > 0 {
            return Err(StoreError::InUse(format!(
                "trunk {name} is the route of {routed} number(s)"
            )));
        }
        tx.execute("DELETE FROM trunks WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }
}
