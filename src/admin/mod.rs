//! The admin HTTP thread: `/health`, `/metrics` and the `/api/v1` provisioning API (SPEC §4).
//!
//! Owns: an axum server on a current-thread tokio runtime in its own thread, and the bearer-token
//! guard in front of every `/api` path. It never touches a worker's state directly: stats,
//! registrations and bans are requested over the workers' control channels, provisioning reaches
//! them as a published snapshot.

pub mod api;
mod body;
pub mod token;

use crate::runtime::Shared;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub struct AdminHandle {
    _thread: std::thread::JoinHandle<()>,
}

/// Everything the admin listener serves; `/api` paths need the bearer token.
pub fn router(shared: Arc<Shared>) -> anyhow::Result<Router> {
    let api = api::Api::open(shared.clone()).map_err(|e| {
        anyhow::anyhow!(
            "cannot open store {} for the API: {e}",
            shared.config.store.path.display()
        )
    })?;
    let token: Arc<str> = shared.token.as_str().into();
    Ok(Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(api::router(api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(token, require_token)))
}

fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme is case-insensitive).
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// Every `/api` request, routed or not, needs the token (401 otherwise, before anything else is
/// looked at); `/api` answers are never cached.
async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    if !is_api_path(req.uri().path()) {
        return next.run(req).await;
    }
    if !bearer(&req).is_some_and(|t| token::matches(t, token.as_bytes())) {
        tracing::debug!(
            path = req.uri().path(),
            "api: request without a valid bearer token"
        );
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "missing or wrong bearer token (Authorization: Bearer <admin token>)"
            })),
        )
            .into_response();
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sipedge\""),
        );
        return r;
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no such path: {}", uri.path()) })),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(serde_json::json!({ "error": "method not allowed on this path" })),
    )
        .into_response()
}

/// Serves on `listener` (already bound, so a port in use fails at start) until the process ends.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<AdminHandle> {
    let app = router(shared)?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("admin listener: {e}");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("admin server: {e}");
                }
            });
        })?;
    Ok(AdminHandle { _thread: thread })
}

async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "uptime_s": s.started.elapsed().as_secs(),
        "workers": s.peers.len(),
    }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let s2 = s.clone();
    let stats = tokio::task::spawn_blocking(move || s.collect_stats())
        .await
        .unwrap_or_default();
    let mut text = crate::stats::render(&stats);
    if let Some(m) = &s2.media {
        crate::stats::render_media(m.stats(), &mut text);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}
