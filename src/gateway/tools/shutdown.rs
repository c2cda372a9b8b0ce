//! shutdown_request and shutdown_response: the shutdown handshake.
//!
//! The lead (or a person with RBAC) asks a member to stop; the member's answer comes back through
//! the tool: approve (it exits once its turn ends: `teamctl run` ends on the `[SHUTDOWN APPROVED]`
//! notice this writes to the member itself) or reject with a reason. A disband asks every running
//! member the same (the operator's `[SHUTDOWN REQUEST]` notice) and waits the Team's
//! `spec.shutdownGraceSeconds` for them to end; such a request is the disband itself and is not
//! recorded on the Member, so a member of a disbanded team may always answer.
//!
//! The handshake is recorded in the Member's `status.shutdown`, written by the gateway alone
//! under its own field manager ([`GATEWAY_SHUTDOWN`]): a server-side apply of the whole object,
//! conditional on the version read, so two answers (or a request and an answer) cannot both win.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::actor::*;
use super::member_fields::{TRIES, apply, member_named};
use crate::api::field_managers::GATEWAY_SHUTDOWN;
use crate::api::{Member, MemberShutdown, ShutdownState, Team};
use crate::bus::OPERATOR_SENDER;
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::{ApiError, ErrorCode};

/// The notice `teamctl run` ends on: the member approved a shutdown.
pub const APPROVED_MARK: &str = "[SHUTDOWN APPROVED]";
/// The notice that asks a member to stop.
pub const REQUEST_MARK: &str = "[SHUTDOWN REQUEST]";

/// Text of a shutdown request to a member, from `by`, with `why`.
pub fn request_notice(by: &str, why: &str) -> String {
    format!(
        "{REQUEST_MARK} from {by}: {why}. Save what should outlive you (agent_memory, your tasks' results), then answer with the tool shutdown_response: action approve (you exit when this turn ends) or reject with a reason."
    )
}

pub(super) async fn shutdown_request(state: &GatewayState, caller: &Caller, a: ShutdownRequestArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("update", "members", Some("shutdown"))).await?;
    actor.require_lead("shutdown_request")?;
    // A disbanded team's members were asked by the disband already.
    actor.require_active()?;
    let by = match caller {
        Caller::User(u) => format!("{PERSON_SENDER_PREFIX}{}", u.username),
        Caller::Pod(_) => actor.own_name()?,
    };
    if a.member.trim().is_empty() {
        return Err(ApiError::invalid("shutdown_request: `member` is empty: give the member name of who should stop"));
    }
    if a.member == by {
        return Err(ApiError::invalid(format!("shutdown_request: `member` ({}) is you: end your own loop instead", a.member)));
    }
    let why = a.reason.clone().filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "the lead asks you to stop".to_owned());
    for _ in 0..TRIES {
        let target = member_named(state, &actor, &a.member).await?;
        if target.phase().is_terminal() {
            return Err(ApiError::new(ErrorCode::RecipientFinished, format!("member {} has finished ({:?})", a.member, target.phase())));
        }
        if shutdown_of(&target).is_some_and(|s| s.state == ShutdownState::Approved) {
            return Err(ApiError::conflict(format!("member {} approved a shutdown already; it exits when its turn ends", a.member)));
        }
        let now = Time(Timestamp::now());
        let shutdown = MemberShutdown {
            state: ShutdownState::Requested,
            requested_by: Some(by.clone()),
            reason: Some(why.clone()),
            requested_at: Some(now.clone()),
            answer: None,
            answered_at: None,
        };
        if !apply(state, &target, GATEWAY_SHUTDOWN, "shutdown", &shutdown).await? {
            continue;
        }
        let key = format!("shutdown-request-{}-{}", target.uid().unwrap_or_default(), now.0.as_millisecond());
        state.bus.system_notice(&actor.key(), &a.member, request_notice(&by, &why), key).await?;
        return Ok(json!({ "member": a.member, "state": ShutdownState::Requested, "requested_by": by }));
    }
    Err(ApiError::conflict(format!("member {} kept changing; retry the request", a.member)))
}

pub(super) async fn shutdown_response(state: &GatewayState, caller: &Caller, a: ShutdownResponseArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("update", "members", Some("shutdown"))).await?;
    let own = match caller {
        Caller::Pod(p) => p.member.as_ref().filter(|m| m.team == actor.team_name()),
        Caller::User(_) => None,
    };
    let Some(own) = own else {
        return Err(ApiError::forbidden("shutdown_response is a member's own answer, given from its pod; nobody answers for it"));
    };
    let reason = a.reason.clone().filter(|r| !r.trim().is_empty());
    let state_after = match a.action {
        ShutdownAnswer::Approve => ShutdownState::Approved,
        ShutdownAnswer::Reject if reason.is_none() => {
            return Err(ApiError::invalid("shutdown_response: `reason` is required to reject: say why you will not stop"));
        }
        ShutdownAnswer::Reject => ShutdownState::Rejected,
    };
    let api: Api<Member> = Api::namespaced(state.client.clone(), &actor.namespace);
    for _ in 0..TRIES {
        let me = api.get(&own.object).await.map_err(|e| ApiError::from_kube(e, "reading your Member"))?;
        let asked = shutdown_of(&me).filter(|s| s.state == ShutdownState::Requested);
        if asked.is_none() && !disbanding(state, &actor).await? {
            return Err(ApiError::conflict(format!(
                "no shutdown request is pending for {}: shutdown_response answers a shutdown_request (the lead's, or a disband's)",
                own.name
            )));
        }
        let now = Time(Timestamp::now());
        let requested_by = asked.and_then(|s| s.requested_by.clone());
        let shutdown = MemberShutdown {
            state: state_after,
            requested_by: requested_by.clone().or_else(|| Some(OPERATOR_SENDER.to_owned())),
            reason: asked.and_then(|s| s.reason.clone()),
            requested_at: asked.and_then(|s| s.requested_at.clone()),
            answer: reason.clone(),
            answered_at: Some(now.clone()),
        };
        if !apply(state, &me, GATEWAY_SHUTDOWN, "shutdown", &shutdown).await? {
            continue;
        }
        let uid = me.uid().unwrap_or_default();
        let key = actor.key();
        if state_after == ShutdownState::Approved {
            let body = format!("{APPROVED_MARK} {} approved the shutdown: teamctl run ends the loop when this turn ends.", own.name);
            state.bus.system_notice(&key, &own.name, body, format!("shutdown-approved-{uid}")).await?;
        }
        // The lead that asked hears the answer (a person reads it on the Member).
        if let Some(lead) =
            requested_by.filter(|by| !by.starts_with(PERSON_SENDER_PREFIX) && by != OPERATOR_SENDER && !actor.team.is_disbanded())
        {
            let body = match &reason {
                Some(r) if state_after == ShutdownState::Rejected => {
                    format!("[SHUTDOWN ANSWER] @{} rejected your shutdown request: {r}", own.name)
                }
                _ => format!("[SHUTDOWN ANSWER] @{} approved your shutdown request; it exits when its turn ends.", own.name),
            };
            let answer_key = format!("shutdown-answer-{uid}-{}", now.0.as_millisecond());
            if let Err(e) = state.bus.system_notice(&key, &lead, body, answer_key).await {
                tracing::debug!(lead, error = %e, "the shutdown answer did not reach the lead");
            }
        }
        return Ok(json!({ "member": own.name, "state": state_after, "reason": reason }));
    }
    Err(ApiError::conflict(format!("member {} kept changing; answer again", own.name)))
}

/// Whether the actor's team is disbanding: the disband is the request every running member may
/// answer. The watch of Teams may lag the disband by a moment, so a team that looks active is
/// read again.
async fn disbanding(state: &GatewayState, actor: &Actor) -> Result<bool, ApiError> {
    let gone = |t: &Team| t.is_disbanded() || t.metadata.deletion_timestamp.is_some();
    if gone(&actor.team) {
        return Ok(true);
    }
    let fresh = Api::<Team>::namespaced(state.client.clone(), &actor.namespace)
        .get_opt(&actor.team_name())
        .await
        .map_err(|e| ApiError::from_kube(e, "reading the team"))?;
    Ok(fresh.is_none_or(|t| gone(&t)))
}

fn shutdown_of(m: &Member) -> Option<&MemberShutdown> {
    m.status.as_ref().and_then(|s| s.shutdown.as_ref())
}
