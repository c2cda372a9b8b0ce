//! The arguments of every tool: what the JSON API decodes, what MCP advertises as input schema
//! (generated from these types), and what teamctl sends. Unknown fields are refused, and every
//! decoding error names the field it is about.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use crate::api::{MemoryMode, QualityCheck, TaskState};

/// `team_create`: start a new team.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamCreateArgs {
    /// Name of the new team: lowercase letters, digits and '-', at most 40 characters.
    pub name: String,
    /// Most members of the team that run at the same time (default 4); the others queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<i32>,
    /// How long, in seconds, wait_messages blocks at most for members of this team (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_timeout_seconds: Option<i64>,
    /// The agent types members can be. When a member of a team calls this and leaves it out, the
    /// agent types of the caller's own team are copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentTypeArgs>>,
    /// Agent type of the lead (default: the caller's own agent type, else the first agent type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_agent: Option<String>,
    /// Instructions for the lead, when the operator runs the lead (callers that are a pod lead the
    /// new team themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_prompt: Option<String>,
    /// Memory project shared by teams of the same project (default: the team name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_project: Option<String>,
    /// How long the team's transcript stays readable after it disbands: `24h` (default), `1h30m`,
    /// `90s`, `0s` for not at all; at most `8760h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Admission priority, -1000 to 1000 (default 0): a higher one is admitted first when the
    /// operator-wide cap is short. A sub-team's may not exceed its parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The whole team's budget (all members together): at least one of `turns`, `seconds`
    /// (from the team's creation), `tokens`, each at least 1. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetArgs>,
    /// Namespace (only for callers outside member pods; members stay in their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A team's budget (`spec.budget`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetArgs {
    /// Most turns of all members together (a turn counts when it begins), 1 to 1000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<i64>,
    /// Most wall-clock seconds from the team's creation, 1 to 31536000 (a year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    /// Most model tokens of all members together, 1 to 1000000000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
}

/// One agent type of a new team.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTypeArgs {
    /// Name of the agent type; members are named `<name>`, `<name>-2`, ...
    pub name: String,
    /// Model the agent runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `local`: members start with the agent type's memory in their prompt; `none` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryMode>,
    /// Container image of the agent (or give a full `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command of the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A full Kubernetes PodTemplateSpec instead of `image`/`command`/`args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    /// A check run in the member's pod when it completes a task: `{"command": [...],
    /// "timeoutSeconds": 300}`; a non-zero exit refuses the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_completed_check: Option<QualityCheck>,
    /// A check run after each of the member's turns: a non-zero exit makes its output the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_check: Option<QualityCheck>,
    /// How many times a member whose pod fails is started again in a new pod, after a backoff,
    /// before it fails (0 to 10, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// `team_delete`: disband the caller's team (lead only).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamDeleteArgs {
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What `team_task` does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskAction {
    /// Add a task to the board (needs `subject`).
    Create,
    /// Move a task's state, set its result or owner (needs `name`).
    Update,
    /// Read one task (needs `name`).
    Get,
    /// List the team's tasks, optionally filtered by `state` and `owner`.
    List,
    /// Take the first pending, unblocked, unowned task (or the one `name`s) as its owner,
    /// atomically: of two claims of one task, one wins.
    Claim,
}

/// `team_task`: the team's shared task board.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamTaskArgs {
    /// create | update | get | list | claim.
    pub action: TaskAction,
    /// Task name (update, get; claim: that task rather than the first claimable one), as returned
    /// by create and list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One-line summary (create; at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What is to be done (create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Member name that owns the task (create, update; a filter for list; claim: who claims, for
    /// callers outside member pods, default the lead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Names of tasks that must complete before this one can start (create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Free-form key/value data (create).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// New state (update): pending, in_progress, completed or failed; a filter for list. A task
    /// with open dependencies cannot go in_progress; completed and failed are final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// What came out of the task (update), usually with state completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The recipient that means the team's lead, whatever its agent type (a Team may name no other
/// agent type `lead`).
pub const LEAD_RECIPIENT: &str = "lead";
/// How a person's messages are signed: `user:<kube user name>`.
pub const PERSON_SENDER_PREFIX: &str = crate::bus::PERSON_SENDER_PREFIX;

/// `send_message`: message one member or everybody.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageArgs {
    /// Member name of the recipient (`general-2`), `lead` for the team's lead, or `*` for every
    /// member that has not finished.
    pub to: String,
    /// The message text (at most 64 KiB).
    pub body: String,
    /// Optional idempotency key: a retry with the same id is delivered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A member pod may only name itself here; a person's messages always come from
    /// `user:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `wait_messages`: receive messages, blocking until one arrives or the timeout passes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitMessagesArgs {
    /// `stream_id`s of messages you have handled, from earlier waits. Messages not acknowledged
    /// are returned again by the next wait (delivery is at least once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ack: Vec<String>,
    /// Most seconds to block (default and cap: the team's memberTimeoutSeconds; 0 polls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// false: only acknowledge `ack`, receive nothing (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<bool>,
    /// Only for callers outside member pods: whose inbox to look at (default: the lead's). A
    /// person's wait only looks: it delivers and acks nothing, so the member still gets it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What `agent_memory` does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemoryAction {
    /// Return the stored memory.
    Read,
    /// Replace the memory with `text` (cut at 102,400 bytes).
    Write,
    /// Add `text` at the end; the oldest text is dropped past 102,400 bytes.
    Append,
}

/// `agent_memory`: the memory of the caller's agent type, kept across members and teams of the
/// same project.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMemoryArgs {
    /// read | write | append.
    pub action: MemoryAction,
    /// The text (write, append).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Only for callers outside member pods: whose agent type (default: the lead's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spawn_member`: start a new member in the caller's team (lead only).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnMemberArgs {
    /// Agent type of the new member: one of the team's agent types.
    pub agent: String,
    /// The new member's task, given to it as TEAM_PROMPT.
    pub prompt: String,
    /// Model override for this member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `shutdown_request`: ask a member to stop (lead only).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequestArgs {
    /// Member name of who should stop (`general-2`).
    pub member: String,
    /// Why: the member reads it with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A member's answer to a shutdown request.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownAnswer {
    /// Stop: the member loop ends once this turn ends.
    Approve,
    /// Go on working; give the `reason`.
    Reject,
}

/// `shutdown_response`: a member answers the shutdown request it got (the lead's, or a disband's).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownResponseArgs {
    /// approve | reject.
    pub action: ShutdownAnswer,
    /// Why (required to reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `plan_submit`: submit your plan for the lead's review.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSubmitArgs {
    /// What you will do, step by step (at most 16 KiB).
    pub plan: String,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The lead's verdict on a plan.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlanVerdict {
    /// The member goes ahead: every tool is open to it.
    Approve,
    /// The member revises its plan; give the `feedback`.
    Reject,
}

/// `plan_review`: approve or reject a member's plan (lead only).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanReviewArgs {
    /// Member name of whose plan (`general-2`).
    pub member: String,
    /// approve | reject.
    pub action: PlanVerdict,
    /// What to change (required to reject), or a note with the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `usage_report`: what your runtime used so far (running totals since your member started),
/// reported by `teamctl run` as each turn begins and ends.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReportArgs {
    /// Turns begun so far (a turn counts when it begins).
    pub turns: u64,
    /// Model tokens used so far (input and output, cached ones included), where the runtime
    /// reports them.
    #[serde(default)]
    pub tokens: u64,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What `get` lists.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Teams,
    Members,
    Tasks,
    /// The newest messages of the team's inboxes (a member: of its own inbox), read-only.
    Messages,
}

/// Most messages one `get messages` returns, and how many unless `limit` says.
pub const MESSAGES_MAX: usize = 100;
pub const MESSAGES_DEFAULT: usize = 20;

/// `get`: list or read teams, members of a team, tasks of a team, or its newest messages.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetArgs {
    /// teams | members | tasks | messages.
    pub kind: Kind,
    /// One object: a team name, a member's agent name (or its Member object name), a task name;
    /// for messages: whose inbox (default: every inbox of the team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The team (default: the caller's own team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Namespace (only for callers outside member pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// kind=teams without a name: the teams of every namespace (only for callers outside member
    /// pods; RBAC must allow listing teams cluster-wide).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
    /// kind=messages: how many of the newest (1 to 100, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// kind=messages of a disbanded team: the uid the Team had, to pick one transcript when the
    /// name was used again (default: the most recently disbanded team of that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Decodes tool arguments, naming the field of the first problem:
/// `timeout_seconds: invalid type: string "x", expected u64`.
pub fn decode<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, ApiError> {
    let args = match args {
        Value::Null => Value::Object(Default::default()),
        Value::Object(o) => Value::Object(o),
        other => {
            return Err(ApiError::invalid(format!("{tool}: the arguments must be a JSON object, not {}", json_type(&other))));
        }
    };
    serde_path_to_error::deserialize::<_, T>(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("{tool}: {inner}"))
        } else {
            ApiError::invalid(format!("{tool}: field `{path}`: {inner}"))
        }
    })
}

/// Parses a request body: UTF-8, then JSON, naming where it went wrong.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named() {
        let e = decode::<SendMessageArgs>("send_message", json!({"to": "a", "body": "b", "bdy": 1})).unwrap_err();
        assert_eq!(e.code.as_str(), "invalid_argument");
        assert!(e.message.contains("unknown field `bdy`"), "{}", e.message);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = decode::<WaitMessagesArgs>("wait_messages", json!({"timeout_seconds": "x"})).unwrap_err();
        assert!(e.message.contains("timeout_seconds"), "{}", e.message);
        let e = decode::<TeamTaskArgs>("team_task", json!({"action": "create", "state": "done"})).unwrap_err();
        assert!(e.message.contains("state"), "{}", e.message);
        let e = decode::<SendMessageArgs>("send_message", json!([1])).unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }

    #[test]
    fn missing_fields_are_named() {
        let e = decode::<SendMessageArgs>("send_message", json!({"to": "a"})).unwrap_err();
        assert!(e.message.contains("missing field `body`"), "{}", e.message);
    }

    #[test]
    fn bodies_must_be_utf8_json() {
        assert!(parse_body(b"{\"a\":\xff}").unwrap_err().message.contains("UTF-8"));
        assert!(parse_body(b"{").unwrap_err().message.contains("JSON"));
        assert_eq!(parse_body(b"  ").unwrap(), json!({}));
    }
}
