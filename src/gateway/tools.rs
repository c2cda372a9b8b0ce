//! The tools themselves, shared by the JSON API, MCP and teamctl: a catalog (names, descriptions,
//! input schemas) and [`call`], which authorizes and runs one call.
//!
//! # Authorization
//!
//! Every call acts inside one team (`team`, default: the caller's own) of one namespace.
//! - A member pod (a member by ownership, see [`super::auth`]) acts only in its own team, as its
//!   own agent name: any other team is `forbidden`, except a team whose `spec.lead.podName` is the
//!   caller's pod and which that pod owns by uid (a team it created with team_create), where it
//!   is the lead. team_delete and spawn_member are the lead's. agent_memory reaches only the
//!   caller's own agent type, in its team's memory project.
//! - A pod of no team acts as its ServiceAccount: RBAC decides, as for kube users below.
//! - A kube user acts as the team's lead (or as `member`), if RBAC allows the verb below on
//!   `agentteams.dev` resources in the namespace (SubjectAccessReview):
//!
//! | tool | verb | resource |
//! |------|------|----------|
//! | team_create | create | teams |
//! | team_delete | delete | teams |
//! | spawn_member | create | members |
//! | team_task create / update / get / list / claim | create / update / get / list / update | teamtasks |
//! | send_message | create | teams/messages |
//! | wait_messages | get | teams/messages |
//! | agent_memory read / write, append | get / update | teams/memory |
//! | get teams / members / tasks | list or get | teams / members / teamtasks |
//! | get messages (the newest, read-only; `teamctl watch`) | get | teams/messages |
//! | shutdown_request (shutdown_response is a member's own) | update | members/shutdown |
//! | plan_review (plan_submit is a member's own) | update | members/plan |
//!
//! usage_report is a member's own, from its pod: nobody reports for it.
//!
//! A member of an agent type with `planApproval: required` may call only reads and plan_submit
//! until its plan is approved (see `plan`).

mod actor;
mod get;
mod member_fields;
mod members;
mod memory;
mod messages;
mod plan;
pub mod shutdown;
mod tasks;
mod teams;
mod transcript;
mod usage;
mod views;

pub use views::{member_view, task_view, team_view};

use schemars::JsonSchema;
use serde_json::Value;
use tracing::Instrument;

use super::GatewayState;
use super::args::*;
use super::auth::Caller;
use super::error::ApiError;

named_enum! {
    /// The tools by name: what dispatch matches on and metrics label with; `ALL` is in catalog
    /// order.
    pub enum Tool {
        SendMessage = "send_message",
        WaitMessages = "wait_messages",
        TeamTask = "team_task",
        AgentMemory = "agent_memory",
        SpawnMember = "spawn_member",
        TeamCreate = "team_create",
        TeamDelete = "team_delete",
        Get = "get",
        ShutdownRequest = "shutdown_request",
        ShutdownResponse = "shutdown_response",
        PlanSubmit = "plan_submit",
        PlanReview = "plan_review",
        UsageReport = "usage_report",
    }
}

impl std::str::FromStr for Tool {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Tool::ALL.iter().copied().find(|t| t.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Tool::ALL.iter().map(|t| t.as_str()).collect();
            format!("no tool named {name:?}; the tools are {}", known.join(", "))
        })
    }
}

/// A tool: its name, what a model reads about it, its input schema, its behaviour hints and
/// the shape of its answer.
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> serde_json::Map<String, Value>,
    pub hints: Hints,
    /// JSON Schema of a successful answer (MCP `outputSchema`). Loose on purpose: the fields are
    /// described, none is required, so a refusal's `{ "error": … }` fits as well.
    pub output: fn() -> serde_json::Map<String, Value>,
}

/// MCP tool annotations: what a client may assume about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hints {
    /// Changes nothing.
    pub read_only: bool,
    /// May replace or remove something (not only add).
    pub destructive: bool,
    /// Calling it again with the same arguments changes nothing more.
    pub idempotent: bool,
}

const fn hints(read_only: bool, destructive: bool, idempotent: bool) -> Hints {
    Hints { read_only, destructive, idempotent }
}

/// An object schema with these properties (name, JSON type, description), none required and
/// each may be null (clients validate answers against it: an unset owner is `null`).
fn object(props: &[(&str, &str, &str)]) -> serde_json::Map<String, Value> {
    let mut properties = serde_json::Map::new();
    for (name, ty, description) in props {
        properties.insert((*name).to_owned(), serde_json::json!({ "type": [ty, "null"], "description": description }));
    }
    let error =
        serde_json::json!({ "type": "object", "description": "Set instead of the rest when the call was refused: { code, message }." });
    properties.insert("error".to_owned(), error);
    match serde_json::json!({ "type": "object", "properties": properties }) {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    }
}

fn team_fields() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("name", "string", "Team name."),
        ("phase", "string", "Active or Disbanded."),
        ("lead", "string", "Member name of the lead."),
        ("agents", "array", "Agent type names."),
        ("counts", "object", "Members per phase."),
        ("priority", "integer", "Admission priority (-1000 to 1000)."),
        ("budget", "object", "The whole team's budget: { turns, seconds, tokens }."),
        ("teams", "array", "The teams (when listing)."),
    ]
}

fn out_send() -> serde_json::Map<String, Value> {
    object(&[("id", "string", "Message id."), ("delivered", "array", "One { to, stream_id } per inbox written.")])
}
fn out_wait() -> serde_json::Map<String, Value> {
    object(&[
        ("messages", "array", "Messages: { id, stream_id, from, to, kind (message | system), body, sent_at }."),
        ("acked", "integer", "How many of `ack` were pending."),
        ("timed_out", "boolean", "No message came within the wait: call again."),
        (
            "max_timeout_seconds",
            "integer",
            "The longest one wait may block in this team (its memberTimeoutSeconds, capped by the gateway).",
        ),
        ("peek", "boolean", "A person's look at the inbox: nothing was delivered or acked."),
    ])
}
fn out_task() -> serde_json::Map<String, Value> {
    object(&[
        ("name", "string", "Task name."),
        ("state", "string", "pending | in_progress | completed | failed."),
        ("owner", "string", "Member name of the owner."),
        ("subject", "string", "One-line summary."),
        ("result", "string", "What came out of it."),
        ("blocked", "boolean", "Waiting on open dependencies."),
        ("tasks", "array", "The tasks (action=list)."),
    ])
}
fn out_memory() -> serde_json::Map<String, Value> {
    object(&[
        ("text", "string", "The memory (read)."),
        ("bytes", "integer", "Its size (read)."),
        ("stored_bytes", "integer", "Bytes stored (write, append)."),
        ("truncated", "boolean", "Text was cut to fit the cap."),
        ("agent", "string", "Agent type."),
        ("project", "string", "Memory project."),
    ])
}
fn out_member() -> serde_json::Map<String, Value> {
    object(&[
        ("name", "string", "Team-unique member name, once assigned."),
        ("object", "string", "Name of the Member object."),
        ("agent", "string", "Agent type."),
        ("phase", "string", "Queued, Starting, Active, Idle, AwaitingApproval, Completed, Failed or Cancelled."),
        ("team", "string", "Team name."),
    ])
}
fn out_team() -> serde_json::Map<String, Value> {
    object(&team_fields())
}
fn out_deleted() -> serde_json::Map<String, Value> {
    object(&[("deleted", "string", "The team disbanded."), ("namespace", "string", "Its namespace.")])
}
fn out_get() -> serde_json::Map<String, Value> {
    let mut fields = team_fields();
    fields.extend([
        ("members", "array", "Members (kind=members): name, phase, reason, queue_position (Queued members), ..."),
        ("tasks", "array", "Tasks (kind=tasks)."),
        ("messages", "array", "The newest messages, oldest first (kind=messages)."),
    ]);
    object(&fields)
}

fn out_shutdown() -> serde_json::Map<String, Value> {
    object(&[
        ("member", "string", "Member name of who was asked (request) or who answered (response)."),
        ("state", "string", "Requested, Approved or Rejected."),
        ("requested_by", "string", "Who asked (request)."),
        ("reason", "string", "The answer's reason (response)."),
    ])
}

fn out_plan() -> serde_json::Map<String, Value> {
    object(&[
        ("member", "string", "Member name whose plan it is."),
        ("state", "string", "Submitted, Approved or Rejected."),
        ("revision", "integer", "1 for the first plan, one more for each plan submitted again."),
        ("feedback", "string", "The review's feedback (plan_review)."),
    ])
}

fn out_usage() -> serde_json::Map<String, Value> {
    object(&[
        ("member", "string", "Your member name."),
        ("usage", "object", "What is recorded for you now: { turns, tokens }."),
        ("budget", "object", "Your agent type's budget: { turns, seconds, tokens }, each optional."),
        ("team_budget", "object", "Your team's budget (spec.budget)."),
        ("over", "string", "Set when a budget is over: start no further turn; the operator stops you."),
    ])
}

fn schema_of<T: JsonSchema>() -> serde_json::Map<String, Value> {
    let schema = schemars::schema_for!(T);
    match serde_json::to_value(schema) {
        Ok(Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    }
}

/// Every tool, in the order they are listed.
pub const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: Tool::SendMessage.as_str(),
        description: "Send a message to one member of your team (by member name, e.g. `general-2`; `lead` is always your team's lead) or to every member that has not finished (`to: \"*\"`). Returns the message id and one entry per inbox written. Refused with unknown_recipient or recipient_finished when nobody would read it.",
        schema: schema_of::<SendMessageArgs>,
        hints: hints(false, false, false),
        output: out_send,
    },
    ToolDef {
        name: Tool::WaitMessages.as_str(),
        description: "Wait for messages to you: returns at once when messages are waiting, else blocks until one arrives or the timeout passes (an empty list then). Delivery is at least once: pass the `stream_id`s of messages you handled as `ack` in your next call, or they come back. Messages of kind `system` come from the operator (a member failed, the team disbanded). Over MCP one call blocks at most 50 s (with progress notifications meanwhile) and answers `timed_out: true` when nothing came: call again.",
        schema: schema_of::<WaitMessagesArgs>,
        hints: hints(false, false, false),
        output: out_wait,
    },
    ToolDef {
        name: Tool::TeamTask.as_str(),
        description: "The team's shared task board. action=create adds a task (subject, description, owner, depends_on); action=update moves its state (pending -> in_progress -> completed|failed; a task with open dependencies cannot go in_progress; completed and failed are final) and records a result or owner; action=get reads one; action=list lists them (filter by state, owner); action=claim takes the first pending, unblocked, unowned task for you (or the task `name`s) and returns it: atomic, so of two members claiming one task one gets it and the other the next task (or, for a named task, conflict); not_found when none is left. Claiming sets the owner only: move it to in_progress with update.",
        schema: schema_of::<TeamTaskArgs>,
        hints: hints(false, false, false),
        output: out_task,
    },
    ToolDef {
        name: Tool::AgentMemory.as_str(),
        description: "Your agent type's memory, kept across runs and shared by teams of the same project: action=read returns it, action=write replaces it with `text`, action=append adds `text` at the end. At most 102,400 bytes: write keeps the beginning, append drops the oldest text.",
        schema: schema_of::<AgentMemoryArgs>,
        hints: hints(false, true, false),
        output: out_memory,
    },
    ToolDef {
        name: Tool::SpawnMember.as_str(),
        description: "Lead only. Start a new member of your team: an agent of one of the team's agent types, with a prompt that tells it its task. It gets a team-unique name (`general`, `general-2`, ...) returned as `name` once assigned, and waits as Queued when the team's maxAgents are running. Message it with send_message; it reports back the same way.",
        schema: schema_of::<SpawnMemberArgs>,
        hints: hints(false, false, false),
        output: out_member,
    },
    ToolDef {
        name: Tool::TeamCreate.as_str(),
        description: "Create a new team that you lead: its agent types (image or pod template, model, memory), its concurrency cap and wait timeout, its admission priority and its budget. Called from a member pod, the calling pod becomes the lead and, when `agents` is left out, the agent types of your current team are reused.",
        schema: schema_of::<TeamCreateArgs>,
        hints: hints(false, false, false),
        output: out_team,
    },
    ToolDef {
        name: Tool::TeamDelete.as_str(),
        description: "Lead only. Disband your team: running and queued members are cancelled, open tasks fail, waiting members are told; its messages stay readable as its transcript for spec.retention (default 24h).",
        schema: schema_of::<TeamDeleteArgs>,
        hints: hints(false, true, true),
        output: out_deleted,
    },
    ToolDef {
        name: Tool::Get.as_str(),
        description: "Read the state of things: kind=teams (your team), kind=members (the members of your team with phase, agent type and role; a Queued one with the reason that holds it and its queue_position, 1 = the next slot that frees), kind=tasks (the task board), kind=messages (the newest messages of your inbox, read-only: nothing is acknowledged). Give `name` for one object.",
        schema: schema_of::<GetArgs>,
        hints: hints(true, false, true),
        output: out_get,
    },
    ToolDef {
        name: Tool::ShutdownRequest.as_str(),
        description: "Lead only. Ask a member of your team to stop (`member`, with a `reason`): it gets the request as a system notice in its next turn, saves its work, and answers with shutdown_response; you get its answer as a `[SHUTDOWN ANSWER]` notice. An approving member exits once its turn ends; a rejecting one goes on.",
        schema: schema_of::<ShutdownRequestArgs>,
        hints: hints(false, false, false),
        output: out_shutdown,
    },
    ToolDef {
        name: Tool::ShutdownResponse.as_str(),
        description: "Answer the shutdown request you got (a `[SHUTDOWN REQUEST]` notice: from your lead, or because your team disbanded). First save what should outlive you (agent_memory, your tasks' results). action=approve: you stop once this turn ends; action=reject with a `reason`: you go on (a disband deletes your pod after its grace anyway).",
        schema: schema_of::<ShutdownResponseArgs>,
        hints: hints(false, false, true),
        output: out_shutdown,
    },
    ToolDef {
        name: Tool::PlanSubmit.as_str(),
        description: "Submit your plan for the lead's review (agent types with planApproval: required). Until it is approved you may only read (get, wait_messages, team_task get/list, agent_memory read) and call plan_submit; meanwhile you read phase AwaitingApproval. The lead's verdict and feedback come back as your next turn: on approval every tool opens to you; on rejection revise and submit again.",
        schema: schema_of::<PlanSubmitArgs>,
        hints: hints(false, false, false),
        output: out_plan,
    },
    ToolDef {
        name: Tool::PlanReview.as_str(),
        description: "Lead only. Approve or reject the plan a member submitted (a `[PLAN]` notice): action=approve lets it go ahead, action=reject with `feedback` sends it back to revise. The member gets your verdict and feedback as its next turn.",
        schema: schema_of::<PlanReviewArgs>,
        hints: hints(false, false, false),
        output: out_plan,
    },
    ToolDef {
        name: Tool::UsageReport.as_str(),
        description: "Report what your runtime used so far, as running totals since you started: `turns` begun and model `tokens`. `teamctl run` calls it as each turn begins and ends; you need not. The answer's `over` says a budget (your agent type's or your team's) is spent: start no further turn, the operator stops you (phase Failed, reason BudgetExceeded).",
        schema: schema_of::<UsageReportArgs>,
        hints: hints(false, false, true),
        output: out_usage,
    },
];

/// The tool named `name`, as a static name (for metric labels).
pub fn tool_name(name: &str) -> Option<&'static str> {
    name.parse::<Tool>().ok().map(Tool::as_str)
}

/// Runs one tool call for `caller` and counts it in the metrics.
pub async fn call(state: &GatewayState, caller: &Caller, tool: &str, args: Value) -> Result<Value, ApiError> {
    let parsed = tool.parse::<Tool>();
    let label = parsed.as_ref().map_or("unknown", |t| t.as_str());
    let start = std::time::Instant::now();
    // The tool's span: a child of the request's (and so of an incoming `traceparent`); a message
    // sent inside it carries its context.
    let span = tracing::info_span!(
        "tool",
        otel.name = label,
        tool = label,
        code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty
    );
    let run = async {
        match parsed {
            Ok(t) => dispatch(state, caller, t, args).await,
            Err(msg) => Err(ApiError::not_found(msg)),
        }
    };
    // Boxed: unboxed, the instrumented future of every tool nested in its callers' futures is
    // deeper than rustc's query limit allows when it lays out teamctl's.
    let result = Box::pin(run.instrument(span.clone())).await;
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    span.record("code", code);
    if matches!(code, "internal" | "unavailable") {
        span.record("otel.status_code", "ERROR");
    }
    state.metrics.gateway_requests.get_or_create(&crate::metrics::RequestLabel { tool: label, code }).inc();
    state.metrics.gateway_request_duration.get_or_create(&crate::metrics::ToolLabel { tool: label }).observe(start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        tracing::debug!(tool = label, caller = %caller.describe(), code = e.code.as_str(), message = %e.message, "tool call refused");
    }
    result
}

async fn dispatch(state: &GatewayState, caller: &Caller, tool: Tool, args: Value) -> Result<Value, ApiError> {
    let name = tool.as_str();
    plan::gate(state, caller, tool, &args).await?;
    match tool {
        Tool::SendMessage => messages::send_message(state, caller, decode(name, args)?).await,
        Tool::WaitMessages => messages::wait_messages(state, caller, decode(name, args)?).await,
        Tool::TeamTask => tasks::team_task(state, caller, decode(name, args)?).await,
        Tool::AgentMemory => memory::agent_memory(state, caller, decode(name, args)?).await,
        Tool::SpawnMember => members::spawn_member(state, caller, decode(name, args)?).await,
        Tool::TeamCreate => teams::team_create(state, caller, decode(name, args)?).await,
        Tool::TeamDelete => teams::team_delete(state, caller, decode(name, args)?).await,
        Tool::Get => get::get(state, caller, decode(name, args)?).await,
        Tool::ShutdownRequest => shutdown::shutdown_request(state, caller, decode(name, args)?).await,
        Tool::ShutdownResponse => shutdown::shutdown_response(state, caller, decode(name, args)?).await,
        Tool::PlanSubmit => plan::plan_submit(state, caller, decode(name, args)?).await,
        Tool::PlanReview => plan::plan_review(state, caller, decode(name, args)?).await,
        Tool::UsageReport => usage::usage_report(state, caller, decode(name, args)?).await,
    }
}
