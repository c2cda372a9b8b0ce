//! The Member reconciler: derives a member's phase from its pod (rule 3), refuses members of a
//! missing or disbanded team (rule 5), tells the lead when a member fails, and removes pods that
//! outlived their member's run. Names and slots are the admission task's (see `admission`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use super::context::Context;
use super::member_status::{self, Observed};
use super::{Error, Result, lead_notice, plan_phase, pod, shutdown_grace};
use crate::api::{Member, MemberPhase, MemberStatus, Team, condition};
use crate::bus::TeamKey;

/// Condition set once the lead was told of this member's failure.
const LEAD_NOTIFIED: &str = "LeadNotified";

/// Reconciles one Member.
#[instrument(skip_all, fields(member = %member.name_any(), namespace = member.namespace().unwrap_or_default()))]
pub async fn reconcile(member: Arc<Member>, ctx: Arc<Context>) -> Result<Action> {
    let ns = member.namespace().ok_or_else(|| Error::Invalid("member without namespace".into()))?;
    let now = Timestamp::now();
    let team = find_team(&ctx, &ns, &member.spec.team).await?;
    let current = member.phase();

    let Some(team) = team else {
        if !current.is_terminal() {
            let msg = format!("team {} does not exist in namespace {ns}; create the Team first", member.spec.team);
            patch_status(&ctx, &member, (refused("TeamNotFound", msg.clone()), None), None, now).await?;
            ctx.event(member.as_ref(), true, "TeamNotFound", msg).await;
        }
        return Ok(Action::await_change());
    };
    if team.agent_type(&member.spec.agent).is_none() && !current.is_terminal() {
        let msg = format!("agent type {} is not one of team {}'s spec.agents", member.spec.agent, member.spec.team);
        patch_status(&ctx, &member, (refused("UnknownAgent", msg.clone()), None), None, now).await?;
        ctx.event(member.as_ref(), true, "UnknownAgent", msg).await;
        return Ok(Action::await_change());
    }

    adopt(&ctx, &team, &member).await?;

    let Some(agent_name) = member.agent_name().map(str::to_owned) else {
        // Unnamed: the admission task names it; a status change brings us back.
        if team.is_disbanded() && !current.is_terminal() {
            let msg = format!("team {} is disbanded; it takes no new members", member.spec.team);
            patch_status(&ctx, &member, (refused("TeamDisbanded", msg), None), None, now).await?;
        }
        return Ok(Action::await_change());
    };
    let uid = member.metadata.uid.clone().unwrap_or_default();
    let external = member.is_lead() && team.spec.lead.pod_name.is_some();
    let pod_name = match (&team.spec.lead.pod_name, member.is_lead()) {
        (Some(external), true) => external.clone(),
        _ => pod::pod_name(&member.spec.team, &agent_name, &uid),
    };
    // A member's pod is the one it controls; an external lead's, the pod that owns the Team by
    // uid. A pod of that name that is neither (created by someone else) is no pod of this member.
    let pod = find_pod(&ctx, &ns, &pod_name, current).await?.filter(|p| match external {
        true => p.metadata.uid.is_some() && team.lead_pod_uid() == p.metadata.uid.as_deref(),
        false => pod::controlled_by(p, &uid),
    });

    if current.is_terminal() {
        // A pod that outlived its member (cancelled by a disband that raced an admission, or
        // failed past a deadline) is removed so it cannot hold a slot or keep working.
        if let Some(p) = pod.as_ref().filter(|p| is_running(p)) {
            delete_pod(&ctx, p, &uid).await?;
        }
        // The status as it is, written again only if its conditions lag (a phase written by
        // hand, or by a version before conditions).
        let status = member.status.clone().unwrap_or_default();
        let observed = Observed { phase: current, reason: status.reason, message: status.message, exit_code: status.exit_code };
        // A Failed member's lead was not known, or the write of the failure lost a race: tell it now.
        let told = tell_lead(&ctx, &team, &member, &agent_name, &observed).await?;
        record_told(&ctx, &member, (observed, None), told, now).await?;
        return Ok(Action::await_change());
    }

    // A member held for its shutdown grace goes on as its pod says (see `shutdown_grace`).
    if team.is_disbanded() && shutdown_grace::holds(&team, &member, now).is_none() {
        // The team's disband cancels its members; this covers a member the disband missed.
        let observed = Observed {
            phase: MemberPhase::Cancelled,
            reason: Some("TeamDisbanded".into()),
            message: Some(format!("team {} disbanded", member.spec.team)),
            exit_code: None,
        };
        if let Some(p) = &pod {
            delete_pod(&ctx, p, &uid).await?;
        }
        patch_status(&ctx, &member, with_pod(observed, &pod_name), None, now).await?;
        return Ok(Action::await_change());
    }

    let idle = current == MemberPhase::Idle;
    let status = member.status.clone().unwrap_or_default();
    let (observed, recheck) = match &pod {
        Some(p) => {
            let (observed, recheck) = member_status::from_pod(p, idle, now, ctx.config.deadlines);
            (plan_phase::apply(observed, &status), recheck)
        }
        // Queued: why it waits (QuotaExceeded) is admission's to say, kept as it is.
        None if current == MemberPhase::Queued => {
            let s = member.status.clone().unwrap_or_default();
            (Observed { phase: MemberPhase::Queued, reason: s.reason, message: s.message, exit_code: None }, None)
        }
        None => (member_status::pod_gone(&pod_name), None),
    };

    tracing::debug!(current = ?current, observed = ?observed.phase, pod = pod.is_some(), "member observed");
    // The lead is told before the end is written (see `lead_notice`): the notice is what the
    // lead waits on, and its idempotency key makes a repeat after a lost write harmless. That it
    // was told is recorded in the same write as the end.
    let told = tell_lead(&ctx, &team, &member, &agent_name, &observed).await?;
    let changed = record_told(&ctx, &member, with_pod(observed.clone(), if pod.is_some() { &pod_name } else { "" }), told, now).await?;
    // A member failed while its pod has not ended (unschedulable, or not started, past its
    // deadline): the pod is removed, so it frees its slot. After the status says why, so a pod
    // deleted here is not read as deleted from outside. A failure here retries through the
    // terminal branch above.
    if changed
        && observed.phase == MemberPhase::Failed
        && let Some(p) = pod.as_ref().filter(|p| is_running(p))
    {
        delete_pod(&ctx, p, &uid).await?;
    }
    // Completed and Failed get an Event. Starting and Active get none: the pod's own Events
    // (Scheduled, Started) and status.startTime tell that, and in a fleet each Event is one more
    // API write per member.
    if changed && observed.phase != current && observed.phase.is_terminal() {
        let warning = observed.phase == MemberPhase::Failed;
        let note = observed.message.clone().unwrap_or_else(|| format!("member {agent_name} is {:?}", observed.phase));
        ctx.event(member.as_ref(), warning, observed.phase.as_str(), note).await;
    }
    Ok(match (observed.phase, recheck) {
        (_, Some(after)) => Action::requeue(Duration::from_secs(after.as_secs().max(1).unsigned_abs())),
        _ => Action::await_change(),
    })
}

/// Makes the Team the member's controlling owner, so deleting the Team garbage-collects its
/// Members (and, through them, their pods).
async fn adopt(ctx: &Context, team: &Team, member: &Member) -> Result<()> {
    let Some(owner) = team.controller_owner_ref(&()) else { return Ok(()) };
    if member.owner_references().iter().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "agentteams.dev/v1alpha1",
        "kind": "Member",
        "metadata": { "name": member.name_any(), "ownerReferences": [owner] },
    });
    api.patch(&member.name_any(), &PatchParams::apply(super::MANAGER), &Patch::Apply(&patch)).await?;
    Ok(())
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

/// The member's pod from the store; for a member that had one, a miss is confirmed with the API
/// before it counts as deleted (the store may not have seen a pod created a moment ago).
async fn find_pod(ctx: &Context, ns: &str, name: &str, phase: MemberPhase) -> Result<Option<Pod>> {
    if let Some(p) = ctx.pods.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(p.as_ref().clone()));
    }
    if phase == MemberPhase::Queued {
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

fn with_pod(o: Observed, pod_name: &str) -> (Observed, Option<String>) {
    (o, (!pod_name.is_empty()).then(|| pod_name.to_owned()))
}

/// Writes the pod-derived fields of the status, with the conditions they give (on top of
/// `conditions`, when given), when they differ; returns whether it wrote.
async fn patch_status(
    ctx: &Context,
    member: &Member,
    (observed, pod_name): (Observed, Option<String>),
    conditions: Option<Vec<Condition>>,
    now: Timestamp,
) -> Result<bool> {
    let old = member.status.clone().unwrap_or_default();
    let mut new = MemberStatus {
        phase: Some(observed.phase),
        pod_name: pod_name.or_else(|| old.pod_name.clone()),
        reason: observed.reason,
        message: observed.message,
        exit_code: observed.exit_code,
        observed_generation: member.metadata.generation,
        conditions: conditions.unwrap_or_else(|| old.conditions.clone()),
        ..old.clone()
    };
    if old.phase != Some(observed.phase) {
        if matches!(observed.phase, MemberPhase::Starting | MemberPhase::Active) && old.start_time.is_none() {
            new.start_time = Some(Time(now));
        }
        if observed.phase.is_terminal() {
            new.completion_time = Some(Time(now));
        }
    }
    new.conditions = condition::for_member(&new, member.metadata.generation, &Time(now));
    if new == old {
        return Ok(false);
    }
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    // A merge patch of the fields this reconciler owns; status.name belongs to the admission task.
    // It is conditional on the version judged: a reconcile that read a Member older than the one
    // stored (its own last write not in the cache yet) must not write the same transition, and
    // its Event, a second time. The newer version triggers another reconcile anyway.
    let patch = json!({
        "metadata": { "resourceVersion": member.resource_version() },
        "status": {
            "phase": new.phase, "podName": new.pod_name, "reason": new.reason, "message": new.message,
            "exitCode": new.exit_code, "startTime": new.start_time, "completionTime": new.completion_time,
            "observedGeneration": new.observed_generation, "conditions": new.conditions,
        },
    });
    match api.patch_status(&member.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
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
async fn record_told(
    ctx: &Context,
    member: &Member,
    observed: (Observed, Option<String>),
    told: Option<Told>,
    now: Timestamp,
) -> Result<bool> {
    let sent = told.as_ref().filter(|t| t.sent).map(|t| t.label.clone());
    let changed = patch_status(ctx, member, observed, told.map(|t| t.conditions), now).await?;
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
