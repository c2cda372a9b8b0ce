//! The Team reconciler: keeps the lead's Member, projects the roster into Redis, counts members
//! and sums their usage into the status, records a budget that is over (see `budget_phase`),
//! and disbands the team when its lead finishes or the Team is deleted (rule 4;
//! a finalizer holds a deleted Team until its disband is done).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::context::Context;
use super::disband::{self, Progress};
use super::{Error, MANAGER, Result, budget_phase, team_status};
use crate::api::field_managers::TEAM;
use crate::api::{Member, MemberPhase, MemberRole, MemberSpec, Team, TeamPhase, TeamStatus, condition, labels};
use crate::bus::TeamKey;

/// Finalizer that holds a deleted Team until it is disbanded.
pub const FINALIZER: &str = "agentteams.dev/disband";

/// A Team's status is written at most this often when only its member counts changed: a fleet of
/// a thousand members changes them hundreds of times a second, and every write is an API call the
/// whole cluster pays for. Phase, lead and conditions are written at once.
const COUNTS_INTERVAL: Duration = Duration::from_secs(1);

/// A Team reconcile goes over all its members (roster, counts, usage): in a fleet it is woken
/// hundreds of times a second, and does that pass at most this often, the first at once (see
/// `pace`). So a member named is on the roster, and a change in the counts, within this long
/// plus one reconcile.
const PASS_INTERVAL: Duration = Duration::from_millis(100);

/// How often a disband that waits for its members and tasks looks again without a change (each
/// change of a member brings it back sooner).
const DISBAND_RECHECK: Duration = Duration::from_secs(5);

/// Reconciles one Team.
#[instrument(skip_all, fields(team = %team.name_any(), namespace = team.namespace().unwrap_or_default()))]
pub async fn reconcile(team: Arc<Team>, ctx: Arc<Context>) -> Result<Action> {
    let ns = team.namespace().ok_or_else(|| Error::Invalid("team without namespace".into()))?;
    let api: Api<Team> = Api::namespaced(ctx.client.clone(), &ns);
    // A deleted Team is held by the finalizer until its disband is done: only then does the
    // finalizer helper's cleanup run, which lets it go.
    if team.metadata.deletion_timestamp.is_some()
        && team.finalizers().iter().any(|f| f == FINALIZER)
        && disband::disband(&ctx, &team, "TeamDeleted", "the Team was deleted").await? == Progress::Waiting
    {
        return Ok(Action::requeue(DISBAND_RECHECK));
    }
    finalizer(&api, FINALIZER, team, |event| async {
        match event {
            Finalizer::Apply(team) => apply(&ctx, &team).await,
            Finalizer::Cleanup(team) => {
                delete_members(&ctx, &team).await?;
                ctx.counts_written.forget(team.as_ref());
                ctx.team_passes.forget(team.as_ref());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Deletes the Members of a deleted Team, found by `spec.team` (a Member created as a user does,
/// with no owner reference, is the team's all the same), in one call; their pods go with them
/// (the garbage collector follows each pod's controller reference to its Member). Runs once the
/// disband is done, so every member was Cancelled or had finished first.
async fn delete_members(ctx: &Context, team: &Team) -> Result<()> {
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &team.namespace().unwrap_or_default());
    let of_team = kube::api::ListParams::default().fields(&format!("spec.team={}", team.name_any()));
    api.delete_collection(&kube::api::DeleteParams::background(), &of_team).await?;
    Ok(())
}

/// Name of the lead's Member object.
pub fn lead_member_name(team: &str) -> String {
    format!("{team}-lead")
}

async fn apply(ctx: &Context, team: &Team) -> Result<Action> {
    if let Some(wait) = ctx.team_passes.delay(team, PASS_INTERVAL) {
        return Ok(Action::requeue(wait));
    }
    let ns = team.namespace().unwrap_or_default();
    let name = team.name_any();
    if team.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded) {
        // Idempotent: finishes a disband (the teardown waits for every member and task).
        return Ok(match disband::disband(ctx, team, "Disbanded", "the team is disbanded").await? {
            Progress::Waiting => Action::requeue(DISBAND_RECHECK),
            Progress::Done => Action::await_change(),
        });
    }
    ensure_lead(ctx, team).await?;

    let members = ctx.members_by_team.of(&ns, &name);
    let lead = members.iter().find(|m| m.is_lead());
    if let Some(lead) = lead.filter(|l| l.phase().is_terminal()) {
        let (reason, why) = match lead.phase() {
            MemberPhase::Completed => (condition::LEAD_COMPLETED, "the lead finished".to_owned()),
            p => (
                condition::LEAD_FAILED,
                format!("the lead ended {p:?}: {}", lead.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default()),
            ),
        };
        disband::disband(ctx, team, reason, &why).await?;
        return Ok(Action::requeue(DISBAND_RECHECK));
    }

    ctx.rosters.sync(&ctx.bus, &TeamKey::new(ns.clone(), name.clone()), &members).await?;

    let mut status = team_status::counts(&members);
    status.phase = Some(TeamPhase::Active);
    status.lead_name = lead.and_then(|l| l.agent_name().map(str::to_owned));
    status.observed_generation = team.metadata.generation;
    status.conditions = team.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let now = Timestamp::now();
    status.conditions = condition::for_team(&status, None, team.metadata.generation, &Time(now));
    // A budget over is a condition, written at once: it is what stops the members that go on
    // working and what the admission reads (see `budget_phase`).
    let (over, budget_recheck) = budget_phase::team_over(team, status.usage, now);
    budget_phase::team_condition(&mut status.conditions, team, over, &Time(now));
    let done = budget_recheck.map_or_else(Action::await_change, |after| Action::requeue(after.unsigned_abs()));
    if team.status.as_ref() == Some(&status) {
        return Ok(done);
    }
    if only_counts_differ(team.status.as_ref(), &status)
        && let Some(wait) = ctx.counts_written.delay(team, COUNTS_INTERVAL)
    {
        return Ok(Action::requeue(wait));
    }
    team_status::write(ctx, team, status).await?;
    Ok(done)
}

/// Whether `new` differs from `old` in member counts (and usage) alone.
fn only_counts_differ(old: Option<&TeamStatus>, new: &TeamStatus) -> bool {
    old.is_some_and(|old| {
        (&old.phase, &old.lead_name, &old.conditions, old.observed_generation)
            == (&new.phase, &new.lead_name, &new.conditions, new.observed_generation)
    })
}

/// Applies the lead's Member, owned by the Team.
async fn ensure_lead(ctx: &Context, team: &Team) -> Result<()> {
    let ns = team.namespace().unwrap_or_default();
    let name = team.name_any();
    let owner = team.controller_owner_ref(&()).ok_or_else(|| Error::Invalid("team without uid".into()))?;
    let mut lead = Member::new(
        &lead_member_name(&name),
        MemberSpec {
            team: name.clone(),
            agent: team.spec.lead.agent.clone(),
            role: MemberRole::Lead,
            prompt: team.spec.lead.prompt.clone().unwrap_or_default(),
            model: None,
            pod: None,
        },
    );
    lead.metadata = ObjectMeta {
        name: lead.metadata.name.clone(),
        namespace: Some(ns.clone()),
        owner_references: Some(vec![owner]),
        labels: Some([(labels::TEAM.to_owned(), name.clone()), (labels::MANAGED_BY.to_owned(), MANAGER.to_owned())].into()),
        ..Default::default()
    };
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = ctx.members.get(&kube::runtime::reflector::ObjectRef::new(&lead_member_name(&name)).within(&ns));
    if existing.is_some_and(|m| m.spec == lead.spec) {
        return Ok(());
    }
    api.patch(&lead_member_name(&name), &PatchParams::apply(TEAM).force(), &Patch::Apply(&lead)).await?;
    Ok(())
}
