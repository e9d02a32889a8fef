//! The admin HTTP thread: `/health` and `/metrics` (SPEC §4), later `/api/v1`.
//!
//! Owns: an axum server on a current-thread tokio runtime in its own thread. It never touches a
//! worker's state directly: stats are requested over the workers' control channels.

pub mod token;

use crate::runtime::Shared;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub struct AdminHandle {
    _thread: std::thread::JoinHandle<()>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serves on `listener` (already bound, so a port in use fails at start) until the process ends.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<AdminHandle> {
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
                if let Err(e) = axum::serve(listener, router(shared)).await {
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
    let stats = tokio::task::spawn_blocking(move || s.collect_stats())
        .await
        .unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::stats::render(&stats),
    )
}
