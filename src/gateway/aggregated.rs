//! The gateway as an aggregated API of the Kubernetes API server: the APIService
//! `v1alpha1.<group>` (group `gateway.agentteams.dev` unless `--api-group` says otherwise) routes
//! `/apis/<group>/v1alpha1/…` to the gateway's TLS port ([`super::tls`]), so `teamctl` reaches the
//! gateway through the API server with the caller's own kube identity — whatever its kubeconfig
//! holds: client certificate, exec plugin, OIDC, token — and no port-forward or token to paste.
//!
//! Why an aggregated API: a service proxy or port-forward carries no identity (the gateway would
//! see the API server, or nobody), and client-certificate users have no token to hand on. The API
//! server authenticates the caller, checks RBAC for `create` on `tools.<group>` (the chart grants
//! it to every authenticated user), and forwards the identity in the front-proxy headers; the
//! gateway then authorizes each call exactly as for a bearer-token user: a SubjectAccessReview on
//! the `agentteams.dev` resource the tool touches (see [`super::tools`]).
//!
//! - `GET /apis/<group>/v1alpha1`: discovery (an `APIResourceList` with the `tools` resource).
//! - `POST /apis/<group>/v1alpha1/namespaces/<ns>/tools/<tool>`: a tool call in `<ns>`; the
//!   arguments' `namespace`, if given, must be `<ns>`.
//! - `POST /apis/<group>/v1alpha1/tools/<tool>`: a call not bound to one namespace (`get teams`
//!   across all namespaces, `teamctl get teams -A`).
//!
//! The API server ends requests that are not watches after 60 s (`--request-timeout`), so a
//! blocking wait_messages through it is bounded by the client ([`super::client`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse};
use serde_json::{Value, json};

use super::GatewayState;
use super::error::ApiError;
use super::front_proxy::Peer;

/// The API version the gateway serves.
pub const VERSION: &str = "v1alpha1";
/// The API group unless configured otherwise.
pub const DEFAULT_GROUP: &str = "gateway.agentteams.dev";
/// The one resource: tool calls, created by POST.
pub const RESOURCE: &str = "tools";

/// The routes under `/apis`.
pub(super) fn routes() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/apis/{group}/{version}", get(discovery))
        .route("/apis/{group}/{version}/tools/{tool}", post(call_cluster))
        .route("/apis/{group}/{version}/namespaces/{namespace}/tools/{tool}", post(call_namespaced))
}

fn served(state: &GatewayState, group: &str, version: &str) -> Result<(), ApiError> {
    if group == state.settings.api_group && version == VERSION {
        return Ok(());
    }
    Err(ApiError::not_found(format!("this gateway serves {}/{VERSION}, not {group}/{version}", state.settings.api_group)))
}

/// The group version's resources, as the API server's discovery and its availability check read
/// them. No authentication: it says only what the catalog (`GET /v1/tools`) says.
async fn discovery(State(state): State<Arc<GatewayState>>, Path((group, version)): Path<(String, String)>) -> impl IntoResponse {
    served(&state, &group, &version).map(|()| {
        Json(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{VERSION}"),
            "resources": [{
                "name": RESOURCE,
                "singularName": "tool",
                "namespaced": true,
                "kind": "ToolCall",
                "verbs": ["create"],
            }],
        }))
    })
}

async fn call_namespaced(
    State(state): State<Arc<GatewayState>>,
    Path((group, version, namespace, tool)): Path<(String, String, String, String)>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    served(&state, &group, &version)?;
    super::call_tool_with(&state, &tool, &headers, &peer, body, Some(&namespace)).await
}

async fn call_cluster(
    State(state): State<Arc<GatewayState>>,
    Path((group, version, tool)): Path<(String, String, String)>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    served(&state, &group, &version)?;
    super::call_tool_with(&state, &tool, &headers, &peer, body, None).await
}

/// Puts the path's namespace into the arguments; refuses arguments that name another one.
pub(super) fn bind_namespace(args: Value, namespace: &str) -> Result<Value, ApiError> {
    let Value::Object(mut o) = args else { return Ok(args) };
    match o.get("namespace") {
        None | Some(Value::Null) => {
            o.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
        Some(Value::String(ns)) if ns == namespace => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`namespace` in the arguments ({other}) differs from the namespace in the path ({namespace}); leave it out"
            )));
        }
    }
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_namespace_binds_the_arguments() {
        assert_eq!(bind_namespace(json!({ "to": "x" }), "ns").unwrap()["namespace"], "ns");
        assert_eq!(bind_namespace(json!({ "namespace": "ns" }), "ns").unwrap()["namespace"], "ns");
        let e = bind_namespace(json!({ "namespace": "other" }), "ns").unwrap_err();
        assert!(e.message.contains("other") && e.message.contains("path"), "{}", e.message);
        // Not an object: left for the tool's own decoding to refuse.
        assert_eq!(bind_namespace(json!([1]), "ns").unwrap(), json!([1]));
    }
}
