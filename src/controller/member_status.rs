//! What a member's status should say, derived from its pod alone: pure, so every mapping of
//! rule 3 (Succeeded → Completed; Failed, evicted, deleted, unschedulable → Failed) is a unit test.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::MemberPhase;

/// The pod-derived part of a member's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Phase the member should be in.
    pub phase: MemberPhase,
    /// Machine-readable cause, for terminal phases.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Exit code of the agent container.
    pub exit_code: Option<i32>,
}

impl Observed {
    fn phase(phase: MemberPhase) -> Self {
        Self { phase, reason: None, message: None, exit_code: None }
    }

    fn failed(reason: &str, message: String, exit_code: Option<i32>) -> Self {
        Self { phase: MemberPhase::Failed, reason: Some(reason.into()), message: Some(message), exit_code }
    }
}

/// Derives the member's phase from its pod. `idle` keeps a running member Idle (the gateway sets
/// it while the agent waits for messages). `unschedulable_deadline` bounds how long a pod may stay
/// unschedulable; the second value is when to look again if the deadline has not passed.
pub fn from_pod(pod: &Pod, idle: bool, now: Timestamp, unschedulable_deadline: SignedDuration) -> (Observed, Option<SignedDuration>) {
    let status = pod.status.clone().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let terminated = status.container_statuses.iter().flatten().next().and_then(|c| {
        c.state.as_ref().and_then(|s| s.terminated.clone()).or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()))
    });
    match status.phase.as_deref() {
        Some("Succeeded") => (Observed { exit_code: Some(0), ..Observed::phase(MemberPhase::Completed) }, None),
        Some("Failed") => {
            let exit_code = terminated.as_ref().map(|t| t.exit_code);
            let reason =
                status.reason.clone().or_else(|| terminated.as_ref().and_then(|t| t.reason.clone())).unwrap_or_else(|| "PodFailed".into());
            let detail = status.message.clone().or_else(|| terminated.as_ref().and_then(|t| t.message.clone()));
            let message = match (exit_code, detail) {
                (Some(code), Some(d)) => format!("pod {name} failed ({reason}, exit code {code}): {d}"),
                (Some(code), None) => format!("pod {name} failed ({reason}, exit code {code})"),
                (None, Some(d)) => format!("pod {name} failed ({reason}): {d}"),
                (None, None) => format!("pod {name} failed ({reason})"),
            };
            (Observed::failed(&reason, message, exit_code), None)
        }
        _ if pod.metadata.deletion_timestamp.is_some() => {
            (Observed::failed("PodDeleted", format!("pod {name} was deleted before it finished"), None), None)
        }
        Some("Running") => (Observed::phase(if idle { MemberPhase::Idle } else { MemberPhase::Active }), None),
        _ => {
            let unschedulable = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
            let Some(cond) = unschedulable else { return (Observed::phase(MemberPhase::Starting), None) };
            let since = cond
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(now);
            let waited = now.duration_since(since);
            if waited >= unschedulable_deadline {
                let detail = cond.message.clone().unwrap_or_default();
                let message = format!("pod {name} could not be scheduled for {}s: {detail}", unschedulable_deadline.as_secs());
                (Observed::failed("Unschedulable", message, None), None)
            } else {
                (Observed::phase(MemberPhase::Starting), Some(unschedulable_deadline - waited))
            }
        }
    }
}

/// The status of a member whose pod vanished while it ran.
pub fn pod_gone(pod_name: &str) -> Observed {
    Observed::failed("PodDeleted", format!("pod {pod_name} was deleted before it finished"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    fn terminated(p: &mut Pod, code: i32, reason: &str) {
        p.status.get_or_insert_with(Default::default).container_statuses = Some(vec![ContainerStatus {
            name: "agent".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: code, reason: Some(reason.into()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }

    const DEADLINE: SignedDuration = SignedDuration::from_secs(300);

    #[test]
    fn succeeded_completes() {
        let (o, _) = from_pod(&pod("Succeeded"), false, Timestamp::now(), DEADLINE);
        assert_eq!(o.phase, MemberPhase::Completed);
        assert_eq!(o.exit_code, Some(0));
    }

    #[test]
    fn oom_killed_fails_with_exit_code() {
        let mut p = pod("Failed");
        terminated(&mut p, 137, "OOMKilled");
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINE);
        assert_eq!(o.phase, MemberPhase::Failed);
        assert_eq!(o.exit_code, Some(137));
        assert_eq!(o.reason.as_deref(), Some("OOMKilled"));
        assert!(o.message.unwrap_or_default().contains("exit code 137"));
    }

    #[test]
    fn evicted_fails_with_pod_reason() {
        let mut p = pod("Failed");
        if let Some(s) = p.status.as_mut() {
            s.reason = Some("Evicted".into());
            s.message = Some("node low on memory".into());
        }
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINE);
        assert_eq!(o.reason.as_deref(), Some("Evicted"));
    }

    #[test]
    fn running_is_active_or_idle() {
        assert_eq!(from_pod(&pod("Running"), false, Timestamp::now(), DEADLINE).0.phase, MemberPhase::Active);
        assert_eq!(from_pod(&pod("Running"), true, Timestamp::now(), DEADLINE).0.phase, MemberPhase::Idle);
    }

    #[test]
    fn deleting_a_running_pod_fails_the_member() {
        let mut p = pod("Running");
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(from_pod(&p, false, Timestamp::now(), DEADLINE).0.reason.as_deref(), Some("PodDeleted"));
    }

    #[test]
    fn unschedulable_fails_only_past_the_deadline() {
        let now = Timestamp::now();
        let mut p = pod("Pending");
        let since = now - SignedDuration::from_secs(100);
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                last_transition_time: Some(Time(since)),
                ..Default::default()
            }]);
        }
        let (o, again) = from_pod(&p, false, now, DEADLINE);
        assert_eq!(o.phase, MemberPhase::Starting);
        assert_eq!(again, Some(SignedDuration::from_secs(200)));
        let (o, _) = from_pod(&p, false, now + SignedDuration::from_secs(250), DEADLINE);
        assert_eq!(o.reason.as_deref(), Some("Unschedulable"));
    }
}
