//! What the gateway's own Member status fields share (`status.shutdown`, `status.plan`): finding
//! a member of the team by its agent name, and applying one field under the tool's own field
//! manager, conditional on the version read, so that of two racing writes one wins and the
//! other reads again.

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::actor::Actor;
use crate::api::Member;
use crate::gateway::GatewayState;
use crate::gateway::error::{ApiError, ErrorCode};

/// How often a write that lost to another write of the Member is tried again.
pub(super) const TRIES: usize = 3;

/// The Member of agent name `name` in the actor's team.
pub(super) async fn member_named(state: &GatewayState, actor: &Actor, name: &str) -> Result<Member, ApiError> {
    let team = actor.team_name();
    let list = Api::<Member>::namespaced(state.client.clone(), &actor.namespace)
        .list(&ListParams::default().fields(&format!("spec.team={team}")))
        .await
        .map_err(|e| ApiError::from_kube(e, "listing the team's members"))?;
    list.items
        .into_iter()
        .find(|m| m.spec.team == team && m.agent_name() == Some(name))
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownRecipient, format!("team {team} has no member named {name}")))
}

/// Applies `value` as the Member's `status.<field>` under `manager`, conditional on the version
/// of `m`; false when the Member changed since (read it again).
pub(super) async fn apply<T: Serialize>(state: &GatewayState, m: &Member, manager: &str, field: &str, value: &T) -> Result<bool, ApiError> {
    let api: Api<Member> = Api::namespaced(state.client.clone(), &m.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member",
        "metadata": { "name": m.name_any(), "resourceVersion": m.resource_version() },
        "status": { field: value },
    });
    match api.patch_status(&m.name_any(), &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(ApiError::from_kube(e, &format!("recording status.{field} on the Member"))),
    }
}
