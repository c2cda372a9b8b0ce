//! Budgets as the operator enforces them (the arithmetic is `api::budget`'s):
//! - a member over its agent type's budget (`spec.agents[].budget`: its reported turns and
//!   tokens in `status.usage`, its wall-clock from `status.startTime`) is Failed with reason
//!   BudgetExceeded, whatever it is doing;
//! - a team over its budget (`spec.budget`: the turns and tokens of all its members in its
//!   `status.usage`, its wall-clock from its creation) records it as its condition
//!   BudgetExceeded, written by the Team reconciler; from then on a member that goes on working
//!   (phase Active) is Failed with reason BudgetExceeded, one not admitted yet is refused the
//!   same way, and the admission admits none. Idle members are left to end by themselves (or
//!   are stopped when a message makes them work again): stopping every member at once would
//!   throw away work that is done and only waits to be read. The lead is not stopped by its
//!   team's budget (only by its own agent type's): it hears of its members' ends and can wrap up,
//!   where stopping it would disband the team at once.
//!
//! The Failed status goes the way of every failure (the Member reconciler's write, the pod
//! deleted, the lead's `[AGENT FAILURE]` notice, the tasks' cascade). Pure, so each rule is a
//! unit test.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::member_status::Observed;
use crate::api::budget::{BUDGET_EXCEEDED, Over};
use crate::api::condition::{self, BUDGET_EXCEEDED as BUDGET_CONDITION};
use crate::api::{Member, MemberPhase, Team, Usage};

/// Whole seconds from `since` to `now` (0 without a start, or before it).
fn elapsed(since: Option<&Time>, now: Timestamp) -> i64 {
    since.map_or(0, |t| now.duration_since(t.0).as_secs().max(0))
}

fn after(seconds: Option<i64>) -> Option<SignedDuration> {
    seconds.map(SignedDuration::from_secs)
}

/// What of `team`'s budget `usage` (its members' sum) is over at `now`, and when to look again
/// (its wall-clock limit, not reached yet).
pub fn team_over(team: &Team, usage: Option<Usage>, now: Timestamp) -> (Option<Over>, Option<SignedDuration>) {
    let Some(budget) = &team.spec.budget else { return (None, None) };
    let age = elapsed(team.metadata.creation_timestamp.as_ref(), now);
    match budget.over(&usage.unwrap_or_default(), age) {
        Some(over) => (Some(over), None),
        None => (None, after(budget.seconds_left(age))),
    }
}

/// Sets the team's BudgetExceeded condition as `over` says; a team without a budget gets none.
pub fn team_condition(conditions: &mut Vec<Condition>, team: &Team, over: Option<Over>, now: &Time) {
    if team.spec.budget.is_none() {
        return;
    }
    let generation = team.metadata.generation;
    let c = match over {
        Some(o) => condition::new(
            BUDGET_CONDITION,
            true,
            &format!("{}Spent", capitalized(o.limit.as_str())),
            o.to_string(),
            generation,
            now.clone(),
        ),
        None => condition::new(BUDGET_CONDITION, false, "WithinBudget", "every limit of spec.budget holds", generation, now.clone()),
    };
    condition::set(conditions, c);
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// Why the team's budget is spent, as its status records it (BudgetExceeded=True).
pub fn team_spent(team: &Team) -> Option<&str> {
    let conditions = &team.status.as_ref()?.conditions;
    condition::get(conditions, BUDGET_CONDITION).filter(|c| c.status == "True").map(|c| c.message.as_str())
}

/// What of its own budget (its agent type's) `member` is over at `now`, and when to look again
/// (its wall-clock limit, not reached yet).
pub fn member_over(member: &Member, team: &Team, now: Timestamp) -> (Option<Over>, Option<SignedDuration>) {
    let Some(budget) = team.agent_type(&member.spec.agent).and_then(|a| a.budget.as_ref()) else { return (None, None) };
    let status = member.status.as_ref();
    let usage = status.and_then(|s| s.usage).unwrap_or_default();
    let ran = elapsed(status.and_then(|s| s.start_time.as_ref()), now);
    match budget.over(&usage, ran) {
        Some(over) => (Some(over), None),
        None => (None, after(budget.seconds_left(ran))),
    }
}

/// Why a member not admitted yet is refused: its team's budget is spent.
pub fn refusal(member: &Member, team: &Team) -> Option<Observed> {
    let admitted = member.status.as_ref().is_some_and(|s| s.pod_name.is_some());
    let why = team_spent(team).filter(|_| !admitted)?;
    let message = format!("team {}'s budget is spent ({why}); it admits no new members", member.spec.team);
    Some(Observed::failed(BUDGET_EXCEEDED, message, None))
}

/// `observed` (a member's status from its pod) as the budgets make it, and when to look again.
pub fn apply(observed: Observed, member: &Member, team: &Team, now: Timestamp) -> (Observed, Option<SignedDuration>) {
    if observed.phase.is_terminal() {
        return (observed, None);
    }
    let (over, recheck) = member_over(member, team, now);
    if let Some(over) = over {
        let message = format!("the budget of agent type {} is spent: {over}", member.spec.agent);
        return (Observed::failed(BUDGET_EXCEEDED, message, observed.exit_code), None);
    }
    if observed.phase == MemberPhase::Active
        && !member.is_lead()
        && let Some(why) = team_spent(team)
    {
        let message = format!("team {}'s budget is spent ({why}) and this member went on working", member.spec.team);
        return (Observed::failed(BUDGET_EXCEEDED, message, observed.exit_code), None);
    }
    (observed, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Budget, MemberStatus};
    use crate::controller::fixtures::{member, team};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn running(phase: MemberPhase) -> Observed {
        Observed { phase, reason: None, message: None, exit_code: None }
    }

    /// A team whose agent type general has `budget`, created at `at(0)`.
    fn budgeted(budget: Budget) -> Team {
        let mut t = team("t", 3);
        t.metadata.creation_timestamp = Some(Time(at(0)));
        t.spec.agents.iter_mut().filter(|a| a.name == "general").for_each(|a| a.budget = Some(budget.clone()));
        t
    }

    /// A member of type general, started at `at(0)`, that reported `usage`.
    fn used(turns: i64, tokens: i64) -> Member {
        let mut m = member("t", "general", "m");
        m.status = Some(MemberStatus {
            pod_name: Some("p".into()),
            start_time: Some(Time(at(0))),
            usage: Some(Usage { turns, tokens }),
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_member_over_its_own_budget_fails_whatever_it_does() {
        let t = budgeted(Budget { turns: Some(2), ..Default::default() });
        for phase in [MemberPhase::Active, MemberPhase::Idle, MemberPhase::Starting] {
            let (o, again) = apply(running(phase), &used(3, 0), &t, at(1));
            assert_eq!((o.phase, o.reason.as_deref(), again), (MemberPhase::Failed, Some(BUDGET_EXCEEDED), None), "{phase:?}");
            assert_eq!(o.message.as_deref(), Some("the budget of agent type general is spent: turn 3 began, over the budget of 2 turns"));
        }
        assert_eq!(apply(running(MemberPhase::Active), &used(2, 0), &t, at(1)).0.phase, MemberPhase::Active, "within it");
        let done = Observed { exit_code: Some(0), ..running(MemberPhase::Completed) };
        assert_eq!(apply(done.clone(), &used(3, 0), &t, at(1)).0, done, "an end is an end");
    }

    #[test]
    fn a_members_wall_clock_runs_from_its_start_and_is_looked_at_again_when_it_ends() {
        let t = budgeted(Budget { seconds: Some(60), ..Default::default() });
        let (o, again) = apply(running(MemberPhase::Idle), &used(1, 0), &t, at(45));
        assert_eq!((o.phase, again), (MemberPhase::Idle, Some(SignedDuration::from_secs(15))));
        let (o, _) = apply(running(MemberPhase::Idle), &used(1, 0), &t, at(60));
        assert_eq!(o.reason.as_deref(), Some(BUDGET_EXCEEDED));
        assert!(o.message.unwrap_or_default().contains("its wall-clock budget of 60s has run out"));
    }

    #[test]
    fn a_spent_team_stops_the_members_that_work_and_refuses_the_queued() {
        let mut t = team("t", 3);
        t.spec.budget = Some(Budget { tokens: Some(100), ..Default::default() });
        t.metadata.creation_timestamp = Some(Time(at(0)));
        let (over, _) = team_over(&t, Some(Usage { turns: 4, tokens: 150 }), at(1));
        let mut conditions = Vec::new();
        team_condition(&mut conditions, &t, over, &Time(at(1)));
        assert_eq!((conditions[0].status.as_str(), conditions[0].reason.as_str()), ("True", "TokensSpent"));
        t.status = Some(crate::api::TeamStatus { conditions, ..Default::default() });

        let (o, _) = apply(running(MemberPhase::Active), &used(1, 10), &t, at(2));
        assert_eq!(o.reason.as_deref(), Some(BUDGET_EXCEEDED));
        assert!(o.message.unwrap_or_default().contains("150 tokens used, over the budget of 100 tokens"));
        assert_eq!(apply(running(MemberPhase::Idle), &used(1, 10), &t, at(2)).0.phase, MemberPhase::Idle, "an idle member may end");
        assert_eq!(refusal(&used(1, 10), &t), None, "admitted already");
        let mut lead = used(1, 10);
        lead.spec.role = crate::api::MemberRole::Lead;
        assert_eq!(apply(running(MemberPhase::Active), &lead, &t, at(2)).0.phase, MemberPhase::Active, "the lead wraps up");
        assert_eq!(refusal(&member("t", "general", "q"), &t).and_then(|o| o.reason), Some(BUDGET_EXCEEDED.to_owned()));
    }

    #[test]
    fn a_teams_condition_flips_back_and_its_clock_runs_from_its_creation() {
        let mut t = team("t", 3);
        assert_eq!(team_over(&t, Some(Usage { turns: 9, tokens: 9 }), at(1)), (None, None));
        let mut conditions = Vec::new();
        team_condition(&mut conditions, &t, None, &Time(at(1)));
        assert!(conditions.is_empty(), "no budget, no condition");

        t.metadata.creation_timestamp = Some(Time(at(0)));
        t.spec.budget = Some(Budget { seconds: Some(30), turns: Some(10), ..Default::default() });
        assert_eq!(team_over(&t, None, at(10)), (None, Some(SignedDuration::from_secs(20))));
        let (over, again) = team_over(&t, None, at(30));
        assert_eq!((over.map(|o| o.limit), again), (Some(crate::api::budget::Limit::Seconds), None));
        team_condition(&mut conditions, &t, None, &Time(at(1)));
        assert_eq!((conditions[0].status.as_str(), conditions[0].reason.as_str()), ("False", "WithinBudget"));
    }
}
