//! A Member's Ready, Complete and Failed conditions, as Kubernetes users read a Job's or a Pod's:
//! Ready while its pod runs, Complete once it succeeded, Failed once it failed or was cancelled
//! (a cancelled member did not finish its work). Each carries the member's reason and message
//! where it has them, so `kubectl wait --for=condition=Failed` ends with the cause in view.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{COMPLETE, FAILED, READY, new, set};
use crate::api::{MemberPhase, MemberStatus};

/// The member's conditions for the status `s` (its phase, reason, message and pod as they are to
/// be written): its other conditions (LeadNotified, Waiting) kept, Ready, Complete and Failed
/// set. Each writer applies only its own of them (`condition::only`).
///
/// Active and Idle give the same conditions: Idle is the gateway's Waiting shown in the phase.
pub fn for_member(s: &MemberStatus, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let phase = s.phase.unwrap_or(MemberPhase::Queued);
    let pod = s.pod_name.as_deref().map_or_else(|| "its pod".to_owned(), |p| format!("pod {p}"));
    let (default_reason, default_message) = match phase {
        MemberPhase::Queued => ("Queued", "waiting for a slot under the team's and the operator's caps".to_owned()),
        MemberPhase::Starting => ("PodStarting", format!("{pod} is starting")),
        MemberPhase::Active | MemberPhase::Idle | MemberPhase::AwaitingApproval => ("PodRunning", format!("{pod} runs")),
        MemberPhase::Completed => ("PodSucceeded", format!("{pod} succeeded")),
        MemberPhase::Failed => ("Failed", "the member failed".to_owned()),
        MemberPhase::Cancelled => ("Cancelled", "the member was cancelled before it finished".to_owned()),
    };
    let reason = s.reason.as_deref().unwrap_or(default_reason);
    let message = s.message.clone().unwrap_or(default_message);
    let mut conditions = s.conditions.clone();
    for (type_, holds) in [
        (READY, matches!(phase, MemberPhase::Active | MemberPhase::Idle | MemberPhase::AwaitingApproval)),
        (COMPLETE, phase == MemberPhase::Completed),
        (FAILED, matches!(phase, MemberPhase::Failed | MemberPhase::Cancelled)),
    ] {
        set(&mut conditions, new(type_, holds, reason, message.clone(), generation, now.clone()));
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{at, get, is_true};

    fn status(phase: MemberPhase, reason: Option<&str>) -> MemberStatus {
        MemberStatus {
            phase: Some(phase),
            reason: reason.map(str::to_owned),
            pod_name: Some("t-general-2-abcde".into()),
            ..Default::default()
        }
    }

    fn holding(cs: &[Condition]) -> Vec<&str> {
        [READY, COMPLETE, FAILED].into_iter().filter(|t| is_true(cs, t)).collect()
    }

    #[test]
    fn each_phase_holds_its_conditions() {
        let cases = [
            (MemberPhase::Queued, vec![]),
            (MemberPhase::Starting, vec![]),
            (MemberPhase::Active, vec![READY]),
            (MemberPhase::Idle, vec![READY]),
            (MemberPhase::AwaitingApproval, vec![READY]),
            (MemberPhase::Completed, vec![COMPLETE]),
            (MemberPhase::Failed, vec![FAILED]),
            (MemberPhase::Cancelled, vec![FAILED]),
        ];
        for (phase, expected) in cases {
            let cs = for_member(&status(phase, None), Some(1), &at(10));
            assert_eq!(cs.len(), 3, "{phase:?}: Ready, Complete and Failed are always present");
            assert_eq!(holding(&cs), expected, "{phase:?}");
            assert!(cs.iter().all(|c| c.observed_generation == Some(1) && !c.reason.is_empty()), "{cs:?}");
        }
    }

    #[test]
    fn the_members_reason_and_message_are_the_conditions() {
        let mut s = status(MemberPhase::Failed, Some("OOMKilled"));
        s.message = Some("pod p failed (OOMKilled, exit code 137)".into());
        let cs = for_member(&s, Some(1), &at(10));
        let failed = get(&cs, FAILED).expect("Failed");
        assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "OOMKilled"));
        assert!(failed.message.contains("exit code 137"));
        assert_eq!(get(&cs, READY).map(|c| c.reason.as_str()), Some("OOMKilled"));
        let queued = for_member(&status(MemberPhase::Queued, Some("QuotaExceeded")), None, &at(10));
        assert_eq!(get(&queued, READY).map(|c| c.reason.as_str()), Some("QuotaExceeded"));
    }

    #[test]
    fn idle_and_active_read_the_same() {
        let active = for_member(&status(MemberPhase::Active, None), Some(1), &at(10));
        let mut idle = status(MemberPhase::Idle, None);
        idle.conditions = active.clone();
        assert_eq!(for_member(&idle, Some(1), &at(20)), active);
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips_and_others_are_kept() {
        let mut s = status(MemberPhase::Starting, None);
        s.conditions = vec![new("LeadNotified", true, "NoticeSent", "told lead", Some(1), at(1))];
        s.conditions = for_member(&s, Some(1), &at(10));
        s.phase = Some(MemberPhase::Active);
        let running = for_member(&s, Some(1), &at(20));
        assert_eq!(get(&running, READY).map(|c| c.last_transition_time.clone()), Some(at(20)));
        assert_eq!(get(&running, COMPLETE).map(|c| c.last_transition_time.clone()), Some(at(10)));
        assert_eq!(get(&running, "LeadNotified").map(|c| c.last_transition_time.clone()), Some(at(1)));
        s.conditions = running.clone();
        assert_eq!(for_member(&s, Some(1), &at(30)), running, "computed again from the same status, nothing moves");
    }
}
