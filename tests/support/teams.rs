//! Builders of Teams, Members and TeamTasks, so a test reads in a few lines.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Toleration};
use team_operator::api::{AgentType, LeadSpec, Member, MemberSpec, PodOverrides, Team, TeamSpec, TeamTask, TeamTaskSpec};

/// Tolerations that let pods onto the kwok nodes.
fn kwok_tolerations() -> Vec<Toleration> {
    vec![Toleration {
        key: Some("kwok.x-k8s.io/node".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]
}

/// An agent type whose pods run on kwok nodes.
pub fn agent_type(name: &str) -> AgentType {
    AgentType {
        name: name.into(),
        model: Some("test-model".into()),
        memory: Default::default(),
        plan_approval: Default::default(),
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container { name: "agent".into(), image: Some("scripted-agent:test".into()), ..Default::default() }],
                tolerations: Some(kwok_tolerations()),
                node_selector: Some([("type".to_owned(), "kwok".to_owned())].into()),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

/// A team led by agent type `lead`, with specialists of type `general`.
pub fn team(name: &str, max_agents: i32) -> Team {
    Team::new(
        name,
        TeamSpec {
            max_agents,
            priority: 0,
            member_timeout_seconds: 30,
            lead: LeadSpec { agent: "lead".into(), prompt: Some("lead the team".into()), pod_name: None },
            agents: vec![agent_type("lead"), agent_type("general")],
            memory: Default::default(),
            allow_sub_teams: false,
            tasks: Default::default(),
            retention: None,
            lead_notices: Default::default(),
            // Deleted at once, as before the shutdown handshake: the kwok agents never answer.
            shutdown_grace_seconds: 0,
            budget: None,
        },
    )
}

/// A specialist of `team` whose simulated agent runs `duration` and exits with `exit_code`
/// (None: runs until told otherwise).
pub fn member(name: &str, team: &str, exit: Option<(i32, &str)>) -> Member {
    let mut annotations = BTreeMap::new();
    if let Some((code, duration)) = exit {
        annotations.insert(super::SIM_EXIT_CODE.to_owned(), code.to_string());
        annotations.insert(super::SIM_DURATION.to_owned(), duration.to_owned());
    }
    Member::new(
        name,
        MemberSpec {
            team: team.into(),
            agent: "general".into(),
            role: Default::default(),
            prompt: format!("work as {name}"),
            model: None,
            pod: Some(PodOverrides { annotations, ..Default::default() }),
        },
    )
}

/// A task of `team` owned by `owner`.
pub fn task(name: &str, team: &str, owner: Option<&str>, depends_on: &[&str]) -> TeamTask {
    TeamTask::new(
        name,
        TeamTaskSpec {
            team: team.into(),
            subject: format!("subject of {name}"),
            description: String::new(),
            owner: owner.map(str::to_owned),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            metadata: Default::default(),
        },
    )
}

/// Waits until `team` in namespace `ns` has named its lead, and returns that name.
pub async fn lead_name(ns: &super::TestNamespace, team: &str) -> String {
    let teams: kube::Api<Team> = ns.api();
    let t = super::wait_for(&teams, team, super::TIMEOUT, "the team's lead to be named", |t| {
        t.status.as_ref().is_some_and(|s| s.lead_name.is_some())
    })
    .await;
    t.status.and_then(|s| s.lead_name).unwrap_or_default()
}

/// The `[AGENT FAILURE] @<agent_name>` notice in `lead`'s inbox of `team` (it is there before
/// the failure is written, so a test that saw the Member Failed finds it at once).
pub async fn failure_notice(ns: &str, team: &str, lead: &str, agent_name: &str) -> String {
    let bus = team_operator::bus::Bus::connect(super::bus_config()).await.expect("bus");
    let key = team_operator::bus::TeamKey::new(ns, team);
    let inbox = bus.wait(&key, lead, std::time::Duration::from_secs(10)).await.expect("the lead's inbox");
    let prefix = format!("[AGENT FAILURE] @{agent_name} ");
    inbox.into_iter().map(|m| m.body).find(|b| b.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}… notice for {lead}"))
}
