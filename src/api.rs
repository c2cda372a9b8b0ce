//! The `agentteams.dev/v1alpha1` API: Team, Member and TeamTask, their schema and the pure rules
//! that belong to the types (phase ordering, task transitions). No I/O lives here, so this module
//! could become its own crate.
//!
//! Validation is layered the way Kubernetes users expect: OpenAPI schema (types, ranges,
//! patterns) and CEL rules (`x-kubernetes-validations`: immutability, cross-field rules, state
//! transitions) reject bad manifests at `kubectl apply` time with a message naming the field.

pub mod budget;
pub mod condition;
pub mod field_managers;
pub mod member;
pub mod quality_check;
pub mod team;
pub mod team_task;

pub use budget::{Budget, Usage};
pub use member::{
    Member, MemberPhase, MemberPlan, MemberRole, MemberShutdown, MemberSpec, MemberStatus, PlanState, PodOverrides, ShutdownState,
};
pub use quality_check::QualityCheck;
pub use team::{
    AgentType, LeadNotices, LeadSpec, MemoryMode, PlanApproval, TaskSettings, Team, TeamMemory, TeamPhase, TeamSpec, TeamStatus,
};
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
    /// The member's role in its team: [`super::MemberRole::as_str`] (`lead` or `specialist`).
    pub const ROLE: &str = "agentteams.dev/role";
    /// Marks every object created by this operator.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// A DNS-1123 label: what member and agent names must be, since they end up in pod names, label
/// values and Redis keys.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Every CRD this crate defines, in install order, with descriptions reflowed for `kubectl
/// explain`.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Team::crd(), Member::crd(), TeamTask::crd()].into_iter().map(reflow_descriptions).collect()
}

/// Joins the lines of each paragraph of every description: doc comments wrap at the source's
/// width, and `kubectl explain` wraps again at the terminal's, which left lines broken halfway.
fn reflow_descriptions<T: serde::Serialize + serde::de::DeserializeOwned>(crd: T) -> T {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match value {
                        // A string under `description` is one; an object there is the schema of a
                        // field named `description` (TeamTask's).
                        serde_json::Value::String(text) if key == "description" => {
                            *text = text
                                .split("\n\n")
                                .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        other => walk(other),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with reflowed descriptions deserializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptions_are_reflowed_paragraphs() {
        let yaml = serde_json::to_string(&super::crds()).expect("crds");
        let value: serde_json::Value = serde_json::from_str(&yaml).expect("json");
        fn check(v: &serde_json::Value) {
            match v {
                serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| match v {
                    serde_json::Value::String(s) if k == "description" => {
                        assert!(!s.replace("\n\n", "").contains('\n'), "a line break inside a paragraph: {s:?}")
                    }
                    other => check(other),
                }),
                serde_json::Value::Array(items) => items.iter().for_each(check),
                _ => {}
            }
        }
        check(&value);
        assert!(!yaml.contains("Auto-generated"), "each kind has its own description");
    }
}
