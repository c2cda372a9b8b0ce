//! The HTTP endpoints every process serves beside its work: /metrics (OpenMetrics text), /livez
//! (the process answers) and /readyz (it can do its work: a [`ReadyCheck`] says).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Whether the process is ready; `Err` says what it waits for (the body of a 503).
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Serves the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, ready: ReadyCheck) -> anyhow::Result<()> {
    let app = router(metrics, ready);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The endpoints as a router, for processes that serve them beside their own routes.
pub fn router<S: Clone + Send + Sync + 'static>(metrics: Arc<Metrics>, ready: ReadyCheck) -> Router<S> {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()) }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let check = ready();
                async move {
                    match check.await {
                        Ok(()) => (StatusCode::OK, "ok".to_owned()).into_response(),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
                    }
                }
            }),
        )
}
