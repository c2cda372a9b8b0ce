//! Member: one specialist (or the lead) of a Team, run as one pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a Member: its team, agent type and prompt, and additions to its pod.
// kube's printcolumn attributes repeat `type_`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentteams.dev",
    version = "v1alpha1",
    kind = "Member",
    doc = "A member of a Team: an agent of one of the team's agent types with a prompt, run in its own pod once a slot is free. The operator gives it a team-unique name in status.name; status.phase and status.conditions (Ready, Complete, Failed) follow its pod.",
    namespaced,
    status = "MemberStatus",
    shortname = "mbr",
    category = "agentteams",
    selectable = ".spec.team",
    printcolumn(name = "Team", type_ = "string", json_path = ".spec.team"),
    printcolumn(name = "Name", type_ = "string", json_path = ".status.name"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agent"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Exit", type_ = "integer", json_path = ".status.exitCode"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName", priority = 1),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedAttempts", priority = 1),
    printcolumn(
        name = "Turns",
        type_ = "integer",
        json_path = ".status.usage.turns",
        priority = 1,
        description = "Turns begun, as reported"
    ),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        json_path = ".status.usage.tokens",
        priority = 1,
        description = "Model tokens used, as reported"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    /// Name of the Team (in this namespace) the member belongs to. Immutable.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.team is immutable"))]
    pub team: String,

    /// Agent type of the member: one of the team's `spec.agents[].name`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 30))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.agent is immutable"))]
    pub agent: String,

    /// Lead or Specialist. The operator creates the lead's Member itself; users create Specialists.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.role is immutable"))]
    pub role: MemberRole,

    /// The task for the agent, passed to its pod as TEAM_PROMPT; `teamctl run` puts the agent
    /// type's memory in front of it when the type has `memory: local`.
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub prompt: String,

    /// Model override for this member; defaults to the agent type's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// Additions to the agent type's pod template for this member only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
}

/// Role of a member in its team.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemberRole {
    /// Orchestrates the team; its pod finishing disbands the team. Exempt from the slot caps.
    Lead,
    /// A specialist started by the lead or a person; waits for a slot.
    #[default]
    Specialist,
}

impl MemberRole {
    /// Its name on pods (the role label, `TEAM_ROLE`) and in the gateway's views.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberRole::Lead => "lead",
            MemberRole::Specialist => "specialist",
        }
    }
}

/// Per-member additions to the pod template.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Annotations added to the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels added to the pod (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Environment variables added to the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Observed state of a Member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Team-unique agent name (`general`, `general-2`, ...), assigned by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the member is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MemberPhase>,
    /// The member's pod, once it has one: the pod of its current attempt (each retry is a new
    /// pod, its name ending in `-2`, `-3`, …), written when that pod is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// How many of the member's pods failed, when its agent type has a `backoffLimit` (which
    /// says how many may before the member fails; the last one's reason is the member's).
    /// Absent: none failed, or no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_attempts: Option<i32>,
    /// When the last of those pods failed: the member's retry waits out its backoff from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Machine-readable cause of the last transition (PodFailed, OOMKilled, Evicted, PodDeleted,
    /// Unschedulable, ErrImagePull, InitContainerFailed, PodRejected, TeamDisbanded, TeamNotFound,
    /// BudgetExceeded, ...); while Starting, why the pod has not started yet (ErrImagePull, ImagePullBackOff,
    /// CreateContainerConfigError, Unschedulable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Exit code of the agent container, once it terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the member got a slot and its pod was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the member reached Completed, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Latest observations, each with the member's reason and message. Ready: its pod runs
    /// (Active or Idle). Complete: its pod succeeded (`kubectl wait --for=condition=Complete
    /// member/<name>`). Failed: it failed or was cancelled. LeadNotified: the lead was told of
    /// its failure (or, with the Team's `spec.leadNotices.done`, of its completion). Waiting: its
    /// agent waits for messages (set by the gateway; a running member that waits reads Idle). Each
    /// condition has one writer (see managedFields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The shutdown handshake: the lead's (or a person's) request that this member stop, and
    /// its answer. Written by the gateway alone (shutdown_request, shutdown_response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<MemberShutdown>,
    /// The member's plan, when its agent type has `planApproval: required`, and the lead's
    /// review of it. Written by the gateway alone (plan_submit, plan_review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<MemberPlan>,
    /// Turns begun and model tokens used so far, as the member's runtime adapter (`teamctl
    /// run`) reported them through the gateway (`usage_report`): running totals, written by the
    /// gateway alone, at most every few seconds (at once when a report goes over a budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::api::Usage>,
}

/// A member's plan and its review.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberPlan {
    /// Submitted (waiting for review: the member reads AwaitingApproval), Approved (every tool
    /// is open to it) or Rejected (it revises and submits again).
    pub state: PlanState,
    /// The plan, as submitted.
    #[serde(default)]
    pub text: String,
    /// 1 for the first plan, one more for each plan submitted again.
    #[serde(default)]
    pub revision: i32,
    /// When it was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Time>,
    /// Who reviewed it: the lead's member name or `user:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    /// The review's feedback (required to reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// When it was reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_at: Option<Time>,
}

/// Where a member's plan stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlanState {
    /// Waiting for the lead's review.
    #[default]
    Submitted,
    /// Approved: the member goes ahead.
    Approved,
    /// Rejected: the member revises it.
    Rejected,
}

/// A request that a member stop, and its answer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberShutdown {
    /// Requested (not answered yet), Approved (it exits once its turn ends) or Rejected.
    pub state: ShutdownState,
    /// Who asked: the lead's member name, `user:<name>`, or `team-operator` (a disband).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why, as the request said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// The member's reason, given with its answer (required to reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// When it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<Time>,
}

/// Where a shutdown handshake stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShutdownState {
    /// Asked, not answered yet.
    #[default]
    Requested,
    /// The member agreed: it exits once its turn ends.
    Approved,
    /// The member declined, with a reason.
    Rejected,
}

/// Lifecycle phase of a Member.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberPhase {
    /// Waiting for a slot under the team's and the operator's caps.
    Queued,
    /// Its pod exists but does not run yet.
    Starting,
    /// Its pod runs.
    Active,
    /// Its pod runs and the agent is blocked waiting for messages.
    Idle,
    /// Its pod runs and its plan waits for the lead's review (agent types with
    /// `planApproval: required`).
    AwaitingApproval,
    /// Its pod succeeded.
    Completed,
    /// Its pod failed, was evicted, deleted, or never scheduled; or its team does not exist.
    Failed,
    /// Its team disbanded before it finished.
    Cancelled,
}

impl MemberPhase {
    /// Completed, Failed and Cancelled are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Every phase, in lifecycle order.
    pub const ALL: [MemberPhase; 8] =
        [Self::Queued, Self::Starting, Self::Active, Self::Idle, Self::AwaitingApproval, Self::Completed, Self::Failed, Self::Cancelled];

    /// Name of the phase as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Starting => "Starting",
            Self::Active => "Active",
            Self::Idle => "Idle",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl Member {
    /// Current phase; a member the operator has not seen yet counts as Queued.
    pub fn phase(&self) -> MemberPhase {
        self.status.as_ref().and_then(|s| s.phase).unwrap_or(MemberPhase::Queued)
    }

    /// Team-unique agent name, once assigned.
    pub fn agent_name(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.name.as_deref())
    }

    /// True for the team's lead.
    pub fn is_lead(&self) -> bool {
        self.spec.role == MemberRole::Lead
    }
}
