//! Disbanding a team (rule 4), as the Team reconciler does it: the waiting members are woken
//! with a notice, sends are refused from then on, and the Team's status says Disbanded, with
//! why. That status is what the Member and TeamTask reconcilers act on (they watch Teams): they
//! cancel the members and fail the open tasks (the rule is `disbanded`'s). Once every member
//! has finished and every task is final, the team's Redis keys are removed (its transcript
//! kept for `spec.retention` under the Team's uid). Every step is
//! idempotent, so a disband interrupted by a restart is finished by the next reconcile.
//!
//! Members whose pods run are first asked to stop (`[SHUTDOWN REQUEST]`) instead of told of the
//! disband, and held for the Team's `spec.shutdownGraceSeconds` (the rule is `shutdown_grace`'s):
//! they may save their work and end by themselves. Their tasks and the Redis keys wait with them.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::info;

use super::context::Context;
use super::{Result, shutdown_grace, team_status};
use crate::api::{Member, Team, TeamPhase, condition};
use crate::bus::{OPERATOR_SENDER, TeamKey};
use crate::gateway::tools::shutdown::request_notice;

/// Where a disband stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Members or tasks are still open: the Member and TeamTask reconcilers are on it, and each
    /// change of a member brings the Team back.
    Waiting,
    /// Everything is final and the Redis keys are gone.
    Done,
}

/// Disbands `t`; `reason` is a CamelCase cause (TeamDeleted, LeadCompleted, LeadFailed).
pub async fn disband(ctx: &Context, t: &Team, reason: &str, why: &str) -> Result<Progress> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let key = TeamKey::new(ns.clone(), name.clone());
    let members = ctx.members_by_team.of(&ns, &name);
    let now_ts = Timestamp::now();
    let (held, open): (Vec<&Arc<Member>>, Vec<&Arc<Member>>) =
        members.iter().filter(|m| !m.phase().is_terminal()).partition(|m| shutdown_grace::holds(t, m, now_ts).is_some());
    let old = t.status.clone().unwrap_or_default();
    let already = old.phase == Some(TeamPhase::Disbanded);

    if !already {
        // Wake waiting members first, while their inboxes still exist; then no more sends. The
        // held ones get the request to stop (the key is the disband notice's, so a member gets
        // one or the other), the rest the disband.
        let disbanded = format!("[TEAM DISBANDED] team {name} disbanded: {why}. Stop working and exit.");
        let asked = request_notice(
            OPERATOR_SENDER,
            &format!("team {name} disbanded: {why}; your pod is deleted {}s after the disband", t.spec.shutdown_grace_seconds),
        );
        // The roster first: a member admitted within the Team reconcile's debounce is in the
        // store but not yet in Redis, and a notice to a name off the roster is refused.
        ctx.rosters.sync(&ctx.bus, &key, &members).await?;
        let uid = t.metadata.uid.clone().unwrap_or_default();
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
        ctx.bus.mark_disbanded(&key).await?;
    }

    // Counts with the members being cancelled counted cancelled: the status the disband ends at
    // (a held member that runs stays active until it ends or its grace passes).
    let mut status = team_status::counts(&members);
    let held_active = team_status::counts(&held.iter().map(|m| Arc::clone(m)).collect::<Vec<_>>()).active;
    status.cancelled += status.queued + status.starting + status.active - held_active;
    (status.queued, status.starting, status.active) = (0, 0, held_active);
    status.phase = Some(TeamPhase::Disbanded);
    status.lead_name = old.lead_name.clone();
    status.observed_generation = t.metadata.generation;
    status.conditions = old.conditions.clone();
    // A team disbanded before keeps the cause it recorded then.
    let now = Time(Timestamp::now());
    status.conditions = condition::for_team(&status, (!already).then_some((reason, why)), t.metadata.generation, &now);
    team_status::write(ctx, t, status.clone()).await?;
    if !already {
        info!(team = name, reason, "team disbanded");
        let mut summary =
            format!("team disbanded: {why}; {} completed, {} failed, {} cancelled", status.completed, status.failed, status.cancelled);
        if !held.is_empty() {
            summary += &format!(", {} asked to stop within {}s", held.len(), t.spec.shutdown_grace_seconds);
        }
        ctx.event(t, false, "Disbanded", summary).await;
    }

    let tasks_open = ctx.tasks_by_team.of(&ns, &name).iter().any(|task| !task.state().is_terminal());
    if !held.is_empty() || !open.is_empty() || tasks_open {
        return Ok(Progress::Waiting);
    }
    // The transcript stays readable for spec.retention under the uid (the schema validated it).
    let uid = t.metadata.uid.clone().unwrap_or_default();
    let retention = t.retention().unwrap_or_else(|e| {
        tracing::warn!(team = name, error = %e, "keeping the transcript for the default retention");
        crate::api::team::DEFAULT_RETENTION
    });
    ctx.bus.teardown_retaining(&key, &uid, retention).await?;
    ctx.rosters.forget(&key);
    Ok(Progress::Done)
}
