//! The screen as lines of text: `--once` prints them, the TUI colours them by [`Tone`].

use super::model::{Messages, Screen, TeamView, indicator, task_indicator};
use crate::api::{MemberPhase, TaskState};

/// How a line should be coloured in the TUI; the plain renderer ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Heading,
    Dim,
    Member(MemberPhase),
    Task(TaskState),
    System,
}

/// One line of the screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub tone: Tone,
    pub text: String,
}

fn line(tone: Tone, text: impl Into<String>) -> Line {
    Line { tone, text: text.into() }
}

/// The legend of the member indicators.
pub const LEGEND: &str = "◌ queued  ◔ starting  ● active  ○ idle  ✔ completed  ✖ failed  ⊘ cancelled";

/// Most characters of a message body or a result shown on one line.
const BODY_WIDTH: usize = 80;

/// Shortens `s` to its first line and at most `n` characters (with `…`).
pub fn clip(s: &str, n: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let more = s.lines().nth(1).is_some();
    if first.chars().count() > n {
        let mut t: String = first.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    } else if more {
        format!("{first} …")
    } else {
        first.to_owned()
    }
}

/// Left-aligns the cells of each row into columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> Vec<String> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(c);
                if i + 1 < r.len() {
                    s.extend(std::iter::repeat_n(' ', width[i] - c.chars().count()));
                }
            }
            s.trim_end().to_owned()
        })
        .collect()
}

/// The header: what is watched and the legend.
pub fn header(screen: &Screen) -> Vec<Line> {
    let scope = match (&screen.namespace, &screen.team) {
        (Some(ns), Some(t)) => format!("namespace {ns}, team {t}"),
        (Some(ns), None) => format!("namespace {ns}"),
        (None, Some(t)) => format!("all namespaces, team {t}"),
        (None, None) => "all namespaces".to_owned(),
    };
    let n = screen.teams.len();
    vec![line(Tone::Heading, format!("teamctl watch: {scope}: {n} team{}", if n == 1 { "" } else { "s" })), line(Tone::Dim, LEGEND)]
}

/// One summary row per team: the teams panel.
pub fn teams_table(screen: &Screen) -> Vec<Line> {
    if screen.teams.is_empty() {
        return vec![line(Tone::Dim, "no teams")];
    }
    let mut rows = vec![
        ["TEAM", "PHASE", "LEAD", "MAX", "QUEUED", "STARTING", "ACTIVE", "COMPLETED", "FAILED", "CANCELLED"].map(String::from).to_vec(),
    ];
    for t in &screen.teams {
        let c = t.counts;
        rows.push(vec![
            team_label(screen, t),
            t.phase.clone(),
            t.lead.clone().unwrap_or_else(|| "-".into()),
            t.max_agents.to_string(),
            c.queued.to_string(),
            c.starting.to_string(),
            c.active.to_string(),
            c.completed.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
        ]);
    }
    columns(&rows).into_iter().enumerate().map(|(i, s)| line(if i == 0 { Tone::Dim } else { Tone::Plain }, s)).collect()
}

fn team_label(screen: &Screen, t: &TeamView) -> String {
    if screen.namespace.is_some() { t.name.clone() } else { format!("{}/{}", t.namespace, t.name) }
}

/// The members panel of one team.
pub fn members(t: &TeamView) -> Vec<Line> {
    if t.members.is_empty() {
        return vec![line(Tone::Dim, "  no members")];
    }
    let rows: Vec<Vec<String>> = t
        .members
        .iter()
        .map(|m| {
            let mut reason = m.reason.clone().unwrap_or_default();
            if let Some(msg) = m.message.as_deref().filter(|s| !s.is_empty()) {
                if reason.is_empty() {
                    reason = clip(msg, 60);
                } else {
                    reason = format!("{reason}: {}", clip(msg, 60));
                }
            }
            vec![
                format!("  {}", indicator(m.phase)),
                m.name.clone(),
                m.agent.clone(),
                m.phase.as_str().to_owned(),
                m.exit_code.map(|c| format!("exit {c}")).unwrap_or_default(),
                m.ran_seconds.map(|s| format!("{s}s")).unwrap_or_default(),
                reason,
            ]
        })
        .collect();
    columns(&rows).into_iter().zip(&t.members).map(|(s, m)| line(Tone::Member(m.phase), s)).collect()
}

/// The task board of one team.
pub fn tasks(t: &TeamView) -> Vec<Line> {
    if t.tasks.is_empty() {
        return vec![line(Tone::Dim, "  no tasks")];
    }
    let rows: Vec<Vec<String>> = t
        .tasks
        .iter()
        .map(|k| {
            let mut state = k.state.as_str().to_owned();
            if k.blocked && !k.state.is_terminal() {
                state.push_str(" (blocked)");
            }
            if let Some(r) = &k.reason {
                state = format!("{state} ({r})");
            }
            let mut extra = Vec::new();
            if !k.depends_on.is_empty() {
                extra.push(format!("after {}", k.depends_on.join(", ")));
            }
            if let Some(r) = k.result.as_deref().filter(|r| !r.is_empty()) {
                extra.push(format!("→ {}", clip(r, 48)));
            }
            vec![
                format!("  {}", task_indicator(k.state, k.blocked)),
                k.name.clone(),
                state,
                k.owner.clone().map(|o| format!("@{o}")).unwrap_or_else(|| "-".into()),
                clip(&k.subject, 40),
                extra.join("  "),
            ]
        })
        .collect();
    columns(&rows).into_iter().zip(&t.tasks).map(|(s, k)| line(Tone::Task(k.state), s)).collect()
}

/// The latest messages of one team.
pub fn messages(t: &TeamView) -> Vec<Line> {
    match &t.messages {
        Messages::Unavailable(why) => vec![line(Tone::Dim, format!("  messages not shown: {}", clip(why, 100)))],
        Messages::Loaded(ms) if ms.is_empty() && t.disbanded => {
            vec![line(Tone::Dim, "  none kept (a disbanded team's transcript lasts its spec.retention)")]
        }
        Messages::Loaded(ms) if ms.is_empty() => vec![line(Tone::Dim, "  none yet")],
        Messages::Loaded(ms) => ms
            .iter()
            .map(|m| {
                let at = m.sent_at.map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_else(|| "--:--:--".into());
                let text = format!("  {at}  {} → {}: {}", m.from, m.to, clip(&m.body, BODY_WIDTH));
                line(if m.system { Tone::System } else { Tone::Plain }, text)
            })
            .collect(),
    }
}

/// The whole detail of one team: heading, members, tasks, messages.
pub fn team_detail(screen: &Screen, t: &TeamView) -> Vec<Line> {
    let c = t.counts;
    let mut out = vec![line(
        Tone::Heading,
        format!(
            "TEAM {}  {}  (max {} at a time; {} queued, {} starting, {} active, {} completed, {} failed, {} cancelled)",
            team_label(screen, t),
            t.phase,
            t.max_agents,
            c.queued,
            c.starting,
            c.active,
            c.completed,
            c.failed,
            c.cancelled
        ),
    )];
    out.push(line(Tone::Heading, " MEMBERS"));
    out.extend(members(t));
    out.push(line(Tone::Heading, " TASKS"));
    out.extend(tasks(t));
    out.push(line(Tone::Heading, " MESSAGES (newest last, UTC)"));
    out.extend(messages(t));
    out
}

/// The `--once` snapshot: header, teams table, then each team's detail.
pub fn snapshot_lines(screen: &Screen) -> Vec<Line> {
    let mut out = header(screen);
    out.push(line(Tone::Plain, ""));
    out.extend(teams_table(screen));
    for t in &screen.teams {
        out.push(line(Tone::Plain, ""));
        out.extend(team_detail(screen, t));
    }
    out
}

/// The `--once` snapshot as plain text (no escape codes), ending with a newline.
pub fn plain(screen: &Screen) -> String {
    let mut s = String::new();
    for l in snapshot_lines(screen) {
        s.push_str(&l.text);
        s.push('\n');
    }
    s
}
