//! TeamTask: an entry of a team's shared task board.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a TeamTask: its team, what is to be done, who owns it and what it waits for.
// kube's printcolumn attributes repeat `type_`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentteams.dev",
    version = "v1alpha1",
    kind = "TeamTask",
    doc = "A task on a team's board: who owns it, what it waits for, where it stands. Agents move status.state pending -> in_progress -> completed | failed; the operator fails it when its owner fails, when a dependency fails, or when the team disbands. status.conditions: Blocked, Complete, Failed.",
    namespaced,
    status = "TeamTaskStatus",
    shortname = "ttask",
    category = "agentteams",
    selectable = ".spec.team",
    printcolumn(name = "Team", type_ = "string", json_path = ".spec.team"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TeamTaskSpec {
    /// Name of the Team (in this namespace) whose board holds the task. Immutable.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.team is immutable"))]
    pub team: String,

    /// One-line summary.
    #[schemars(length(min = 1, max = 200))]
    pub subject: String,

    /// What is to be done.
    #[serde(default)]
    #[schemars(length(max = 16384))]
    pub description: String,

    /// Agent name of the member that owns the task (`general-2`); empty while unassigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 40))]
    pub owner: Option<String>,

    /// Names of TeamTasks of the same team that must complete before this one can start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub depends_on: Vec<String>,

    /// Free-form key/value data for the agents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Observed state of a TeamTask.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(oldSelf.state) || !(oldSelf.state in ['completed', 'failed']) || self.state == oldSelf.state").message("status.state: a completed or failed task is final").field_path(".state"))]
#[serde(rename_all = "camelCase")]
pub struct TeamTaskStatus {
    /// pending, in_progress, completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// Why the task is in its state (OwnerFailed, DependencyFailed, TeamDisbanded, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the owner reported when it finished the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub result: Option<String>,
    /// When the task went in_progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the task completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Latest observations. Blocked: a dependency has not completed. Complete: the task completed
    /// (`kubectl wait --for=condition=Complete teamtask/<name>`). Failed: it failed, with the
    /// reason (OwnerFailed, DependencyFailed, TeamDisbanded, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of a task.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not started.
    Pending,
    /// Its owner works on it.
    InProgress,
    /// Done.
    Completed,
    /// Given up: by its owner, or because the owner failed, a dependency failed or the team
    /// disbanded.
    Failed,
}

impl TaskState {
    /// Completed and failed are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The transitions agents may make: forward along pending → in_progress → completed|failed,
    /// back from in_progress to pending (an owner hands the task back), never out of a final state.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (a, b) if a == b => true,
            (Pending, InProgress | Completed | Failed) => true,
            (InProgress, Pending | Completed | Failed) => true,
            _ => false,
        }
    }

    /// Wire name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

impl TeamTask {
    /// Current state; a task the operator has not seen yet is pending.
    pub fn state(&self) -> TaskState {
        self.status.as_ref().and_then(|s| s.state).unwrap_or(TaskState::Pending)
    }

    /// Whether a member may claim the task: pending, unowned and unblocked (its Blocked condition
    /// not True and every dependency completed, by `dep_state`, None for a missing one); else why
    /// not.
    pub fn claimable(&self, dep_state: impl Fn(&str) -> Option<TaskState>) -> Result<(), String> {
        if self.state() != TaskState::Pending {
            return Err(format!("it is {}", self.state().as_str()));
        }
        if let Some(owner) = self.spec.owner.as_deref().filter(|o| !o.is_empty()) {
            return Err(format!("it is owned by {owner}"));
        }
        let conditions = self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let open: Vec<String> = self
            .spec
            .depends_on
            .iter()
            .filter_map(|d| match dep_state(d) {
                Some(TaskState::Completed) => None,
                state => Some(format!("{d} ({})", state.map_or("not found", TaskState::as_str))),
            })
            .collect();
        if !open.is_empty() {
            return Err(format!("it is blocked, waiting for {}", open.join(", ")));
        }
        if let Some(blocked) = super::condition::get(conditions, super::condition::BLOCKED).filter(|c| c.status == "True") {
            return Err(format!("it is blocked: {}", blocked.message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    fn task(owner: Option<&str>, deps: &[&str], state: TaskState) -> TeamTask {
        let mut t = TeamTask::new(
            "t",
            TeamTaskSpec {
                team: "x".into(),
                subject: "s".into(),
                description: String::new(),
                owner: owner.map(str::to_owned),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                metadata: Default::default(),
            },
        );
        t.status = Some(TeamTaskStatus { state: Some(state), ..Default::default() });
        t
    }

    #[test]
    fn only_pending_unowned_unblocked_tasks_are_claimable() {
        assert_eq!(task(None, &[], Pending).claimable(|_| None), Ok(()));
        assert_eq!(task(Some("general-2"), &[], Pending).claimable(|_| None), Err("it is owned by general-2".into()));
        assert_eq!(task(None, &[], InProgress).claimable(|_| None), Err("it is in_progress".into()));
        let waiting = task(None, &["a", "b"], Pending);
        let err = waiting.claimable(|d| (d == "a").then_some(Completed)).unwrap_err();
        assert_eq!(err, "it is blocked, waiting for b (not found)");
        assert_eq!(waiting.claimable(|_| Some(Completed)), Ok(()));
        let mut flagged = task(None, &[], Pending);
        if let Some(s) = flagged.status.as_mut() {
            s.conditions =
                vec![crate::api::condition::new("Blocked", true, "DependenciesOpen", "waiting for a", None, crate::api::condition::at(1))];
        }
        assert!(flagged.claimable(|_| None).unwrap_err().contains("waiting for a"));
    }

    #[test]
    fn final_states_are_final() {
        for next in [Pending, InProgress, Completed] {
            assert!(!Failed.can_become(next));
        }
        for next in [Pending, InProgress, Failed] {
            assert!(!Completed.can_become(next));
        }
        assert!(Pending.can_become(InProgress));
        assert!(InProgress.can_become(Completed));
        assert!(InProgress.can_become(Pending));
    }
}
