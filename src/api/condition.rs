//! `metav1.Condition` handling shared by the status of every kind: conditions are keyed by type,
//! and `lastTransitionTime` moves only when the status flips, so that a status computed twice from
//! the same cluster state is byte-identical and does not wake the controller again.
//!
//! The conditions tools read (`kubectl wait --for=condition=Complete`, Argo CD and Flux health)
//! are derived from a kind's phase by one pure function per kind, [`for_member`], [`for_team`] and
//! [`for_task`]; every writer of a phase calls it and puts the result in the same write, so a
//! phase and its conditions never disagree and no transition costs an extra API write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

mod member;
mod team;
mod team_task;

pub use member::for_member;
pub use team::{LEAD_COMPLETED, LEAD_FAILED, for_team};
pub use team_task::for_task;

/// Member: its pod runs (Active or Idle). Team: its lead is named and the team runs.
pub const READY: &str = "Ready";
/// Member: its pod succeeded. Team: it disbanded because its lead completed. TeamTask: completed.
pub const COMPLETE: &str = "Complete";
/// Member: it failed or was cancelled. Team: it disbanded because its lead failed. TeamTask:
/// failed.
pub const FAILED: &str = "Failed";
/// Team: it disbanded, whatever the cause (the reason says which).
pub const DISBANDED: &str = "Disbanded";
/// TeamTask: a dependency has not completed.
pub const BLOCKED: &str = "Blocked";
/// Member: the lead was told of its failure (the Member reconciler's).
pub const LEAD_NOTIFIED: &str = "LeadNotified";
/// Member: its agent is blocked in `wait_messages` (the gateway's); a running member that waits
/// reads Idle.
pub const WAITING: &str = "Waiting";

/// Team (with `spec.budget`): a limit of its budget is over; it admits no new members and
/// stops those that go on working.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

/// The longest condition message `metav1.Condition` allows.
const MAX_MESSAGE: usize = 32768;

/// Sets (or replaces) the condition of `new.type_`, keeping the old transition time when its
/// status did not change.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Builds a condition; `now` is passed in so callers stay deterministic under test. The reason
/// is made to fit the API's CamelCase rule and the message its length limit.
pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>, generation: Option<i64>, now: Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason_of(reason),
        message: truncate(message.into(), MAX_MESSAGE),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// True when the condition of `type_` is present with status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The conditions of `conditions` whose type is one of `types`: what one writer applies, so that
/// a server-side apply never takes over (or drops) another writer's conditions.
pub fn only(conditions: &[Condition], types: &[&str]) -> Vec<Condition> {
    conditions.iter().filter(|c| types.contains(&c.type_.as_str())).cloned().collect()
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `reason` as `metav1.Condition` accepts it (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`): the
/// reasons here come from pods and container runtimes too, which promise nothing.
fn reason_of(reason: &str) -> String {
    let kept: String = reason.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':')).collect();
    let kept = kept.trim_start_matches(|c: char| !c.is_ascii_alphabetic()).trim_end_matches([',', ':']);
    if kept.is_empty() { "Unknown".to_owned() } else { kept.chars().take(1024).collect() }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
pub(crate) fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut cs = vec![];
        set(&mut cs, new("Ready", true, "A", "m", Some(1), at(10)));
        set(&mut cs, new("Ready", true, "B", "m2", Some(2), at(20)));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, at(10));
        assert_eq!(cs[0].reason, "B");
        set(&mut cs, new("Ready", false, "C", "m3", Some(3), at(30)));
        assert_eq!(cs[0].last_transition_time, at(30));
        assert!(!is_true(&cs, "Ready"));
    }

    #[test]
    fn reasons_fit_the_api_rule() {
        assert_eq!(reason_of("OOMKilled"), "OOMKilled");
        assert_eq!(reason_of("Pod Failed!"), "PodFailed");
        assert_eq!(reason_of("1:bad,"), "bad");
        assert_eq!(reason_of(""), "Unknown");
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
