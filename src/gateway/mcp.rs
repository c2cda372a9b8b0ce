//! The tools as an MCP server (rmcp): served statelessly over streamable HTTP at `/mcp` by the
//! gateway, and over stdio by `teamctl mcp`, which forwards each call to the gateway's JSON API.
//!
//! A refused call is a tool result with `isError: true` whose text is the gateway's
//! `{ "error": { "code", "message" } }`, so the model reads why and can fix its call.
//!
//! Long waits: common MCP clients give up on a call after 60 s (the TypeScript SDK's default)
//! or 120 s, so over MCP a `wait_messages` blocks at most [`MCP_WAIT_BOUND`] (its answer then
//! says `timed_out: true`: call again), and when the client sent a progress token it gets a
//! progress notification every [`PROGRESS_EVERY`] while the call blocks.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::GatewayState;
use super::auth::Caller;
use super::client::GatewayClient;
use super::error::ApiError;
use super::tools::{TOOLS, Tool as ToolName};

/// Longest one `wait_messages` over MCP blocks, below the 60 s after which common clients drop a
/// call.
pub const MCP_WAIT_BOUND: Duration = Duration::from_secs(50);
/// How often a blocked `wait_messages` tells a client that sent a progress token that it is
/// still waiting (more often when the wait bound is short).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the tools run against.
#[derive(Clone)]
pub enum Backend {
    /// In the gateway: the caller was authenticated by the HTTP layer.
    Local(Arc<GatewayState>),
    /// In `teamctl mcp`: forward to a gateway.
    Remote(GatewayClient),
}

/// The MCP server of the tools.
#[derive(Clone)]
pub struct McpTools {
    backend: Backend,
    /// `namespace` and `team` added to calls that leave them out (teamctl's flags).
    defaults: (Option<String>, Option<String>),
    /// Longest one wait_messages blocks ([`MCP_WAIT_BOUND`] unless changed).
    wait_bound: Duration,
}

/// What the server tells a model when it connects.
pub const INSTRUCTIONS: &str = "You are a member of an agent team on Kubernetes. Coordinate with your team through these tools: \
wait_messages to receive messages (ack the stream_ids you handled in your next call), send_message to talk to a member or everyone (\"*\"), \
team_task to share a task board, agent_memory to keep notes across runs, get to see your team. \
The lead also has spawn_member and team_delete. Errors come back as {\"error\": {\"code\", \"message\"}}.";

impl McpTools {
    pub fn new(backend: Backend) -> Self {
        McpTools { backend, defaults: (None, None), wait_bound: MCP_WAIT_BOUND }
    }

    /// Changes the longest a wait_messages call blocks (at least 1 s).
    pub fn with_wait_bound(mut self, bound: Duration) -> Self {
        self.wait_bound = bound.max(Duration::from_secs(1));
        self
    }

    /// Caps a wait_messages call's `timeout_seconds` at the wait bound.
    fn bound_wait(&self, args: &mut Value) {
        let bound = self.wait_bound.as_secs();
        if let Value::Object(obj) = args {
            let asked = obj.get("timeout_seconds").and_then(Value::as_u64).unwrap_or(bound);
            // A malformed value is left for the tool's own decoding to refuse, naming the field.
            if obj.get("timeout_seconds").is_none_or(|v| v.as_u64().is_some()) {
                obj.insert("timeout_seconds".to_owned(), Value::from(asked.min(bound)));
            }
        }
    }

    /// Adds `namespace` and `team` to calls that take them and leave them out.
    pub fn with_defaults(mut self, namespace: Option<String>, team: Option<String>) -> Self {
        self.defaults = (namespace, team);
        self
    }

    fn fill_defaults(&self, tool: &str, args: &mut Value) {
        let Some(def) = TOOLS.iter().find(|t| t.name == tool) else { return };
        let schema = (def.schema)();
        let takes = |k: &str| schema.get("properties").and_then(|p| p.get(k)).is_some();
        let Value::Object(obj) = args else { return };
        for (key, value) in [("namespace", &self.defaults.0), ("team", &self.defaults.1)] {
            if let Some(v) = value
                && takes(key)
                && !obj.contains_key(key)
            {
                obj.insert(key.to_owned(), Value::String(v.clone()));
            }
        }
    }

    /// The tool list as MCP tools, with annotations and output schemas.
    pub fn tools() -> Vec<Tool> {
        TOOLS
            .iter()
            .map(|t| {
                let hints = ToolAnnotations::new()
                    .read_only(t.hints.read_only)
                    .destructive(t.hints.destructive)
                    .idempotent(t.hints.idempotent)
                    .open_world(false);
                Tool::new(t.name, t.description, Arc::new((t.schema)())).with_raw_output_schema(Arc::new((t.output)())).annotate(hints)
            })
            .collect()
    }

    async fn run(&self, name: &str, args: Value, context: &RequestContext<RoleServer>) -> Result<Value, ApiError> {
        match &self.backend {
            Backend::Local(state) => {
                let caller = context
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Arc<Caller>>())
                    .cloned()
                    .ok_or_else(|| ApiError::unauthenticated("no authenticated caller on this MCP request"))?;
                super::tools::call(state, &caller, name, args).await
            }
            Backend::Remote(client) => client.call(name, &args).await.map_err(|e| {
                let body = e.body();
                let code = body.error.code.parse().unwrap_or(super::error::ErrorCode::Unavailable);
                ApiError::new(code, body.error.message)
            }),
        }
    }
}

impl ServerHandler for McpTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("team-operator", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Self::tools()))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let mut args = request.arguments.map(Value::Object).unwrap_or_else(|| Value::Object(Default::default()));
        self.fill_defaults(&request.name, &mut args);
        let waiting = request.name == ToolName::WaitMessages.as_str();
        if waiting {
            self.bound_wait(&mut args);
        }
        let call = self.run(&request.name, args, &context);
        let answer = match context.meta.get_progress_token().filter(|_| waiting) {
            None => call.await,
            Some(token) => {
                // Tell the client every few seconds that the wait goes on.
                tokio::pin!(call);
                let every = PROGRESS_EVERY.min(self.wait_bound / 3);
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                let started = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        a = &mut call => break a,
                        _ = ticks.tick() => {
                            let waited = started.elapsed().as_secs_f64();
                            let mut note = ProgressNotificationParam::new(token.clone(), waited);
                            note.total = Some(self.wait_bound.as_secs_f64());
                            note.message = Some(format!("waiting for messages ({waited:.0} s)"));
                            let _ = context.peer.notify_progress(note).await;
                        }
                    }
                }
            }
        };
        let result = match answer {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => CallToolResult::structured_error(serde_json::to_value(e.body()).unwrap_or(Value::Null)),
        };
        Ok(result.into())
    }
}
