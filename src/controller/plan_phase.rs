//! The rule "a member whose plan waits for review reads AwaitingApproval": a running member
//! (Active or Idle from its pod) whose `status.plan.state` is Submitted — written by the gateway's
//! plan_submit, under the gateway's own field manager — is shown as phase AwaitingApproval, in
//! the Member reconciler's own status write with its conditions; the lead's plan_review (or a
//! new plan) moves it back. Pure, so that it is a unit test.

use super::member_status::Observed;
use crate::api::{MemberPhase, MemberStatus, PlanState};

/// `observed` as the member's plan makes it.
pub fn apply(observed: Observed, status: &MemberStatus) -> Observed {
    let submitted = status.plan.as_ref().is_some_and(|p| p.state == PlanState::Submitted);
    match observed.phase {
        MemberPhase::Active | MemberPhase::Idle if submitted => Observed { phase: MemberPhase::AwaitingApproval, ..observed },
        _ => observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberPlan;

    fn with_plan(state: Option<PlanState>) -> MemberStatus {
        MemberStatus { plan: state.map(|state| MemberPlan { state, ..Default::default() }), ..Default::default() }
    }

    fn phase(p: MemberPhase) -> Observed {
        Observed { phase: p, reason: None, message: None, exit_code: None }
    }

    #[test]
    fn a_running_member_with_a_plan_under_review_awaits_approval() {
        let submitted = with_plan(Some(PlanState::Submitted));
        assert_eq!(apply(phase(MemberPhase::Active), &submitted).phase, MemberPhase::AwaitingApproval);
        assert_eq!(apply(phase(MemberPhase::Idle), &submitted).phase, MemberPhase::AwaitingApproval);
        assert_eq!(apply(phase(MemberPhase::Completed), &submitted).phase, MemberPhase::Completed, "an end is an end");
        for state in [None, Some(PlanState::Approved), Some(PlanState::Rejected)] {
            assert_eq!(apply(phase(MemberPhase::Idle), &with_plan(state)).phase, MemberPhase::Idle, "{state:?}");
        }
    }
}
