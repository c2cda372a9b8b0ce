//! The Member reconciler: what follows for a member from its pod and its team (rule 3): its
//! phase from the moment it was admitted (Active, Idle, Completed, Failed), the reason, message
//! and exit code, its conditions; refusing members of a missing or disbanded team (rule 5);
//! cancelling the members of a team that disbanded (rule 4, see `disbanded`); telling the lead
//! when a member ends (see `lead_notice`); removing pods that outlived their member's run.
//!
//! Names, slots and the admission itself (name, podName, startTime, Queued, Starting) are the
//! admission task's (see `admission`): until a member has its `podName`, this leaves it alone.
//! Every write here is one server-side apply under [`field_managers::MEMBER`] of the complete
//! set of fields this reconciler owns, conditional on the version judged.
//!
//! The steps: [`refusal`] (pure) → find the pod → [`observe`] (pure: what the pod and the team
//! say) → tell the lead of an end → [`write`] → remove a pod that must not run on.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::{info, instrument};

use super::context::Context;
use super::member_status::{self, Observed};
use super::{Error, Result, budget_phase, disbanded, lead_notice, plan_phase, pod, retry, shutdown_grace};
use crate::api::budget::BUDGET_EXCEEDED;
use crate::api::condition::{COMPLETE, FAILED, LEAD_NOTIFIED, READY, WAITING};
use crate::api::field_managers::{self, MEMBER};
use crate::api::{Member, MemberPhase, MemberStatus, Team, condition};
use crate::bus::TeamKey;
use crate::metrics::BudgetLabel;

/// The conditions this reconciler owns (the gateway owns Waiting).
const OWN_CONDITIONS: [&str; 4] = [READY, COMPLETE, FAILED, LEAD_NOTIFIED];

/// Reconciles one Member.
#[instrument(skip_all, fields(member = %member.name_any(), namespace = member.namespace().unwrap_or_default()))]
pub async fn reconcile(member: Arc<Member>, ctx: Arc<Context>) -> Result<Action> {
    let ns = member.namespace().ok_or_else(|| Error::Invalid("member without namespace".into()))?;
    if ctx.written_from.is_stale(member.as_ref()) {
        // This version was judged and written from already: the write's own event brings the
        // newer one. Judging it again would only make a conditional write that must fail.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let team = find_team(&ctx, &ns, &member.spec.team).await?;
    let current = member.phase();

    if !current.is_terminal()
        && let Some(refused) = refusal(&member, team.as_deref())
    {
        let note = refused.message.clone().unwrap_or_default();
        let reason = refused.reason.clone().unwrap_or_default();
        if write(&ctx, &member, refused, retry::failed_attempts(&member), None, now).await? {
            ctx.event(member.as_ref(), true, &reason, note).await;
        }
        return Ok(Action::await_change());
    }
    // Unnamed (the admission task names it), or its team is gone and it had finished.
    let (Some(team), Some(agent_name)) = (team, member.agent_name().map(str::to_owned)) else { return Ok(Action::await_change()) };
    let uid = member.metadata.uid.clone().unwrap_or_default();
    let status = member.status.clone().unwrap_or_default();
    let external = member.is_lead() && team.spec.lead.pod_name.is_some();
    let pod_name = match (&team.spec.lead.pod_name, member.is_lead()) {
        (Some(external), true) => external.clone(),
        _ => retry::current_pod_name(&member, &agent_name),
    };
    // Queued and not admitted yet, or waiting for its retry's pod: the admission's to write (its
    // wait, QuotaExceeded, the next pod), unless a disband cancels it.
    let admitted = status.pod_name.is_some() && !retry::awaits_pod(&member);
    if !admitted && !current.is_terminal() && !team.disband_recorded() {
        return Ok(Action::await_change());
    }
    // A member's pod is the one it controls; an external lead's, the pod that owns the Team by
    // uid. A pod of that name that is neither (created by someone else) is no pod of this member.
    let pod = find_pod(&ctx, &ns, &pod_name, status.pod_name.is_some()).await?.filter(|p| match external {
        true => p.metadata.uid.is_some() && team.lead_pod_uid() == p.metadata.uid.as_deref(),
        false => pod::controlled_by(p, &uid),
    });

    let (observed, failed, recheck) = observe(&member, &team, pod.as_ref(), &pod_name, now, &ctx.config);
    tracing::debug!(current = ?current, observed = ?observed.phase, pod = pod.is_some(), "member observed");
    // The lead is told before the end is written (see `lead_notice`): the notice is what the
    // lead waits on, and its idempotency key makes a repeat after a lost write harmless. That it
    // was told is recorded in the same write as the end.
    let told = tell_lead(&ctx, &team, &member, &agent_name, &observed).await?;
    let changed = record_told(&ctx, &member, observed.clone(), failed, told, now).await?;
    // A pod that must not run on is removed, so it frees its slot: its member ended without it
    // (a disband, a deadline, a phase written by hand), or was cancelled. After the status says
    // why, so a pod deleted here is not read as deleted from outside; a failure here retries.
    if observed.phase.is_terminal()
        && (changed || current.is_terminal())
        && let Some(p) = pod.as_ref().filter(|p| is_running(p))
    {
        delete_pod(&ctx, p, &uid).await?;
    }
    // A failure gets a Warning Event. The other transitions get none: the pod's own Events
    // (Scheduled, Started), status.startTime and completionTime tell them, the Team's Disbanded
    // Event sums them up, and in a fleet each Event is one more API write per member.
    if changed && observed.phase != current && observed.phase == MemberPhase::Failed {
        if observed.reason.as_deref() == Some(BUDGET_EXCEEDED) {
            let own = budget_phase::member_over(&member, &team, now).0.is_some();
            ctx.metrics.over_budget.get_or_create(&if own { BudgetLabel::MEMBER } else { BudgetLabel::TEAM }).inc();
        }
        let note = observed.message.clone().unwrap_or_else(|| format!("member {agent_name} failed"));
        ctx.event(member.as_ref(), true, observed.phase.as_str(), note).await;
    }
    // So does each failed attempt that is retried: the pod it failed in is named there.
    if changed && failed > retry::failed_attempts(&member) && observed.phase == MemberPhase::Queued {
        ctx.event(member.as_ref(), true, retry::BACK_OFF, observed.message.clone().unwrap_or_default()).await;
    }
    Ok(match recheck {
        Some(after) => Action::requeue(Duration::from_secs(after.as_secs().max(1).unsigned_abs())),
        None => Action::await_change(),
    })
}

/// Why a member that has not finished is refused (rule 5), as the Failed status it gets: its
/// team does not exist, does not have its agent type, disbanded before it was named, or spent
/// its budget before it was admitted.
pub fn refusal(member: &Member, team: Option<&Team>) -> Option<Observed> {
    let team_name = &member.spec.team;
    let ns = member.metadata.namespace.as_deref().unwrap_or_default();
    let Some(team) = team else {
        return Some(refused("TeamNotFound", format!("team {team_name} does not exist in namespace {ns}; create the Team first")));
    };
    if team.agent_type(&member.spec.agent).is_none() {
        return Some(refused("UnknownAgent", format!("agent type {} is not one of team {team_name}'s spec.agents", member.spec.agent)));
    }
    if team.is_disbanded() && member.agent_name().is_none() {
        return Some(refused("TeamDisbanded", format!("team {team_name} is disbanded; it takes no new members")));
    }
    budget_phase::refusal(member, team)
}

/// What the member's status should say, from its team and its pod: a finished member stays as
/// it is; a disband cancels it (see `disbanded`) unless it holds the member for its shutdown
/// grace (see `shutdown_grace`); else its pod says (gone: it failed), a budget that is over
/// failing it (see `budget_phase`), a plan under review reading AwaitingApproval (see
/// `plan_phase`), and a failure within its agent type's `backoffLimit` a retry (see `retry`;
/// never a spent budget). The second value is the member's `failedAttempts` from now on; the
/// third when to look again (a deadline that has not passed, the end of a grace or of a
/// wall-clock budget).
pub fn observe(
    member: &Member,
    team: &Team,
    pod: Option<&Pod>,
    pod_name: &str,
    now: Timestamp,
    config: &crate::config::ControllerConfig,
) -> (Observed, u32, Option<k8s_openapi::jiff::SignedDuration>) {
    let status = member.status.clone().unwrap_or_default();
    let current = member.phase();
    let failed = retry::failed_attempts(member);
    if current.is_terminal() {
        // Final: written again only if its conditions lag (a phase written by hand).
        return (Observed { phase: current, reason: status.reason, message: status.message, exit_code: status.exit_code }, failed, None);
    }
    let grace = match team.disband_recorded() {
        true => match shutdown_grace::holds(team, member, now) {
            None => return (disbanded::cancelled_member(team), failed, None),
            held => held,
        },
        false => None,
    };
    let waiting = condition::is_true(&status.conditions, WAITING);
    let (observed, recheck, spent) = match pod {
        Some(p) => {
            let (observed, recheck) = member_status::from_pod(p, waiting, now, config.deadlines);
            let (observed, spent) = budget_phase::apply(plan_phase::apply(observed, &status), member, team, now);
            (observed, recheck, spent)
        }
        None => (member_status::pod_gone(pod_name), None, None),
    };
    // A spent budget is not retried: the usage is the member's, a new pod would be over at once.
    let limit = if observed.reason.as_deref() == Some(BUDGET_EXCEEDED) { 0 } else { retry::limit(team, member) };
    let (observed, failed) = retry::judge(observed, failed, limit, config.retry_backoff);
    // A held member is looked at again when its grace ends, to be cancelled then; one with a
    // wall-clock budget when it runs out.
    (observed, failed, recheck.into_iter().chain(grace).chain(spent).min())
}

/// The team from the store, or from the API when the store has not seen it yet (a Team and its
/// Members applied together), so a member is never refused for a team that exists.
async fn find_team(ctx: &Context, ns: &str, name: &str) -> Result<Option<Arc<Team>>> {
    if let Some(t) = ctx.teams.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(t));
    }
    let api: Api<Team> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// The member's pod from the store; for a member admitted (it has a podName), a miss is
/// confirmed with the API before it counts as deleted (the store may not have seen a pod
/// created a moment ago).
async fn find_pod(ctx: &Context, ns: &str, name: &str, admitted: bool) -> Result<Option<Pod>> {
    if let Some(p) = ctx.pods.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(p.as_ref().clone()));
    }
    if !admitted {
        return Ok(None);
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?)
}

fn is_running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Deletes `p` if the Member of uid `member_uid` controls it (the operator deletes only pods it
/// created: never an external lead's), on the condition that it is still that pod (uid).
pub async fn delete_pod(ctx: &Context, p: &Pod, member_uid: &str) -> Result<()> {
    if !pod::controlled_by(p, member_uid) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let params = DeleteParams::background().preconditions(kube::api::Preconditions { uid: p.metadata.uid.clone(), resource_version: None });
    match api.delete(&p.name_any(), &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another pod of the same name (the uid precondition).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn refused(reason: &str, message: String) -> Observed {
    Observed { phase: MemberPhase::Failed, reason: Some(reason.into()), message: Some(message), exit_code: None }
}

/// The fields this reconciler owns, as `observed` makes them (on top of `conditions`, when
/// given), and whether they differ from what the member has.
fn owned_status(
    member: &Member,
    observed: Observed,
    failed: u32,
    conditions: Option<Vec<Condition>>,
    now: Timestamp,
) -> (MemberStatus, bool) {
    let old = member.status.clone().unwrap_or_default();
    let terminal = observed.phase.is_terminal();
    let failed_now = failed > retry::failed_attempts(member);
    let mut new = MemberStatus {
        failed_attempts: i32::try_from(failed).ok().filter(|n| *n > 0),
        last_failure_time: if failed_now { Some(Time(now)) } else { old.last_failure_time.clone() },
        phase: Some(observed.phase),
        reason: observed.reason,
        message: observed.message,
        exit_code: observed.exit_code,
        observed_generation: member.metadata.generation,
        completion_time: match (terminal, old.phase.is_some_and(MemberPhase::is_terminal)) {
            (true, true) => old.completion_time.clone(),
            (true, false) => Some(Time(now)),
            (false, _) => None,
        },
        conditions: conditions.unwrap_or_else(|| old.conditions.clone()),
        ..old.clone()
    };
    new.conditions = condition::for_member(&new, member.metadata.generation, &Time(now));
    (new.clone(), new != old)
}

/// Applies the status `observed` gives (with `conditions`, when given) when it differs from
/// the member's; whether it wrote. Conditional on the version judged: a reconcile that read a
/// Member older than the one stored (its own last write not in the cache yet) must not write
/// the same transition, and its Event, a second time. The newer version is reconciled next.
async fn write(
    ctx: &Context,
    member: &Member,
    observed: Observed,
    failed: u32,
    conditions: Option<Vec<Condition>>,
    now: Timestamp,
) -> Result<bool> {
    let (new, changed) = owned_status(member, observed, failed, conditions, now);
    if !changed {
        return Ok(false);
    }
    let status = json!({
        "phase": new.phase, "reason": new.reason, "message": new.message, "exitCode": new.exit_code,
        "completionTime": new.completion_time, "observedGeneration": new.observed_generation,
        "failedAttempts": new.failed_attempts, "lastFailureTime": new.last_failure_time,
        "conditions": condition::only(&new.conditions, &OWN_CONDITIONS),
    });
    let body = field_managers::status_apply::<Member>(&member.name_any(), member.resource_version().as_deref(), status);
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    match api.patch_status(&member.name_any(), &PatchParams::apply(MEMBER).force(), &Patch::Apply(&body)).await {
        Ok(_) => {
            ctx.written_from.record(member);
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("member changed since it was read; its newer version is reconciled next");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A notice of a member's end sent (or found undeliverable), to be recorded on the Member.
struct Told {
    /// The member's conditions with LeadNotified set.
    conditions: Vec<Condition>,
    /// Whether the lead's inbox got it (rather than the lead being gone).
    sent: bool,
    /// Which notice it was (the metric's label).
    label: crate::metrics::NoticeLabel,
}

/// Writes the observed status with what [`tell_lead`] did; whether it wrote. The notice is
/// counted here, where the conditional write makes it once per member, not where it was sent
/// (a resend after a lost write is deduplicated by the bus, not by the counter).
async fn record_told(ctx: &Context, member: &Member, observed: Observed, failed: u32, told: Option<Told>, now: Timestamp) -> Result<bool> {
    let sent = told.as_ref().filter(|t| t.sent).map(|t| t.label.clone());
    let changed = write(ctx, member, observed, failed, told.map(|t| t.conditions), now).await?;
    if changed && let Some(label) = sent {
        ctx.metrics.notices.get_or_create(&label).inc();
    }
    Ok(changed)
}

/// Writes the notice of the member's end (`[AGENT FAILURE] @<name> …`, `[DONE] @<name> …`, see
/// `lead_notice`) to the lead's inbox, at most once: the notice's idempotency key is the member's
/// uid, and the LeadNotified condition records that it was written. None when there is nothing
/// to do (no notice for this end, told before, the member is the lead, the team has no lead yet).
async fn tell_lead(ctx: &Context, team: &Team, member: &Member, agent_name: &str, end: &Observed) -> Result<Option<Told>> {
    let status = member.status.clone().unwrap_or_default();
    if condition::is_true(&status.conditions, LEAD_NOTIFIED) || member.is_lead() {
        return Ok(None);
    }
    let uid = member.metadata.uid.clone().unwrap_or_default();
    let Some(notice) = lead_notice::for_end(team, agent_name, &uid, member.phase(), end) else { return Ok(None) };
    let Some(lead) = team.status.as_ref().and_then(|s| s.lead_name.clone()) else { return Ok(None) };
    let ns = member.namespace().unwrap_or_default();
    let (sent, reason, message) = match ctx.bus.system_notice(&TeamKey::new(ns, team.name_any()), &lead, notice.body, notice.key).await {
        Ok(_) => {
            info!(member = agent_name, lead, notice = notice.label.notice, "told the lead how a member ended");
            (true, "NoticeSent", format!("told {lead}"))
        }
        // A lead that already finished has no inbox to tell; the failure stays on the Member.
        Err(e) if matches!(e.code(), "not_found" | "team_disbanded" | "recipient_finished" | "unknown_recipient") => {
            (false, "LeadGone", format!("{lead} can no longer be told: {e}"))
        }
        Err(e) => return Err(e.into()),
    };
    let mut conditions = status.conditions;
    condition::set(
        &mut conditions,
        condition::new(LEAD_NOTIFIED, true, reason, message, member.metadata.generation, Time(Timestamp::now())),
    );
    Ok(Some(Told { conditions, sent, label: notice.label }))
}

/// Text of the failure notice the lead reads; `released`: the team hands the member's pending
/// tasks back to the board (`spec.tasks.releaseOnOwnerFailure`).
pub fn failure_notice(agent_name: &str, failure: &Observed, released: bool) -> String {
    let reason = failure.reason.as_deref().unwrap_or("Failed");
    let mut body = format!("[AGENT FAILURE] @{agent_name} failed: {reason}");
    if let Some(code) = failure.exit_code {
        body.push_str(&format!(" (exit code {code})"));
    }
    if let Some(m) = &failure.message {
        body.push_str(&format!(". {m}"));
    }
    body.push_str(match released {
        true => ". Its in-progress tasks are marked failed; its pending tasks are back on the board, unowned.",
        false => ". Its pending and in-progress tasks are marked failed.",
    });
    body
}
