//! A Team's Ready, Complete, Failed and Disbanded conditions: Ready while it runs with a named
//! lead; once it disbanded, Disbanded with the cause, and Complete or Failed as a Job reads —
//! Complete when its lead completed, Failed when its lead failed or was cancelled. A team
//! disbanded because it was deleted is neither: it is about to go.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{COMPLETE, DISBANDED, FAILED, READY, get, new, set};
use crate::api::{TeamPhase, TeamStatus};

/// Reason of a disband because the lead finished successfully.
pub const LEAD_COMPLETED: &str = "LeadCompleted";
/// Reason of a disband because the lead failed or was cancelled.
pub const LEAD_FAILED: &str = "LeadFailed";

/// The team's conditions for the status `s` (phase and lead as they are to be written). `ended`
/// is the disband's reason and message when it disbands now; a team disbanded earlier keeps the
/// cause its Disbanded condition recorded.
pub fn for_team(s: &TeamStatus, ended: Option<(&str, &str)>, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut conditions = s.conditions.clone();
    let mut put = |type_: &str, holds: bool, reason: &str, message: &str| {
        set(&mut conditions, new(type_, holds, reason, message, generation, now.clone()));
    };
    match s.phase {
        Some(TeamPhase::Disbanded) => {
            let recorded = get(&s.conditions, DISBANDED).filter(|c| c.status == "True").map(|c| (c.reason.clone(), c.message.clone()));
            let (reason, why) = match (ended, recorded) {
                (Some((r, w)), _) => (r.to_owned(), w.to_owned()),
                (None, Some(rw)) => rw,
                (None, None) => ("Disbanded".to_owned(), "the team is disbanded".to_owned()),
            };
            put(READY, false, "Disbanded", &why);
            put(DISBANDED, true, &reason, &why);
            put(COMPLETE, reason == LEAD_COMPLETED, &reason, &why);
            put(FAILED, reason == LEAD_FAILED, &reason, &why);
        }
        _ => {
            match &s.lead_name {
                Some(l) => put(READY, true, "LeadNamed", &format!("lead {l} runs the team")),
                None => put(READY, false, "LeadPending", "waiting for the lead to be named"),
            }
            for type_ in [DISBANDED, COMPLETE, FAILED] {
                put(type_, false, "TeamActive", "the team runs");
            }
        }
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{at, is_true};

    fn status(phase: TeamPhase, lead: Option<&str>) -> TeamStatus {
        TeamStatus { phase: Some(phase), lead_name: lead.map(str::to_owned), ..Default::default() }
    }

    fn holding(cs: &[Condition]) -> Vec<&str> {
        [READY, COMPLETE, FAILED, DISBANDED].into_iter().filter(|t| is_true(cs, t)).collect()
    }

    #[test]
    fn an_active_team_is_ready_once_its_lead_is_named() {
        assert_eq!(holding(&for_team(&status(TeamPhase::Active, None), None, Some(1), &at(1))), Vec::<&str>::new());
        let cs = for_team(&status(TeamPhase::Active, Some("lead")), None, Some(1), &at(1));
        assert_eq!(holding(&cs), vec![READY]);
        assert_eq!(cs.len(), 4);
    }

    #[test]
    fn a_disband_completes_or_fails_the_team_by_its_leads_end() {
        let done = for_team(&status(TeamPhase::Disbanded, Some("lead")), Some((LEAD_COMPLETED, "the lead finished")), Some(1), &at(1));
        assert_eq!(holding(&done), vec![COMPLETE, DISBANDED]);
        let failed = for_team(&status(TeamPhase::Disbanded, Some("lead")), Some((LEAD_FAILED, "the lead ended Failed")), Some(1), &at(1));
        assert_eq!(holding(&failed), vec![FAILED, DISBANDED]);
        assert_eq!(get(&failed, FAILED).map(|c| c.message.as_str()), Some("the lead ended Failed"));
        let deleted = for_team(&status(TeamPhase::Disbanded, None), Some(("TeamDeleted", "the Team was deleted")), Some(1), &at(1));
        assert_eq!(holding(&deleted), vec![DISBANDED]);
    }

    #[test]
    fn a_disbanded_team_keeps_its_recorded_cause() {
        let mut s = status(TeamPhase::Active, Some("lead"));
        s.conditions = for_team(&s, None, Some(1), &at(1));
        s.phase = Some(TeamPhase::Disbanded);
        s.conditions = for_team(&s, Some((LEAD_COMPLETED, "the lead finished")), Some(1), &at(5));
        let again = for_team(&s, None, Some(1), &at(9));
        assert_eq!(again, s.conditions, "the next reconcile of a disbanded team writes nothing");
        assert_eq!(get(&again, COMPLETE).map(|c| c.last_transition_time.clone()), Some(at(5)));
        assert_eq!(get(&again, FAILED).map(|c| c.last_transition_time.clone()), Some(at(1)));
    }
}
