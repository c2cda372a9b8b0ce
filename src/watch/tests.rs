//! The screen for a fixed model.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::model::{self, MessageView, Messages};
use super::render;
use crate::api::*;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(1_750_000_000 + s).expect("time"))
}

fn team(name: &str, phase: Option<TeamPhase>, counts: [i32; 6]) -> Team {
    let mut t = Team::new(
        name,
        TeamSpec {
            max_agents: 3,
            priority: 0,
            member_timeout_seconds: 120,
            lead: LeadSpec { agent: "lead".into(), prompt: None, pod_name: None },
            agents: vec![],
            memory: Default::default(),
            allow_sub_teams: false,
            tasks: Default::default(),
            retention: None,
            lead_notices: Default::default(),
            shutdown_grace_seconds: crate::api::team::DEFAULT_SHUTDOWN_GRACE_SECONDS,
            budget: None,
        },
    );
    t.metadata.namespace = Some("demo".into());
    let [queued, starting, active, completed, failed, cancelled] = counts;
    t.status = Some(TeamStatus {
        phase,
        queued,
        starting,
        active,
        completed,
        failed,
        cancelled,
        lead_name: Some("lead".into()),
        ..Default::default()
    });
    t
}

fn member(obj: &str, agent: &str, lead: bool, name: Option<&str>, phase: Option<MemberPhase>, created: i64) -> Member {
    let mut m = Member::new(
        obj,
        MemberSpec {
            team: "spec-review".into(),
            agent: agent.into(),
            role: if lead { MemberRole::Lead } else { MemberRole::Specialist },
            prompt: String::new(),
            model: None,
            pod: None,
        },
    );
    m.metadata.namespace = Some("demo".into());
    m.metadata.creation_timestamp = Some(at(created));
    m.status = Some(MemberStatus { name: name.map(Into::into), phase, ..Default::default() });
    m
}

fn finished(mut m: Member, code: i32, reason: Option<&str>, message: Option<&str>, ran: i64) -> Member {
    let s = m.status.as_mut().expect("status");
    s.exit_code = Some(code);
    s.reason = reason.map(Into::into);
    s.message = message.map(Into::into);
    s.start_time = Some(at(10));
    s.completion_time = Some(at(10 + ran));
    m
}

fn task(name: &str, owner: &str, deps: &[&str], state: TaskState, created: i64) -> TeamTask {
    let mut t = TeamTask::new(
        name,
        TeamTaskSpec {
            team: "spec-review".into(),
            subject: format!("Review {name}"),
            description: String::new(),
            owner: Some(owner.into()),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            metadata: Default::default(),
        },
    );
    t.metadata.namespace = Some("demo".into());
    t.metadata.creation_timestamp = Some(at(created));
    t.status = Some(TeamTaskStatus { state: Some(state), ..Default::default() });
    t
}

fn msg(ms: u64, from: &str, to: &str, body: &str, system: bool) -> MessageView {
    MessageView {
        stream_id: format!("{}-0", 1_750_000_000_000 + ms),
        sent_at: chrono::DateTime::from_timestamp_millis(1_750_000_000_000 + ms as i64),
        from: from.into(),
        to: to.into(),
        system,
        body: body.into(),
    }
}

fn fixture() -> (Vec<Team>, Vec<Member>, Vec<TeamTask>, BTreeMap<model::TeamId, Messages>) {
    let teams = vec![team("spec-review", Some(TeamPhase::Active), [1, 0, 3, 1, 1, 0])];
    let members = vec![
        member("spec-review-testing", "testing", false, Some("testing"), Some(MemberPhase::Queued), 5),
        member("spec-review-lead", "lead", true, Some("lead"), Some(MemberPhase::Idle), 0),
        member("spec-review-security", "security", false, Some("security"), Some(MemberPhase::Active), 1),
        finished(
            member("spec-review-performance", "performance", false, Some("performance"), Some(MemberPhase::Failed), 2),
            137,
            Some("OOMKilled"),
            Some("container agent was OOMKilled"),
            7,
        ),
        finished(
            member("spec-review-api-design", "api-design", false, Some("api-design"), Some(MemberPhase::Completed), 3),
            0,
            None,
            None,
            12,
        ),
        member("spec-review-docs", "docs", false, Some("docs"), Some(MemberPhase::Starting), 4),
        member("late", "docs", false, None, None, 6),
    ];
    let mut blocked = task("summary", "lead", &["security", "performance"], TaskState::Pending, 9);
    blocked.status.as_mut().expect("status").conditions.push(Condition {
        type_: "Blocked".into(),
        status: "True".into(),
        reason: "Waiting".into(),
        message: String::new(),
        last_transition_time: at(9),
        observed_generation: None,
    });
    let mut failed = task("performance", "performance", &[], TaskState::Failed, 2);
    failed.status.as_mut().expect("status").reason = Some("OwnerFailed".into());
    let mut done = task("api-design", "api-design", &[], TaskState::Completed, 3);
    done.status.as_mut().expect("status").result = Some("2 findings: plural kinds\nand more".into());
    let tasks = vec![blocked, task("security", "security", &[], TaskState::InProgress, 1), failed, done];
    let messages = BTreeMap::from([(
        ("demo".to_owned(), "spec-review".to_owned()),
        Messages::Loaded(model::latest(
            vec![
                msg(2_000, "team-operator", "lead", "[AGENT FAILURE] @performance failed: OOMKilled (exit code 137).", true),
                msg(1_000, "lead", "api-design", "please take task api-design", false),
                msg(3_000, "api-design", "lead", "findings: plural kinds", false),
            ],
            10,
        )),
    )]);
    (teams, members, tasks, messages)
}

#[test]
fn snapshot_of_a_fixed_model() {
    let (teams, members, tasks, messages) = fixture();
    let screen = model::build(Some("demo"), None, &teams, &members, &tasks, &messages);
    let text = render::plain(&screen);
    print!("{text}");
    assert!(!text.contains('\x1b'), "no escape codes");
    assert_eq!(text, EXPECTED);
}

const EXPECTED: &str = "\
teamctl watch: namespace demo: 1 team
◌ queued  ◔ starting  ● active  ○ idle  ✔ completed  ✖ failed  ⊘ cancelled

TEAM         PHASE   LEAD  MAX  QUEUED  STARTING  ACTIVE  COMPLETED  FAILED  CANCELLED
spec-review  Active  lead  3    1       0         3       1          1       0

TEAM spec-review  Active  (max 3 at a time; 1 queued, 0 starting, 3 active, 1 completed, 1 failed, 0 cancelled)
 MEMBERS
  ○  lead         lead         Idle
  ●  security     security     Active
  ✖  performance  performance  Failed     exit 137  7s   OOMKilled: container agent was OOMKilled
  ✔  api-design   api-design   Completed  exit 0    12s
  ◔  docs         docs         Starting
  ◌  testing      testing      Queued
  ◌  (late)       docs         Queued
 TASKS
  ▸  security     in_progress           @security     Review security
  ✖  performance  failed (OwnerFailed)  @performance  Review performance
  ✔  api-design   completed             @api-design   Review api-design   → 2 findings: plural kinds …
  ⧖  summary      pending (blocked)     @lead         Review summary      after security, performance
 MESSAGES (newest last, UTC)
  15:06:41  lead → api-design: please take task api-design
  15:06:42  team-operator → lead: [AGENT FAILURE] @performance failed: OOMKilled (exit code 137).
  15:06:43  api-design → lead: findings: plural kinds
";

#[test]
fn messages_panel_says_why_it_is_empty() {
    let (teams, members, tasks, _) = fixture();
    for (m, want) in [
        (Messages::Unavailable("forbidden: user bob may not get teams/messages".into()), "messages not shown: forbidden: user bob may not"),
        (Messages::Loaded(vec![]), "none yet"),
    ] {
        let messages = BTreeMap::from([(("demo".to_owned(), "spec-review".to_owned()), m)]);
        let text = render::plain(&model::build(Some("demo"), Some("spec-review"), &teams, &members, &tasks, &messages));
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let mut gone = teams.clone();
    gone[0].status.as_mut().expect("status").phase = Some(TeamPhase::Disbanded);
    let text = render::plain(&model::build(Some("demo"), None, &gone, &members, &tasks, &BTreeMap::new()));
    assert!(text.contains("Disbanded") && text.contains("spec.retention"), "{text}");
}

#[test]
fn team_filter_and_all_namespaces() {
    let (mut teams, members, tasks, messages) = fixture();
    let mut other = teams[0].clone();
    other.metadata.name = Some("other".into());
    teams.push(other);
    let screen = model::build(None, Some("spec-review"), &teams, &members, &tasks, &messages);
    assert_eq!(screen.teams.len(), 1);
    let text = render::plain(&screen);
    assert!(text.contains("all namespaces, team spec-review") && text.contains("demo/spec-review  Active"), "{text}");
    let all = model::build(None, None, &teams, &members, &tasks, &messages);
    assert_eq!(all.teams.iter().map(|t| (t.name.as_str(), t.members.len())).collect::<Vec<_>>(), [("other", 0), ("spec-review", 7)]);
}

#[test]
fn clip_keeps_one_line() {
    assert_eq!(render::clip("abc\ndef", 10), "abc …");
    assert_eq!(render::clip("abcdefghijk", 5), "abcd…");
    assert_eq!(render::clip("abc", 5), "abc");
}
