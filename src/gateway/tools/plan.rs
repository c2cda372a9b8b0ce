//! plan_submit and plan_review: plan approval, and the gate that holds a member of an agent type
//! with `planApproval: required` to reads until its plan is approved.
//!
//! Such a member may call only the tools that change nothing ([`allowed_before_approval`]) and
//! plan_submit. Its plan goes to the lead as a `[PLAN]` notice; while it waits for the review
//! its Member reads phase `AwaitingApproval` (the Member reconciler derives it from
//! `status.plan.state: Submitted`, see `controller::plan_phase`). The lead, or a person with
//! RBAC (`update members/plan`), answers with plan_review: the verdict and the feedback come back
//! to the member as a notice, so as its next turn; an approval opens every tool to it, a
//! rejection leaves it to revise and submit again.
//!
//! `status.plan` is written by the gateway alone under its own field manager ([`GATEWAY_PLAN`]),
//! a server-side apply of the whole object conditional on the version read. The gate reads the
//! Member from the API (not a cache) for members of such agent types only, so an approval holds
//! from the moment it was written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::Tool;
use super::actor::*;
use super::member_fields::{TRIES, apply, member_named};
use crate::api::field_managers::GATEWAY_PLAN;
use crate::api::{Member, MemberPlan, PlanApproval, PlanState};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::{ApiError, ErrorCode};

/// Longest plan accepted, in bytes.
pub const MAX_PLAN_BYTES: usize = 16 * 1024;

/// Whether `tool` with `args` changes nothing (or is the way out of the gate, or the member
/// loop's own bookkeeping): what a member waiting for its plan's approval may call.
pub fn allowed_before_approval(tool: Tool, args: &Value) -> bool {
    let action = args.get("action").and_then(Value::as_str);
    match tool {
        Tool::Get | Tool::WaitMessages | Tool::PlanSubmit | Tool::ShutdownResponse | Tool::UsageReport => true,
        Tool::TeamTask => matches!(action, Some("get" | "list")),
        Tool::AgentMemory => action == Some("read"),
        _ => false,
    }
}

/// Refuses `tool` to a member whose agent type requires plan approval and whose plan is not
/// approved, unless the tool is allowed before approval.
pub(super) async fn gate(state: &GatewayState, caller: &Caller, tool: Tool, args: &Value) -> Result<(), ApiError> {
    let Caller::Pod(p) = caller else { return Ok(()) };
    let Some(m) = &p.member else { return Ok(()) };
    if allowed_before_approval(tool, args) {
        return Ok(());
    }
    let Some(team) = lookup_team(state, &p.namespace, &m.team).await? else { return Ok(()) };
    if team.agent_type(&m.agent).is_none_or(|t| t.plan_approval != PlanApproval::Required) {
        return Ok(());
    }
    let member = Api::<Member>::namespaced(state.client.clone(), &p.namespace)
        .get(&m.object)
        .await
        .map_err(|e| ApiError::from_kube(e, "reading your Member"))?;
    if plan_of(&member).is_some_and(|p| p.state == PlanState::Approved) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} waits for an approved plan: agent type {} has spec.agents[].planApproval: required, so until the lead approves your plan (plan_review) you may only read (get, wait_messages, team_task get/list, agent_memory read) and call plan_submit",
        tool.as_str(),
        m.agent
    )))
}

pub(super) async fn plan_submit(state: &GatewayState, caller: &Caller, a: PlanSubmitArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("update", "members", Some("plan"))).await?;
    let own = match caller {
        Caller::Pod(p) => p.member.as_ref().filter(|m| m.team == actor.team_name()),
        Caller::User(_) => None,
    };
    let Some(own) = own else { return Err(ApiError::forbidden("plan_submit is a member's own, called from its pod")) };
    if actor.team.agent_type(&own.agent).is_none_or(|t| t.plan_approval != PlanApproval::Required) {
        return Err(ApiError::invalid(format!(
            "plan_submit: agent type {} does not require plan approval (spec.agents[].planApproval is not `required`)",
            own.agent
        )));
    }
    if a.plan.trim().is_empty() {
        return Err(ApiError::invalid("plan_submit: `plan` is empty: say what you will do"));
    }
    if a.plan.len() > MAX_PLAN_BYTES {
        return Err(ApiError::new(ErrorCode::TooLarge, format!("plan_submit: `plan` is {} bytes; at most {MAX_PLAN_BYTES}", a.plan.len())));
    }
    let lead = actor
        .team
        .status
        .as_ref()
        .and_then(|s| s.lead_name.clone())
        .ok_or_else(|| ApiError::conflict(format!("team {} has no named lead yet; retry in a moment", actor.team_name())))?;
    let api: Api<Member> = Api::namespaced(state.client.clone(), &actor.namespace);
    for _ in 0..TRIES {
        let me = api.get(&own.object).await.map_err(|e| ApiError::from_kube(e, "reading your Member"))?;
        let old = plan_of(&me);
        if old.is_some_and(|p| p.state == PlanState::Approved) {
            return Err(ApiError::conflict(format!("{}'s plan is approved already: go ahead", own.name)));
        }
        let revision = old.map_or(1, |p| p.revision + 1);
        let plan = MemberPlan {
            state: PlanState::Submitted,
            text: a.plan.clone(),
            revision,
            submitted_at: Some(Time(Timestamp::now())),
            ..Default::default()
        };
        if !apply(state, &me, GATEWAY_PLAN, "plan", &plan).await? {
            continue;
        }
        let body = format!(
            "[PLAN] @{} submitted a plan (revision {revision}) for your review; answer with plan_review (member: {}, action: approve or reject, feedback):\n\n{}",
            own.name, own.name, a.plan
        );
        let key = format!("plan-{}-{revision}", me.uid().unwrap_or_default());
        state.bus.system_notice(&actor.key(), &lead, body, key).await?;
        return Ok(json!({ "member": own.name, "state": PlanState::Submitted, "revision": revision }));
    }
    Err(ApiError::conflict(format!("member {} kept changing; submit again", own.name)))
}

pub(super) async fn plan_review(state: &GatewayState, caller: &Caller, a: PlanReviewArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("update", "members", Some("plan"))).await?;
    actor.require_lead("plan_review")?;
    let by = match caller {
        Caller::User(u) => format!("{PERSON_SENDER_PREFIX}{}", u.username),
        Caller::Pod(_) => actor.own_name()?,
    };
    let feedback = a.feedback.clone().filter(|f| !f.trim().is_empty());
    let verdict = match a.action {
        PlanVerdict::Approve => PlanState::Approved,
        PlanVerdict::Reject if feedback.is_none() => {
            return Err(ApiError::invalid("plan_review: `feedback` is required to reject: say what to change"));
        }
        PlanVerdict::Reject => PlanState::Rejected,
    };
    for _ in 0..TRIES {
        let target = member_named(state, &actor, &a.member).await?;
        let Some(plan) = plan_of(&target).filter(|p| p.state == PlanState::Submitted) else {
            return Err(ApiError::conflict(format!("member {} has no plan waiting for review", a.member)));
        };
        let reviewed = MemberPlan {
            state: verdict,
            reviewed_by: Some(by.clone()),
            feedback: feedback.clone(),
            reviewed_at: Some(Time(Timestamp::now())),
            ..plan.clone()
        };
        if !apply(state, &target, GATEWAY_PLAN, "plan", &reviewed).await? {
            continue;
        }
        let note = feedback.as_deref().map(|f| format!(": {f}")).unwrap_or_default();
        let body = match verdict {
            PlanState::Approved => format!("[PLAN APPROVED] by {by}{note}. Go ahead with your plan: every tool is open to you now."),
            _ => format!("[PLAN REJECTED] by {by}{note}. Revise your plan and submit it again with plan_submit."),
        };
        let key = format!("plan-review-{}-{}", target.uid().unwrap_or_default(), plan.revision);
        state.bus.system_notice(&actor.key(), &a.member, body, key).await?;
        return Ok(json!({ "member": a.member, "state": verdict, "revision": plan.revision, "feedback": feedback }));
    }
    Err(ApiError::conflict(format!("member {} kept changing; review again", a.member)))
}

fn plan_of(m: &Member) -> Option<&MemberPlan> {
    m.status.as_ref().and_then(|s| s.plan.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_approval_only_reads_and_plan_submit() {
        let none = json!({});
        for tool in [Tool::Get, Tool::WaitMessages, Tool::PlanSubmit, Tool::ShutdownResponse] {
            assert!(allowed_before_approval(tool, &none), "{tool:?}");
        }
        for tool in [Tool::SendMessage, Tool::SpawnMember, Tool::TeamCreate, Tool::TeamDelete, Tool::PlanReview, Tool::ShutdownRequest] {
            assert!(!allowed_before_approval(tool, &none), "{tool:?}");
        }
        assert!(allowed_before_approval(Tool::TeamTask, &json!({ "action": "list" })));
        assert!(!allowed_before_approval(Tool::TeamTask, &json!({ "action": "claim" })));
        assert!(allowed_before_approval(Tool::AgentMemory, &json!({ "action": "read" })));
        assert!(!allowed_before_approval(Tool::AgentMemory, &json!({ "action": "append" })));
    }
}
