//! team_task: the shared task board.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::actor::*;
use super::views::*;
use crate::api::field_managers::{self, GATEWAY_TASKS};
use crate::api::{TaskState, TeamTask, TeamTaskSpec, TeamTaskStatus, condition, labels};
use crate::gateway::GatewayState;
use crate::gateway::args::*;
use crate::gateway::auth::Caller;
use crate::gateway::error::ApiError;

pub(super) async fn team_task(state: &GatewayState, caller: &Caller, a: TeamTaskArgs) -> Result<Value, ApiError> {
    // A person's update is `update teamtasks`, not the status subresource: the gateway applies
    // the task rules itself, and RBAC on teamtasks/status would let the same person write
    // status past them (the chart's editor role leaves status to the operator).
    let n = match a.action {
        TaskAction::Create => need("create", "teamtasks", None),
        TaskAction::Update => need("update", "teamtasks", None),
        TaskAction::Get => need("get", "teamtasks", None),
        TaskAction::List => need("list", "teamtasks", None),
        TaskAction::Claim => need("update", "teamtasks", None),
    };
    let mut actor = actor(state, caller, a.namespace.as_deref(), a.team.as_deref(), n).await?;
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
            let subject = a
                .subject
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| ApiError::invalid("team_task: `subject` is required for create"))?;
            for dep in &a.depends_on {
                let found = api.get_opt(dep).await.map_err(|e| ApiError::from_kube(e, "reading a dependency"))?;
                if found.is_none_or(|d| d.spec.team != team) {
                    return Err(ApiError::invalid(format!("team_task: dependency {dep} is not a task of team {team}")));
                }
            }
            let mut task = TeamTask::new(
                "",
                TeamTaskSpec {
                    team: team.clone(),
                    subject,
                    description: a.description.unwrap_or_default(),
                    owner: a.owner,
                    depends_on: a.depends_on,
                    metadata: a.metadata,
                },
            );
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
                api.patch(&name, &gateway_manager(), &Patch::Merge(&patch)).await.map_err(|e| task_error(e, &name))?;
            }
            let updated = if a.state.is_some() || a.result.is_some() {
                let task = task_of(&api, &name, &team).await?;
                let body = status_apply(&api, &task, a.state, a.result).await?;
                api.patch_status(&name, &PatchParams::apply(GATEWAY_TASKS).force(), &Patch::Apply(&body))
                    .await
                    .map_err(|e| task_error(e, &name))?
            } else {
                task_of(&api, &name, &team).await?
            };
            Ok(task_view(&updated))
        }
        TaskAction::Get => {
            let name = a.name.ok_or_else(|| ApiError::invalid("team_task: `name` is required for get"))?;
            Ok(task_view(&task_of(&api, &name, &team).await?))
        }
        TaskAction::Claim => {
            actor.require_active()?;
            only("subject", a.subject.is_some())?;
            only("description", a.description.is_some())?;
            only("depends_on", !a.depends_on.is_empty())?;
            only("metadata", !a.metadata.is_empty())?;
            only("state", a.state.is_some())?;
            only("result", a.result.is_some())?;
            // Members claim for themselves; a person for the member `owner` names (default: the lead).
            act_as(&mut actor, a.owner)?;
            let me = actor.own_name()?;
            let claimed = match a.name {
                Some(name) => claim_named(&api, &team, &name, &me).await?,
                None => claim_first(&api, &team, &me).await?,
            };
            Ok(task_view(&claimed))
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

pub(super) async fn task_of(api: &Api<TeamTask>, name: &str, team: &str) -> Result<TeamTask, ApiError> {
    api.get_opt(name)
        .await
        .map_err(|e| ApiError::from_kube(e, &format!("reading task {name}")))?
        .filter(|t| t.spec.team == team)
        .ok_or_else(|| ApiError::not_found(format!("task {name} not found in team {team}")))
}

pub(super) async fn tasks_of(api: &Api<TeamTask>, team: &str) -> Result<Vec<TeamTask>, ApiError> {
    let list =
        api.list(&ListParams::default().fields(&format!("spec.team={team}"))).await.map_err(|e| ApiError::from_kube(e, "listing tasks"))?;
    let mut tasks: Vec<TeamTask> = list.items.into_iter().filter(|t| t.spec.team == team).collect();
    tasks.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any())));
    Ok(tasks)
}

/// How often [`claim_first`] lists the board again when every claimable task it saw changed
/// before it could take one (other claims, or the operator's writes of their conditions).
const CLAIM_ROUNDS: usize = 5;

/// Claims task `name` for `me`: conflict when it is not claimable or another claim won it.
/// Claiming a pending task one already owns is a no-op.
async fn claim_named(api: &Api<TeamTask>, team: &str, name: &str, me: &str) -> Result<TeamTask, ApiError> {
    let task = task_of(api, name, team).await?;
    if task.spec.owner.as_deref() == Some(me) && task.state() == TaskState::Pending {
        return Ok(task);
    }
    let mut deps = std::collections::HashMap::new();
    for dep in &task.spec.depends_on {
        let state = api.get_opt(dep).await.map_err(|e| ApiError::from_kube(e, "reading a dependency"))?.map(|d| d.state());
        deps.insert(dep.clone(), state);
    }
    task.claimable(|d| deps.get(d).copied().flatten())
        .map_err(|why| ApiError::conflict(format!("task {name} cannot be claimed: {why}")))?;
    take(api, &task, me).await?.ok_or_else(|| {
        ApiError::conflict(format!("task {name} changed while it was claimed (another member may have taken it); read it and retry"))
    })
}

/// Claims the first claimable task of the board, in creation order, for `me`; not_found when
/// there is none. A task taken by another claim meanwhile is passed over for the next one.
async fn claim_first(api: &Api<TeamTask>, team: &str, me: &str) -> Result<TeamTask, ApiError> {
    for _ in 0..CLAIM_ROUNDS {
        let tasks = tasks_of(api, team).await?;
        let states: std::collections::HashMap<String, TaskState> = tasks.iter().map(|t| (t.name_any(), t.state())).collect();
        let mut raced = false;
        for task in tasks.iter().filter(|t| t.claimable(|d| states.get(d).copied()).is_ok()) {
            match take(api, task, me).await? {
                Some(claimed) => return Ok(claimed),
                None => raced = true,
            }
        }
        if !raced {
            return Err(ApiError::not_found(format!("no pending, unblocked, unowned task in team {team}")));
        }
    }
    Err(ApiError::conflict(format!("every claimable task of team {team} changed while it was claimed, {CLAIM_ROUNDS} times; retry")))
}

/// Sets `me` as the owner of `task`, conditional on the version read: of two claims of one task
/// exactly one is written. None when the task changed since it was read.
async fn take(api: &Api<TeamTask>, task: &TeamTask, me: &str) -> Result<Option<TeamTask>, ApiError> {
    let name = task.name_any();
    let patch = json!({ "metadata": { "resourceVersion": task.resource_version() }, "spec": { "owner": me } });
    match api.patch(&name, &gateway_manager(), &Patch::Merge(&patch)).await {
        Ok(claimed) => Ok(Some(claimed)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(ApiError::from_kube(e, &format!("claiming task {name}"))),
    }
}

/// Patch parameters of the agents' spec writes (owner, claims), under their field manager.
fn gateway_manager() -> PatchParams {
    PatchParams { field_manager: Some(GATEWAY_TASKS.into()), ..Default::default() }
}

pub(super) fn task_error(e: kube::Error, name: &str) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 409 => ApiError::conflict(format!("task {name} changed while it was updated; read it and retry")),
        e => ApiError::from_kube(e, &format!("updating task {name}")),
    }
}

/// The status apply moving `task` to `next` (checked) with `result`, conditional on its
/// resourceVersion: every field agents own (state, result, startedAt, completedAt, and the
/// Complete and Failed conditions of the state), as they are after the move, since a field an
/// apply leaves out is one its manager no longer owns.
pub(super) async fn status_apply(
    api: &Api<TeamTask>,
    task: &TeamTask,
    next: Option<TaskState>,
    result: Option<String>,
) -> Result<Value, ApiError> {
    let name = task.name_any();
    let current = task.state();
    let now = Time(Timestamp::now());
    let mut after = TeamTaskStatus { state: Some(current), ..task.status.clone().unwrap_or_default() };
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
            if condition::is_true(conditions, condition::BLOCKED) || !open.is_empty() {
                let why = condition::get(conditions, condition::BLOCKED).map(|c| c.message.clone()).unwrap_or_default();
                let detail = if open.is_empty() { why } else { format!("waiting for {}", open.join(", ")) };
                return Err(ApiError::conflict(format!(
                    "task {name} is blocked (condition Blocked=True: {detail}); it can go in_progress once its dependencies completed"
                )));
            }
        }
        after.state = Some(next);
        if next == TaskState::InProgress && current != TaskState::InProgress {
            after.started_at = Some(now.clone());
        }
        if next.is_terminal() && !current.is_terminal() {
            after.completed_at = Some(now.clone());
        }
    }
    if let Some(result) = result {
        after.result = Some(result);
    }
    // The conditions of the state it moves to, in the same write.
    let conditions = condition::for_task(&after, task.metadata.generation, &now);
    let status = json!({
        "state": after.state, "result": after.result, "startedAt": after.started_at, "completedAt": after.completed_at,
        "conditions": condition::only(&conditions, &[condition::COMPLETE, condition::FAILED]),
    });
    Ok(field_managers::status_apply::<TeamTask>(&name, task.resource_version().as_deref(), status))
}
