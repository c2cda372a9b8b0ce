//! A Team's status: its member counts (pure) and the one write of it. Both the Team reconciler
//! and its disband compute a status; this is where either writes it, under the Team's field
//! manager, so the two are one writer.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::Result;
use super::context::Context;
use crate::api::field_managers::{self, TEAM};
use crate::api::{Member, MemberPhase, Team, TeamStatus, Usage};

/// Member counts per phase (the lead not counted), and the usage of all members (the lead
/// included: a team's budget is the whole team's), once any reported some.
pub fn counts(members: &[Arc<Member>]) -> TeamStatus {
    let mut s = TeamStatus { usage: members.iter().filter_map(|m| m.status.as_ref()?.usage).reduce(Usage::plus), ..Default::default() };
    for m in members.iter().filter(|m| !m.is_lead()) {
        match m.phase() {
            MemberPhase::Queued => s.queued += 1,
            MemberPhase::Starting => s.starting += 1,
            MemberPhase::Active | MemberPhase::Idle | MemberPhase::AwaitingApproval => s.active += 1,
            MemberPhase::Completed => s.completed += 1,
            MemberPhase::Failed => s.failed += 1,
            MemberPhase::Cancelled => s.cancelled += 1,
        }
    }
    s
}

/// Applies `status` when it differs from what the Team has; whether it wrote.
pub async fn write(ctx: &Context, team: &Team, status: TeamStatus) -> Result<bool> {
    if team.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<Team> = Api::namespaced(ctx.client.clone(), &team.namespace().unwrap_or_default());
    let body = field_managers::status_apply::<Team>(&team.name_any(), None, serde_json::to_value(&status).unwrap_or_default());
    api.patch_status(&team.name_any(), &PatchParams::apply(TEAM).force(), &Patch::Apply(&body)).await?;
    Ok(true)
}
