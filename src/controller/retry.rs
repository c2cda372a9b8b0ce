//! Retries of a failed member (issue 16, point 7): an agent type's `backoffLimit`, with the
//! Job's semantics. A member whose pod fails while fewer than `backoffLimit` of its pods failed
//! before is not Failed: it reads Queued with reason [`BACK_OFF`], its `status.failedAttempts`
//! one more and `lastFailureTime` now (the Member reconciler writes these three, the one writer
//! of what a pod's end means); after its backoff the admission task, the one creator of member
//! pods, gives it a slot like any queued member and creates its next pod, `podName` with it.
//! The lead is retried the same way (its team does not disband meanwhile), except an external
//! lead, whose pod the operator does not run.
//!
//! The slot: like the Job controller, whose parallelism counts only active pods (a failed pod
//! is not active, and no replacement is created before the backoff passes), a member waiting out
//! its backoff holds no slot; once it has passed, it queues in its place of creation order, so
//! it comes before members created after it.
//!
//! Each attempt is a new pod (its name ends in `-2`, `-3`, … from the second on, see
//! [`super::pod::pod_name`]): a pod's bound token names that pod, so the gateway knows the new
//! pod as the same member (its controller reference and `podName`) and the old pod's token works
//! no more once `podName` names the next one (or the old pod is gone). Inbox, memory and tasks
//! belong to the member name, not to a pod, so the next attempt finds them as they were.
//!
//! Pure, so every rule is a unit test.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::member_status::Observed;
use super::pod;
use crate::api::{Member, MemberPhase, Team};

/// Reason of a member waiting out its backoff before its next pod.
pub const BACK_OFF: &str = "BackOff";
/// The Job controller's first backoff: the default of `--retry-backoff-seconds`.
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The Job controller's longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// How many of the member's pods failed so far: the attempt its current pod is (0 for the first).
pub fn failed_attempts(member: &Member) -> u32 {
    member.status.as_ref().and_then(|s| s.failed_attempts).and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// How many of the member's pods may fail before it does: its agent type's `backoffLimit`; none
/// for an external lead (its pod is not the operator's to start again), nor in a team that
/// disbands (it starts no pods).
pub fn limit(team: &Team, member: &Member) -> u32 {
    if (member.is_lead() && team.spec.lead.pod_name.is_some()) || team.is_disbanded() {
        return 0;
    }
    team.agent_type(&member.spec.agent).and_then(|a| u32::try_from(a.backoff_limit).ok()).unwrap_or(0)
}

/// The pod the member's current attempt runs in, by name (an external lead's is not its own).
pub fn current_pod_name(member: &Member, agent_name: &str) -> String {
    pod::pod_name(&member.spec.team, agent_name, member.metadata.uid.as_deref().unwrap_or_default(), failed_attempts(member))
}

/// Whether the member waits for its next attempt's pod: a pod of it failed and was counted, and
/// `podName` still names an earlier attempt's. Admission's to act on (backoff, slot, pod).
pub fn awaits_pod(member: &Member) -> bool {
    let Some(name) = member.agent_name() else { return false };
    failed_attempts(member) > 0
        && member.status.as_ref().and_then(|s| s.pod_name.as_deref()) != Some(current_pod_name(member, name).as_str())
}

/// The wait before the pod after `failed` failures: `first`, doubled per failure after the first,
/// at most [`MAX_BACKOFF`].
pub fn backoff(first: Duration, failed: u32) -> Duration {
    first.saturating_mul(1 << failed.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// When the member's next pod may be created: its last failure plus its backoff; None when it
/// does not wait for one.
pub fn next_attempt_at(member: &Member, first: Duration) -> Option<Timestamp> {
    if !awaits_pod(member) {
        return None;
    }
    let failed_at = member.status.as_ref().and_then(|s| s.last_failure_time.as_ref()).map(|t| t.0)?;
    let wait = SignedDuration::try_from(backoff(first, failed_attempts(member))).unwrap_or(SignedDuration::MAX);
    failed_at.checked_add(wait).ok()
}

/// What a member's status says of `observed` (from its current pod) given `failed` earlier
/// failures and its `limit`: a failure within the limit is a retry (Queued, [`BACK_OFF`], the
/// failure's exit code and what happened in the message); the last is the failure, its message
/// telling the attempts. The second value is the member's `failedAttempts` from now on. Without
/// a limit nothing changes, the status included: a failure is written as it was before retries.
pub fn judge(observed: Observed, failed: u32, limit: u32, first: Duration) -> (Observed, u32) {
    if observed.phase != MemberPhase::Failed || limit == 0 {
        return (observed, failed);
    }
    let now_failed = failed + 1;
    let of = limit + 1;
    let what = observed.message.clone().unwrap_or_else(|| observed.reason.clone().unwrap_or_default());
    if now_failed > limit {
        let message = Some(format!("{what} (attempt {now_failed} of {of}; backoffLimit {limit} reached)"));
        return (Observed { message, ..observed }, now_failed);
    }
    let wait = backoff(first, now_failed).as_secs();
    let message = format!("attempt {now_failed} of {of} failed: {what}; a new pod starts after a {wait}s backoff, once a slot is free");
    let retry =
        Observed { phase: MemberPhase::Queued, reason: Some(BACK_OFF.into()), message: Some(message), exit_code: observed.exit_code };
    (retry, now_failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberStatus;
    use crate::controller::fixtures::{member, team};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn failed(code: i32) -> Observed {
        Observed { phase: MemberPhase::Failed, reason: Some("Error".into()), message: Some("pod p failed".into()), exit_code: Some(code) }
    }

    #[test]
    fn backoff_doubles_from_the_first_and_stops_at_six_minutes() {
        let first = DEFAULT_FIRST_BACKOFF;
        let secs: Vec<u64> = (1..=8).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 320, 360, 360]);
        assert_eq!(backoff(Duration::from_secs(1), 40), Duration::from_secs(360));
    }

    #[test]
    fn a_failure_within_the_limit_is_a_retry_and_the_last_one_fails_telling_the_attempts() {
        let first = DEFAULT_FIRST_BACKOFF;
        let (o, n) = judge(failed(1), 0, 2, first);
        assert_eq!((o.phase, o.reason.as_deref(), o.exit_code, n), (MemberPhase::Queued, Some(BACK_OFF), Some(1), 1));
        assert!(o.message.as_deref().is_some_and(|m| m.starts_with("attempt 1 of 3 failed: pod p failed") && m.contains("10s")), "{o:?}");
        let (o, n) = judge(failed(1), 1, 2, first);
        assert!(o.message.as_deref().is_some_and(|m| m.contains("attempt 2 of 3") && m.contains("20s")), "{o:?}");
        assert_eq!(n, 2);
        let (o, n) = judge(failed(1), 2, 2, first);
        assert_eq!((o.phase, o.reason.as_deref(), o.exit_code, n), (MemberPhase::Failed, Some("Error"), Some(1), 3));
        assert_eq!(o.message.as_deref(), Some("pod p failed (attempt 3 of 3; backoffLimit 2 reached)"));
    }

    #[test]
    fn without_a_limit_a_failure_is_as_before_and_other_ends_are_left_alone() {
        assert_eq!(judge(failed(2), 0, 0, DEFAULT_FIRST_BACKOFF), (failed(2), 0), "no failedAttempts written");
        let done = Observed { phase: MemberPhase::Completed, reason: None, message: None, exit_code: Some(0) };
        assert_eq!(judge(done.clone(), 1, 2, DEFAULT_FIRST_BACKOFF), (done, 1));
    }

    #[test]
    fn the_limit_is_the_agent_types_and_none_for_an_external_lead_or_a_disbanded_team() {
        let mut t = team("review", 3);
        t.spec.agents.iter_mut().for_each(|a| a.backoff_limit = 2);
        let mut m = member("review", "general", "uid-1");
        assert_eq!(limit(&t, &m), 2);
        m.spec.role = crate::api::MemberRole::Lead;
        assert_eq!(limit(&t, &m), 2, "an operator-run lead is retried");
        t.spec.lead.pod_name = Some("caller".into());
        assert_eq!(limit(&t, &m), 0, "an external lead is not");
        t.spec.lead.pod_name = None;
        t.status = Some(crate::api::TeamStatus { phase: Some(crate::api::TeamPhase::Disbanded), ..Default::default() });
        assert_eq!(limit(&t, &m), 0, "nor anyone in a disbanded team");
    }

    #[test]
    fn a_member_awaits_its_next_pod_until_pod_name_names_it_and_waits_its_backoff_from_the_failure() {
        let mut m = member("review", "general", "uid-abcdef");
        let first_pod = pod::pod_name("review", "general", "uid-abcdef", 0);
        m.status = Some(MemberStatus { name: Some("general".into()), pod_name: Some(first_pod.clone()), ..Default::default() });
        assert!(!awaits_pod(&m));
        assert_eq!(current_pod_name(&m, "general"), first_pod);
        let failed_at = Timestamp::from_second(1_000).expect("time");
        if let Some(s) = m.status.as_mut() {
            (s.failed_attempts, s.last_failure_time) = (Some(2), Some(Time(failed_at)));
        }
        assert!(awaits_pod(&m));
        assert_eq!(current_pod_name(&m, "general"), "review-general-uidab-3");
        assert_eq!(next_attempt_at(&m, DEFAULT_FIRST_BACKOFF), Some(Timestamp::from_second(1_020).expect("time")));
        m.status.as_mut().expect("status").pod_name = Some(current_pod_name(&m, "general"));
        assert!(!awaits_pod(&m) && next_attempt_at(&m, DEFAULT_FIRST_BACKOFF).is_none());
    }
}
