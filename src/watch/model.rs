//! What `teamctl watch` shows, built from the Team, Member and TeamTask objects and the latest
//! inbox entries: pure data, no I/O, so the screen can be tested from a fixed model.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::{Member, MemberPhase, MemberRole, TaskState, Team, TeamPhase, TeamTask};

/// A team's identity: namespace and name.
pub type TeamId = (String, String);

/// The latest messages of a team, or why there are none to show.
#[derive(Clone, Debug, PartialEq)]
pub enum Messages {
    /// The gateway refused the read (RBAC: `get` on `teams/messages`) or could not be reached.
    Unavailable(String),
    /// The newest entries across the team's inboxes, oldest first.
    Loaded(Vec<MessageView>),
}

/// One inbox entry.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageView {
    /// Stream entry id (`<ms>-<seq>`), which orders entries of different inboxes.
    pub stream_id: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub from: String,
    pub to: String,
    /// `system` for operator notices, `message` otherwise.
    pub system: bool,
    pub body: String,
}

impl MessageView {
    /// (milliseconds, sequence) of the stream id, for ordering across inboxes.
    pub fn order_key(&self) -> (u64, u64) {
        let (ms, seq) = self.stream_id.split_once('-').unwrap_or((&self.stream_id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
}

/// One member row.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    /// Team-unique agent name, or the object name in parentheses before one is assigned.
    pub name: String,
    pub agent: String,
    pub lead: bool,
    pub phase: MemberPhase,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod: Option<String>,
    /// Seconds from start to completion, once finished.
    pub ran_seconds: Option<i64>,
}

/// One task row.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    pub name: String,
    pub subject: String,
    pub owner: Option<String>,
    pub state: TaskState,
    pub reason: Option<String>,
    pub blocked: bool,
    pub depends_on: Vec<String>,
    pub result: Option<String>,
}

/// Counts of a team's members by phase, as the Team's status reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: i32,
    pub starting: i32,
    pub active: i32,
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
}

/// One team with its members, tasks and messages.
#[derive(Clone, Debug, PartialEq)]
pub struct TeamView {
    pub namespace: String,
    pub name: String,
    /// `Active`, `Disbanded`, or `Pending` before the operator has seen it.
    pub phase: String,
    pub disbanded: bool,
    pub max_agents: i32,
    pub lead: Option<String>,
    pub counts: Counts,
    pub members: Vec<MemberView>,
    pub tasks: Vec<TaskView>,
    pub messages: Messages,
}

/// Everything on the screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    /// The namespace watched, or None for all.
    pub namespace: Option<String>,
    /// The team asked for with `--team`, if any.
    pub team: Option<String>,
    pub teams: Vec<TeamView>,
}

/// The indicator of a member phase.
pub fn indicator(phase: MemberPhase) -> &'static str {
    match phase {
        MemberPhase::Queued => "◌",
        MemberPhase::Starting => "◔",
        MemberPhase::Active => "●",
        MemberPhase::Idle => "○",
        MemberPhase::AwaitingApproval => "◇",
        MemberPhase::Completed => "✔",
        MemberPhase::Failed => "✖",
        MemberPhase::Cancelled => "⊘",
    }
}

/// The indicator of a task state (blocked pending tasks get their own).
pub fn task_indicator(state: TaskState, blocked: bool) -> &'static str {
    match state {
        TaskState::Pending if blocked => "⧖",
        TaskState::Pending => "·",
        TaskState::InProgress => "▸",
        TaskState::Completed => "✔",
        TaskState::Failed => "✖",
    }
}

fn id_of<K: kube::Resource>(o: &K) -> (String, String) {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

/// Builds the screen from the objects (in any order) and the messages read per team. Teams are
/// sorted by namespace and name; members lead first, then by creation time and name; tasks by
/// creation time, then dependency depth, owner and name. `team` keeps only the team of that name.
pub fn build(
    namespace: Option<&str>,
    team: Option<&str>,
    teams: &[Team],
    members: &[Member],
    tasks: &[TeamTask],
    messages: &BTreeMap<TeamId, Messages>,
) -> Screen {
    let mut out: Vec<TeamView> =
        teams
            .iter()
            .filter(|t| team.is_none_or(|n| t.metadata.name.as_deref() == Some(n)))
            .map(|t| {
                let (ns, name) = id_of(t);
                let status = t.status.clone().unwrap_or_default();
                let disbanded = t.is_disbanded();
                let phase = match status.phase {
                    Some(TeamPhase::Active) if t.metadata.deletion_timestamp.is_some() => "Disbanding".to_owned(),
                    Some(TeamPhase::Active) => "Active".to_owned(),
                    Some(TeamPhase::Disbanded) => "Disbanded".to_owned(),
                    None => "Pending".to_owned(),
                };
                let mut ms: Vec<&Member> =
                    members.iter().filter(|m| m.spec.team == name && m.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
                ms.sort_by(|a, b| {
                    (!a.is_lead(), a.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), a.agent_name(), &a.metadata.name).cmp(
                        &(!b.is_lead(), b.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), b.agent_name(), &b.metadata.name),
                    )
                });
                let members = ms.into_iter().map(member_view).collect();
                let mut ts: Vec<&TeamTask> =
                    tasks.iter().filter(|k| k.spec.team == name && k.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
                let depth = depths(&ts);
                ts.sort_by_cached_key(|k| {
                    let name = k.metadata.name.clone().unwrap_or_default();
                    (
                        k.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
                        depth.get(&name).copied().unwrap_or(0),
                        k.spec.owner.clone(),
                        name,
                    )
                });
                let tasks = ts.into_iter().map(task_view).collect();
                let messages = messages.get(&(ns.clone(), name.clone())).cloned().unwrap_or(Messages::Loaded(Vec::new()));
                TeamView {
                    counts: Counts {
                        queued: status.queued,
                        starting: status.starting,
                        active: status.active,
                        completed: status.completed,
                        failed: status.failed,
                        cancelled: status.cancelled,
                    },
                    lead: status.lead_name.clone(),
                    max_agents: t.spec.max_agents,
                    namespace: ns,
                    name,
                    phase,
                    disbanded,
                    members,
                    tasks,
                    messages,
                }
            })
            .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Screen { namespace: namespace.map(str::to_owned), team: team.map(str::to_owned), teams: out }
}

fn member_view(m: &Member) -> MemberView {
    let s = m.status.clone().unwrap_or_default();
    let ran_seconds = match (&s.start_time, &s.completion_time) {
        (Some(a), Some(b)) => Some(b.0.as_second() - a.0.as_second()),
        _ => None,
    };
    MemberView {
        name: s.name.clone().unwrap_or_else(|| format!("({})", m.metadata.name.as_deref().unwrap_or("?"))),
        agent: m.spec.agent.clone(),
        lead: m.spec.role == MemberRole::Lead,
        phase: m.phase(),
        exit_code: s.exit_code,
        reason: s.reason,
        message: s.message,
        pod: s.pod_name,
        ran_seconds,
    }
}

fn task_view(t: &TeamTask) -> TaskView {
    let s = t.status.clone().unwrap_or_default();
    let blocked = s.conditions.iter().any(|c| c.type_ == "Blocked" && c.status == "True");
    TaskView {
        name: t.metadata.name.clone().unwrap_or_default(),
        subject: t.spec.subject.clone(),
        owner: t.spec.owner.clone(),
        state: t.state(),
        reason: s.reason,
        blocked,
        depends_on: t.spec.depends_on.clone(),
        result: s.result,
    }
}

/// How many dependency levels lie under each task (0: none); a cycle counts as no deeper.
fn depths(tasks: &[&TeamTask]) -> BTreeMap<String, usize> {
    let deps: BTreeMap<String, &[String]> =
        tasks.iter().map(|t| (t.metadata.name.clone().unwrap_or_default(), t.spec.depends_on.as_slice())).collect();
    fn depth(name: &str, deps: &BTreeMap<String, &[String]>, seen: &mut Vec<String>) -> usize {
        if seen.iter().any(|s| s == name) {
            return 0;
        }
        seen.push(name.to_owned());
        let d = deps.get(name).map_or(0, |ds| ds.iter().map(|d| 1 + depth(d, deps, seen)).max().unwrap_or(0));
        seen.pop();
        d
    }
    deps.keys().map(|n| (n.clone(), depth(n, &deps, &mut Vec::new()))).collect()
}

/// Keeps the newest `n` messages (by stream id) of several inboxes, oldest first.
pub fn latest(mut all: Vec<MessageView>, n: usize) -> Vec<MessageView> {
    all.sort_by_key(MessageView::order_key);
    all.dedup_by(|a, b| a.stream_id == b.stream_id && a.to == b.to);
    let skip = all.len().saturating_sub(n);
    all.into_iter().skip(skip).collect()
}
