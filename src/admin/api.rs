//! `/api/v1`: JSON provisioning (SPEC §4) — tenants, realms, credentials, trunks, numbers, and
//! the running workers' registrations and bans. The contract is `openapi.json` beside this file,
//! served at `GET /api/v1/openapi.json`.
//!
//! Owns: HTTP mapping (routes, status codes, `{"error": "field: problem"}` bodies) and making a
//! committed write visible to the workers. Validation belongs to the store (shared with the
//! CLI); JSON decoding to [`super::body`]; the bearer-token check to [`super::require_token`].
//!
//! A write is committed (WAL, `synchronous=FULL`) before its 2xx, and a snapshot that contains
//! it is published to the workers before the 2xx too, so a PBX may register with a credential
//! the moment its create returns. Snapshots are built on a second connection and coalesced: a
//! writer whose commit is already covered by a snapshot built meanwhile skips its own build.

use super::body::{self, Fields};
use crate::runtime::Shared;
use crate::security::{Ban, BanReason};
use crate::store::{
    Credential, CredentialPatch, NewCredential, NewNumber, NewRoute, NewTrunk, Number, NumberPatch,
    Realm, Store, StoreError, Tenant, Trunk, TrunkPatch,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The OpenAPI 3 description of everything the admin listener serves (`/health` and `/metrics`
/// included).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The longest manual ban (`POST /bans` `seconds`): a year.
const MAX_BAN_S: u64 = 365 * 24 * 3600;

/// How long a ban change may take to show in every worker's answer before the API answers anyway.
const BAN_CONFIRM: Duration = Duration::from_secs(1);

// ---- errors --------------------------------------------------------------------------------

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400 naming the field: `field: problem`.
    pub fn bad_request(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {problem}"))
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!("api: {context}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error ({context}); see the server log"),
        )
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid { .. } => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Duplicate(_) | StoreError::InUse(_) | StoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            StoreError::Db(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                tracing::warn!("api: store busy: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is busy (another writer holds it); retry",
                )
            }
            StoreError::Db(_) | StoreError::Io(_) => ApiError::internal("store", e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn created<T: Serialize>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(v))
}

// ---- state ---------------------------------------------------------------------------------

/// The router's state: the store connection for requests, and the publisher's.
#[derive(Clone)]
pub struct Api(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    /// Requests' connection. `Store` is Send but not Sync; this lock is the admin thread's
    /// only (no worker ever takes it).
    store: Mutex<Store>,
    /// Writes committed so far (bumped after each commit, under `store`).
    committed: AtomicU64,
    publisher: Mutex<Publisher>,
}

/// Builds snapshots on its own connection, so requests are not held up while it reads.
struct Publisher {
    store: Store,
    /// Every write up to this count is in the published snapshot.
    published: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a SQLite connection half-written (every write
    // is one transaction), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Api {
    /// Opens the API's two connections to the store named by the config.
    pub fn open(shared: Arc<Shared>) -> Result<Api, StoreError> {
        let path = &shared.config.store.path;
        let realm = &shared.config.registrar.realm;
        let store = Store::open(path, realm)?;
        let publisher = Store::open(path, realm)?;
        Ok(Api(Arc::new(Inner {
            store: Mutex::new(store),
            committed: AtomicU64::new(0),
            publisher: Mutex::new(Publisher {
                store: publisher,
                published: 0,
            }),
            shared,
        })))
    }

    /// Runs a read on the store off the async thread.
    async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&lock(&inner.store)).map_err(ApiError::from))
            .await
            .map_err(|e| ApiError::internal("request task", e))?
    }

    /// Runs a write (one committed transaction) and publishes a snapshot containing it before
    /// returning.
    async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let (out, seq) = {
                let store = lock(&inner.store);
                let out = f(&store)?;
                (out, inner.committed.fetch_add(1, Ordering::SeqCst) + 1)
            };
            inner.publish_through(seq);
            Ok(out)
        })
        .await
        .map_err(|e| ApiError::internal("request task", e))?
    }

    /// Runs a call that asks the workers (it blocks up to a second) off the async thread.
    async fn ask<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> T + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&inner.shared))
            .await
            .map_err(|e| ApiError::internal("request task", e))
    }
}

impl Inner {
    /// Publishes a snapshot containing write number `seq` unless one already went out.
    fn publish_through(&self, seq: u64) {
        let mut p = lock(&self.publisher);
        if p.published >= seq {
            return;
        }
        // Every write counted here committed before this read starts, so the snapshot has it.
        let through = self.committed.load(Ordering::SeqCst);
        match p.store.snapshot() {
            Ok(s) => {
                self.shared.publish(s);
                p.published = through;
            }
            // The write is durable; the store watcher republishes within a second.
            Err(e) => tracing::error!("api: cannot build the provisioning snapshot: {e}"),
        }
    }
}

// ---- routes --------------------------------------------------------------------------------

/// Every `/api/v1` route (paths as in `openapi.json`), with its state applied.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/api/v1/tenants/{name}",
            get(get_tenant).delete(delete_tenant),
        )
        .route("/api/v1/realms", get(list_realms).post(create_realm))
        .route("/api/v1/realms/{name}", get(get_realm).delete(delete_realm))
        .route(
            "/api/v1/credentials",
            get(list_credentials).post(create_credentials),
        )
        .route(
            "/api/v1/credentials/{username}",
            get(get_credential)
                .patch(update_credential)
                .delete(delete_credential),
        )
        .route("/api/v1/trunks", get(list_trunks).post(create_trunk))
        .route(
            "/api/v1/trunks/{name}",
            get(get_trunk).patch(update_trunk).delete(delete_trunk),
        )
        .route("/api/v1/numbers", get(list_numbers).post(create_number))
        .route(
            "/api/v1/numbers/{number}",
            get(get_number).patch(update_number).delete(delete_number),
        )
        .route("/api/v1/registrations", get(list_registrations))
        .route("/api/v1/calls", get(list_calls))
        .route("/api/v1/calls/{id}", delete(delete_call))
        .route("/api/v1/bans", get(list_bans).post(create_ban))
        .route("/api/v1/bans/{ip}", delete(delete_ban))
        .with_state(api)
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A path segment, percent-decoded (`%2B` is `+`; a `+` stays a `+`).
type Segment = Result<Path<String>, axum::extract::rejection::PathRejection>;

fn segment(p: Segment, field: &str) -> ApiResult<String> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(field, e.body_text()))
}

/// The query parameters of `uri`: only `allowed` names, each at most once.
fn query(uri: &Uri, allowed: &[&str]) -> ApiResult<Vec<(String, String)>> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                k,
                format!(
                    "unknown query parameter (known: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        if pairs[..i].iter().any(|(seen, _)| seen == k) {
            return Err(ApiError::bad_request(k, "given twice"));
        }
    }
    Ok(pairs)
}

/// `?realm=R`, if given.
fn realm_param(uri: &Uri) -> ApiResult<Option<String>> {
    Ok(query(uri, &["realm"])?.into_iter().next().map(|(_, v)| v))
}

fn no_query(uri: &Uri) -> ApiResult<()> {
    query(uri, &[]).map(drop)
}

// ---- tenants and realms --------------------------------------------------------------------

fn name_body(bytes: &[u8]) -> ApiResult<String> {
    let mut f = Fields::object(body::parse(bytes)?, "", &["name"], &[])?;
    f.required("name")
}

async fn list_tenants(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<Tenant>>> {
    no_query(&uri)?;
    api.read(|s| s.list_tenants()).await.map(Json)
}

async fn create_tenant(
    State(api): State<Api>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let name = name_body(&bytes)?;
    let t = api.write(move |s| s.create_tenant(&name)).await?;
    tracing::info!(tenant = %t.name, "api: tenant created");
    Ok(created(t))
}

async fn get_tenant(State(api): State<Api>, name: Segment) -> ApiResult<Json<Tenant>> {
    let name = segment(name, "name")?;
    api.read(move |s| s.get_tenant(&name)).await.map(Json)
}

async fn delete_tenant(State(api): State<Api>, name: Segment) -> ApiResult<StatusCode> {
    let name = segment(name, "name")?;
    let n = name.clone();
    api.write(move |s| s.delete_tenant(&n)).await?;
    tracing::info!(tenant = %name, "api: tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_realms(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<Realm>>> {
    no_query(&uri)?;
    api.read(|s| s.list_realms()).await.map(Json)
}

async fn create_realm(
    State(api): State<Api>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Realm>)> {
    let name = name_body(&bytes)?;
    let r = api.write(move |s| s.create_realm(&name)).await?;
    tracing::info!(realm = %r.name, "api: realm created");
    Ok(created(r))
}

async fn get_realm(State(api): State<Api>, name: Segment) -> ApiResult<Json<Realm>> {
    let name = segment(name, "name")?;
    api.read(move |s| s.get_realm(&name)).await.map(Json)
}

async fn delete_realm(State(api): State<Api>, name: Segment) -> ApiResult<StatusCode> {
    let name = segment(name, "name")?;
    let n = name.clone();
    api.write(move |s| s.delete_realm(&n)).await?;
    tracing::info!(realm = %name, "api: realm deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- credentials ---------------------------------------------------------------------------

const CREDENTIAL_FIELDS: &[&str] = &[
    "username",
    "password",
    "ha1",
    "ha1b",
    "realm",
    "tenant",
    "max_calls",
    "max_cps",
    "codecs",
    "allowed_cli",
];

fn new_credential(v: serde_json::Value, prefix: &str) -> ApiResult<NewCredential> {
    let mut f = Fields::object(v, prefix, CREDENTIAL_FIELDS, &[])?;
    Ok(NewCredential {
        username: f.optional("username")?,
        password: f.optional("password")?,
        ha1: f.optional("ha1")?,
        ha1b: f.optional("ha1b")?,
        realm: f.optional("realm")?,
        tenant: f.optional("tenant")?,
        max_calls: f.optional("max_calls")?,
        max_cps: f.optional("max_cps")?,
        codecs: f.strings("codecs")?,
        allowed_cli: f.strings("allowed_cli")?,
    })
}

/// One object creates one credential and answers with it; a list creates all of them in one
/// transaction (or none: the error names the entry, `[2].username`) and answers with the list
/// (seed 003). A generated password is in this answer only.
async fn create_credentials(State(api): State<Api>, bytes: Bytes) -> ApiResult<Response> {
    match body::parse(&bytes)? {
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::bad_request("body", "the list is empty"));
            }
            let new = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| new_credential(v, &format!("[{i}].")))
                .collect::<ApiResult<Vec<_>>>()?;
            let created_list = api.write(move |s| s.create_credentials(new)).await?;
            tracing::info!(count = created_list.len(), "api: credentials created");
            Ok(created(created_list).into_response())
        }
        v => {
            let new = new_credential(v, "")?;
            let c = api.write(move |s| s.create_credential(new)).await?;
            tracing::info!(
                credential = %format_args!("{}@{}", c.credential.username, c.credential.realm),
                "api: credential created"
            );
            Ok(created(c).into_response())
        }
    }
}

async fn list_credentials(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<Credential>>> {
    let realm = realm_param(&uri)?;
    api.read(move |s| s.list_credentials(realm.as_deref()))
        .await
        .map(Json)
}

async fn get_credential(
    State(api): State<Api>,
    username: Segment,
    uri: Uri,
) -> ApiResult<Json<Credential>> {
    let username = segment(username, "username")?;
    let realm = realm_param(&uri)?;
    api.read(move |s| s.get_credential(&username, realm.as_deref()))
        .await
        .map(Json)
}

async fn update_credential(
    State(api): State<Api>,
    username: Segment,
    uri: Uri,
    bytes: Bytes,
) -> ApiResult<Json<Credential>> {
    let username = segment(username, "username")?;
    let realm = realm_param(&uri)?;
    let mut f = Fields::object(
        body::parse(&bytes)?,
        "",
        &[
            "password",
            "ha1",
            "ha1b",
            "tenant",
            "max_calls",
            "max_cps",
            "codecs",
            "allowed_cli",
        ],
        &["username", "realm"],
    )?;
    let patch = CredentialPatch {
        password: f.optional("password")?,
        ha1: f.optional("ha1")?,
        ha1b: f.optional("ha1b")?,
        tenant: f.nullable("tenant")?,
        max_calls: f.nullable("max_calls")?,
        max_cps: f.nullable("max_cps")?,
        codecs: cleared_list(&mut f, "codecs")?,
        allowed_cli: cleared_list(&mut f, "allowed_cli")?,
    };
    let c = api
        .write(move |s| s.update_credential(&username, realm.as_deref(), patch))
        .await?;
    tracing::info!(
        credential = %format_args!("{}@{}", c.username, c.realm),
        "api: credential updated"
    );
    Ok(Json(c))
}

/// In a PATCH, a list set to `null` is cleared like `[]`.
fn cleared_list(f: &mut Fields, name: &str) -> ApiResult<Option<Vec<String>>> {
    if f.has(name) {
        f.strings(name)
    } else {
        Ok(f.nullable::<()>(name)?.map(|_| Vec::new()))
    }
}

async fn delete_credential(
    State(api): State<Api>,
    username: Segment,
    uri: Uri,
) -> ApiResult<StatusCode> {
    let username = segment(username, "username")?;
    let realm = realm_param(&uri)?;
    let (u, r) = (username.clone(), realm.clone());
    api.write(move |s| s.delete_credential(&u, r.as_deref()))
        .await?;
    tracing::info!(credential = %username, realm = ?realm, "api: credential deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- trunks --------------------------------------------------------------------------------

async fn list_trunks(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<Trunk>>> {
    no_query(&uri)?;
    api.read(|s| s.list_trunks()).await.map(Json)
}

async fn create_trunk(
    State(api): State<Api>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Trunk>)> {
    let mut f = Fields::object(
        body::parse(&bytes)?,
        "",
        &[
            "name",
            "tenant",
            "cidrs",
            "destination",
            "max_calls",
            "max_cps",
            "codecs",
            "allowed_cli",
        ],
        &[],
    )?;
    let new = NewTrunk {
        name: f.required("name")?,
        tenant: f.optional("tenant")?,
        cidrs: f
            .strings("cidrs")?
            .ok_or_else(|| ApiError::bad_request("cidrs", "required"))?,
        destination: f.required("destination")?,
        max_calls: f.optional("max_calls")?,
        max_cps: f.optional("max_cps")?,
        codecs: f.strings("codecs")?,
        allowed_cli: f.strings("allowed_cli")?,
    };
    let t = api.write(move |s| s.create_trunk(new)).await?;
    tracing::info!(trunk = %t.name, "api: trunk created");
    Ok(created(t))
}

async fn get_trunk(State(api): State<Api>, name: Segment) -> ApiResult<Json<Trunk>> {
    let name = segment(name, "name")?;
    api.read(move |s| s.get_trunk(&name)).await.map(Json)
}

async fn update_trunk(
    State(api): State<Api>,
    name: Segment,
    bytes: Bytes,
) -> ApiResult<Json<Trunk>> {
    let name = segment(name, "name")?;
    let mut f = Fields::object(
        body::parse(&bytes)?,
        "",
        &[
            "tenant",
            "cidrs",
            "destination",
            "max_calls",
            "max_cps",
            "codecs",
            "allowed_cli",
        ],
        &["name"],
    )?;
    let patch = TrunkPatch {
        tenant: f.nullable("tenant")?,
        cidrs: f.strings("cidrs")?,
        destination: f.optional("destination")?,
        max_calls: f.nullable("max_calls")?,
        max_cps: f.nullable("max_cps")?,
        codecs: cleared_list(&mut f, "codecs")?,
        allowed_cli: cleared_list(&mut f, "allowed_cli")?,
    };
    let t = api.write(move |s| s.update_trunk(&name, patch)).await?;
    tracing::info!(trunk = %t.name, "api: trunk updated");
    Ok(Json(t))
}

async fn delete_trunk(State(api): State<Api>, name: Segment) -> ApiResult<StatusCode> {
    let name = segment(name, "name")?;
    let n = name.clone();
    api.write(move |s| s.delete_trunk(&n)).await?;
    tracing::info!(trunk = %name, "api: trunk deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- numbers -------------------------------------------------------------------------------

/// `route`: exactly one of `{credential[, realm]}`, `{trunk}`, `{uri}`.
fn route(f: &mut Fields) -> ApiResult<Option<NewRoute>> {
    let Some(mut r) = f.object_field("route", &["credential", "realm", "trunk", "uri"])? else {
        return Ok(None);
    };
    let kinds = ["credential", "trunk", "uri"]
        .iter()
        .filter(|k| r.has(k))
        .count();
    if kinds != 1 {
        return Err(ApiError::bad_request(
            "route",
            "give exactly one of credential (with an optional realm), trunk or uri",
        ));
    }
    if r.has("realm") && !r.has("credential") {
        return Err(ApiError::bad_request(
            &r.field("realm"),
            "only goes with credential",
        ));
    }
    Ok(Some(if r.has("credential") {
        NewRoute::Credential {
            username: r.required("credential")?,
            realm: r.optional("realm")?,
        }
    } else if r.has("trunk") {
        NewRoute::Trunk(r.required("trunk")?)
    } else {
        NewRoute::Uri(r.required("uri")?)
    }))
}

/// The `{number}` path segment: E.164 (a `+` in a path is literal, `%2B` decodes to one).
fn number_param(p: Segment) -> ApiResult<String> {
    let n = segment(p, "number")?;
    crate::store::validate::e164(&n).map_err(|problem| ApiError::bad_request("number", problem))
}

async fn list_numbers(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<Number>>> {
    no_query(&uri)?;
    api.read(|s| s.list_numbers()).await.map(Json)
}

async fn create_number(
    State(api): State<Api>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Number>)> {
    let mut f = Fields::object(
        body::parse(&bytes)?,
        "",
        &["number", "tenant", "route", "headers"],
        &[],
    )?;
    let new = NewNumber {
        number: f.required("number")?,
        tenant: f.optional("tenant")?,
        route: route(&mut f)?.ok_or_else(|| ApiError::bad_request("route", "required"))?,
        headers: f.string_map("headers")?,
    };
    let n = api.write(move |s| s.create_number(new)).await?;
    tracing::info!(number = %n.number, "api: number created");
    Ok(created(n))
}

async fn get_number(State(api): State<Api>, number: Segment) -> ApiResult<Json<Number>> {
    let number = number_param(number)?;
    api.read(move |s| s.get_number(&number)).await.map(Json)
}

async fn update_number(
    State(api): State<Api>,
    number: Segment,
    bytes: Bytes,
) -> ApiResult<Json<Number>> {
    let number = number_param(number)?;
    let mut f = Fields::object(
        body::parse(&bytes)?,
        "",
        &["tenant", "route", "headers"],
        &["number"],
    )?;
    let patch = NumberPatch {
        tenant: f.nullable("tenant")?,
        route: route(&mut f)?,
        headers: if f.has("headers") {
            f.string_map("headers")?
        } else {
            f.nullable::<()>("headers")?.map(|_| Vec::new())
        },
    };
    let n = api.write(move |s| s.update_number(&number, patch)).await?;
    tracing::info!(number = %n.number, "api: number updated");
    Ok(Json(n))
}

async fn delete_number(State(api): State<Api>, number: Segment) -> ApiResult<StatusCode> {
    let number = number_param(number)?;
    let n = number.clone();
    api.write(move |s| s.delete_number(&n)).await?;
    tracing::info!(number = %number, "api: number deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- registrations and calls (from the workers) --------------------------------------------

async fn list_registrations(
    State(api): State<Api>,
    uri: Uri,
) -> ApiResult<Json<Vec<crate::runtime::RegistrationView>>> {
    no_query(&uri)?;
    api.ask(|s| s.registrations()).await.map(Json)
}

/// Every live call, from every worker.
async fn list_calls(
    State(api): State<Api>,
    uri: Uri,
) -> ApiResult<Json<Vec<crate::call::CallView>>> {
    no_query(&uri)?;
    api.ask(|s| s.calls()).await.map(Json)
}

/// BYE on both legs (or 487/CANCEL before answer); the CDR says `admin`.
async fn delete_call(State(api): State<Api>, id: Segment) -> ApiResult<StatusCode> {
    let id = segment(id, "id")?;
    let wanted = id.clone();
    if api.ask(move |s| s.hang_up(&wanted)).await? {
        tracing::info!(call = %id, "api: call ended");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("call {id}")))
    }
}

// ---- bans ----------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize)]
struct BanView {
    ip: String,
    reason: &'static str,
    expires_in_s: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ban_view(b: &Ban, now_ms: u64) -> BanView {
    BanView {
        ip: b.ip.to_string(),
        reason: b.reason.as_str(),
        expires_in_s: b.until_ms.saturating_sub(now_ms).div_ceil(1000),
    }
}

/// An IP as the workers see sources: IPv4-mapped IPv6 addresses are IPv4.
fn ip_of(s: &str, field: &str) -> ApiResult<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| ApiError::bad_request(field, format!("{s:?} is not an IP address")))
}

/// Polls the workers until `done` holds for their bans, or a second passes. A ban change travels
/// on the hand-off channel and the question on the control channel, and a worker drains control
/// before hand-offs in a loop turn: the first answer may predate the change, and since the list is
/// the union over workers one worker's answer says nothing of the others'. Any answer to a second
/// round of questions comes after the worker applied every hand-off queued before the first.
fn settle(shared: &Shared, done: impl Fn(&[Ban]) -> bool) -> Vec<Ban> {
    let deadline = Instant::now() + BAN_CONFIRM;
    let mut rounds = 0;
    loop {
        let bans = shared.bans();
        rounds += 1;
        if (rounds >= 2 && done(&bans)) || Instant::now() >= deadline {
            return bans;
        }
        if rounds >= 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

async fn list_bans(State(api): State<Api>, uri: Uri) -> ApiResult<Json<Vec<BanView>>> {
    no_query(&uri)?;
    let bans = api.ask(|s| s.bans()).await?;
    let now = now_ms();
    Ok(Json(bans.iter().map(|b| ban_view(b, now)).collect()))
}

/// Bans an IP by hand for `seconds` (default `security.ban_s`); an IP already banned gets the
/// new expiry.
async fn create_ban(
    State(api): State<Api>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<BanView>)> {
    let mut f = Fields::object(body::parse(&bytes)?, "", &["ip", "seconds"], &[])?;
    let ip = ip_of(&f.required::<String>("ip")?, "ip")?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(ApiError::bad_request("ip", "must be a host address"));
    }
    let seconds: u64 = f
        .optional("seconds")?
        .unwrap_or(u64::from(api.0.shared.config.security.ban_s));
    if !(1..=MAX_BAN_S).contains(&seconds) {
        return Err(ApiError::bad_request(
            "seconds",
            format!("must be 1 to {MAX_BAN_S}"),
        ));
    }
    let ban = Ban {
        ip,
        until_ms: now_ms() + seconds * 1000,
        reason: BanReason::Manual,
    };
    let seen = api
        .ask(move |s| {
            s.ban(ban);
            settle(s, |bans| {
                bans.iter()
                    .any(|b| b.ip == ip && b.until_ms >= ban.until_ms)
            })
        })
        .await?;
    tracing::info!(%ip, seconds, "api: manual ban");
    let now = now_ms();
    let view = seen
        .iter()
        .find(|b| b.ip == ip)
        .map_or_else(|| ban_view(&ban, now), |b| ban_view(b, now));
    Ok(created(view))
}

async fn delete_ban(State(api): State<Api>, ip: Segment) -> ApiResult<StatusCode> {
    let ip = ip_of(&segment(ip, "ip")?, "ip")?;
    let lifted = api
        .ask(move |s| {
            if !s.bans().iter().any(|b| b.ip == ip) {
                return false;
            }
            s.lift_ban(ip);
            settle(s, |bans| !bans.iter().any(|b| b.ip == ip));
            true
        })
        .await?;
    if !lifted {
        return Err(ApiError::not_found(format_args!("ban {ip}")));
    }
    tracing::info!(%ip, "api: ban lifted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_parses_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/openapi.json",
            "/api/v1/tenants",
            "/api/v1/tenants/{name}",
            "/api/v1/realms",
            "/api/v1/realms/{name}",
            "/api/v1/credentials",
            "/api/v1/credentials/{username}",
            "/api/v1/trunks",
            "/api/v1/trunks/{name}",
            "/api/v1/numbers",
            "/api/v1/numbers/{number}",
            "/api/v1/registrations",
            "/api/v1/calls",
            "/api/v1/calls/{id}",
            "/api/v1/bans",
            "/api/v1/bans/{ip}",
            "/health",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
        assert_eq!(paths.len(), 18, "every documented path is served");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let s = |e: StoreError| ApiError::from(e).status;
        assert_eq!(
            s(StoreError::Invalid {
                field: "cidrs[1]".into(),
                problem: "x".into()
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(s(StoreError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(s(StoreError::Duplicate("x".into())), StatusCode::CONFLICT);
        assert_eq!(s(StoreError::InUse("x".into())), StatusCode::CONFLICT);
        assert_eq!(s(StoreError::Conflict("x".into())), StatusCode::CONFLICT);
        assert_eq!(
            ApiError::from(StoreError::Invalid {
                field: "cidrs[1]".into(),
                problem: "not a CIDR".into()
            })
            .message,
            "cidrs[1]: not a CIDR"
        );
    }

    #[test]
    fn ips_are_canonical() {
        assert_eq!(
            ip_of("::ffff:192.0.2.1", "ip").unwrap(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip_of("[2001:db8::1]", "ip").unwrap(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert!(ip_of("nope", "ip").is_err());
    }
}
