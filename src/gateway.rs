//! The agent gateway: the team tools over a JSON API, over MCP (streamable HTTP at `/mcp`), and
//! through `teamctl`. Stateless: every replica reads Kubernetes and Redis, so several can run
//! behind one Service. Each replica keeps a watch cache of the Teams (all namespaces), so the
//! message tools do not read the API server on every call.
//!
//! # JSON API
//!
//! - `POST /v1/tools/{tool}` with the tool's arguments as a JSON object → `200` and the result
//!   object. Tools: send_message, wait_messages, team_task, agent_memory, spawn_member,
//!   team_create, team_delete, get (see [`tools::TOOLS`] and the argument types in [`args`]).
//! - `GET /v1/tools`: the catalog (names, descriptions, JSON schemas); no auth.
//! - `GET /v1/teams`, `/v1/teams/{team}`, `/v1/teams/{team}/members[/{name}]`,
//!   `/v1/teams/{team}/tasks[/{name}]`, each with an optional `?namespace=`: the `get` tool.
//! - Errors: `{ "error": { "code", "message" } }` with a stable code and its HTTP status
//!   ([`error::ErrorCode`]): invalid_argument 400, unauthenticated 401, forbidden 403, not_found 404,
//!   unknown_recipient 404, conflict 409, recipient_finished 409, team_disbanded 410,
//!   too_large 413, unavailable 503.
//! - `/metrics`, `/livez`, `/readyz` on the same port.
//! - With `--aggregated-listen`, the same routes over TLS plus `/apis/<group>/v1alpha1/…`: the
//!   aggregated API the API server proxies to with the caller's identity ([`aggregated`]).
//!
//! # Layout
//! - [`auth`]: TokenReview / SubjectAccessReview and the identity cache.
//! - [`aggregated`], [`front_proxy`], [`tls`]: the aggregated API, how the API server's front
//!   proxy is trusted, the TLS listener.
//! - [`args`]: tool arguments and their decoding; [`tools`]: the tools and their authorization.
//! - [`mcp`]: the MCP server; [`client`]: the JSON API client of teamctl; [`error`]: error codes.
//! - [`idle`]: a member blocked in `wait_messages` reads Idle; [`idle_notice`]: its lead is told.
//! - [`usage`]: the coalescing writer of what `usage_report` accepted (Member `status.usage`).
//! - `trace`: a span per request, continuing the caller's `traceparent`.

pub mod aggregated;
pub mod args;
pub mod auth;
pub mod client;
pub mod error;
pub mod front_proxy;
pub mod idle;
pub mod idle_notice;
pub mod mcp;
pub mod tls;
pub mod tools;
mod trace;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{Member, Team};
use crate::bus::Bus;
use crate::config::GatewayArgs;
use crate::metrics::Metrics;
use auth::Authenticator;
use error::ApiError;
use front_proxy::Peer;

/// Limits and timings of the gateway.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a wait_messages call blocks, whatever the team allows.
    pub max_wait: Duration,
    /// How long spawn_member waits for the operator to name the new member.
    pub name_wait: Duration,
    /// How long an authenticated identity is cached.
    pub auth_cache_ttl: Duration,
    /// Longest one wait_messages over MCP blocks (clients drop calls after 60 s).
    pub mcp_wait_bound: Duration,
    /// The namespace whose Teams are cached (the others are read with a GET); None: all.
    pub namespace: Option<String>,
    /// The API group of the aggregated API (`/apis/<group>/v1alpha1`).
    pub api_group: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_body_bytes: 256 * 1024,
            max_wait: Duration::from_secs(3600),
            name_wait: Duration::from_secs(5),
            auth_cache_ttl: Duration::from_secs(30),
            mcp_wait_bound: mcp::MCP_WAIT_BOUND,
            namespace: None,
            api_group: aggregated::DEFAULT_GROUP.to_owned(),
        }
    }
}

/// What every request handler shares.
pub struct GatewayState {
    pub client: Client,
    pub bus: Bus,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub settings: GatewaySettings,
    /// Every Team, from one watch: where the tools look up the caller's team (`tools::lookup_team`).
    teams: Store<Team>,
    /// Every Member, from one watch (also the cached identities' check, see [`auth`]).
    members: Store<Member>,
    /// What usage_report accepted, on its way to the Members' status.
    usage: Arc<usage::UsageWriter>,
    /// Drive the watches of Teams and Members and the usage writer; aborted with the state.
    watches: [JoinHandle<()>; 3],
}

impl GatewayState {
    /// Must be called inside a tokio runtime: it starts the watches and the usage writer.
    pub fn new(client: Client, bus: Bus, metrics: Arc<Metrics>, settings: GatewaySettings) -> Self {
        let (teams, team_watch) = watch::<Team>(client.clone(), settings.namespace.as_deref());
        let (members, member_watch) = watch::<Member>(client.clone(), settings.namespace.as_deref());
        let auth = Authenticator::new(client.clone(), settings.auth_cache_ttl, members.clone());
        let tool_names: Vec<&'static str> = tools::Tool::ALL.iter().map(|t| t.as_str()).collect();
        metrics.zero_gateway_series(&tool_names);
        let usage = usage::UsageWriter::new(client.clone(), members.clone());
        let flush = usage.spawn();
        GatewayState { client, bus, auth, metrics, settings, teams, members, usage, watches: [team_watch, member_watch, flush] }
    }
}

impl Drop for GatewayState {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

/// Starts one watch of the `K`s of `namespace` (or all namespaces) feeding a store. Serving does
/// not wait for it: until it has listed, lookups miss and fall back to a GET.
fn watch<K>(client: Client, namespace: Option<&str>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let api = match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => Api::<K>::namespaced(client, ns),
        None => Api::<K>::all(client),
    };
    let events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        // Nothing reads managedFields; they would only take memory for every object of the cluster.
        .modify(|k| k.managed_fields_mut().clear())
        .reflect(writer);
    let watch = tokio::spawn(events.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff, objects are read from the API meanwhile");
        }
    }));
    (store, watch)
}

/// Runs `team-operator gateway` until the process ends.
pub async fn run(args: GatewayArgs, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let bus = Bus::connect(args.bus.bus_config()).await?;
    let settings = GatewaySettings {
        max_body_bytes: args.max_body_bytes,
        max_wait: Duration::from_secs(args.max_wait_seconds),
        auth_cache_ttl: Duration::from_secs(args.auth_cache_seconds),
        namespace: args.namespace.clone(),
        api_group: args.api_group.clone(),
        ..GatewaySettings::default()
    };
    // A bad certificate fails the start, not the first request.
    let cert = match (&args.aggregated_listen, &args.tls_cert_file, &args.tls_key_file) {
        (Some(_), Some(c), Some(k)) => Some(tls::ServingCert::from_files(c, k)?),
        _ => None,
    };
    let state = Arc::new(GatewayState::new(client, bus, metrics, settings));
    let usage = Arc::clone(&state.usage);
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %args.listen, "gateway listening");
    let served = match (args.aggregated_listen, cert) {
        (Some(addr), Some(cert)) => {
            let tls_listener = TcpListener::bind(addr).await?;
            tracing::info!(%addr, group = %args.api_group, "gateway serving its aggregated API over TLS");
            tokio::try_join!(serve(listener, state.clone()), serve_aggregated(tls_listener, state, cert)).map(|_| ())
        }
        _ => serve(listener, state).await,
    };
    // Usage taken and not written yet is written before the process ends (see `usage`).
    usage.flush().await;
    served
}

/// Serves the gateway on `listener` until the process ends (or SIGTERM).
pub async fn serve(listener: TcpListener, state: Arc<GatewayState>) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

/// Serves the gateway over TLS on `listener`, with the front proxy trusted, until the process
/// ends (or SIGTERM): what the APIService points at.
pub async fn serve_aggregated(listener: TcpListener, state: Arc<GatewayState>, cert: tls::ServingCert) -> anyhow::Result<()> {
    tls::serve(listener, router(state.clone()), state.client.clone(), cert, shutdown()).await
}

async fn shutdown() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The gateway's routes.
pub fn router(state: Arc<GatewayState>) -> Router {
    let mcp_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        // SSE answers, so a blocked wait_messages can send progress notifications before its result.
        .with_json_response(false)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.settings.max_body_bytes);
    let mcp_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(mcp::McpTools::new(mcp::Backend::Local(mcp_state.clone())).with_wait_bound(mcp_state.settings.mcp_wait_bound)),
        Arc::new(NeverSessionManager::default()),
        mcp_config,
    );
    let mcp_routes = Router::new().route_service("/mcp", mcp).layer(middleware::from_fn_with_state(state.clone(), authenticate_mcp));
    let api = Router::new()
        .route("/v1/tools", get(catalog))
        .route("/v1/tools/{tool}", post(call_tool))
        .route("/v1/teams", get(list_teams))
        .route("/v1/teams/{team}", get(get_team))
        .route("/v1/teams/{team}/{kind}", get(list_in_team))
        .route("/v1/teams/{team}/{kind}/{name}", get(get_in_team))
        .merge(aggregated::routes())
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .with_state(state.clone());
    api.merge(mcp_routes)
        .merge(crate::health::router(state.metrics.clone(), ready_check(&state)))
        .fallback(|| async { ApiError::not_found("no such endpoint; see GET /v1/tools, POST /v1/tools/{tool} and /mcp") })
        .method_not_allowed_fallback(|| async { ApiError::new(error::ErrorCode::MethodNotAllowed, "method not allowed on this endpoint") })
        .layer(middleware::from_fn(trace::trace_request))
}

/// The gateway is ready while its Redis answers: every tool needs it.
fn ready_check(state: &Arc<GatewayState>) -> crate::health::ReadyCheck {
    let bus = state.bus.clone();
    Arc::new(move || {
        let bus = bus.clone();
        Box::pin(async move { bus.ping().await })
    })
}

/// Authenticates an MCP request and hands the caller to the MCP handler; 401 without a token.
async fn authenticate_mcp(State(state): State<Arc<GatewayState>>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    match state.auth.authenticate(req.headers(), &peer).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            state.metrics.gateway_requests.get_or_create(&crate::metrics::RequestLabel { tool: "mcp", code: e.code.as_str() }).inc();
            e.into_response()
        }
    }
}

async fn catalog() -> Json<Value> {
    let tools: Vec<Value> =
        tools::TOOLS.iter().map(|t| json!({ "name": t.name, "description": t.description, "input_schema": (t.schema)() })).collect();
    Json(json!({ "tools": tools }))
}

async fn call_tool(
    State(state): State<Arc<GatewayState>>,
    Path(tool): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    call_tool_with(&state, &tool, &headers, &peer, body, None).await
}

/// One tool call from the JSON API or the aggregated API (which binds the namespace).
async fn call_tool_with(
    state: &GatewayState,
    tool: &str,
    headers: &HeaderMap,
    peer: &Peer,
    body: Result<Bytes, BytesRejection>,
    namespace: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let label = tools::tool_name(tool).unwrap_or("unknown");
    let count = |e: ApiError| {
        state.metrics.gateway_requests.get_or_create(&crate::metrics::RequestLabel { tool: label, code: e.code.as_str() }).inc();
        e
    };
    let caller = state.auth.authenticate(headers, peer).await.map_err(count)?;
    let body = body.map_err(|r| count(body_rejection(r, state.settings.max_body_bytes)))?;
    let mut args = args::parse_body(&body).map_err(count)?;
    if let Some(ns) = namespace {
        args = aggregated::bind_namespace(args, ns).map_err(count)?;
    }
    tools::call(state, &caller, tool, args).await.map(Json)
}

fn body_rejection(r: BytesRejection, max: usize) -> ApiError {
    if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(error::ErrorCode::TooLarge, format!("the request body is over the limit of {max} bytes"))
    } else {
        ApiError::invalid(format!("cannot read the request body: {}", r.body_text()))
    }
}

/// `?namespace=` of the GET routes.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NsQuery {
    namespace: Option<String>,
}

fn query(q: Result<Query<NsQuery>, QueryRejection>) -> Result<Option<String>, ApiError> {
    q.map(|Query(q)| q.namespace).map_err(|r| ApiError::invalid(format!("bad query string: {}", r.body_text())))
}

async fn get_via_tool(state: &GatewayState, headers: &HeaderMap, peer: &Peer, args: Value) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.authenticate(headers, peer).await?;
    tools::call(state, &caller, "get", args).await.map(Json)
}

async fn list_teams(
    State(state): State<Arc<GatewayState>>,
    peer: Peer,
    headers: HeaderMap,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let ns = query(q)?;
    get_via_tool(&state, &headers, &peer, json!({ "kind": "teams", "namespace": ns })).await
}

async fn get_team(
    State(state): State<Arc<GatewayState>>,
    Path(team): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let ns = query(q)?;
    get_via_tool(&state, &headers, &peer, json!({ "kind": "teams", "name": team, "namespace": ns })).await
}

fn kind(kind: &str) -> Result<&'static str, ApiError> {
    match kind {
        "members" => Ok("members"),
        "tasks" => Ok("tasks"),
        other => Err(ApiError::not_found(format!("no collection {other:?} in a team; use members or tasks"))),
    }
}

async fn list_in_team(
    State(state): State<Arc<GatewayState>>,
    Path((team, k)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let ns = query(q)?;
    get_via_tool(&state, &headers, &peer, json!({ "kind": kind(&k)?, "team": team, "namespace": ns })).await
}

async fn get_in_team(
    State(state): State<Arc<GatewayState>>,
    Path((team, k, name)): Path<(String, String, String)>,
    peer: Peer,
    headers: HeaderMap,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let ns = query(q)?;
    get_via_tool(&state, &headers, &peer, json!({ "kind": kind(&k)?, "team": team, "name": name, "namespace": ns })).await
}
