//! The `agentteams.dev/v1alpha1` API: Team, Member and TeamTask, their schema and the pure rules
//! that belong to the types (phase ordering, task transitions). No I/O lives here, so this module
//! could become its own crate.
//!
//! Validation is layered the way Kubernetes users expect: OpenAPI schema (types, ranges,
//! patterns) and CEL rules (`x-kubernetes-validations`: immutability, cross-field rules, state
//! transitions) reject bad manifests at `kubectl apply` time with a message naming the field.

pub mod condition;
pub mod member;
pub mod team;
pub mod team_task;

pub use member::{Member, MemberPhase, MemberRole, MemberSpec, MemberStatus, PodOverrides};
pub use team::{AgentType, LeadSpec, MemoryMode, Team, TeamMemory, TeamPhase, TeamSpec, TeamStatus};
pub use team_task::{TaskState, TeamTask, TeamTaskSpec, TeamTaskStatus};

/// API group of every kind here.
pub const GROUP: &str = "agentteams.dev";

/// Labels the operator puts on the pods it creates (and that selectors use).
pub mod labels {
    /// Name of the Team the pod's member belongs to.
    pub const TEAM: &str = "agentteams.dev/team";
    /// Team-unique agent name of the member (`general-2`).
    pub const MEMBER: &str = "agentteams.dev/member";
    /// Agent type of the member (`general`).
    pub const AGENT: &str = "agentteams.dev/agent";
    /// Marks every object created by this operator.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// A DNS-1123 label: what member and agent names must be, since they end up in pod names, label
/// values and Redis keys.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Every CRD this crate defines, in install order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Team::crd(), Member::crd(), TeamTask::crd()]
}
