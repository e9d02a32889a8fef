//! Phone numbers (DIDs) and where origination calls for them go (SPEC §3.5, §3.6, §4; seeds 000,
//! 002, 004).
//!
//! Owns: number rows, their routes (a credential, a trunk or a URI template) and the extra
//! headers added to their INVITEs, with validation. A route must name something that exists;
//! deleting what a number routes to is refused by the credential and trunk deletes.

use super::trunks::trunk_exists;
use super::{check, credential_id, invalid, realm_exists, tenant_exists, validate, Store};
use super::{StoreError, NOW};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Where an origination call for a number goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The live binding of this credential (realm lower-cased).
    Credential { username: String, realm: String },
    /// The trunk's destination URI.
    Trunk(String),
    /// A SIP URI template; `{number}` is replaced by the E.164 number.
    Uri(String),
}

/// Route input: a credential's realm defaults to the default realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewRoute {
    Credential {
        username: String,
        realm: Option<String>,
    },
    Trunk(String),
    Uri(String),
}

/// JSON shape: `{"credential": "alice", "realm": "r"}`, `{"trunk": "t"}` or `{"uri": "..."}`.
impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            credential: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            realm: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            trunk: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            uri: Option<&'a str>,
        }
        let mut shape = Shape {
            credential: None,
            realm: None,
            trunk: None,
            uri: None,
        };
        match self {
            Route::Credential { username, realm } => {
                shape.credential = Some(username);
                shape.realm = Some(realm);
            }
            Route::Trunk(t) => shape.trunk = Some(t),
            Route::Uri(u) => shape.uri = Some(u),
        }
        shape.serialize(s)
    }
}

/// A number as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Number {
    /// E.164.
    pub number: String,
    pub tenant: Option<String>,
    pub route: Route,
    /// Final header names (`X-` prefixed) to values, added to the number's INVITEs.
    pub headers: BTreeMap<String, String>,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_at: String,
}

/// Input of a number create. Header names are as given (`X-` is prepended where missing).
#[derive(Clone, Debug)]
pub struct NewNumber {
    pub number: String,
    pub tenant: Option<String>,
    pub route: NewRoute,
    pub headers: Option<Vec<(String, String)>>,
}

/// A partial update; absent fields are left alone. `tenant` may be cleared (`Some(None)`);
/// `headers` replaces the whole set (empty: none). The number itself cannot change.
#[derive(Clone, Debug, Default)]
pub struct NumberPatch {
    pub tenant: Option<Option<String>>,
    pub route: Option<NewRoute>,
    pub headers: Option<Vec<(String, String)>>,
}

const NUMBER_COLUMNS: &str =
    "number, tenant, route_kind, route_target, route_realm, headers, created_at";

fn number_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Number> {
    let kind: String = row.get(2)?;
    let target: String = row.get(3)?;
    let route = match kind.as_str() {
        "credential" => Route::Credential {
            username: target,
            realm: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
        },
        "trunk" => Route::Trunk(target),
        _ => Route::Uri(target),
    };
    let headers: String = row.get(5)?;
    Ok(Number {
        number: row.get(0)?,
        tenant: row.get(1)?,
        route,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        created_at: row.get(6)?,
    })
}

fn read_number(conn: &Connection, number: &str) -> Result<Number, StoreError> {
    conn.query_row(
        &format!("SELECT {NUMBER_COLUMNS} FROM numbers WHERE number = ?1"),
        [number],
        number_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("number {number}")))
}

fn number_exists(conn: &Connection, number: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM numbers WHERE number = ?1", [number], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

fn checked_tenant(conn: &Connection, tenant: &str) -> Result<String, StoreError> {
    let t = check("tenant", validate::tenant_name(tenant))?;
    if !tenant_exists(conn, &t)? {
        return Err(invalid("tenant", format!("unknown tenant {t:?}")));
    }
    Ok(t)
}

/// The header set as stored: final names to values, as a JSON object.
fn checked_headers(list: &[(String, String)]) -> Result<String, StoreError> {
    let headers = validate::number_headers(list).map_err(|(given, problem)| {
        let field = if given.is_empty() {
            "headers".to_string()
        } else {
            format!("headers.{given}")
        };
        invalid(&field, problem)
    })?;
    let map: BTreeMap<String, String> = headers.into_iter().collect();
    Ok(serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string()))
}

impl Store {
    /// A route names something that exists (`route.credential: unknown credential ...`).
    fn checked_route(&self, conn: &Connection, route: NewRoute) -> Result<Route, StoreError> {
        match route {
            NewRoute::Credential { username, realm } => {
                let username = check("route.credential", validate::username(&username))?;
                let realm = match realm {
                    Some(r) => check("route.realm", validate::realm_name(&r))?,
                    None => self.default_realm.clone(),
                };
                if !realm_exists(conn, &realm)? {
                    return Err(invalid("route.realm", format!("unknown realm {realm:?}")));
                }
                if credential_id(conn, &username, &realm)?.is_none() {
                    return Err(invalid(
                        "route.credential",
                        format!("unknown credential {username}@{realm}"),
                    ));
                }
                Ok(Route::Credential { username, realm })
            }
            NewRoute::Trunk(name) => {
                let name = check("route.trunk", validate::trunk_name(&name))?;
                if !trunk_exists(conn, &name)? {
                    return Err(invalid("route.trunk", format!("unknown trunk {name:?}")));
                }
                Ok(Route::Trunk(name))
            }
            NewRoute::Uri(template) => Ok(Route::Uri(check(
                "route.uri",
                validate::uri_template(&template),
            )?)),
        }
    }

    pub fn create_number(&self, new: NewNumber) -> Result<Number, StoreError> {
        let number = check("number", validate::e164(&new.number))?;
        let tx = self.write_tx()?;
        let tenant = new
            .tenant
            .as_deref()
            .map(|t| checked_tenant(&tx, t))
            .transpose()?;
        let route = self.checked_route(&tx, new.route)?;
        let headers = checked_headers(new.headers.as_deref().unwrap_or_default())?;
        if number_exists(&tx, &number)? {
            return Err(StoreError::Duplicate(format!("number {number}")));
        }
        let (kind, target, realm) = route_columns(&route);
        tx.execute(
            &format!(
                "INSERT INTO numbers (number, tenant, route_kind, route_target, route_realm, headers,
                     created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}, {NOW})"
            ),
            params![number, tenant, kind, target, realm, headers],
        )?;
        let created = read_number(&tx, &number)?;
        tx.commit()?;
        Ok(created)
    }

    pub fn list_numbers(&self) -> Result<Vec<Number>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers ORDER BY number"
        ))?;
        let rows = stmt.query_map([], number_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_number(&self, number: &str) -> Result<Number, StoreError> {
        read_number(&self.conn, number)
    }

    pub fn update_number(&self, number: &str, patch: NumberPatch) -> Result<Number, StoreError> {
        let tx = self.write_tx()?;
        if !number_exists(&tx, number)? {
            return Err(StoreError::NotFound(format!("number {number}")));
        }
        // Validate everything before writing anything.
        let tenant = match patch.tenant {
            Some(Some(t)) => Some(Some(checked_tenant(&tx, &t)?)),
            other => other,
        };
        let route = patch
            .route
            .map(|r| self.checked_route(&tx, r))
            .transpose()?;
        let headers = patch.headers.map(|h| checked_headers(&h)).transpose()?;
        if let Some(t) = tenant {
            tx.execute(
                "UPDATE numbers SET tenant = ?2 WHERE number = ?1",
                params![number, t],
            )?;
        }
        if let Some(r) = route {
            let (kind, target, realm) = route_columns(&r);
            tx.execute(
                "UPDATE numbers SET route_kind = ?2, route_target = ?3, route_realm = ?4 WHERE number = ?1",
                params![number, kind, target, realm],
            )?;
        }
        if let Some(h) = headers {
            tx.execute(
                "UPDATE numbers SET headers = ?2 WHERE number = ?1",
                params![number, h],
            )?;
        }
        tx.execute(
            &format!("UPDATE numbers SET updated_at = {NOW} WHERE number = ?1"),
            [number],
        )?;
        let updated = read_number(&tx, number)?;
        tx.commit()?;
        Ok(updated)
    }

    pub fn delete_number(&self, number: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM numbers WHERE number = ?1", [number])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("number {number}")));
        }
        Ok(())
    }
}

/// `(route_kind, route_target, route_realm)` columns.
fn route_columns(route: &Route) -> (&'static str, &str, Option<&str>) {
    match route {
        Route::Credential { username, realm } => ("credential", username, Some(realm)),
        Route::Trunk(t) => ("trunk", t, None),
        Route::Uri(u) => ("uri", u, None),
    }
}
