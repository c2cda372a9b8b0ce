//! Disbanding a team (rule 4): waiting members are woken with a notice, active and queued members
//! are cancelled and their pods deleted, open tasks fail, the team's Redis keys are removed, and
//! the Team's status says Disbanded. Every step is idempotent, so a disband interrupted by a
//! restart is finished by the next reconcile.
//!
//! Members whose pods run are first asked to stop (`[SHUTDOWN REQUEST]`) and held for the
//! Team's `spec.shutdownGraceSeconds` (the rule is `shutdown_grace`'s): they may save their work
//! and end by themselves. Their tasks and the Redis keys wait with them; the disband looks again
//! when the grace ends, and each member's end brings it back sooner.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::info;

use super::context::Context;
use super::error::ignore_not_found;
use super::{Result, pod, shutdown_grace, team};
use crate::api::{Member, MemberPhase, MemberStatus, TaskState, Team, TeamPhase, TeamTask, TeamTaskStatus, condition};
use crate::bus::{OPERATOR_SENDER, TeamKey};
use crate::gateway::tools::shutdown::request_notice;

/// Members of a team, from the store.
pub fn members_of(ctx: &Context, ns: &str, team: &str) -> Vec<Arc<Member>> {
    ctx.members.state_filter(|m| m.spec.team == team && m.namespace().as_deref() == Some(ns))
}

/// Tasks of a team, from the store.
pub fn tasks_of(ctx: &Context, ns: &str, team: &str) -> Vec<Arc<TeamTask>> {
    ctx.tasks.state_filter(|t| t.spec.team == team && t.namespace().as_deref() == Some(ns))
}

/// Disbands `team`; `reason` is a CamelCase cause (TeamDeleted, LeadCompleted, LeadFailed).
/// Returns when to look again while running members are held for their shutdown grace; None
/// once it is done.
pub async fn disband(ctx: &Context, t: &Team, reason: &str, why: &str) -> Result<Option<Duration>> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let key = TeamKey::new(ns.clone(), name.clone());
    let members = members_of(ctx, &ns, &name);
    let now_ts = Timestamp::now();
    let (held, open): (Vec<&Arc<Member>>, Vec<&Arc<Member>>) =
        members.iter().filter(|m| !m.phase().is_terminal()).partition(|m| shutdown_grace::holds(t, m, now_ts).is_some());
    let recheck = held.iter().filter_map(|m| shutdown_grace::holds(t, m, now_ts)).min();
    let uid = t.metadata.uid.clone().unwrap_or_default();

    // Wake waiting members first, while their inboxes still exist: the held ones with the
    // request to stop (the key is the disband notice's, so they get one or the other), the rest
    // with the disband.
    let disbanded = format!("[TEAM DISBANDED] team {name} disbanded: {why}. Stop working and exit.");
    let asked = request_notice(
        OPERATOR_SENDER,
        &format!("team {name} disbanded: {why}; your pod is deleted {}s after the disband", t.spec.shutdown_grace_seconds),
    );
    let notices = held.iter().map(|m| (m, &asked)).chain(open.iter().map(|m| (m, &disbanded)));
    for (m, notice) in notices {
        let Some(agent_name) = m.agent_name() else { continue };
        match ctx.bus.system_notice(&key, agent_name, notice.clone(), format!("disband-{uid}-{agent_name}")).await {
            Ok(true) => {
                ctx.metrics.notices.get_or_create(&crate::metrics::NoticeLabel::TEAM_DISBANDED).inc();
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, member = agent_name, "disband notice not delivered"),
        }
    }

    let members_api: Api<Member> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Time(Timestamp::now());
    for m in &open {
        // Cancelled first, then the pod goes: the other order would let the member reconciler see
        // a vanished pod and call it a failure.
        let cancelled = MemberStatus {
            phase: Some(MemberPhase::Cancelled),
            reason: Some("TeamDisbanded".into()),
            message: Some(format!("team {name} disbanded: {why}")),
            completion_time: Some(now.clone()),
            ..m.status.clone().unwrap_or_default()
        };
        let patch = json!({ "status": {
            "phase": cancelled.phase, "reason": cancelled.reason, "message": cancelled.message,
            "completionTime": cancelled.completion_time,
            "conditions": condition::for_member(&cancelled, m.metadata.generation, &now),
        }});
        ignore_not_found(members_api.patch_status(&m.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()))?;
        // Only the pods the member controls: an external lead's pod is not the operator's.
        if let (Some(agent_name), Some(uid)) = (m.agent_name(), m.metadata.uid.as_deref())
            && let Some(p) = ctx.pods.get(&ObjectRef::new(&pod::pod_name(&name, agent_name, uid)).within(&ns))
        {
            super::member::delete_pod(ctx, &p, uid).await?;
        }
    }

    // Tasks stay open while members are held: they may record their results.
    let tasks_api: Api<TeamTask> = Api::namespaced(ctx.client.clone(), &ns);
    let open_tasks = if held.is_empty() { tasks_of(ctx, &ns, &name) } else { Vec::new() };
    for task in open_tasks.iter().filter(|t| !t.state().is_terminal()) {
        let failed = TeamTaskStatus {
            state: Some(TaskState::Failed),
            reason: Some("TeamDisbanded".into()),
            completed_at: Some(now.clone()),
            ..task.status.clone().unwrap_or_default()
        };
        let conditions = condition::for_task(&failed, task.metadata.generation, &now);
        let patch = json!({ "status": { "state": failed.state, "reason": failed.reason, "completedAt": now, "conditions": conditions } });
        ignore_not_found(tasks_api.patch_status(&task.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()))?;
    }

    ctx.bus.mark_disbanded(&key).await?;
    if held.is_empty() {
        ctx.bus.teardown(&key).await?;
    }

    let old = t.status.clone().unwrap_or_default();
    let already = old.phase == Some(TeamPhase::Disbanded);
    // Counts as they are now, with the members cancelled above counted cancelled.
    let mut status = team::counts(&members);
    let held_counts = team::counts(&held.iter().map(|m| Arc::clone(m)).collect::<Vec<_>>());
    status.cancelled += status.queued + status.starting + status.active - held_counts.active;
    status.queued = 0;
    status.starting = 0;
    status.active = held_counts.active;
    status.phase = Some(TeamPhase::Disbanded);
    status.lead_name = old.lead_name.clone();
    status.observed_generation = t.metadata.generation;
    status.conditions = old.conditions.clone();
    // A team disbanded before keeps the cause it recorded then.
    status.conditions = condition::for_team(&status, (!already).then_some((reason, why)), t.metadata.generation, &now);
    team::write_status(ctx, t, status).await?;
    if !already {
        info!(team = name, reason, "team disbanded");
        let note = match held.len() {
            0 => format!("team disbanded: {why}; {} members cancelled", open.len()),
            n => format!(
                "team disbanded: {why}; {} members cancelled, {n} asked to stop within {}s",
                open.len(),
                t.spec.shutdown_grace_seconds
            ),
        };
        ctx.event(t, false, "Disbanded", note).await;
    }
    Ok(recheck.map(|left| Duration::from_secs(left.as_secs().max(1).unsigned_abs())))
}
