//! Team: a lead agent and the specialists it orchestrates, with the team's concurrency cap.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default for `spec.memberTimeoutSeconds`: how long a member's wait for messages blocks.
pub const DEFAULT_MEMBER_TIMEOUT_SECONDS: i64 = 300;

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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name: a Team name is at most 40 characters, so member pod names stay within 63"),
)]
#[x_kube(validation = Rule::new("self.agents.exists(a, a.name == self.lead.agent)").message("spec.lead.agent must name one of spec.agents").field_path(".lead.agent"))]
// `to: "lead"` in send_message means the team's lead, so no other agent type may be named `lead`.
// A sub-team led by an existing pod (spec.lead.podName) takes its parent's agent types as they
// are, so it is exempt; there `lead` still means its lead, and a member of agent type `lead`
// that got the bare name `lead` cannot be messaged by name (a known gap).
#[x_kube(validation = Rule::new("has(self.lead.podName) || self.lead.agent == 'lead' || !self.agents.exists(a, a.name == 'lead')").message("spec.agents: an agent type named `lead` must be the lead's (spec.lead.agent): `lead` as a recipient means the team's lead").field_path(".agents"))]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    /// Most members of this team that hold a pod at the same time; the others wait as Queued,
    /// first come first served. The operator-wide cap (`--max-agents`, default 10) also applies
    /// across all teams. The lead does not count against either cap.
    #[schemars(range(min = 1, max = 10000))]
    pub max_agents: i32,

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

    /// System notices the lead gets about its members, besides `[AGENT FAILURE]` (always sent).
    /// Off by default: each notice is a turn of the lead's.
    #[serde(default, skip_serializing_if = "LeadNotices::is_default")]
    pub lead_notices: LeadNotices,
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
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

    /// Pod template for members of this type. The first container is the agent; the operator
    /// adds the team environment, the gateway token volume and the teamctl binary, and forces
    /// restartPolicy Never.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: PodTemplateSpec,
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
    /// Latest observations. Ready: the lead is named and the team runs. Disbanded: the team ended,
    /// the reason says why (LeadCompleted, LeadFailed, TeamDeleted). Complete: it disbanded because
    /// its lead completed (`kubectl wait --for=condition=Complete team/<name>`). Failed: it
    /// disbanded because its lead failed or was cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// The team ended: members cancelled, open tasks failed, messages removed.
    Disbanded,
}

impl Team {
    /// True once the team has been disbanded (or is being deleted, which disbands it).
    pub fn is_disbanded(&self) -> bool {
        self.metadata.deletion_timestamp.is_some() || self.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
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

    /// Memory project of the team: `spec.memory.project`, else the team name.
    pub fn memory_project(&self) -> String {
        self.spec.memory.project.clone().or_else(|| self.metadata.name.clone()).unwrap_or_default()
    }
}

/// Schema for embedded Kubernetes types whose full OpenAPI schema would bloat the CRD past what
/// etcd and CEL cost budgets like: an object the API server keeps as given, typed in Rust.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
