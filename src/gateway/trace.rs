//! A span per request, a child of the caller's W3C `traceparent` header when it sends one, so a
//! client's trace goes on through the gateway (and, with a message, on to its recipient). The
//! probes and `/metrics` are left out: they would be most of the spans and tell nothing.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::propagation;

/// Paths that get no span.
const UNTRACED: &[&str] = &["/livez", "/readyz", "/metrics"];

pub(super) async fn trace_request(req: Request, next: Next) -> Response {
    if UNTRACED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {}", req.method(), route_of(req.uri().path())),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    propagation::adopt_http_parent(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The route a path belongs to, with names left out, for a span name of few values:
/// `/v1/tools/send_message` stays (tool names are few), `/v1/teams/a/members` is
/// `/v1/teams/{team}/members`.
fn route_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "tools", tool] => format!("/v1/tools/{}", super::tools::tool_name(tool).unwrap_or("{unknown}")),
        ["v1", "teams", _] => "/v1/teams/{team}".into(),
        ["v1", "teams", _, kind] => format!("/v1/teams/{{team}}/{kind}"),
        ["v1", "teams", _, kind, _] => format!("/v1/teams/{{team}}/{kind}/{{name}}"),
        ["apis", ..] => "/apis/…".into(),
        ["mcp"] | ["v1", "tools"] | ["v1", "teams"] => path.to_owned(),
        _ => "{other}".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn span_names_leave_object_names_out() {
        assert_eq!(route_of("/v1/tools/send_message"), "/v1/tools/send_message");
        assert_eq!(route_of("/v1/teams/alpha"), "/v1/teams/{team}");
        assert_eq!(route_of("/v1/teams/alpha/members/general-2"), "/v1/teams/{team}/members/{name}");
        assert_eq!(route_of("/v1/tools/no-such-tool"), "/v1/tools/{unknown}");
        assert_eq!(route_of("/mcp"), "/mcp");
        assert_eq!(route_of("/no/such/endpoint/x"), "{other}");
        assert_eq!(route_of("/apis/agentteams.dev/v1alpha1/namespaces/x"), "/apis/…");
    }
}
