//! team_create and team_delete.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::actor::*;
use super::views::*;
use crate::api::{AgentType, LeadSpec, Team, TeamMemory, TeamSpec};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

pub(super) async fn team_create(state: &GatewayState, caller: &Caller, a: TeamCreateArgs) -> Result<Value, ApiError> {
    let namespace = namespace_of(caller, a.namespace.as_deref())?;
    if a.name.is_empty() {
        return Err(ApiError::invalid("team_create: `name` is empty"));
    }
    let (lead_pod, own_team, own_agent) = match caller {
        Caller::User(u) => {
            state.auth.check(u, "create", "teams", None, &namespace, None).await?;
            (None, None, None)
        }
        Caller::Pod(p) => {
            let pod = Api::<Pod>::namespaced(state.client.clone(), &namespace)
                .get(&p.pod)
                .await
                .map_err(|e| ApiError::from_kube(e, "reading the caller's pod"))?;
            let own = match &p.team {
                Some(t) => Api::<Team>::namespaced(state.client.clone(), &namespace).get_opt(t).await.ok().flatten(),
                None => None,
            };
            (Some(pod), own, p.agent.clone())
        }
    };
    let agents: Vec<AgentType> = match a.agents {
        Some(list) if !list.is_empty() => list.into_iter().map(agent_type).collect::<Result<_, _>>()?,
        _ => match &own_team {
            Some(t) => t.spec.agents.clone(),
            None => {
                return Err(ApiError::invalid("team_create: `agents` is required: give at least one agent type with `name` and `image`"));
            }
        },
    };
    let names: Vec<&str> = agents.iter().map(|t| t.name.as_str()).collect();
    let lead_agent = a
        .lead_agent
        .or_else(|| own_agent.filter(|o| names.contains(&o.as_str())))
        .unwrap_or_else(|| names.first().map(|n| (*n).to_owned()).unwrap_or_default());
    if !names.contains(&lead_agent.as_str()) {
        return Err(ApiError::invalid(format!(
            "team_create: `lead_agent` {lead_agent:?} is not one of the agent types {}",
            names.join(", ")
        )));
    }
    let mut team = Team::new(
        &a.name,
        TeamSpec {
            max_agents: a.max_agents.unwrap_or(4),
            member_timeout_seconds: a.member_timeout_seconds.unwrap_or(crate::api::team::DEFAULT_MEMBER_TIMEOUT_SECONDS),
            lead: LeadSpec { agent: lead_agent, prompt: a.lead_prompt, pod_name: lead_pod.as_ref().map(|p| p.name_any()) },
            agents,
            memory: TeamMemory { project: a.memory_project },
        },
    );
    team.metadata.namespace = Some(namespace.clone());
    if let Some(pod) = &lead_pod {
        // The lead pod owns the team: deleting the pod deletes the team (DESIGN: Team).
        team.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        }]);
    }
    let created =
        Api::<Team>::namespaced(state.client.clone(), &namespace).create(&PostParams::default(), &team).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => ApiError::conflict(format!("team {} already exists in namespace {namespace}", a.name)),
            e => ApiError::from_kube(e, "creating the team"),
        })?;
    Ok(team_view(&created))
}

pub(super) fn agent_type(a: AgentTypeArgs) -> Result<AgentType, ApiError> {
    let template = match (a.template, a.image) {
        (Some(_), Some(_)) => return Err(ApiError::invalid(format!("agent type {}: give `image` or `template`, not both", a.name))),
        (Some(t), None) => serde_json::from_value::<PodTemplateSpec>(t)
            .map_err(|e| ApiError::invalid(format!("agent type {}: `template` is not a PodTemplateSpec: {e}", a.name)))?,
        (None, Some(image)) => PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some(image),
                    command: (!a.command.is_empty()).then_some(a.command),
                    args: (!a.args.is_empty()).then_some(a.args),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        (None, None) => return Err(ApiError::invalid(format!("agent type {}: `image` or `template` is required", a.name))),
    };
    Ok(AgentType { name: a.name, model: a.model, memory: a.memory.unwrap_or_default(), template })
}

pub(super) async fn team_delete(state: &GatewayState, caller: &Caller, a: TeamDeleteArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("delete", "teams", None)).await?;
    actor.require_lead("team_delete")?;
    let name = actor.team_name();
    Api::<Team>::namespaced(state.client.clone(), &actor.namespace)
        .delete(&name, &DeleteParams::background())
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("deleting team {name}")))?;
    Ok(json!({ "deleted": name, "namespace": actor.namespace }))
}
