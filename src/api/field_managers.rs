//! The server-side-apply field managers: one per writer, so that each status field has exactly
//! one owner and no write removes or replaces another writer's fields (rule: one writer per
//! status field). Every status write in the project is an apply under one of these names;
//! `kubectl get <kind> -o yaml --show-managed-fields` shows who owns what.
//!
//! | manager | writes |
//! |---|---|
//! | [`ADMISSION`] | Member `status.name`, `podName` (each attempt's pod: it creates them all, a retry's too), `startTime`, and the phase of its decision (Queued while it waits, with `reason` / `message` saying which cap holds it, Starting once its pod is created, Failed `PodRejected`) with the conditions of that phase |
//! | [`MEMBER`] | Member `phase` from then on (a retry's Queued `BackOff` included), `reason`, `message`, `exitCode`, `failedAttempts`, `lastFailureTime`, `completionTime`, `observedGeneration`, the Ready / Complete / Failed / LeadNotified conditions (a disband's Cancelled included) |
//! | [`GATEWAY_WAIT`] | Member condition `Waiting` (an agent blocked in `wait_messages`), from which the Member reconciler shows Idle |
//! | [`TEAM`] | Team `status` (counts, usage, phase, conditions; the disband's Disbanded), and the lead's Member object |
//! | [`TASK`] | TeamTask condition `Blocked`, and the cascades: `state` failed with `reason`, `result`, `completedAt` (owner or dependency failed, team disbanded) |
//! | [`GATEWAY_SHUTDOWN`] | Member `status.shutdown` (the shutdown handshake: requested, approved, rejected) |
//! | [`GATEWAY_PLAN`] | Member `status.plan` (plan approval: submitted, approved, rejected, with the feedback), from which the Member reconciler shows AwaitingApproval |
//! | [`GATEWAY_USAGE`] | Member `status.usage` (turns and tokens reported with usage_report), coalesced: at most one write per member every few seconds |
//! | [`GATEWAY_TASKS`] | TeamTask `state`, `result`, `startedAt`, `completedAt` and their Complete / Failed conditions as agents move a task |
//! | [`PODS`] | member Pods |
//!
//! A phase changes hands by a forced apply (admission's Starting, then the reconciler's Active):
//! each writer applies the complete set of fields it owns, so a field it no longer sends is one
//! it no longer owns, never one it drops by accident.

/// The admission task (`controller::admission`).
pub const ADMISSION: &str = "team-operator-admission";
/// The Member reconciler (`controller::member`).
pub const MEMBER: &str = "team-operator-member";
/// The gateway's `wait_messages` (`gateway::idle`).
pub const GATEWAY_WAIT: &str = "team-operator-gateway-wait";
/// The Team reconciler and its finalizer (`controller::team`, `controller::disband`).
pub const TEAM: &str = "team-operator-team";
/// The gateway's `shutdown_request` / `shutdown_response` (`gateway::tools::shutdown`).
pub const GATEWAY_SHUTDOWN: &str = "team-operator-gateway-shutdown";
/// The gateway's `plan_submit` / `plan_review` (`gateway::tools::plan`).
pub const GATEWAY_PLAN: &str = "team-operator-gateway-plan";
/// The gateway's `usage_report` (`gateway::usage`).
pub const GATEWAY_USAGE: &str = "team-operator-gateway-usage";
/// The TeamTask reconciler (`controller::team_task`).
pub const TASK: &str = "team-operator-task";
/// Agents' task updates through the gateway (`gateway::tools::tasks`).
pub const GATEWAY_TASKS: &str = "team-operator-gateway-tasks";
/// Member pods, created by the admission task (the historical name, kept so that an upgrade
/// does not leave pods with two owners of every field).
pub const PODS: &str = "team-operator";

/// The body of a server-side apply of `status` on the object `name` of kind `K`; with
/// `resource_version`, the apply is conditional on it (409 Conflict when the object moved on).
/// Null fields of `status` are left out: in an apply, a field left out is one the writer does
/// not set (and no longer owns), where a null would be a value to store.
pub fn status_apply<K: kube::Resource<DynamicType = ()>>(
    name: &str,
    resource_version: Option<&str>,
    mut status: serde_json::Value,
) -> serde_json::Value {
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = serde_json::json!(rv);
    }
    serde_json::json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "metadata": metadata, "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Member;

    #[test]
    fn an_apply_names_the_object_and_leaves_out_what_it_does_not_set() {
        let body = status_apply::<Member>("m", Some("7"), serde_json::json!({ "phase": "Active", "reason": null }));
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member",
                "metadata": { "name": "m", "resourceVersion": "7" }, "status": { "phase": "Active" },
            })
        );
    }
}
