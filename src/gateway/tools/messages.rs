//! send_message and wait_messages.

use std::time::Duration;

use serde_json::{Value, json};

use super::actor::*;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::bus::{BusError, Message, MessageKind, OutgoingMessage, Recipient};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::{Caller, MemberIdentity, UserCaller};
use crate::gateway::error::ApiError;
use crate::gateway::{idle, idle_notice};
use crate::telemetry::propagation;

pub(super) async fn send_message(state: &GatewayState, caller: &Caller, a: SendMessageArgs) -> Result<Value, ApiError> {
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("create", "teams", Some("messages"))).await?;
    let from = match caller {
        // A person's message says who wrote it; nobody sends in a member's name.
        Caller::User(UserCaller { username, .. }) => {
            if let Some(m) = a.member {
                return Err(ApiError::invalid(format!(
                    "send_message: `member` ({m}) is not for sending: a person's messages come from {PERSON_SENDER_PREFIX}{username}"
                )));
            }
            format!("{PERSON_SENDER_PREFIX}{username}")
        }
        Caller::Pod(_) => {
            act_as(&mut actor, a.member)?;
            actor.own_name()?
        }
    };
    let to = match a.to.trim() {
        "" => return Err(ApiError::invalid("send_message: `to` is empty: give a member name, \"lead\" or \"*\"")),
        "*" => Recipient::Broadcast,
        LEAD_RECIPIENT => Recipient::Member(lead_of(&actor)?),
        name => Recipient::Member(name.to_owned()),
    };
    let sent_by = Some(caller.username().to_owned());
    let message = OutgoingMessage { from, to, body: a.body, kind: MessageKind::Message, id: a.id, sent_by };
    let delivered = state.bus.send(&actor.key(), message).await.map_err(|e| roster_lag(caller, &actor, e))?;
    state.metrics.messages_sent.inc();
    let id = delivered.first().map(|d| d.id.clone());
    let copies: Vec<Value> = delivered.into_iter().map(|d| json!({ "to": d.to, "stream_id": d.stream_id })).collect();
    Ok(json!({ "id": id, "delivered": copies }))
}

pub(super) async fn wait_messages(state: &GatewayState, caller: &Caller, a: WaitMessagesArgs) -> Result<Value, ApiError> {
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("get", "teams", Some("messages"))).await?;
    act_as(&mut actor, a.member.clone())?;
    let me = actor.own_name()?;
    let key = actor.key();
    if let Caller::User(_) = caller {
        return peek(state, &actor, &me, a).await;
    }
    if a.receive == Some(false) {
        let acked = state.bus.ack(&key, &me, &a.ack).await.map_err(|e| roster_lag(caller, &actor, e))?;
        return Ok(json!({ "acked": acked, "messages": [] }));
    }
    let cap = wait_cap(state, &actor);
    let seconds = a.timeout_seconds.unwrap_or(cap).min(cap);
    let _counted = crate::metrics::InProgress::count(&state.metrics.gateway_waits);
    let wait =
        async { state.bus.ack_and_wait(&key, &me, &a.ack, Duration::from_secs(seconds)).await.map_err(|e| roster_lag(caller, &actor, e)) };
    let (acked, messages) = match own_member(caller, &actor) {
        // A member's own wait shows in its phase (and tells its lead, when the team asks); a
        // person acting as a member leaves it alone.
        Some(m) => {
            let on_idle = idle_notice::tell_lead(state, &actor.team, &key, m);
            idle::while_waiting(&state.client, &actor.namespace, &m.object, on_idle, wait).await?
        }
        None => wait.await?,
    };
    received(&messages);
    let timed_out = messages.is_empty();
    Ok(json!({ "acked": acked, "messages": messages, "timed_out": timed_out, "max_timeout_seconds": cap }))
}

/// The bus's "not a member" for a pod whose Member the gateway holds as admitted to this team
/// (named, not ended: see `auth`) means Redis's roster has not caught up with its naming yet
/// (the Team reconciler puts a member on it within moments, `team::PASS_INTERVAL`): a pod
/// whose agent starts fast can call first. Unavailable with a Retry-After, so a client retries,
/// rather than forbidden, which an agent takes as final. Anyone else's refusal is as the bus says.
fn roster_lag(caller: &Caller, actor: &Actor, err: BusError) -> ApiError {
    match (&err, own_member(caller, actor)) {
        (BusError::MemberNotInTeam { member, team } | BusError::SenderNotInTeam { member, team }, Some(m)) if *member == m.name => {
            ApiError {
                retry_after_seconds: Some(1),
                ..ApiError::unavailable(format!(
                    "{member} is not on team {team}'s roster yet (the operator adds it just after naming it); retry"
                ))
            }
        }
        _ => err.into(),
    }
}

/// The caller's own Member, when it is a member's pod acting in its own team.
fn own_member<'a>(caller: &'a Caller, actor: &Actor) -> Option<&'a MemberIdentity> {
    match caller {
        Caller::Pod(p) => p.member.as_ref().filter(|m| m.team == actor.team_name()),
        Caller::User(_) => None,
    }
}

/// One span per received message that carries its sender's trace context, as a child of the send
/// (so the send and its receive are one trace) linked to this wait's own span.
fn received(messages: &[Message]) {
    let wait = tracing::Span::current().context().span().span_context().clone();
    for m in messages {
        let Some(parent) = m.traceparent.as_deref().and_then(propagation::context_of) else { continue };
        let span =
            tracing::info_span!("receive", otel.name = "wait_messages receive", otel.kind = "consumer", message.id = %m.id, from = %m.from);
        // Fails only when traces are not exported, where nothing is joined anyway.
        let _ = span.set_parent(parent);
        if wait.is_valid() {
            span.add_link(wait.clone());
        }
    }
}

/// The longest one wait may block in the actor's team: its memberTimeoutSeconds, at most the
/// gateway's own bound. Answered with every wait, so a client that must wait in shorter calls
/// (through the API server, which ends a request after 60 s) knows how long to go on.
fn wait_cap(state: &GatewayState, actor: &Actor) -> u64 {
    let team_cap = u64::try_from(actor.team.spec.member_timeout_seconds).unwrap_or(1).max(1);
    team_cap.min(state.settings.max_wait.as_secs())
}

/// The member name of the actor's team's lead.
fn lead_of(actor: &Actor) -> Result<String, ApiError> {
    actor
        .team
        .status
        .as_ref()
        .and_then(|s| s.lead_name.clone())
        .ok_or_else(|| ApiError::conflict(format!("team {} has no named lead yet; retry in a moment", actor.team_name())))
}

/// A person's wait_messages: a look at the member's inbox that delivers and acks nothing, so the
/// member still gets every message (see `Bus::peek`).
async fn peek(state: &GatewayState, actor: &Actor, member: &str, a: WaitMessagesArgs) -> Result<Value, ApiError> {
    if !a.ack.is_empty() || a.receive == Some(false) {
        return Err(ApiError::invalid(format!(
            "wait_messages: a person only looks at {member}'s inbox; acks are {member}'s own (leave out `ack` and `receive`)"
        )));
    }
    let cap = wait_cap(state, actor);
    let seconds = a.timeout_seconds.unwrap_or(cap).min(cap);
    let messages = state.bus.peek(&actor.key(), member, Duration::from_secs(seconds)).await?;
    let timed_out = messages.is_empty();
    Ok(json!({ "acked": 0, "messages": messages, "timed_out": timed_out, "peek": true, "max_timeout_seconds": cap }))
}
