//! A TeamTask's Complete and Failed conditions, as a Job's: Complete once completed, Failed once
//! failed, with the task's reason (OwnerFailed, DependencyFailed, TeamDisbanded, ...) and the
//! start of its result as the message. Blocked is the TeamTask reconciler's, set beside them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{COMPLETE, FAILED, new, set, truncate};
use crate::api::{TaskState, TeamTaskStatus};

/// How much of a task's result its condition message repeats: the result is the task's, the
/// message only names it.
const RESULT_IN_MESSAGE: usize = 1024;

/// The task's conditions for the status `s` (its state, reason and result as they are to be
/// written): its other conditions (Blocked) kept, Complete and Failed set.
pub fn for_task(s: &TeamTaskStatus, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let state = s.state.unwrap_or(TaskState::Pending);
    let (default_reason, default_message) = match state {
        TaskState::Pending => ("Pending", "the task is pending"),
        TaskState::InProgress => ("InProgress", "the task is in progress"),
        TaskState::Completed => ("TaskCompleted", "the task completed"),
        TaskState::Failed => ("TaskFailed", "the task failed"),
    };
    let reason = s.reason.as_deref().unwrap_or(default_reason);
    let message = match (&s.result, state.is_terminal()) {
        (Some(r), true) if !r.trim().is_empty() => truncate(r.clone(), RESULT_IN_MESSAGE),
        _ => default_message.to_owned(),
    };
    let mut conditions = s.conditions.clone();
    for (type_, holds) in [(COMPLETE, state == TaskState::Completed), (FAILED, state == TaskState::Failed)] {
        set(&mut conditions, new(type_, holds, reason, message.clone(), generation, now.clone()));
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{BLOCKED, at, get, is_true};

    fn status(state: TaskState, reason: Option<&str>, result: Option<&str>) -> TeamTaskStatus {
        TeamTaskStatus { state: Some(state), reason: reason.map(str::to_owned), result: result.map(str::to_owned), ..Default::default() }
    }

    #[test]
    fn final_states_hold_their_condition_with_the_reason_and_result() {
        let done = for_task(&status(TaskState::Completed, None, Some("3 findings")), Some(2), &at(1));
        assert!(is_true(&done, COMPLETE) && !is_true(&done, FAILED));
        assert_eq!(get(&done, COMPLETE).map(|c| (c.reason.as_str(), c.message.as_str())), Some(("TaskCompleted", "3 findings")));
        let failed = for_task(&status(TaskState::Failed, Some("OwnerFailed"), Some("owner x is Failed: OOMKilled")), Some(2), &at(1));
        assert!(is_true(&failed, FAILED) && !is_true(&failed, COMPLETE));
        assert_eq!(get(&failed, FAILED).map(|c| c.reason.as_str()), Some("OwnerFailed"));
        for open in [TaskState::Pending, TaskState::InProgress] {
            let cs = for_task(&status(open, None, Some("partial")), Some(2), &at(1));
            assert!(!is_true(&cs, COMPLETE) && !is_true(&cs, FAILED), "{open:?}");
            assert_eq!(cs.len(), 2);
        }
    }

    #[test]
    fn blocked_is_kept_and_long_results_are_cut() {
        let mut s = status(TaskState::Completed, None, Some(&"x".repeat(5000)));
        s.conditions = vec![new(BLOCKED, false, "DependenciesDone", "all dependencies completed", Some(1), at(1))];
        let cs = for_task(&s, Some(1), &at(2));
        assert_eq!(cs.len(), 3);
        assert_eq!(get(&cs, COMPLETE).map(|c| c.message.len()), Some(RESULT_IN_MESSAGE));
    }
}
