//! The TeamTask reconciler: keeps a task Blocked while its dependencies are open, fails it when a
//! dependency fails, when its owner fails (rule 3) or when its team is missing or disbanded
//! (rules 4 and 5; a disband's failure is `disbanded`'s rule, and waits while the disband holds
//! members for their shutdown grace). Agents move tasks forward through
//! the gateway under their own field manager; this reconciler applies, under
//! [`field_managers::TASK`], the Blocked condition and the failures it derives (state failed,
//! reason, result, completedAt with their conditions), never a state an agent set.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::instrument;

use super::context::Context;
use super::{Error, Result, disbanded, shutdown_grace};
use crate::api::condition::{BLOCKED, COMPLETE, FAILED};
use crate::api::field_managers::{self, TASK};
use crate::api::{MemberPhase, TaskState, Team, TeamTask, TeamTaskStatus, condition};

/// What the task's status should become, from its team, owner and dependencies.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Fail the task with a reason and message.
    Fail(&'static str, String),
    /// Leave the state; Blocked is true with this message, or false.
    Blocked(Option<String>),
    /// Put the task back on the board unowned (its owner is gone; the team says so), with why.
    Release(String),
    /// Leave it as it is and look again after this long: its team's disband holds running
    /// members for their shutdown grace (see `shutdown_grace`), and they may still record results.
    Wait(Duration),
}

/// Decides a task's fate. `dep_state(name)` is the state of a dependency (None when missing);
/// `owner_phase` the phase of its owner (None when unowned or unknown).
pub fn judge(
    task: &TeamTask,
    team: Option<&Team>,
    owner_phase: Option<(MemberPhase, String)>,
    dep_state: impl Fn(&str) -> Option<TaskState>,
) -> Verdict {
    let team_name = &task.spec.team;
    let Some(team) = team else { return Verdict::Fail("TeamNotFound", format!("team {team_name} does not exist")) };
    if team.disband_recorded() {
        let (reason, message) = disbanded::failed_task(team);
        return Verdict::Fail(reason, message);
    }
    if let Some((phase, why)) = owner_phase.filter(|(p, _)| matches!(p, MemberPhase::Failed | MemberPhase::Cancelled)) {
        let owner = task.spec.owner.clone().unwrap_or_default();
        let message = format!("owner {owner} is {phase:?}: {why}");
        // Work not started is handed back when the team says so; work under way fails.
        if team.spec.tasks.release_on_owner_failure && task.state() == TaskState::Pending {
            return Verdict::Release(format!("{message}; the task is back on the board, unowned"));
        }
        return Verdict::Fail("OwnerFailed", message);
    }
    let mut waiting = Vec::new();
    for dep in &task.spec.depends_on {
        match dep_state(dep) {
            Some(TaskState::Failed) => return Verdict::Fail("DependencyFailed", format!("dependency {dep} failed")),
            Some(TaskState::Completed) => {}
            Some(_) => waiting.push(dep.clone()),
            None => waiting.push(format!("{dep} (not found)")),
        }
    }
    Verdict::Blocked((!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join(", "))))
}

/// Reconciles one TeamTask.
#[instrument(skip_all, fields(task = %task.name_any(), namespace = task.namespace().unwrap_or_default()))]
pub async fn reconcile(task: Arc<TeamTask>, ctx: Arc<Context>) -> Result<Action> {
    let ns = task.namespace().ok_or_else(|| Error::Invalid("task without namespace".into()))?;
    let state = task.state();
    // A final task is judged no more; only its conditions are brought in line when they lag (a
    // state written by hand, or by a version before conditions).
    let verdict = match state.is_terminal() {
        true => None,
        false => Some(judge_now(&ctx, &task, &ns).await?),
    };
    match verdict {
        Some(Verdict::Release(why)) => return release(&ctx, &task, &ns, why).await,
        Some(Verdict::Wait(after)) => return Ok(Action::requeue(after)),
        _ => {}
    }

    let old = task.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let mut new = TeamTaskStatus { state: Some(state), observed_generation: task.metadata.generation, ..old.clone() };
    match &verdict {
        Some(Verdict::Fail(reason, message)) => {
            new.state = Some(TaskState::Failed);
            new.reason = Some((*reason).to_owned());
            new.result = Some(message.clone());
            new.completed_at = Some(now.clone());
        }
        Some(Verdict::Blocked(waiting)) => {
            let (blocked, reason, msg) = match waiting {
                Some(w) => (true, "DependenciesOpen", w.clone()),
                None => (false, "DependenciesDone", "all dependencies completed".to_owned()),
            };
            condition::set(
                &mut new.conditions,
                condition::new(condition::BLOCKED, blocked, reason, msg, task.metadata.generation, now.clone()),
            );
        }
        Some(Verdict::Release(_) | Verdict::Wait(_)) | None => {}
    }
    new.conditions = condition::for_task(&new, task.metadata.generation, &now);
    if new == old {
        return Ok(Action::await_change());
    }
    // The fields this reconciler owns, all of them in every apply (a field left out would be
    // dropped): Blocked; the state while it is pending (kubectl shows it from the start), or
    // once this fails it; and a final task's state and cause as they are, when its conditions
    // lag. Agents' states (in_progress, completed) are theirs alone.
    let failing = matches!(verdict, Some(Verdict::Fail(..)));
    let mut patch = json!({
        "conditions": condition::only(&new.conditions, &[BLOCKED, COMPLETE, FAILED]),
        "observedGeneration": new.observed_generation,
    });
    if failing || state.is_terminal() {
        patch["state"] = json!(new.state);
        patch["reason"] = json!(new.reason);
        patch["result"] = json!(new.result);
        patch["completedAt"] = json!(new.completed_at);
    } else if state == TaskState::Pending {
        patch["state"] = json!(new.state);
    }
    // Conditional on the version judged, so that a stale cache can neither undo a move the
    // gateway made meanwhile nor put the conditions of an older state over a newer one; the
    // newer version is reconciled next.
    let body = field_managers::status_apply::<TeamTask>(&task.name_any(), task.resource_version().as_deref(), patch);
    let api: Api<TeamTask> = Api::namespaced(ctx.client.clone(), &ns);
    match api.patch_status(&task.name_any(), &PatchParams::apply(TASK).force(), &Patch::Apply(&body)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("task changed since it was read; its newer version is reconciled next");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(Verdict::Fail(reason, message)) = verdict {
        ctx.event(task.as_ref(), true, reason, message).await;
    }
    Ok(Action::await_change())
}

/// Clears the owner of `task`, conditional on the version judged (an owner set meanwhile, by a
/// claim, stays); the spec change brings the task back for its status.
async fn release(ctx: &Context, task: &TeamTask, ns: &str, why: String) -> Result<Action> {
    let api: Api<TeamTask> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({ "metadata": { "resourceVersion": task.resource_version() }, "spec": { "owner": null } });
    let params = PatchParams { field_manager: Some(TASK.into()), ..Default::default() };
    match api.patch(&task.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => ctx.event(task, false, "OwnerReleased", why).await,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("task changed since it was read; its newer version is reconciled next")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// [`judge`] on what the stores (or, for a team not seen yet, the API) hold now.
async fn judge_now(ctx: &Context, task: &TeamTask, ns: &str) -> Result<Verdict> {
    let team = match ctx.teams.get(&ObjectRef::new(&task.spec.team).within(ns)) {
        Some(t) => Some(t),
        None => Api::<Team>::namespaced(ctx.client.clone(), ns).get_opt(&task.spec.team).await?.map(Arc::new),
    };
    // A disband fails the open tasks only once it holds no member for its shutdown grace.
    if let Some(team) = team.as_deref().filter(|t| t.disband_recorded()) {
        let now = Timestamp::now();
        let held = ctx.members_by_team.of(ns, &task.spec.team).iter().filter_map(|m| shutdown_grace::holds(team, m, now)).min();
        if let Some(left) = held {
            return Ok(Verdict::Wait(Duration::from_secs(left.as_secs().max(1).unsigned_abs())));
        }
    }
    let owner_phase = task.spec.owner.as_ref().and_then(|owner| {
        ctx.members_by_team
            .of(ns, &task.spec.team)
            .into_iter()
            .find(|m| m.agent_name() == Some(owner.as_str()))
            .map(|m| (m.phase(), m.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_default()))
    });
    let dep_state =
        |name: &str| ctx.tasks.get(&ObjectRef::new(name).within(ns)).filter(|d| d.spec.team == task.spec.team).map(|d| d.state());
    Ok(judge(task, team.as_deref(), owner_phase, dep_state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TeamTaskSpec;
    use crate::controller::fixtures::team;

    fn task(deps: &[&str], owner: Option<&str>) -> TeamTask {
        TeamTask::new(
            "t",
            TeamTaskSpec {
                team: "review".into(),
                subject: "s".into(),
                description: String::new(),
                owner: owner.map(str::to_owned),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                metadata: Default::default(),
            },
        )
    }

    #[test]
    fn missing_team_fails() {
        assert!(matches!(judge(&task(&[], None), None, None, |_| None), Verdict::Fail("TeamNotFound", _)));
    }

    #[test]
    fn open_dependencies_block_and_failed_ones_fail() {
        let t = team("review", 3);
        let v = judge(&task(&["a", "b"], None), Some(&t), None, |d| {
            if d == "a" { Some(TaskState::Completed) } else { Some(TaskState::InProgress) }
        });
        assert_eq!(v, Verdict::Blocked(Some("waiting for b".into())));
        let v = judge(&task(&["a"], None), Some(&t), None, |_| Some(TaskState::Failed));
        assert!(matches!(v, Verdict::Fail("DependencyFailed", _)));
        assert_eq!(judge(&task(&["a"], None), Some(&t), None, |_| Some(TaskState::Completed)), Verdict::Blocked(None));
    }

    #[test]
    fn failed_owner_fails_the_task() {
        let t = team("review", 3);
        let v = judge(&task(&[], Some("general-2")), Some(&t), Some((MemberPhase::Failed, "OOMKilled".into())), |_| None);
        assert!(matches!(v, Verdict::Fail("OwnerFailed", m) if m.contains("OOMKilled")));
    }

    #[test]
    fn a_team_that_releases_hands_back_pending_tasks_and_fails_started_ones() {
        let mut t = team("review", 3);
        t.spec.tasks.release_on_owner_failure = true;
        let gone = || Some((MemberPhase::Failed, "OOMKilled".into()));
        let pending = task(&[], Some("general-2"));
        assert!(matches!(judge(&pending, Some(&t), gone(), |_| None), Verdict::Release(m) if m.contains("OOMKilled")));
        let mut started = task(&[], Some("general-2"));
        started.status = Some(TeamTaskStatus { state: Some(TaskState::InProgress), ..Default::default() });
        assert!(matches!(judge(&started, Some(&t), gone(), |_| None), Verdict::Fail("OwnerFailed", _)));
        let running = Some((MemberPhase::Active, String::new()));
        assert_eq!(judge(&pending, Some(&t), running, |_| None), Verdict::Blocked(None));
    }
}
