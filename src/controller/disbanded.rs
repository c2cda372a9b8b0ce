//! The rule "a disband cancels members and fails open tasks" (rule 4), written once: what a
//! disbanded team makes of each member that had not finished and of each open task. The Member
//! reconciler applies the first (Cancelled, its pod deleted), the TeamTask reconciler the
//! second (failed); both watch Teams, so a disband reaches every member and task at once. The
//! disband itself (`disband`) only wakes the members, tears down Redis and writes the Team's
//! status, and waits for both before the Team may go.
//!
//! Pure, so that both outcomes are unit tests.

use crate::api::{Team, condition};

use super::member_status::Observed;

/// Reason of a member cancelled and of a task failed by their team's disband.
pub const TEAM_DISBANDED: &str = "TeamDisbanded";

/// Why `team` disbanded, as its Disbanded condition recorded it; a Team being deleted whose
/// status does not say so yet was deleted.
pub fn why(team: &Team) -> String {
    let recorded = team.status.as_ref().and_then(|s| condition::get(&s.conditions, condition::DISBANDED)).filter(|c| c.status == "True");
    match recorded {
        Some(c) => c.message.clone(),
        None => "the Team was deleted".to_owned(),
    }
}

/// What the disband of `team` makes of a member that had not finished: Cancelled, with why.
pub fn cancelled_member(team: &Team) -> Observed {
    Observed {
        phase: crate::api::MemberPhase::Cancelled,
        reason: Some(TEAM_DISBANDED.into()),
        message: Some(format!("team {} disbanded: {}", team.metadata.name.as_deref().unwrap_or_default(), why(team))),
        exit_code: None,
    }
}

/// What the disband of `team` makes of an open task: failed, with this reason and message.
pub fn failed_task(team: &Team) -> (&'static str, String) {
    (TEAM_DISBANDED, format!("team {} disbanded: {}", team.metadata.name.as_deref().unwrap_or_default(), why(team)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberPhase, TeamPhase, TeamStatus};
    use crate::controller::fixtures::team;

    #[test]
    fn members_are_cancelled_and_tasks_failed_with_the_recorded_cause() {
        let mut t = team("review", 3);
        let mut status = TeamStatus { phase: Some(TeamPhase::Disbanded), ..Default::default() };
        status.conditions = condition::for_team(&status, Some((condition::LEAD_COMPLETED, "the lead finished")), None, &condition::at(1));
        t.status = Some(status);
        let m = cancelled_member(&t);
        assert_eq!((m.phase, m.reason.as_deref()), (MemberPhase::Cancelled, Some(TEAM_DISBANDED)));
        assert_eq!(m.message.as_deref(), Some("team review disbanded: the lead finished"));
        assert_eq!(failed_task(&t), (TEAM_DISBANDED, "team review disbanded: the lead finished".to_owned()));
    }

    #[test]
    fn a_team_deleted_before_its_status_says_so_was_deleted() {
        assert_eq!(why(&team("review", 3)), "the Team was deleted");
    }
}
