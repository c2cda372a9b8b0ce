//! agent_memory: read, write and append an agent type's memory.

use serde_json::{Value, json};

use super::actor::*;
use crate::bus::MemoryKey;
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

pub(super) async fn agent_memory(state: &GatewayState, caller: &Caller, a: AgentMemoryArgs) -> Result<Value, ApiError> {
    let verb = if a.action == MemoryAction::Read { "get" } else { "update" };
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need(verb, "teams", Some("memory"))).await?;
    let agent = match (&actor.role, a.agent) {
        (Role::Person, Some(agent)) => agent,
        (_, Some(agent)) if actor.agent.as_deref() != Some(agent.as_str()) => {
            return Err(ApiError::forbidden(format!(
                "agent_memory reaches only your own agent type ({}), not {agent}",
                actor.agent.as_deref().unwrap_or("none")
            )));
        }
        _ => actor.agent.clone().ok_or_else(|| ApiError::forbidden("the caller has no agent type, so no memory"))?,
    };
    if actor.team.agent_type(&agent).is_none() {
        return Err(ApiError::invalid(format!("team {} has no agent type {agent}", actor.team_name())));
    }
    let project = actor.team.memory_project();
    let key = MemoryKey::new(actor.namespace.clone(), project.clone(), agent.clone());
    let memory = state.bus.memory();
    let text = || a.text.clone().ok_or_else(|| ApiError::invalid("agent_memory: `text` is required for write and append"));
    match a.action {
        MemoryAction::Read => {
            if a.text.is_some() {
                return Err(ApiError::invalid("agent_memory: `text` is only for write and append"));
            }
            let text = memory.read(&key).await?;
            let bytes = text.as_ref().map_or(0, String::len);
            Ok(json!({ "agent": agent, "project": project, "text": text, "bytes": bytes }))
        }
        MemoryAction::Write => {
            let out = memory.write(&key, &text()?).await?;
            Ok(json!({ "agent": agent, "project": project, "stored_bytes": out.stored_bytes, "truncated": out.truncated }))
        }
        MemoryAction::Append => {
            let out = memory.append(&key, &text()?).await?;
            Ok(json!({ "agent": agent, "project": project, "stored_bytes": out.stored_bytes, "truncated": out.truncated }))
        }
    }
}
