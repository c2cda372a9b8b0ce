//! `metav1.Condition` handling shared by the status of every kind: conditions are keyed by type,
//! and `lastTransitionTime` moves only when the status flips, so that a status computed twice from
//! the same cluster state is byte-identical and does not wake the controller again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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

/// Builds a condition; `now` is passed in so callers stay deterministic under test.
pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>, generation: Option<i64>, now: Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// True when the condition of `type_` is present with status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("in range"))
    }

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
}
