//! Team: a lead agent and the specialists it orchestrates, with the team's concurrency cap.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, QualityCheck, Usage};

/// Default for `spec.memberTimeoutSeconds`: how long a member's wait for messages blocks.
pub const DEFAULT_MEMBER_TIMEOUT_SECONDS: i64 = 300;

/// Default for `spec.retention`: how long a disbanded team's transcript is kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Longest `spec.retention` (the schema's rule says the same).
pub const MAX_RETENTION: Duration = Duration::from_secs(8760 * 3600);
/// The range of `spec.priority`, as the schema has it (and `team_create` checks it).
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;

/// Desired state of a Team: its concurrency cap, its lead and the agent types its members can be.
// kube's printcolumn attributes repeat `type_`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentteams.dev",
    version = "v1alpha1",
    kind = "Team",
    doc = "A team of AI agents: one lead that orchestrates, and members (specialists) that each run in their own pod, at most spec.maxAgents at a time. Deleting the Team (or its lead finishing) disbands it: members are cancelled, open tasks fail. status.conditions: Ready, Complete, Failed, Disbanded.",
    namespaced,
    status = "TeamStatus",
    shortname = "tm",
    category = "agentteams",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Lead", type_ = "string", json_path = ".status.leadName", description = "Agent name of the lead"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxAgents", description = "Most members holding a pod at once"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.active"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.queued"),
    printcolumn(name = "Completed", type_ = "integer", json_path = ".status.completed"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Turns", type_ = "integer", json_path = ".status.usage.turns", priority = 1, description = "Turns begun by all members"),
    printcolumn(name = "Tokens", type_ = "integer", json_path = ".status.usage.tokens", priority = 1, description = "Model tokens used by all members"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name: a Team name is at most 40 characters, so member pod names stay within 63"),
)]
#[x_kube(validation = Rule::new("self.agents.exists(a, a.name == self.lead.agent)").message("spec.lead.agent must name one of spec.agents").field_path(".lead.agent"))]
// `to: "lead"` in send_message means the team's lead, so no other agent type may be named `lead`.
// A sub-team led by an existing pod (spec.lead.podName) takes its parent's agent types as they
// are, so it is exempt; there `lead` still means its lead, and a member of agent type `lead`
// that got the bare name `lead` cannot be messaged by name (a known gap).
#[x_kube(validation = Rule::new("!has(self.retention) || duration(self.retention) <= duration('8760h')").message("spec.retention: at most 8760h (a year)").field_path(".retention"))]
#[x_kube(validation = Rule::new("has(self.lead.podName) || self.lead.agent == 'lead' || !self.agents.exists(a, a.name == 'lead')").message("spec.agents: an agent type named `lead` must be the lead's (spec.lead.agent): `lead` as a recipient means the team's lead").field_path(".agents"))]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    /// Most members of this team that hold a pod at the same time; the others wait as Queued,
    /// in creation order. The operator-wide cap (`--max-agents`, default 10) also applies across
    /// all teams, shared fairly (see `priority`). The lead does not count against either cap.
    #[schemars(range(min = 1, max = 10000))]
    pub max_agents: i32,

    /// Admission priority, -1000 to 1000 (default 0): when the operator-wide cap leaves fewer
    /// slots than members wait for, a waiting member of a higher-priority team is admitted
    /// first; teams of equal priority share the slots round-robin (the namespace, then the team,
    /// that holds the fewest slots goes next). Does not raise the team's own `maxAgents`.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = MIN_PRIORITY, max = MAX_PRIORITY))]
    pub priority: i32,

    /// How long, in seconds, a member's `wait_messages` blocks before it returns empty.
    #[serde(default = "default_member_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub member_timeout_seconds: i64,

    /// Who leads the team.
    pub lead: LeadSpec,

    /// The agent types members of this team can be: a pod template, a model and a memory mode
    /// each. Member names are derived from these (`general`, `general-2`, ...).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub agents: Vec<AgentType>,

    /// Shared agent memory settings.
    #[serde(default)]
    pub memory: TeamMemory,

    /// Whether this team's members may create teams of their own with team_create (sub-teams).
    /// A sub-team uses this team's agent types and memory project, and its members count against
    /// this team's `maxAgents`. Off by default: whoever may create Teams may run pods with the
    /// templates they give, so that right is not handed to every agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_sub_teams: bool,

    /// How long, in seconds, a disband waits for the members whose pods run to end by themselves
    /// before it deletes their pods: each is asked to stop (`[SHUTDOWN REQUEST]`) and may save
    /// its memory and results, approve (it exits once its turn ends) or reject with a reason
    /// (then it is not waited for). After the grace, pods are deleted (SIGTERM, passed on to the
    /// runtime). 0: delete at once.
    #[serde(default = "default_shutdown_grace")]
    #[schemars(range(min = 0, max = 3600))]
    pub shutdown_grace_seconds: i64,

    /// How the team's task board treats tasks whose owner is gone.
    #[serde(default, skip_serializing_if = "TaskSettings::is_default")]
    pub tasks: TaskSettings,

    /// How long the team's transcript (every message sent in it, newest up to the team's byte
    /// budget) stays readable after it disbands (`teamctl get messages --team <name>`), as a
    /// duration of hours, minutes and seconds (`24h`, `1h30m`, `90s`; `0s` keeps nothing), at
    /// most `8760h`. Default `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,7}h)?([0-9]{1,9}m)?([0-9]{1,11}s)?$"), length(min = 2, max = 24))]
    pub retention: Option<String>,
    /// System notices the lead gets about its members, besides `[AGENT FAILURE]` (always sent).
    /// Off by default: each notice is a turn of the lead's.
    #[serde(default, skip_serializing_if = "LeadNotices::is_default")]
    pub lead_notices: LeadNotices,
    /// Limits on the whole team: turns and tokens summed over all its members (the lead
    /// included), seconds of wall-clock since the Team was created. Once one is over, the team
    /// admits no new members (queued ones fail with BudgetExceeded) and every specialist that
    /// goes on working (phase Active) is stopped with BudgetExceeded; idle ones may still end by
    /// themselves, and the lead (held to its own agent type's budget only) wraps up. None by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Which notices the lead gets about its members, so that it need not poll their phases.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeadNotices {
    /// `[IDLE] @<name>`: a member finished a turn and waits for messages. Sent by the gateway
    /// once per turn (when the member's first wait after it has blocked for 2 s), not per wait.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
    /// `[DONE] @<name> completed (exit code 0)`: a member completed. Sent by the operator once
    /// per member. (A failure is always told, as `[AGENT FAILURE]`.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

impl LeadNotices {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Task board settings of a team.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskSettings {
    /// When a member fails or is cancelled, its pending tasks go back to the board unowned, for
    /// another member to claim (`team_task claim`), instead of failing with OwnerFailed. Its
    /// in_progress tasks fail either way. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release_on_owner_failure: bool,
}

impl TaskSettings {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Default for `spec.shutdownGraceSeconds`.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: i64 = 30;

fn default_shutdown_grace() -> i64 {
    DEFAULT_SHUTDOWN_GRACE_SECONDS
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_member_timeout() -> i64 {
    DEFAULT_MEMBER_TIMEOUT_SECONDS
}

/// The lead of a team.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeadSpec {
    /// Agent type of the lead; one of `spec.agents[].name`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 30))]
    pub agent: String,

    /// Instructions for the lead when the operator runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,

    /// An existing Pod that is the lead (for example the agent that called team_create). The
    /// operator then runs no lead pod of its own, the Team is owned by that Pod (deleting the Pod
    /// deletes the Team), and the team disbands when that Pod finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"), length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.lead.podName is immutable"))]
    pub pod_name: Option<String>,
}

/// One agent type of a team.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentType {
    /// Name of the agent type; members of this type are named `<name>`, `<name>-2`, ...
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 30))]
    pub name: String,

    /// Model the agent runs with (passed to the pod as TEAM_MODEL); a Member may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// `local`: the member's first turn starts with the agent type's stored memory (`teamctl run`
    /// reads it when the turn starts). `none`: no memory.
    #[serde(default)]
    pub memory: MemoryMode,

    /// `required`: a member of this type submits a plan (plan_submit) and may only read until the
    /// lead, or a person with RBAC, approves it (plan_review); meanwhile it reads phase
    /// AwaitingApproval. `none` (default): no plan needed.
    #[serde(default, skip_serializing_if = "PlanApproval::is_none")]
    pub plan_approval: PlanApproval,

    /// How many times a member of this type whose pod fails (non-zero exit, OOMKilled,
    /// evicted, deleted from outside, lost with its node, or not started in time) is started
    /// again in a new pod before it fails, as a Job's `backoffLimit`: 0 (default) fails it at
    /// the first failure. Each retry waits a backoff (10 s, doubling per failure, at most 6
    /// min; the operator's `--retry-backoff-seconds` sets the first) and then a slot like any
    /// pod; its inbox, memory and tasks stay as they were. A team's lead of this type is
    /// retried the same way instead of disbanding the team (not an external lead,
    /// `spec.lead.podName`: the operator does not run its pod). At most 10.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// Pod template for members of this type. The first container is the agent; the operator
    /// adds the team environment, the gateway token volume and the teamctl binary, and forces
    /// restartPolicy Never.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: PodTemplateSpec,

    /// A quality gate run in the member's pod when the member completes a task through the
    /// tools (`team_task update` to `completed`): a non-zero exit refuses the completion, and the
    /// command's output is the agent's tool result. A quality check, not a security boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_completed_check: Option<QualityCheck>,

    /// A quality gate `teamctl run` runs after each of the member's turns, before it waits for
    /// messages: a non-zero exit makes the command's output the member's next turn, so it keeps
    /// working instead of going idle (bounded by `teamctl run --max-turns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_check: Option<QualityCheck>,

    /// Limits on each member of this type: turns, wall-clock seconds from its start, model
    /// tokens (as `teamctl run` reports them). A member over one is stopped: phase Failed, reason
    /// BudgetExceeded, its pod deleted, the lead told, its tasks failed as for any failure.
    /// None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Whether an agent type keeps memory across members.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryMode {
    /// No memory.
    #[default]
    None,
    /// The member's first turn starts with its agent type's memory.
    Local,
}

/// Whether members of an agent type need an approved plan before they act.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlanApproval {
    /// No plan needed.
    #[default]
    None,
    /// A plan approved by the lead before anything but reads.
    Required,
}

impl PlanApproval {
    fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// Memory settings shared by the team.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TeamMemory {
    /// Project the team's memory belongs to; teams of the same project share agent memory.
    /// Defaults to the team name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub project: Option<String>,
}

/// Observed state of a Team.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    /// Active while the team runs; Disbanded once its lead finished or it was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TeamPhase>,
    /// Members waiting for a slot.
    #[serde(default)]
    pub queued: i32,
    /// Members whose pod is starting.
    #[serde(default)]
    pub starting: i32,
    /// Members whose pod runs (Active or Idle).
    #[serde(default)]
    pub active: i32,
    /// Members that finished successfully.
    #[serde(default)]
    pub completed: i32,
    /// Members that failed.
    #[serde(default)]
    pub failed: i32,
    /// Members cancelled by the team's disbanding.
    #[serde(default)]
    pub cancelled: i32,
    /// Agent name of the lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_name: Option<String>,
    /// Turns and tokens used by all the team's members, the lead included: the sum of their
    /// `status.usage`. Shown once a member reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Latest observations. Ready: the lead is named and the team runs. Disbanded: the team ended,
    /// the reason says why (LeadCompleted, LeadFailed, TeamDeleted). Complete: it disbanded because
    /// its lead completed (`kubectl wait --for=condition=Complete team/<name>`). Failed: it
    /// disbanded because its lead failed or was cancelled. BudgetExceeded (teams with
    /// `spec.budget`): which limit is over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle phase of a Team.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeamPhase {
    /// The team runs.
    Active,
    /// The team ended: members cancelled, open tasks failed, inboxes removed (the transcript is
    /// kept for spec.retention).
    Disbanded,
}

impl Team {
    /// True once the team has been disbanded (or is being deleted, which disbands it).
    pub fn is_disbanded(&self) -> bool {
        self.metadata.deletion_timestamp.is_some() || self.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
    }

    /// True once the disband is recorded in the status, which the disband writes after its
    /// notices: what cancels the members and fails the open tasks. A Team being deleted is
    /// disbanding ([`Team::is_disbanded`]: no new members) before this holds, so its members hear
    /// the `[TEAM DISBANDED]` notice before they are cancelled.
    pub fn disband_recorded(&self) -> bool {
        self.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
    }

    /// The agent type named `name`.
    pub fn agent_type(&self, name: &str) -> Option<&AgentType> {
        self.spec.agents.iter().find(|a| a.name == name)
    }

    /// The uid of the Team this one is a sub-team of: its owner reference to a Team (team_create
    /// by a member writes it), whose cap its members count against.
    pub fn parent_uid(&self) -> Option<&str> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Team" && o.api_version.split('/').next() == Some(crate::api::GROUP))
            .map(|o| o.uid.as_str())
    }

    /// The uid of the external lead's Pod: the Pod named by `spec.lead.podName` that owns this
    /// Team (the owner reference team_create writes). A later pod of the same name is not it.
    pub fn lead_pod_uid(&self) -> Option<&str> {
        let name = self.spec.lead.pod_name.as_deref()?;
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Pod" && o.api_version == "v1" && o.name == name)
            .map(|o| o.uid.as_str())
    }

    /// How long the transcript is kept after disbanding: `spec.retention`, else
    /// [`DEFAULT_RETENTION`].
    pub fn retention(&self) -> Result<Duration, String> {
        self.spec.retention.as_deref().map_or(Ok(DEFAULT_RETENTION), parse_retention)
    }

    /// Memory project of the team: `spec.memory.project`, else the team name.
    pub fn memory_project(&self) -> String {
        self.spec.memory.project.clone().or_else(|| self.metadata.name.clone()).unwrap_or_default()
    }
}

/// A duration of hours, minutes and seconds in that order (`24h`, `1h30m`, `90s`, `0s`), at most
/// [`MAX_RETENTION`]; the error names `spec.retention` and the rule.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let bad = || format!("spec.retention: {text:?} is not a duration of hours, minutes and seconds such as 24h, 1h30m or 90s");
    let (mut total, mut rest, mut units) = (0u64, text, &["h", "m", "s"][..]);
    if text.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit = units.iter().position(|u| tail.starts_with(u)).ok_or_else(bad)?;
        let n: u64 = number.parse().map_err(|_| bad())?;
        let seconds = [3600, 60, 1][3 - units.len() + unit];
        total = n.checked_mul(seconds).and_then(|s| total.checked_add(s)).ok_or_else(bad)?;
        units = &units[unit + 1..];
        rest = &tail[1..];
    }
    let d = Duration::from_secs(total);
    if d > MAX_RETENTION {
        return Err(format!("spec.retention: {text} is over the limit of 8760h (a year)"));
    }
    Ok(d)
}

/// Schema for embedded Kubernetes types whose full OpenAPI schema would bloat the CRD past what
/// etcd and CEL cost budgets like: an object the API server keeps as given, typed in Rust.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_hours_minutes_seconds() {
        let secs = |t: &str| parse_retention(t).map(|d| d.as_secs());
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("2m5s"), Ok(125));
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(secs("8760h"), Ok(8760 * 3600));
    }

    #[test]
    fn a_bad_retention_names_the_field_and_the_rule() {
        for bad in ["", "24", "h", "1d", "30m1h", "1h1h", "1.5h", "-1h", "1h "] {
            let e = parse_retention(bad).expect_err(bad);
            assert!(e.starts_with("spec.retention:") && e.contains("24h"), "{bad:?}: {e}");
        }
        let e = parse_retention("8761h").unwrap_err();
        assert!(e.contains("8760h"), "{e}");
        assert!(parse_retention("99999999999999999999s").is_err());
    }
}
