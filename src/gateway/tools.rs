//! The tools themselves, shared by the JSON API, MCP and teamctl: a catalog (names, descriptions,
//! input schemas) and [`call`], which authorizes and runs one call.
//!
//! # Authorization
//!
//! Every call acts inside one team (`team`, default: the caller's own) of one namespace.
//! - A member pod acts only in its own team, as its own agent name: any other team is
//!   `forbidden`, except a team whose `spec.lead.podName` is the caller's pod (a team it created
//!   with team_create), where it is the lead. team_delete and spawn_member are the lead's.
//!   agent_memory reaches only the caller's own agent type, in its team's memory project.
//! - A kube user acts as the team's lead (or as `member`), if RBAC allows the verb below on
//!   `agentteams.dev` resources in the namespace (SubjectAccessReview):
//!
//! | tool | verb | resource |
//! |------|------|----------|
//! | team_create | create | teams |
//! | team_delete | delete | teams |
//! | spawn_member | create | members |
//! | team_task create / update / get / list | create / update / get / list | teamtasks (update: teamtasks/status) |
//! | send_message | create | teams/messages |
//! | wait_messages | get | teams/messages |
//! | agent_memory read / write, append | get / update | teams/memory |
//! | get teams / members / tasks | list or get | teams / members / teamtasks |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use schemars::JsonSchema;
use serde_json::{Value, json};

use super::GatewayState;
use super::args::*;
use super::auth::{Caller, PodCaller, UserCaller};
use super::error::ApiError;
use super::idle;
use crate::api::{
    AgentType, LeadSpec, Member, MemberRole, MemberSpec, TaskState, Team, TeamMemory, TeamSpec, TeamTask, TeamTaskSpec,
    condition, labels,
};
use crate::bus::{MemoryKey, OutgoingMessage, MessageKind, Recipient, TeamKey};

/// A tool: its name, what a model reads about it, and its input schema.
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> serde_json::Map<String, Value>,
}

fn schema_of<T: JsonSchema>() -> serde_json::Map<String, Value> {
    let schema = schemars::schema_for!(T);
    match serde_json::to_value(schema) {
        Ok(Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    }
}

/// Every tool, in the order they are listed.
pub const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "send_message",
        description: "Send a message to one member of your team (by member name, e.g. `general-2`) or to every member that has not finished (`to: \"*\"`). Returns the message id and one entry per inbox written. Refused with unknown_recipient or recipient_finished when nobody would read it.",
        schema: schema_of::<SendMessageArgs>,
    },
    ToolDef {
        name: "wait_messages",
        description: "Wait for messages to you: returns at once when messages are waiting, else blocks until one arrives or the timeout passes (an empty list then). Delivery is at least once: pass the `stream_id`s of messages you handled as `ack` in your next call, or they come back. Messages of kind `system` come from the operator (a member failed, the team disbanded).",
        schema: schema_of::<WaitMessagesArgs>,
    },
    ToolDef {
        name: "team_task",
        description: "The team's shared task board. action=create adds a task (subject, description, owner, depends_on); action=update moves its state (pending -> in_progress -> completed|failed; a task with open dependencies cannot go in_progress; completed and failed are final) and records a result or owner; action=get reads one; action=list lists them (filter by state, owner).",
        schema: schema_of::<TeamTaskArgs>,
    },
    ToolDef {
        name: "agent_memory",
        description: "Your agent type's memory, kept across runs and shared by teams of the same project: action=read returns it, action=write replaces it with `text`, action=append adds `text` at the end. At most 102,400 bytes: write keeps the beginning, append drops the oldest text.",
        schema: schema_of::<AgentMemoryArgs>,
    },
    ToolDef {
        name: "spawn_member",
        description: "Lead only. Start a new member of your team: an agent of one of the team's agent types, with a prompt that tells it its task. It gets a team-unique name (`general`, `general-2`, ...) returned as `name` once assigned, and waits as Queued when the team's maxAgents are running. Message it with send_message; it reports back the same way.",
        schema: schema_of::<SpawnMemberArgs>,
    },
    ToolDef {
        name: "team_create",
        description: "Create a new team that you lead: its agent types (image or pod template, model, memory), its concurrency cap and wait timeout. Called from a member pod, the calling pod becomes the lead and, when `agents` is left out, the agent types of your current team are reused.",
        schema: schema_of::<TeamCreateArgs>,
    },
    ToolDef {
        name: "team_delete",
        description: "Lead only. Disband your team: running and queued members are cancelled, open tasks fail, waiting members are told, messages are removed.",
        schema: schema_of::<TeamDeleteArgs>,
    },
    ToolDef {
        name: "get",
        description: "Read the state of things: kind=teams (your team), kind=members (the members of your team with phase, agent type and role), kind=tasks (the task board). Give `name` for one object.",
        schema: schema_of::<GetArgs>,
    },
];

/// The tool named `name`, as a static name (for metric labels).
pub fn tool_name(name: &str) -> Option<&'static str> {
    TOOLS.iter().find(|t| t.name == name).map(|t| t.name)
}

/// Runs one tool call for `caller` and counts it in the metrics.
pub async fn call(state: &GatewayState, caller: &Caller, tool: &str, args: Value) -> Result<Value, ApiError> {
    let label = tool_name(tool).unwrap_or("unknown");
    let result = dispatch(state, caller, tool, args).await;
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    state.metrics.gateway_requests.get_or_create(&crate::metrics::RequestLabel { tool: label, code }).inc();
    if let Err(e) = &result {
        tracing::debug!(tool = label, caller = %caller.describe(), code = e.code, message = %e.message, "tool call refused");
    }
    result
}

async fn dispatch(state: &GatewayState, caller: &Caller, tool: &str, args: Value) -> Result<Value, ApiError> {
    match tool {
        "send_message" => send_message(state, caller, decode(tool, args)?).await,
        "wait_messages" => wait_messages(state, caller, decode(tool, args)?).await,
        "team_task" => team_task(state, caller, decode(tool, args)?).await,
        "agent_memory" => agent_memory(state, caller, decode(tool, args)?).await,
        "spawn_member" => spawn_member(state, caller, decode(tool, args)?).await,
        "team_create" => team_create(state, caller, decode(tool, args)?).await,
        "team_delete" => team_delete(state, caller, decode(tool, args)?).await,
        "get" => get(state, caller, decode(tool, args)?).await,
        other => Err(ApiError::not_found(format!(
            "no tool named {other:?}; the tools are {}",
            TOOLS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        ))),
    }
}

// --- who acts where ---------------------------------------------------------------------------

/// Role of the caller in the team it acts in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Lead,
    Specialist,
    /// A kube user, acting as the lead (or the member it names).
    Person,
}

/// The caller inside one team.
struct Actor {
    namespace: String,
    team: Arc<Team>,
    /// Agent name the caller acts as (None while the operator has not named it).
    name: Option<String>,
    /// Agent type of the caller.
    agent: Option<String>,
    role: Role,
}

impl Actor {
    fn team_name(&self) -> String {
        self.team.name_any()
    }
    fn key(&self) -> TeamKey {
        TeamKey::new(self.namespace.clone(), self.team_name())
    }
    fn require_lead(&self, tool: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Lead | Role::Person => Ok(()),
            Role::Specialist => Err(ApiError::forbidden(format!(
                "{tool} is the lead's: {} is a specialist of team {}",
                self.name.as_deref().unwrap_or("the caller"),
                self.team_name()
            ))),
        }
    }
    fn require_active(&self) -> Result<(), ApiError> {
        if self.team.is_disbanded() {
            return Err(ApiError::disbanded(&self.team_name()));
        }
        Ok(())
    }
    fn own_name(&self) -> Result<String, ApiError> {
        self.name.clone().ok_or_else(|| {
            ApiError::conflict(format!("the caller has no member name in team {} yet; retry in a moment", self.team_name()))
        })
    }
}

/// An RBAC question asked for kube users.
struct Need {
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
}

const fn need(verb: &'static str, resource: &'static str, subresource: Option<&'static str>) -> Need {
    Need { verb, resource, subresource }
}

/// The namespace a call acts in: a pod's own; a user's `namespace`.
fn namespace_of(caller: &Caller, requested: Option<&str>) -> Result<String, ApiError> {
    match caller {
        Caller::Pod(p) => match requested {
            Some(ns) if ns != p.namespace => Err(ApiError::forbidden(format!(
                "{} may act only in its own namespace {}, not {ns}",
                caller.describe(),
                p.namespace
            ))),
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
async fn lookup_team(state: &GatewayState, ns: &str, name: &str) -> Result<Option<Arc<Team>>, ApiError> {
    if let Some(t) = state.teams.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(t));
    }
    let t = Api::<Team>::namespaced(state.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("reading team {name}")))?;
    Ok(t.map(Arc::new))
}

async fn fetch_team(state: &GatewayState, ns: &str, name: &str) -> Result<Arc<Team>, ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid("`team` is empty"));
    }
    lookup_team(state, ns, name).await?.ok_or_else(|| ApiError::not_found(format!("team {name} not found in namespace {ns}")))
}

/// Resolves who the caller is inside the team it asked for, and checks it may act there.
async fn actor(state: &GatewayState, caller: &Caller, ns: Option<&str>, team: Option<&str>, need: Need) -> Result<Actor, ApiError> {
    let namespace = namespace_of(caller, ns)?;
    match caller {
        Caller::Pod(p) => {
            let team_name = team.or(p.team.as_deref()).ok_or_else(|| {
                ApiError::invalid(format!("{} is in no team: name the `team` you lead", caller.describe()))
            })?;
            if p.team.as_deref() == Some(team_name) {
                let t = fetch_team(state, &namespace, team_name).await?;
                let role = if p.lead { Role::Lead } else { Role::Specialist };
                return Ok(Actor { namespace, team: t, name: p.member.clone(), agent: p.agent.clone(), role });
            }
            match lookup_team(state, &namespace, team_name).await? {
                Some(t) if t.spec.lead.pod_name.as_deref() == Some(p.pod.as_str()) => {
                    let name = t.status.as_ref().and_then(|s| s.lead_name.clone());
                    let agent = Some(t.spec.lead.agent.clone());
                    Ok(Actor { namespace, team: t, name, agent, role: Role::Lead })
                }
                // A missing team reads as forbidden too: members learn nothing about other teams.
                _ => Err(ApiError::forbidden(format!("{} may not act in team {team_name}", caller.describe()))),
            }
        }
        Caller::User(u) => {
            let team_name = team.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::invalid(format!("`team` is required for {}", u.username)))?;
            state.auth.check(u, need.verb, need.resource, need.subresource, &namespace, Some(team_name).filter(|_| need.resource == "teams")).await?;
            let t = fetch_team(state, &namespace, team_name).await?;
            let name = t.status.as_ref().and_then(|s| s.lead_name.clone());
            let agent = Some(t.spec.lead.agent.clone());
            Ok(Actor { namespace, team: t, name, agent, role: Role::Person })
        }
    }
}

/// A person may act as another member of the team; members never.
fn act_as(actor: &mut Actor, member: Option<String>) -> Result<(), ApiError> {
    match (member, &actor.role) {
        (None, _) => Ok(()),
        (Some(m), Role::Person) => {
            actor.name = Some(m);
            Ok(())
        }
        (Some(m), _) if actor.name.as_deref() == Some(m.as_str()) => Ok(()),
        (Some(m), _) => Err(ApiError::forbidden(format!(
            "{} may act only as itself, not as {m}",
            actor.name.as_deref().unwrap_or("the caller")
        ))),
    }
}

// --- messages ---------------------------------------------------------------------------------

async fn send_message(state: &GatewayState, caller: &Caller, a: SendMessageArgs) -> Result<Value, ApiError> {
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("create", "teams", Some("messages"))).await?;
    act_as(&mut actor, a.member)?;
    let from = actor.own_name()?;
    let to = match a.to.trim() {
        "" => return Err(ApiError::invalid("send_message: `to` is empty: give a member name or \"*\"")),
        "*" => Recipient::Broadcast,
        name => Recipient::Member(name.to_owned()),
    };
    let delivered = state
        .bus
        .send(&actor.key(), OutgoingMessage { from, to, body: a.body, kind: MessageKind::Message, id: a.id })
        .await?;
    state.metrics.messages_sent.inc();
    let id = delivered.first().map(|d| d.id.clone());
    let copies: Vec<Value> = delivered.into_iter().map(|d| json!({ "to": d.to, "stream_id": d.stream_id })).collect();
    Ok(json!({ "id": id, "delivered": copies }))
}

async fn wait_messages(state: &GatewayState, caller: &Caller, a: WaitMessagesArgs) -> Result<Value, ApiError> {
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
        Caller::Pod(PodCaller { member_object: Some(member), .. }) => idle::while_waiting(&state.client, &actor.namespace, member, wait).await?,
        _ => wait.await?,
    };
    let timed_out = messages.is_empty();
    Ok(json!({ "acked": acked, "messages": messages, "timed_out": timed_out }))
}

// --- memory -----------------------------------------------------------------------------------

async fn agent_memory(state: &GatewayState, caller: &Caller, a: AgentMemoryArgs) -> Result<Value, ApiError> {
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

// --- members ----------------------------------------------------------------------------------

async fn spawn_member(state: &GatewayState, caller: &Caller, a: SpawnMemberArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("create", "members", None)).await?;
    actor.require_lead("spawn_member")?;
    actor.require_active()?;
    let team = actor.team_name();
    if actor.team.agent_type(&a.agent).is_none() {
        let known: Vec<&str> = actor.team.spec.agents.iter().map(|t| t.name.as_str()).collect();
        return Err(ApiError::invalid(format!("team {team} has no agent type {:?}; it has {}", a.agent, known.join(", "))));
    }
    let mut member = Member::new("", MemberSpec {
        team: team.clone(),
        agent: a.agent.clone(),
        role: MemberRole::Specialist,
        prompt: a.prompt,
        model: a.model,
        pod: None,
    });
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

// --- teams ------------------------------------------------------------------------------------

async fn team_create(state: &GatewayState, caller: &Caller, a: TeamCreateArgs) -> Result<Value, ApiError> {
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
            None => return Err(ApiError::invalid("team_create: `agents` is required: give at least one agent type with `name` and `image`")),
        },
    };
    let names: Vec<&str> = agents.iter().map(|t| t.name.as_str()).collect();
    let lead_agent = a
        .lead_agent
        .or_else(|| own_agent.filter(|o| names.contains(&o.as_str())))
        .unwrap_or_else(|| names.first().map(|n| (*n).to_owned()).unwrap_or_default());
    if !names.contains(&lead_agent.as_str()) {
        return Err(ApiError::invalid(format!("team_create: `lead_agent` {lead_agent:?} is not one of the agent types {}", names.join(", "))));
    }
    let mut team = Team::new(&a.name, TeamSpec {
        max_agents: a.max_agents.unwrap_or(4),
        member_timeout_seconds: a.member_timeout_seconds.unwrap_or(crate::api::team::DEFAULT_MEMBER_TIMEOUT_SECONDS),
        lead: LeadSpec { agent: lead_agent, prompt: a.lead_prompt, pod_name: lead_pod.as_ref().map(|p| p.name_any()) },
        agents,
        memory: TeamMemory { project: a.memory_project },
    });
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
    let created = Api::<Team>::namespaced(state.client.clone(), &namespace)
        .create(&PostParams::default(), &team)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => ApiError::conflict(format!("team {} already exists in namespace {namespace}", a.name)),
            e => ApiError::from_kube(e, "creating the team"),
        })?;
    Ok(team_view(&created))
}

fn agent_type(a: AgentTypeArgs) -> Result<AgentType, ApiError> {
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

async fn team_delete(state: &GatewayState, caller: &Caller, a: TeamDeleteArgs) -> Result<Value, ApiError> {
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), need("delete", "teams", None)).await?;
    actor.require_lead("team_delete")?;
    let name = actor.team_name();
    Api::<Team>::namespaced(state.client.clone(), &actor.namespace)
        .delete(&name, &DeleteParams::background())
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("deleting team {name}")))?;
    Ok(json!({ "deleted": name, "namespace": actor.namespace }))
}

// --- tasks ------------------------------------------------------------------------------------

async fn team_task(state: &GatewayState, caller: &Caller, a: TeamTaskArgs) -> Result<Value, ApiError> {
    let n = match a.action {
        TaskAction::Create => need("create", "teamtasks", None),
        TaskAction::Update => need("update", "teamtasks", Some("status")),
        TaskAction::Get => need("get", "teamtasks", None),
        TaskAction::List => need("list", "teamtasks", None),
    };
    let actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), n).await?;
    let api: Api<TeamTask> = Api::namespaced(state.client.clone(), &actor.namespace);
    let team = actor.team_name();
    let only = |field: &str, given: bool| -> Result<(), ApiError> {
        if given {
            return Err(ApiError::invalid(format!("team_task: `{field}` does not apply to action {:?}", a.action).to_lowercase()));
        }
        Ok(())
    };
    match a.action {
        TaskAction::Create => {
            actor.require_active()?;
            only("name", a.name.is_some())?;
            only("state", a.state.is_some())?;
            only("result", a.result.is_some())?;
            let subject = a.subject.filter(|s| !s.trim().is_empty()).ok_or_else(|| ApiError::invalid("team_task: `subject` is required for create"))?;
            for dep in &a.depends_on {
                let found = api.get_opt(dep).await.map_err(|e| ApiError::from_kube(e, "reading a dependency"))?;
                if found.is_none_or(|d| d.spec.team != team) {
                    return Err(ApiError::invalid(format!("team_task: dependency {dep} is not a task of team {team}")));
                }
            }
            let mut task = TeamTask::new("", TeamTaskSpec {
                team: team.clone(),
                subject,
                description: a.description.unwrap_or_default(),
                owner: a.owner,
                depends_on: a.depends_on,
                metadata: a.metadata,
            });
            task.metadata = ObjectMeta {
                generate_name: Some(format!("{team}-task-")),
                namespace: Some(actor.namespace.clone()),
                labels: Some([(labels::TEAM.to_owned(), team.clone())].into()),
                owner_references: actor.team.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            };
            let created = api.create(&PostParams::default(), &task).await.map_err(|e| ApiError::from_kube(e, "creating the task"))?;
            Ok(task_view(&created))
        }
        TaskAction::Update => {
            only("subject", a.subject.is_some())?;
            only("description", a.description.is_some())?;
            only("depends_on", !a.depends_on.is_empty())?;
            only("metadata", !a.metadata.is_empty())?;
            let name = a.name.ok_or_else(|| ApiError::invalid("team_task: `name` is required for update"))?;
            if a.state.is_none() && a.result.is_none() && a.owner.is_none() {
                return Err(ApiError::invalid("team_task: nothing to update: give `state`, `result` or `owner`"));
            }
            let task = task_of(&api, &name, &team).await?;
            if let Some(owner) = a.owner {
                let patch = json!({ "metadata": { "resourceVersion": task.resource_version() }, "spec": { "owner": owner } });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| task_error(e, &name))?;
            }
            let updated = if a.state.is_some() || a.result.is_some() {
                let task = task_of(&api, &name, &team).await?;
                let patch = status_patch(&api, &task, a.state, a.result).await?;
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| task_error(e, &name))?
            } else {
                task_of(&api, &name, &team).await?
            };
            Ok(task_view(&updated))
        }
        TaskAction::Get => {
            let name = a.name.ok_or_else(|| ApiError::invalid("team_task: `name` is required for get"))?;
            Ok(task_view(&task_of(&api, &name, &team).await?))
        }
        TaskAction::List => {
            only("name", a.name.is_some())?;
            let tasks = tasks_of(&api, &team).await?;
            let views: Vec<Value> = tasks
                .iter()
                .filter(|t| a.state.is_none_or(|s| t.state() == s))
                .filter(|t| a.owner.is_none() || t.spec.owner == a.owner)
                .map(task_view)
                .collect();
            Ok(json!({ "tasks": views }))
        }
    }
}

async fn task_of(api: &Api<TeamTask>, name: &str, team: &str) -> Result<TeamTask, ApiError> {
    api.get_opt(name)
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("reading task {name}")))?
        .filter(|t| t.spec.team == team)
        .ok_or_else(|| ApiError::not_found(format!("task {name} not found in team {team}")))
}

async fn tasks_of(api: &Api<TeamTask>, team: &str) -> Result<Vec<TeamTask>, ApiError> {
    let list = api
        .list(&ListParams::default().fields(&format!("spec.team={team}")))
        .await
        .map_err(|e| ApiError::from_kube(e, "listing tasks"))?;
    let mut tasks: Vec<TeamTask> = list.items.into_iter().filter(|t| t.spec.team == team).collect();
    tasks.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any())));
    Ok(tasks)
}

fn task_error(e: kube::Error, name: &str) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 409 => ApiError::conflict(format!("task {name} changed while it was updated; read it and retry")),
        e => ApiError::from_kube(e, &format!("updating task {name}")),
    }
}

/// The status patch moving `task` to `next` (checked) with `result`, conditional on its
/// resourceVersion.
async fn status_patch(api: &Api<TeamTask>, task: &TeamTask, next: Option<TaskState>, result: Option<String>) -> Result<Value, ApiError> {
    let name = task.name_any();
    let current = task.state();
    let mut status = serde_json::Map::new();
    if let Some(next) = next {
        if !current.can_become(next) {
            return Err(ApiError::conflict(format!(
                "task {name} is {} and cannot become {}{}",
                current.as_str(),
                next.as_str(),
                if current.is_terminal() { " (completed and failed are final)" } else { "" }
            )));
        }
        if next == TaskState::InProgress && current != TaskState::InProgress {
            let conditions = task.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            let mut open = Vec::new();
            for dep in &task.spec.depends_on {
                let state = api.get_opt(dep).await.map_err(|e| ApiError::from_kube(e, "reading a dependency"))?.map(|d| d.state());
                if state != Some(TaskState::Completed) {
                    open.push(format!("{dep} ({})", state.map_or("not found", TaskState::as_str)));
                }
            }
            if condition::is_true(conditions, "Blocked") || !open.is_empty() {
                let why = conditions.iter().find(|c| c.type_ == "Blocked").map(|c| c.message.clone()).unwrap_or_default();
                let detail = if open.is_empty() { why } else { format!("waiting for {}", open.join(", ")) };
                return Err(ApiError::conflict(format!(
                    "task {name} is blocked (condition Blocked=True: {detail}); it can go in_progress once its dependencies completed"
                )));
            }
        }
        let now = serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null);
        status.insert("state".into(), json!(next));
        if next == TaskState::InProgress && current != TaskState::InProgress {
            status.insert("startedAt".into(), now.clone());
        }
        if next.is_terminal() && !current.is_terminal() {
            status.insert("completedAt".into(), now);
        }
    }
    if let Some(result) = result {
        status.insert("result".into(), json!(result));
    }
    Ok(json!({ "metadata": { "resourceVersion": task.resource_version() }, "status": status }))
}

// --- get --------------------------------------------------------------------------------------

async fn get(state: &GatewayState, caller: &Caller, a: GetArgs) -> Result<Value, ApiError> {
    match a.kind {
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
                    .filter(|t| Some(t.name_any()) == p.team || t.spec.lead.pod_name.as_deref() == Some(p.pod.as_str()))
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
            members.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any())));
            match a.name {
                Some(name) => members
                    .iter()
                    .find(|m| m.agent_name() == Some(name.as_str()) || m.name_any() == name)
                    .map(member_view)
                    .ok_or_else(|| ApiError::not_found(format!("member {name} not found in team {team}"))),
                None => Ok(json!({ "members": members.iter().map(member_view).collect::<Vec<_>>() })),
            }
        }
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

async fn list_teams(state: &GatewayState, user: &UserCaller, ns: &str) -> Result<Value, ApiError> {
    state.auth.check(user, "list", "teams", None, ns, None).await?;
    let all = Api::<Team>::namespaced(state.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError::from_kube(e, "listing teams"))?;
    Ok(json!({ "teams": all.items.iter().map(team_view).collect::<Vec<_>>() }))
}

// --- views ------------------------------------------------------------------------------------

/// What callers see of a Team.
pub fn team_view(t: &Team) -> Value {
    let s = t.status.clone().unwrap_or_default();
    let phase = if t.is_disbanded() { Some("Disbanded") } else { s.phase.map(|_| "Active") };
    json!({
        "name": t.name_any(),
        "namespace": t.namespace(),
        "phase": phase,
        "lead": s.lead_name,
        "lead_agent": t.spec.lead.agent,
        "lead_pod": t.spec.lead.pod_name,
        "max_agents": t.spec.max_agents,
        "member_timeout_seconds": t.spec.member_timeout_seconds,
        "agents": t.spec.agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
        "memory_project": t.memory_project(),
        "counts": { "queued": s.queued, "starting": s.starting, "active": s.active, "completed": s.completed, "failed": s.failed, "cancelled": s.cancelled },
    })
}

/// What callers see of a Member.
pub fn member_view(m: &Member) -> Value {
    let s = m.status.clone().unwrap_or_default();
    json!({
        "name": s.name,
        "object": m.name_any(),
        "team": m.spec.team,
        "agent": m.spec.agent,
        "role": if m.is_lead() { "lead" } else { "specialist" },
        "phase": format!("{:?}", m.phase()),
        "pod": s.pod_name,
        "reason": s.reason,
        "message": s.message,
        "exit_code": s.exit_code,
    })
}

/// What callers see of a TeamTask.
pub fn task_view(t: &TeamTask) -> Value {
    let s = t.status.clone().unwrap_or_default();
    let blocked = condition::is_true(&s.conditions, "Blocked");
    let meta: BTreeMap<String, String> = t.spec.metadata.clone();
    json!({
        "name": t.name_any(),
        "team": t.spec.team,
        "subject": t.spec.subject,
        "description": t.spec.description,
        "owner": t.spec.owner,
        "depends_on": t.spec.depends_on,
        "metadata": meta,
        "state": t.state(),
        "blocked": blocked,
        "reason": s.reason,
        "result": s.result,
    })
}
