//! `get messages` of a disbanded team: its transcript, kept in Redis for the Team's
//! `spec.retention` under the uid the Team had (see `Bus::transcript`). Read by people (and pods
//! of no team, as their ServiceAccount) under the RBAC of wait_messages, `get teams/messages` on
//! the team's name; members had only their own inbox and their team is gone.

use serde_json::{Value, json};

use super::actor::{lookup_team, namespace_of};
use crate::bus::TeamKey;
use crate::gateway::GatewayState;
use crate::gateway::args::GetArgs;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

/// The transcript's newest `limit` messages when `a` asks about a disbanded team (or names a
/// `uid`); None for a running team, whose inboxes answer, and for a team being disbanded whose
/// inboxes are still there.
pub(super) async fn of_disbanded(state: &GatewayState, caller: &Caller, a: &GetArgs, limit: usize) -> Result<Option<Value>, ApiError> {
    let user = match caller {
        Caller::User(u) => u,
        Caller::Pod(p) if p.member.is_none() => &p.account,
        Caller::Pod(_) if a.uid.is_some() => {
            return Err(ApiError::forbidden(format!(
                "{}: `uid` reads a disbanded team's transcript, which is for people",
                caller.describe()
            )));
        }
        Caller::Pod(_) => return Ok(None),
    };
    // Without a team the inbox path says what is missing.
    let Some(team) = a.team.as_deref().filter(|t| !t.is_empty()) else { return Ok(None) };
    let ns = namespace_of(caller, a.namespace.as_deref())?;
    state.auth.check(user, "get", "teams", Some("messages"), &ns, Some(team)).await?;
    let live = lookup_team(state, &ns, team).await?;
    let uid = match (&live, a.uid.as_deref()) {
        (_, Some(uid)) => Some(uid.to_owned()),
        (Some(t), None) if t.is_disbanded() => t.metadata.uid.clone(),
        (Some(_), None) => return Ok(None),
        (None, None) => None,
    };
    let Some(t) = state.bus.transcript(&TeamKey::new(ns.clone(), team), uid.as_deref(), limit).await? else {
        if live.is_some() && a.uid.is_none() {
            return Ok(None);
        }
        let which = a.uid.as_deref().map(|u| format!(" with uid {u}")).unwrap_or_default();
        return Err(ApiError::not_found(format!(
            "team {team} not found in namespace {ns}, and no transcript of a disbanded team {team}{which} is kept (a transcript stays for the team's spec.retention, default 24h)"
        )));
    };
    let messages: Vec<_> = match a.name.as_deref() {
        Some(name) => t.messages.iter().filter(|m| m.from == name || m.to == name || m.to == "*").collect(),
        None => t.messages.iter().collect(),
    };
    Ok(Some(json!({
        "messages": messages,
        "transcript": { "team": team, "namespace": ns, "uid": t.uid, "disbanded_at": t.disbanded_at, "expires_at": t.expires_at },
    })))
}
