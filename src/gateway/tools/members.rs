//! spawn_member: the lead starts a member of its team.

use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::actor::*;
use super::views::*;
use crate::api::{Member, MemberRole, MemberSpec, labels};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

pub(super) async fn spawn_member(state: &GatewayState, caller: &Caller, a: SpawnMemberArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("create", "members", None)).await?;
    actor.require_lead("spawn_member")?;
    actor.require_active()?;
    let team = actor.team_name();
    if actor.team.agent_type(&a.agent).is_none() {
        let known: Vec<&str> = actor.team.spec.agents.iter().map(|t| t.name.as_str()).collect();
        return Err(ApiError::invalid(format!("team {team} has no agent type {:?}; it has {}", a.agent, known.join(", "))));
    }
    let mut member = Member::new(
        "",
        MemberSpec {
            team: team.clone(),
            agent: a.agent.clone(),
            role: MemberRole::Specialist,
            prompt: a.prompt,
            model: a.model,
            pod: None,
        },
    );
    member.metadata = ObjectMeta {
        generate_name: Some(format!("{team}-{}-", a.agent)),
        namespace: Some(actor.namespace.clone()),
        labels: Some([(labels::TEAM.to_owned(), team.clone())].into()),
        owner_references: actor.team.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    let api: Api<Member> = Api::namespaced(state.client.clone(), &actor.namespace);
    let created = api.create(&PostParams::default(), &member).await.map_err(|e| ApiError::from_kube(e, "creating the member"))?;
    // The operator names the member within moments; wait briefly so the lead can message it.
    let name = created.name_any();
    let named = tokio::time::timeout(
        state.settings.name_wait,
        kube::runtime::wait::await_condition(api, &name, |m: Option<&Member>| m.is_some_and(|m| m.agent_name().is_some())),
    )
    .await;
    let member = match named {
        Ok(Ok(Some(m))) => m,
        _ => created,
    };
    Ok(member_view(&member))
}
