//! get: teams, members and tasks as callers see them.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::actor::*;
use super::tasks::{task_of, tasks_of};
use super::views::*;
use crate::api::{Member, MemberPhase, Team, TeamTask};
use crate::controller::fair_share;
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::{Caller, UserCaller};
use crate::gateway::error::ApiError;

pub(super) async fn get(state: &GatewayState, caller: &Caller, a: GetArgs) -> Result<Value, ApiError> {
    if a.all_namespaces && (a.kind != Kind::Teams || a.name.is_some() || a.team.is_some() || a.namespace.is_some()) {
        return Err(ApiError::invalid("get: `all_namespaces` lists teams only: kind=teams without name, team or namespace"));
    }
    match a.kind {
        Kind::Teams if a.all_namespaces => match caller {
            Caller::User(u) => list_teams_everywhere(state, u).await,
            Caller::Pod(_) => Err(ApiError::forbidden(format!("{} acts only in its own namespace", caller.describe()))),
        },
        Kind::Teams => {
            let list_all = a.name.is_none() && a.team.is_none();
            if let (true, Caller::User(u)) = (list_all, caller) {
                let ns = namespace_of(caller, a.namespace.as_deref())?;
                return list_teams(state, u, &ns).await;
            }
            if let (true, Caller::Pod(p)) = (list_all, caller) {
                // A pod sees its own team and the teams it leads.
                let ns = namespace_of(caller, a.namespace.as_deref())?;
                let all = Api::<Team>::namespaced(state.client.clone(), &ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| ApiError::from_kube(e, "listing teams"))?;
                let mine: Vec<Value> = all
                    .items
                    .iter()
                    .filter(|t| p.member.as_ref().is_some_and(|m| m.team == t.name_any()) || led_by(t, p))
                    .map(team_view)
                    .collect();
                return Ok(json!({ "teams": mine }));
            }
            let team = a.name.as_deref().or(a.team.as_deref());
            let actor = actor(state, caller, a.namespace.as_deref(), team, need("get", "teams", None)).await?;
            Ok(team_view(&actor.team))
        }
        Kind::Members => {
            let n = if a.name.is_some() { need("get", "members", None) } else { need("list", "members", None) };
            let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), n).await?;
            let team = actor.team_name();
            let list = Api::<Member>::namespaced(state.client.clone(), &actor.namespace)
                .list(&ListParams::default().fields(&format!("spec.team={team}")))
                .await
                .map_err(|e| ApiError::from_kube(e, "listing members"))?;
            let mut members: Vec<Member> = list.items.into_iter().filter(|m| m.spec.team == team).collect();
            members.sort_by(|a, b| {
                a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any()))
            });
            if let Some(name) = &a.name {
                members.retain(|m| m.agent_name() == Some(name.as_str()) || m.name_any() == *name);
                if members.is_empty() {
                    return Err(ApiError::not_found(format!("member {name} not found in team {team}")));
                }
            }
            let positions = queue_positions(state, &members).await;
            let view = |m: &Member| {
                let mut v = member_view(m);
                let place = m.uid().and_then(|uid| positions.get(&uid).copied());
                if let Some(place) = place {
                    v["queue_position"] = json!(place);
                }
                v
            };
            match a.name {
                Some(_) => Ok(members.first().map(view).unwrap_or_default()),
                None => Ok(json!({ "members": members.iter().map(view).collect::<Vec<_>>() })),
            }
        }
        Kind::Messages => messages(state, caller, a).await,
        Kind::Tasks => {
            let n = if a.name.is_some() { need("get", "teamtasks", None) } else { need("list", "teamtasks", None) };
            let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), n).await?;
            let api: Api<TeamTask> = Api::namespaced(state.client.clone(), &actor.namespace);
            let team = actor.team_name();
            match a.name {
                Some(name) => Ok(task_view(&task_of(&api, &name, &team).await?)),
                None => Ok(json!({ "tasks": tasks_of(&api, &team).await?.iter().map(task_view).collect::<Vec<_>>() })),
            }
        }
    }
}

/// Where each Queued member of `members` stands in the queue for the operator-wide cap,
/// computed now from the watch caches of every Team and Member (as admission takes turns, see
/// `fair_share`); nothing is asked of the API server, and nothing when none of them is Queued.
/// Until the caches have listed (a few seconds after the gateway starts) there is no answer.
async fn queue_positions(state: &GatewayState, members: &[Member]) -> HashMap<String, usize> {
    if !members.iter().any(|m| m.phase() == MemberPhase::Queued) {
        return HashMap::new();
    }
    let ready = futures::future::join(state.teams.wait_until_ready(), state.members.wait_until_ready());
    if tokio::time::timeout(CACHE_READY, ready).await.is_err() {
        return HashMap::new();
    }
    fair_share::positions(&state.teams.state(), &state.members.state())
}

/// How long `get members` waits for the watch caches to list before it answers without places.
const CACHE_READY: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn list_teams(state: &GatewayState, user: &UserCaller, ns: &str) -> Result<Value, ApiError> {
    state.auth.check(user, "list", "teams", None, ns, None).await?;
    let all = Api::<Team>::namespaced(state.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError::from_kube(e, "listing teams"))?;
    Ok(json!({ "teams": all.items.iter().map(team_view).collect::<Vec<_>>() }))
}

/// Every team of every namespace, for a user RBAC lets list teams cluster-wide.
async fn list_teams_everywhere(state: &GatewayState, user: &UserCaller) -> Result<Value, ApiError> {
    state.auth.check(user, "list", "teams", None, "", None).await?;
    let all =
        Api::<Team>::all(state.client.clone()).list(&ListParams::default()).await.map_err(|e| ApiError::from_kube(e, "listing teams"))?;
    Ok(json!({ "teams": all.items.iter().map(team_view).collect::<Vec<_>>() }))
}

/// The newest messages, under the RBAC of wait_messages (`get teams/messages`): a person sees
/// every inbox of the team (or `name`'s); a member only its own, as its waits do. Of a disbanded
/// team, a person reads its transcript instead.
async fn messages(state: &GatewayState, caller: &Caller, a: GetArgs) -> Result<Value, ApiError> {
    let limit = a.limit.unwrap_or(MESSAGES_DEFAULT);
    if !(1..=MESSAGES_MAX).contains(&limit) {
        return Err(ApiError::invalid(format!("get: `limit` must be 1 to {MESSAGES_MAX}, not {limit}")));
    }
    if let Some(answer) = super::transcript::of_disbanded(state, caller, &a, limit).await? {
        return Ok(answer);
    }
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("get", "teams", Some("messages"))).await?;
    let inbox = match actor.role {
        Role::Person => a.name,
        Role::Lead | Role::Specialist => {
            let me = actor.own_name()?;
            if a.name.as_ref().is_some_and(|n| *n != me) {
                return Err(ApiError::forbidden(format!("{me} reads only its own inbox")));
            }
            Some(me)
        }
    };
    let messages = state.bus.latest(&actor.key(), inbox.as_deref(), limit).await?;
    Ok(json!({ "messages": messages }))
}
