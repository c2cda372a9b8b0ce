//! The rule "a disband gives its running members `spec.shutdownGraceSeconds` to end by
//! themselves" (the shutdown handshake): from the moment the team disbanded (its Disbanded
//! condition's transition time), a member whose pod runs is held — not cancelled, its pod left
//! alone — until it ends (it approved the disband's shutdown request and its turn ended, or its
//! loop went quiet), until it rejects the request (`status.shutdown.state: Rejected`: it will
//! not end by itself, so waiting for it is pointless), or until the grace has passed. Then the
//! disband cancels it and deletes its pod as before: the Kubernetes way, SIGTERM passed on to
//! the runtime, is the fallback.
//!
//! A member not running yet (Queued, Starting) has nothing to save and is cancelled at once, as
//! is an external lead's Member (its pod is not the operator's to stop). Pure, so that every case
//! is a unit test; the disband and the Member reconciler both ask it.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{Member, MemberPhase, ShutdownState, Team, condition};

/// When `team`'s disband started: its Disbanded condition's transition time; None while it has
/// not been written (the disband's first pass, which starts the clock now).
fn started(team: &Team) -> Option<Timestamp> {
    let status = team.status.as_ref()?;
    condition::get(&status.conditions, condition::DISBANDED).filter(|c| c.status == "True").map(|c| c.last_transition_time.0)
}

/// How much of the grace of `team`'s disband is left at `now` (None: none). Asked only of a
/// team that disbands (the disband's own passes, and the Member reconciler for a Disbanded team).
pub fn left(team: &Team, now: Timestamp) -> Option<SignedDuration> {
    let grace = SignedDuration::from_secs(team.spec.shutdown_grace_seconds.max(0));
    let left = grace - now.duration_since(started(team).unwrap_or(now));
    left.is_positive().then_some(left)
}

/// Whether the disband of `team` holds `member` at `now`, and for how long at most (asked only
/// of a team that disbands, as [`left`]).
pub fn holds(team: &Team, member: &Member, now: Timestamp) -> Option<SignedDuration> {
    let running = matches!(member.phase(), MemberPhase::Active | MemberPhase::Idle | MemberPhase::AwaitingApproval);
    let external = member.is_lead() && team.spec.lead.pod_name.is_some();
    let rejected = member.status.as_ref().and_then(|s| s.shutdown.as_ref()).is_some_and(|s| s.state == ShutdownState::Rejected);
    if !running || external || rejected {
        return None;
    }
    left(team, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemberShutdown, MemberStatus, TeamPhase, TeamStatus};
    use crate::controller::fixtures::{member, team};

    fn disbanded_at(secs: i64, grace: i64) -> Team {
        let mut t = team("review", 3);
        t.spec.shutdown_grace_seconds = grace;
        let mut status = TeamStatus { phase: Some(TeamPhase::Disbanded), ..Default::default() };
        status.conditions = condition::for_team(&status, Some(("TeamDeleted", "deleted")), None, &condition::at(secs));
        t.status = Some(status);
        t
    }

    fn in_phase(phase: MemberPhase, shutdown: Option<ShutdownState>) -> Member {
        let mut m = member("review", "general", "u1");
        m.status = Some(MemberStatus {
            phase: Some(phase),
            shutdown: shutdown.map(|state| MemberShutdown { state, ..Default::default() }),
            ..Default::default()
        });
        m
    }

    fn at(secs: i64) -> Timestamp {
        condition::at(secs).0
    }

    #[test]
    fn a_running_member_is_held_for_the_rest_of_the_grace() {
        let t = disbanded_at(100, 30);
        assert_eq!(holds(&t, &in_phase(MemberPhase::Active, None), at(110)), Some(SignedDuration::from_secs(20)));
        assert_eq!(holds(&t, &in_phase(MemberPhase::Idle, Some(ShutdownState::Approved)), at(129)), Some(SignedDuration::from_secs(1)));
        assert_eq!(holds(&t, &in_phase(MemberPhase::Active, None), at(130)), None, "the grace has passed");
    }

    #[test]
    fn nothing_to_wait_for_is_not_held() {
        let t = disbanded_at(100, 30);
        for phase in [MemberPhase::Queued, MemberPhase::Starting, MemberPhase::Completed] {
            assert_eq!(holds(&t, &in_phase(phase, None), at(101)), None, "{phase:?}");
        }
        assert_eq!(holds(&t, &in_phase(MemberPhase::Active, Some(ShutdownState::Rejected)), at(101)), None, "it said it will not end");
        assert_eq!(holds(&disbanded_at(100, 0), &in_phase(MemberPhase::Active, None), at(100)), None, "no grace: today's disband");
    }

    #[test]
    fn the_first_pass_starts_the_clock() {
        // The lead just finished: the disband's first pass has written nothing yet.
        let t = team("review", 3);
        assert_eq!(left(&t, at(50)), Some(SignedDuration::from_secs(30)), "the default grace");
    }
}
