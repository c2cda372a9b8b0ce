//! usage_report: a member's runtime adapter (`teamctl run`) reports what the member used so
//! far, as running totals (turns begun, model tokens), when each turn begins and ends. Only the
//! member itself reports, from its pod: its usage is what its budget and its team's are held
//! against (see `controller::budget_phase`).
//!
//! The totals are the member's over all its attempts (a retry's new pod reports on top of what
//! the earlier ones used: `teamctl run` reads that as it starts, with a report of nothing, whose
//! answer's `usage` is what is recorded; see `teamctl::run::base` for why the base is the
//! loop's and not the gateway's to add).
//!
//! The answer says whether a budget is over with this report, as the operator will judge it once
//! the report is recorded: `teamctl run` starts no turn past a budget, and waits for the operator
//! to stop the member. The report is recorded by the coalescing writer (`gateway::usage`), at
//! once when it goes over a budget.

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::actor::*;
use crate::api::{Member, Team, Usage};
use crate::controller::budget_phase;
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

pub(super) async fn usage_report(state: &GatewayState, caller: &Caller, a: UsageReportArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("update", "members", Some("usage"))).await?;
    let own = match caller {
        Caller::Pod(p) => p.member.as_ref().filter(|m| m.team == actor.team_name()),
        Caller::User(_) => None,
    };
    let Some(own) = own else {
        return Err(ApiError::forbidden(
            "usage_report is a member's own report of what its runtime used, made from its pod (teamctl run makes it); nobody reports for it",
        ));
    };
    let reported = Usage { turns: count(a.turns), tokens: count(a.tokens) };
    // A report of nothing is how `teamctl run` reads, as it starts, what the member used before
    // it (earlier attempts: see `teamctl::run::base`): read from the API server, not the cache,
    // so a write made an instant ago (by another replica, for the attempt before) is in it.
    let cached = (reported != Usage::default()).then(|| state.members.get(&ObjectRef::new(&own.object).within(&actor.namespace))).flatten();
    let me = match cached {
        Some(m) => m.as_ref().clone(),
        None => Api::<Member>::namespaced(state.client.clone(), &actor.namespace)
            .get(&own.object)
            .await
            .map_err(|e| ApiError::from_kube(e, "reading your Member"))?,
    };
    let before = state.usage.known(&me);
    let after = before.max(reported);
    state.metrics.usage_turns.inc_by(grown(before.turns, after.turns));
    state.metrics.usage_tokens.inc_by(grown(before.tokens, after.tokens));

    let over = judge(&me, &actor.team, after, Timestamp::now());
    if over.is_some() {
        state.usage.write_now(&actor.namespace, &own.object, after).await.map_err(|e| ApiError::from_kube(e, "recording your usage"))?;
    } else {
        state.usage.queue(&actor.namespace, &own.object, after);
    }
    let budget = actor.team.agent_type(&own.agent).and_then(|t| t.budget.clone());
    Ok(json!({
        "member": own.name,
        "usage": after,
        "budget": budget,
        "team_budget": actor.team.spec.budget,
        "over": over,
    }))
}

/// Why a budget is over once `me` used `usage`, as the operator judges it: its own budget, or
/// (but for the lead) its team's, spent already or by this report's part of the team's sum.
fn judge(me: &Member, team: &Team, usage: Usage, now: Timestamp) -> Option<String> {
    let mut judged = me.clone();
    let status = judged.status.get_or_insert_with(Default::default);
    let recorded = status.usage.unwrap_or_default();
    status.usage = Some(usage);
    if let Some(over) = budget_phase::member_over(&judged, team, now).0 {
        return Some(format!("the budget of agent type {} is spent: {over}", me.spec.agent));
    }
    // The lead is not stopped by its team's budget (see `budget_phase`).
    if me.is_lead() {
        return None;
    }
    if let Some(why) = budget_phase::team_spent(team) {
        return Some(format!("team {}'s budget is spent: {why}", me.spec.team));
    }
    let unrecorded = Usage { turns: usage.turns - recorded.turns, tokens: usage.tokens - recorded.tokens };
    let team_usage = team.status.as_ref().and_then(|s| s.usage).unwrap_or_default().plus(unrecorded);
    budget_phase::team_over(team, Some(team_usage), now).0.map(|over| format!("team {}'s budget is spent: {over}", me.spec.team))
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn grown(before: i64, after: i64) -> u64 {
    u64::try_from(after.saturating_sub(before)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Budget, MemberStatus, TeamStatus};
    use crate::controller::fixtures::{member, team};

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    fn with(turns: Option<i64>, team_tokens: Option<i64>) -> Team {
        let mut t = team("t", 3);
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        t.spec.agents.iter_mut().for_each(|a| a.budget = turns.map(|n| Budget { turns: Some(n), ..Default::default() }));
        t.spec.budget = team_tokens.map(|n| Budget { tokens: Some(n), ..Default::default() });
        t
    }

    #[test]
    fn a_report_is_judged_against_the_members_budget_and_the_teams_sum() {
        let mut me = member("t", "general", "u");
        me.status = Some(MemberStatus { usage: Some(Usage { turns: 1, tokens: 40 }), ..Default::default() });
        let t = with(Some(2), None);
        assert_eq!(judge(&me, &t, Usage { turns: 2, tokens: 40 }, now()), None);
        let over = judge(&me, &t, Usage { turns: 3, tokens: 40 }, now()).expect("over");
        assert!(over.contains("agent type general") && over.contains("turn 3 began"), "{over}");

        // The team's status counts 90 tokens, this member's recorded 40 among them: 60 more go over 100.
        let mut t = with(None, Some(100));
        t.status = Some(TeamStatus { usage: Some(Usage { turns: 3, tokens: 90 }), ..Default::default() });
        assert_eq!(judge(&me, &t, Usage { turns: 1, tokens: 50 }, now()), None);
        let over = judge(&me, &t, Usage { turns: 1, tokens: 100 }, now()).expect("over");
        assert!(over.contains("team t's budget") && over.contains("150 tokens"), "{over}");
        me.spec.role = crate::api::MemberRole::Lead;
        assert_eq!(judge(&me, &t, Usage { turns: 1, tokens: 100 }, now()), None, "the lead wraps up");
    }

    #[test]
    fn counts_are_clamped_and_only_growth_is_counted() {
        assert_eq!(count(u64::MAX), i64::MAX);
        assert_eq!((grown(5, 7), grown(7, 5)), (2, 0));
    }
}
