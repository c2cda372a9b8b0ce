//! Who acts where: the caller resolved inside the team it asked for (role, agent name, agent
//! type), and the RBAC question asked for kube users.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use crate::api::{MemberRole, Team};
use crate::bus::TeamKey;
use crate::gateway::GatewayState;
use crate::gateway::auth::{Caller, PodCaller};
use crate::gateway::error::ApiError;

/// Role of the caller in the team it acts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Lead,
    Specialist,
    /// A kube user, acting as the lead (or the member it names).
    Person,
}

/// The caller inside one team.
pub(super) struct Actor {
    pub(super) namespace: String,
    pub(super) team: Arc<Team>,
    /// Agent name the caller acts as (None while the operator has not named it).
    pub(super) name: Option<String>,
    /// Agent type of the caller.
    pub(super) agent: Option<String>,
    pub(super) role: Role,
}

impl Actor {
    pub(super) fn team_name(&self) -> String {
        self.team.name_any()
    }
    pub(super) fn key(&self) -> TeamKey {
        TeamKey::new(self.namespace.clone(), self.team_name())
    }
    pub(super) fn require_lead(&self, tool: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Lead | Role::Person => Ok(()),
            Role::Specialist => Err(ApiError::forbidden(format!(
                "{tool} is the lead's: {} is a specialist of team {}",
                self.name.as_deref().unwrap_or("the caller"),
                self.team_name()
            ))),
        }
    }
    pub(super) fn require_active(&self) -> Result<(), ApiError> {
        if self.team.is_disbanded() {
            return Err(ApiError::disbanded(&self.team_name()));
        }
        Ok(())
    }
    pub(super) fn own_name(&self) -> Result<String, ApiError> {
        self.name
            .clone()
            .ok_or_else(|| ApiError::conflict(format!("the caller has no member name in team {} yet; retry in a moment", self.team_name())))
    }
}

/// An RBAC question asked for kube users.
pub(super) struct Need {
    pub(super) verb: &'static str,
    pub(super) resource: &'static str,
    pub(super) subresource: Option<&'static str>,
}

pub(super) const fn need(verb: &'static str, resource: &'static str, subresource: Option<&'static str>) -> Need {
    Need { verb, resource, subresource }
}

/// The namespace a call acts in: a pod's own; a user's `namespace`.
pub(super) fn namespace_of(caller: &Caller, requested: Option<&str>) -> Result<String, ApiError> {
    match caller {
        Caller::Pod(p) => match requested {
            Some(ns) if ns != p.namespace => {
                Err(ApiError::forbidden(format!("{} may act only in its own namespace {}, not {ns}", caller.describe(), p.namespace)))
            }
            _ => Ok(p.namespace.clone()),
        },
        Caller::User(u) => match requested {
            Some(ns) if !ns.is_empty() => Ok(ns.to_owned()),
            _ => Err(ApiError::invalid(format!("`namespace` is required for {}", u.username))),
        },
    }
}

/// The team `name` in `ns`, if there is one.
///
/// Read from the gateway's watch of Teams, so send_message and wait_messages cost the API server
/// nothing. The watch may lag the API by a moment; that is acceptable because the bus refuses
/// sends into a disbanded or removed team from its own state in Redis, whatever the Team read
/// here says, and a Member or TeamTask created in a team disbanded a moment ago is owned by it,
/// so it goes with the team. A miss (a team created a moment ago, or the watch not listed yet)
/// asks the API server once, so a new team works at once.
pub(super) async fn lookup_team(state: &GatewayState, ns: &str, name: &str) -> Result<Option<Arc<Team>>, ApiError> {
    if let Some(t) = state.teams.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(t));
    }
    let t = Api::<Team>::namespaced(state.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("reading team {name}")))?;
    Ok(t.map(Arc::new))
}

pub(super) async fn fetch_team(state: &GatewayState, ns: &str, name: &str) -> Result<Arc<Team>, ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid("`team` is empty"));
    }
    lookup_team(state, ns, name).await?.ok_or_else(|| ApiError::not_found(format!("team {name} not found in namespace {ns}")))
}

/// Resolves who the caller is inside the team it asked for, and checks it may act there.
pub(super) async fn actor(
    state: &GatewayState,
    caller: &Caller,
    ns: Option<&str>,
    team: Option<&str>,
    need: Need,
) -> Result<Actor, ApiError> {
    let namespace = namespace_of(caller, ns)?;
    let user = match caller {
        Caller::Pod(p) => {
            let own = p.member.as_ref().map(|m| m.team.as_str());
            if let Some(team_name) = team.or(own)
                && let Some(actor) = as_pod(state, p, &namespace, team_name).await?
            {
                return Ok(actor);
            }
            match (&p.member, team.or(own)) {
                // A missing team reads as forbidden too: members learn nothing about other teams.
                (Some(_), Some(team_name)) => {
                    return Err(ApiError::forbidden(format!("{} may not act in team {team_name}", caller.describe())));
                }
                // A pod of no team is its ServiceAccount: RBAC decides, as for people.
                _ => &p.account,
            }
        }
        Caller::User(u) => u,
    };
    let team_name = team.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::invalid(format!("`team` is required for {}", user.username)))?;
    state
        .auth
        .check(user, need.verb, need.resource, need.subresource, &namespace, Some(team_name).filter(|_| need.resource == "teams"))
        .await?;
    let t = fetch_team(state, &namespace, team_name).await?;
    let name = t.status.as_ref().and_then(|s| s.lead_name.clone());
    let agent = Some(t.spec.lead.agent.clone());
    Ok(Actor { namespace, team: t, name, agent, role: Role::Person })
}

/// A pod in `team_name` by what it is there: the member its Member says (team, name, agent
/// type and role from the Member, see [`crate::gateway::auth`]), or the external lead of a team
/// whose `spec.lead.podName` names it and which this pod, by uid, owns. None: neither.
async fn as_pod(state: &GatewayState, p: &PodCaller, namespace: &str, team_name: &str) -> Result<Option<Actor>, ApiError> {
    if let Some(m) = p.member.as_ref().filter(|m| m.team == team_name) {
        let t = fetch_team(state, namespace, team_name).await?;
        let role = if m.role == MemberRole::Lead { Role::Lead } else { Role::Specialist };
        return Ok(Some(Actor {
            namespace: namespace.to_owned(),
            team: t,
            name: Some(m.name.clone()),
            agent: Some(m.agent.clone()),
            role,
        }));
    }
    match lookup_team(state, namespace, team_name).await? {
        Some(t) if led_by(&t, p) => {
            let name = t.status.as_ref().and_then(|s| s.lead_name.clone());
            let agent = Some(t.spec.lead.agent.clone());
            Ok(Some(Actor { namespace: namespace.to_owned(), team: t, name, agent, role: Role::Lead }))
        }
        _ => Ok(None),
    }
}

/// Whether pod `p` is the external lead of `team`: named by `spec.lead.podName` and owning the
/// Team by uid (the owner reference team_create writes), so a re-created pod of the same name is
/// not its lead.
pub(super) fn led_by(team: &Team, p: &PodCaller) -> bool {
    team.spec.lead.pod_name.as_deref() == Some(p.pod.as_str()) && team.lead_pod_uid() == Some(p.pod_uid.as_str())
}

/// A person may act as another member of the team; members never.
pub(super) fn act_as(actor: &mut Actor, member: Option<String>) -> Result<(), ApiError> {
    match (member, &actor.role) {
        (None, _) => Ok(()),
        (Some(m), Role::Person) => {
            actor.name = Some(m);
            Ok(())
        }
        (Some(m), _) if actor.name.as_deref() == Some(m.as_str()) => Ok(()),
        (Some(m), _) => {
            Err(ApiError::forbidden(format!("{} may act only as itself, not as {m}", actor.name.as_deref().unwrap_or("the caller"))))
        }
    }
}
