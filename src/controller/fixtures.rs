//! Builders of test objects for the pure steps' unit tests.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::api::{AgentType, LeadSpec, Member, MemberSpec, MemoryMode, Team, TeamSpec};

/// A team with agent types `lead` and `general`.
pub fn team(name: &str, max_agents: i32) -> Team {
    let agent = |n: &str| AgentType {
        name: n.into(),
        model: Some("m".into()),
        memory: MemoryMode::None,
        plan_approval: Default::default(),
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container { name: "agent".into(), image: Some("agent:1".into()), ..Default::default() }],
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let mut t = Team::new(
        name,
        TeamSpec {
            max_agents,
            priority: 0,
            member_timeout_seconds: 300,
            lead: LeadSpec { agent: "lead".into(), ..Default::default() },
            agents: vec![agent("lead"), agent("general")],
            memory: Default::default(),
            allow_sub_teams: false,
            tasks: Default::default(),
            retention: None,
            lead_notices: Default::default(),
            shutdown_grace_seconds: crate::api::team::DEFAULT_SHUTDOWN_GRACE_SECONDS,
            budget: None,
        },
    );
    t.metadata.namespace = Some("ns".into());
    t.metadata.uid = Some(format!("team-uid-{name}"));
    t
}

/// A specialist of `team` with the given uid.
pub fn member(team: &str, agent: &str, uid: &str) -> Member {
    let mut m = Member::new(
        &format!("m-{uid}"),
        MemberSpec { team: team.into(), agent: agent.into(), role: Default::default(), prompt: String::new(), model: None, pod: None },
    );
    m.metadata = ObjectMeta { name: m.metadata.name.clone(), namespace: Some("ns".into()), uid: Some(uid.into()), ..Default::default() };
    m
}

/// A specialist `name` of `team` (agent type `general`, namespace `ns`), created `at` seconds
/// after the epoch: admission orders by creation.
pub fn member_created(team: &str, name: &str, uid: &str, at: i64) -> Member {
    let mut m = member(team, "general", uid);
    m.metadata.name = Some(name.into());
    m.metadata.creation_timestamp = Some(Time(Timestamp::from_second(at).expect("time")));
    m
}
