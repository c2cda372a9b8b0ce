//! team_create and team_delete.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::actor::*;
use super::views::*;
use crate::api::team::{MAX_PRIORITY, MIN_PRIORITY};
use crate::api::{AgentType, Budget, LeadSpec, Team, TeamMemory, TeamSpec};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

/// Creates a team. A kube user, or a pod of no team acting as its ServiceAccount, needs RBAC
/// `create teams`; a pod becomes the new team's external lead (`spec.lead.podName`, and the Team
/// owned by that Pod's uid). A member may create only a sub-team, and only when its own Team has
/// `spec.allowSubTeams`: the sub-team takes the parent's agent types and memory project and is
/// owned by the parent, whose `maxAgents` its members count against.
pub(super) async fn team_create(state: &GatewayState, caller: &Caller, a: TeamCreateArgs) -> Result<Value, ApiError> {
    let namespace = namespace_of(caller, a.namespace.as_deref())?;
    if a.name.is_empty() {
        return Err(ApiError::invalid("team_create: `name` is empty"));
    }
    let (lead_pod, parent, own_agent) = match caller {
        Caller::User(u) => {
            state.auth.check(u, "create", "teams", None, &namespace, None).await?;
            (None, None, None)
        }
        Caller::Pod(p) => match &p.member {
            None => {
                state.auth.check(&p.account, "create", "teams", None, &namespace, None).await?;
                (Some(p), None, None)
            }
            Some(m) => {
                // Read fresh, not from the watch: a security decision on a field just changed.
                let parent = Api::<Team>::namespaced(state.client.clone(), &namespace)
                    .get_opt(&m.team)
                    .await
                    .map_err(|e| ApiError::from_kube(e, "reading the caller's team"))?
                    .ok_or_else(|| ApiError::not_found(format!("team {} not found in namespace {namespace}", m.team)))?;
                if !parent.spec.allow_sub_teams {
                    return Err(ApiError::forbidden(format!(
                        "team_create: team {} does not allow sub-teams (spec.allowSubTeams is false), so its members may not create teams",
                        m.team
                    )));
                }
                (Some(p), Some(parent), Some(m.agent.clone()))
            }
        },
    };
    let (agents, project) = match &parent {
        Some(parent) => sub_team_types(parent, a.agents, a.memory_project)?,
        None => match a.agents {
            Some(list) if !list.is_empty() => (list.into_iter().map(agent_type).collect::<Result<_, _>>()?, a.memory_project),
            _ => {
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
    if let Some(r) = a.retention.as_deref() {
        crate::api::team::parse_retention(r).map_err(|e| ApiError::invalid(format!("team_create: `retention`: {e}")))?;
    }
    let priority = priority(a.priority, parent.as_ref())?;
    let budget = a.budget.map(|b| Budget { turns: b.turns, seconds: b.seconds, tokens: b.tokens });
    if let Some(b) = &budget {
        b.check("budget").map_err(|(field, rule)| ApiError::invalid(format!("team_create: field `{field}`: {rule}")))?;
    }
    let mut team = Team::new(
        &a.name,
        TeamSpec {
            max_agents: a.max_agents.unwrap_or(4),
            priority,
            member_timeout_seconds: a.member_timeout_seconds.unwrap_or(crate::api::team::DEFAULT_MEMBER_TIMEOUT_SECONDS),
            lead: LeadSpec { agent: lead_agent, prompt: a.lead_prompt, pod_name: lead_pod.map(|p| p.pod.clone()) },
            agents,
            memory: TeamMemory { project },
            allow_sub_teams: false,
            tasks: Default::default(),
            retention: a.retention,
            lead_notices: Default::default(),
            shutdown_grace_seconds: crate::api::team::DEFAULT_SHUTDOWN_GRACE_SECONDS,
            budget,
        },
    );
    team.metadata.namespace = Some(namespace.clone());
    let mut owners = Vec::new();
    if let Some(p) = lead_pod {
        // The lead pod owns the team, by uid: deleting the pod deletes the team, and only that
        // pod (not a later one of the same name) is its lead (`actor::led_by`).
        owners.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: p.pod.clone(),
            uid: p.pod_uid.clone(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        });
    }
    if let Some(mut parent_ref) = parent.as_ref().and_then(|t| t.controller_owner_ref(&())) {
        // Deleting the parent takes its sub-teams along; admission counts them against its cap.
        parent_ref.controller = Some(false);
        parent_ref.block_owner_deletion = Some(false);
        owners.push(parent_ref);
    }
    team.metadata.owner_references = (!owners.is_empty()).then_some(owners);
    let created =
        Api::<Team>::namespaced(state.client.clone(), &namespace).create(&PostParams::default(), &team).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => ApiError::conflict(format!("team {} already exists in namespace {namespace}", a.name)),
            e => ApiError::from_kube(e, "creating the team"),
        })?;
    Ok(team_view(&created))
}

/// The new team's priority (default 0), in the schema's range; a member's sub-team may not
/// outrank its parent, or a member could raise its own work above its team's.
fn priority(given: Option<i32>, parent: Option<&Team>) -> Result<i32, ApiError> {
    let Some(p) = given else { return Ok(0) };
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p) {
        return Err(ApiError::invalid(format!(
            "team_create: field `priority`: {p} is out of range: at least {MIN_PRIORITY}, at most {MAX_PRIORITY}"
        )));
    }
    match parent {
        Some(parent) if p > parent.spec.priority => Err(ApiError::invalid(format!(
            "team_create: field `priority`: a sub-team's priority is at most its parent's ({}), not {p}",
            parent.spec.priority
        ))),
        _ => Ok(p),
    }
}

/// A sub-team's agent types and memory project: the parent's. `agents` may pick some of the
/// parent's types by name, nothing more; another memory project is refused.
fn sub_team_types(
    parent: &Team,
    agents: Option<Vec<AgentTypeArgs>>,
    project: Option<String>,
) -> Result<(Vec<AgentType>, Option<String>), ApiError> {
    let parent_project = parent.memory_project();
    if let Some(p) = project.filter(|p| *p != parent_project) {
        return Err(ApiError::invalid(format!(
            "team_create: field `memory_project`: a sub-team uses its parent's memory project {parent_project:?}, not {p:?}"
        )));
    }
    let picked = match agents {
        None => parent.spec.agents.clone(),
        Some(list) if list.is_empty() => parent.spec.agents.clone(),
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let own = a.image.is_some()
                    || a.template.is_some()
                    || !a.command.is_empty()
                    || !a.args.is_empty()
                    || a.model.is_some()
                    || a.memory.is_some();
                match parent.agent_type(&a.name) {
                    Some(t) if !own => Ok(t.clone()),
                    Some(_) => Err(ApiError::invalid(format!(
                        "team_create: field `agents[{i}]`: a sub-team uses its parent's agent types as they are: give only `name`"
                    ))),
                    None => Err(ApiError::invalid(format!(
                        "team_create: field `agents[{i}].name`: {:?} is not one of the parent team's agent types",
                        a.name
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    Ok((picked, Some(parent_project)))
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
    Ok(AgentType {
        name: a.name,
        model: a.model,
        memory: a.memory.unwrap_or_default(),
        plan_approval: Default::default(),
        template,
        task_completed_check: a.task_completed_check,
        idle_check: a.idle_check,
        // Out of range is refused by the API server's schema, naming the field.
        backoff_limit: a.backoff_limit.unwrap_or_default(),
        budget: None,
    })
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
