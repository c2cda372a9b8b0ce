//! send_message and wait_messages.

use std::time::Duration;

use serde_json::{Value, json};

use super::actor::*;
use crate::bus::{MessageKind, OutgoingMessage, Recipient};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;
use crate::gateway::idle;

pub(super) async fn send_message(state: &GatewayState, caller: &Caller, a: SendMessageArgs) -> Result<Value, ApiError> {
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("create", "teams", Some("messages"))).await?;
    act_as(&mut actor, a.member)?;
    let from = actor.own_name()?;
    let to = match a.to.trim() {
        "" => return Err(ApiError::invalid("send_message: `to` is empty: give a member name or \"*\"")),
        "*" => Recipient::Broadcast,
        name => Recipient::Member(name.to_owned()),
    };
    let delivered = state.bus.send(&actor.key(), OutgoingMessage { from, to, body: a.body, kind: MessageKind::Message, id: a.id }).await?;
    state.metrics.messages_sent.inc();
    let id = delivered.first().map(|d| d.id.clone());
    let copies: Vec<Value> = delivered.into_iter().map(|d| json!({ "to": d.to, "stream_id": d.stream_id })).collect();
    Ok(json!({ "id": id, "delivered": copies }))
}

pub(super) async fn wait_messages(state: &GatewayState, caller: &Caller, a: WaitMessagesArgs) -> Result<Value, ApiError> {
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("get", "teams", Some("messages"))).await?;
    act_as(&mut actor, a.member)?;
    let me = actor.own_name()?;
    let key = actor.key();
    if a.receive == Some(false) {
        let acked = state.bus.ack(&key, &me, &a.ack).await?;
        return Ok(json!({ "acked": acked, "messages": [] }));
    }
    let team_cap = u64::try_from(actor.team.spec.member_timeout_seconds).unwrap_or(1).max(1);
    let seconds = a.timeout_seconds.unwrap_or(team_cap).min(team_cap).min(state.settings.max_wait.as_secs());
    let _counted = crate::metrics::InProgress::count(&state.metrics.gateway_waits);
    let wait = state.bus.ack_and_wait(&key, &me, &a.ack, Duration::from_secs(seconds));
    let (acked, messages) = match caller {
        // A member's own wait shows in its phase; a person acting as a member leaves it alone.
        Caller::Pod(p) if p.member.as_ref().is_some_and(|m| m.team == actor.team_name()) => {
            let object = p.member.as_ref().map(|m| m.object.as_str()).unwrap_or_default();
            idle::while_waiting(&state.client, &actor.namespace, object, wait).await?
        }
        _ => wait.await?,
    };
    let timed_out = messages.is_empty();
    Ok(json!({ "acked": acked, "messages": messages, "timed_out": timed_out }))
}
