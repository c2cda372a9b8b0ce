//! What the admission task writes on a Member: its decision, in one server-side apply under
//! [`field_managers::ADMISSION`]. The decision is the member's `status.name`, and then one of:
//! Queued (named, waiting for a slot; with the reason that holds it, written once as it queues:
//! [`TEAM_CAP_REACHED`], [`OPERATOR_CAP_REACHED`], or `QuotaExceeded` when a quota refuses its
//! pod; where it stands in the queue is computed on read, see `fair_share::positions`),
//! Starting (admitted: `podName` and `startTime` with it, in the same write, so a member that is
//! named and admitted in one round costs one write), or Failed `PodRejected` (its pod can never
//! be created). The phase and its conditions go in the same write; from the first phase the pod
//! gives it (Active, …) on, the Member reconciler owns them.
//!
//! Every apply carries the name, so the admission task never drops the one field it owns for
//! good. Pure, so every decision's status is a unit test.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::pod_refusal::{POD_REJECTED, QUOTA_EXCEEDED};
use crate::api::condition::{self, COMPLETE, FAILED, READY};
use crate::api::{Member, MemberPhase, MemberStatus};

/// Reason of a Queued member that its team's `maxAgents` (or a parent team's) holds back.
pub const TEAM_CAP_REACHED: &str = "TeamCapReached";
/// Reason of a Queued member that the operator-wide cap (`--max-agents`) holds back.
pub const OPERATOR_CAP_REACHED: &str = "OperatorCapReached";

/// What holds a Queued member back.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// `team` (its own, or the team it is a sub-team of) holds its `maxAgents`.
    Team { team: String, max_agents: usize },
    /// The operator-wide cap is in use, or its free slots went to others' turns.
    Operator { cap: usize },
    /// A ResourceQuota refuses its pod, with the API server's message.
    Quota(String),
}

impl Hold {
    fn reason_and_message(&self) -> (&'static str, String) {
        match self {
            Hold::Team { team, max_agents } => {
                (TEAM_CAP_REACHED, format!("waiting for a slot: team {team} holds its maxAgents of {max_agents}"))
            }
            Hold::Operator { cap } => (
                OPERATOR_CAP_REACHED,
                format!(
                    "waiting for a slot: the operator-wide cap of {cap} is in use; freed slots go to the highest spec.priority, \
                     then round-robin across namespaces and teams"
                ),
            ),
            Hold::Quota(msg) => (QUOTA_EXCEEDED, format!("waiting for quota: {msg}")),
        }
    }
}

/// What the admission task decided for a member.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Named, waiting for a slot, with what holds it when that is known.
    Queued { hold: Option<Hold> },
    /// Admitted: its pod, created now or the external lead's, is `pod_name`.
    Admitted { pod_name: String },
    /// Its pod was refused for good, with the API server's message.
    Rejected { message: String },
}

/// The status to apply for `decision` on `member`, named `name`, at `now`.
pub fn status(member: &Member, name: &str, decision: &Decision, now: &Time) -> Value {
    let old = member.status.clone().unwrap_or_default();
    let generation = member.metadata.generation;
    let mut s = MemberStatus { name: Some(name.to_owned()), conditions: old.conditions.clone(), ..Default::default() };
    match decision {
        Decision::Queued { hold } => {
            s.phase = Some(MemberPhase::Queued);
            if let Some(hold) = hold {
                let (reason, message) = hold.reason_and_message();
                (s.reason, s.message) = (Some(reason.into()), Some(message));
            }
        }
        Decision::Admitted { pod_name } => {
            s.phase = Some(MemberPhase::Starting);
            s.pod_name = Some(pod_name.clone());
            s.start_time = Some(old.start_time.clone().unwrap_or_else(|| now.clone()));
        }
        Decision::Rejected { message } => {
            s.phase = Some(MemberPhase::Failed);
            (s.reason, s.message) = (Some(POD_REJECTED.into()), Some(format!("the API server refused the member's pod: {message}")));
            s.completion_time = Some(now.clone());
        }
    }
    let conditions = condition::for_member(&s, generation, now);
    json!({
        "name": s.name, "phase": s.phase, "podName": s.pod_name, "startTime": s.start_time,
        "reason": s.reason, "message": s.message, "completionTime": s.completion_time,
        "observedGeneration": generation,
        "conditions": condition::only(&conditions, &[READY, COMPLETE, FAILED]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberSpec, condition::at};

    fn member() -> Member {
        let mut m = Member::new(
            "m",
            MemberSpec {
                team: "t".into(),
                agent: "general".into(),
                role: Default::default(),
                prompt: String::new(),
                model: None,
                pod: None,
            },
        );
        m.metadata.generation = Some(1);
        m
    }

    #[test]
    fn an_admitted_member_gets_name_pod_start_and_starting_in_one_status() {
        let s = status(&member(), "general-2", &Decision::Admitted { pod_name: "t-general-2-abcde".into() }, &at(5));
        assert_eq!(
            (s["name"].as_str(), s["phase"].as_str(), s["podName"].as_str()),
            (Some("general-2"), Some("Starting"), Some("t-general-2-abcde"))
        );
        assert_eq!(s["startTime"], json!(at(5)));
        assert!(s["reason"].is_null() && s["completionTime"].is_null());
        let types: Vec<&str> = s["conditions"].as_array().into_iter().flatten().filter_map(|c| c["type"].as_str()).collect();
        assert_eq!(types, [READY, COMPLETE, FAILED]);
    }

    #[test]
    fn a_waiting_member_is_queued_with_its_quota_and_a_rejected_one_fails() {
        let q = status(&member(), "general", &Decision::Queued { hold: Some(Hold::Quota("pods=1".into())) }, &at(5));
        assert_eq!((q["phase"].as_str(), q["reason"].as_str()), (Some("Queued"), Some(QUOTA_EXCEEDED)));
        assert!(q["podName"].is_null());
        let r = status(&member(), "general", &Decision::Rejected { message: "violates PodSecurity".into() }, &at(5));
        assert_eq!((r["phase"].as_str(), r["reason"].as_str()), (Some("Failed"), Some(POD_REJECTED)));
        assert_eq!(r["completionTime"], json!(at(5)));
    }

    #[test]
    fn a_queued_member_says_which_cap_holds_it_in_its_reason_and_conditions() {
        let team = Decision::Queued { hold: Some(Hold::Team { team: "review".into(), max_agents: 2 }) };
        let t = status(&member(), "general", &team, &at(5));
        assert_eq!(t["reason"].as_str(), Some(TEAM_CAP_REACHED));
        assert_eq!(t["message"].as_str(), Some("waiting for a slot: team review holds its maxAgents of 2"));
        let ready = t["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == READY).cloned().unwrap_or_default();
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some(TEAM_CAP_REACHED)));
        let o = status(&member(), "general", &Decision::Queued { hold: Some(Hold::Operator { cap: 10 }) }, &at(5));
        assert_eq!(o["reason"].as_str(), Some(OPERATOR_CAP_REACHED));
        assert!(o["message"].as_str().is_some_and(|m| m.contains("operator-wide cap of 10")), "{o}");
    }

    #[test]
    fn the_other_writers_conditions_are_not_applied() {
        let mut m = member();
        m.status = Some(MemberStatus {
            conditions: vec![condition::new(condition::WAITING, true, "Waiting", "waits", Some(1), at(1))],
            ..Default::default()
        });
        let s = status(&m, "general", &Decision::Queued { hold: None }, &at(5));
        assert!(s["conditions"].as_array().into_iter().flatten().all(|c| c["type"] != condition::WAITING));
    }
}
