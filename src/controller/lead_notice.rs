//! The rule "the lead is told how each member ended": which notice a member's end gives, if any,
//! with its text and its idempotency key. Pure, so each case is a unit test; the Member
//! reconciler sends it before it writes the end and records it with the condition LeadNotified
//! in the same write, so each member's notice is sent once, across restarts too (a repeat after
//! a lost write has the same key, which the bus writes once).
//!
//! - Failed: `[AGENT FAILURE] @<name> failed: …`, always.
//! - Completed: `[DONE] @<name> completed (exit code 0).`, when the Team asks for it
//!   (`spec.leadNotices.done`); only as the member completes, never for one found completed
//!   already (a Team that turns the notice on later is not told of old news).
//!
//! `[IDLE]` notices are the gateway's, which sees the waits (see `gateway::idle_notice`).

use super::member::failure_notice;
use super::member_status::Observed;
use crate::api::{MemberPhase, Team};
use crate::metrics::NoticeLabel;

/// A notice for the lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub label: NoticeLabel,
    pub body: String,
    /// The idempotency key, from the member's uid: one notice per member.
    pub key: String,
}

/// The notice the end `observed` of member `agent_name` (uid `uid`) gives the lead of `team`;
/// `was` is the member's phase before it.
pub fn for_end(team: &Team, agent_name: &str, uid: &str, was: MemberPhase, observed: &Observed) -> Option<Notice> {
    match observed.phase {
        MemberPhase::Failed => Some(Notice {
            label: NoticeLabel::AGENT_FAILURE,
            body: failure_notice(agent_name, observed, team.spec.tasks.release_on_owner_failure),
            key: format!("failure-{uid}"),
        }),
        MemberPhase::Completed if team.spec.lead_notices.done && !was.is_terminal() => Some(Notice {
            label: NoticeLabel::MEMBER_DONE,
            body: done_notice(agent_name, observed.exit_code.unwrap_or(0)),
            key: format!("done-{uid}"),
        }),
        _ => None,
    }
}

/// Text of the notice of a member that completed.
pub fn done_notice(agent_name: &str, exit_code: i32) -> String {
    format!("[DONE] @{agent_name} completed (exit code {exit_code}).")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::team;

    fn ended(phase: MemberPhase, exit_code: Option<i32>) -> Observed {
        Observed { phase, reason: None, message: None, exit_code }
    }

    #[test]
    fn a_failure_is_always_told_and_a_completion_when_the_team_asks() {
        let mut t = team("review", 3);
        let failed = for_end(&t, "critic", "u1", MemberPhase::Active, &ended(MemberPhase::Failed, Some(137))).expect("failure notice");
        assert_eq!((failed.label, failed.key.as_str()), (NoticeLabel::AGENT_FAILURE, "failure-u1"));
        assert!(failed.body.starts_with("[AGENT FAILURE] @critic failed"), "{}", failed.body);
        let completed = ended(MemberPhase::Completed, Some(0));
        assert_eq!(for_end(&t, "critic", "u1", MemberPhase::Idle, &completed), None, "off by default");
        t.spec.lead_notices.done = true;
        let done = for_end(&t, "critic", "u1", MemberPhase::Idle, &completed).expect("done notice");
        assert_eq!(
            done,
            Notice { label: NoticeLabel::MEMBER_DONE, body: "[DONE] @critic completed (exit code 0).".into(), key: "done-u1".into() }
        );
        assert_eq!(for_end(&t, "critic", "u1", MemberPhase::Completed, &completed), None, "a member found completed is old news");
        assert_eq!(for_end(&t, "critic", "u1", MemberPhase::Active, &ended(MemberPhase::Cancelled, None)), None);
    }
}
