//! What callers see of each kind: the JSON views the tools answer with.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::{Member, Team, TeamTask, condition};

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
        "priority": t.spec.priority,
        "budget": t.spec.budget,
        "counts": { "queued": s.queued, "starting": s.starting, "active": s.active, "completed": s.completed, "failed": s.failed, "cancelled": s.cancelled },
        "usage": s.usage,
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
        "role": m.spec.role.as_str(),
        "phase": format!("{:?}", m.phase()),
        "pod": s.pod_name,
        "reason": s.reason,
        "message": s.message,
        "exit_code": s.exit_code,
        "usage": s.usage,
    })
}

/// What callers see of a TeamTask.
pub fn task_view(t: &TeamTask) -> Value {
    let s = t.status.clone().unwrap_or_default();
    let blocked = condition::is_true(&s.conditions, condition::BLOCKED);
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
