//! `teamctl watch --once` during a real run: the operator (its real binary) runs a team on the
//! stack, and the snapshot printed by the real `teamctl` binary is read again and again while the
//! members move Queued → Active → Completed / Failed (exit 137) / Cancelled. Its messages come
//! from the gateway through the API server (the test's APIService), as a user's would: teamctl
//! is given no Redis URL and no token.
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use support::aggregated::{self, AggregatedApi};
use support::operator::Operator;
use support::teams::{member, team};
use support::*;
use team_operator::api::{Member, Team};

const LONG: Duration = Duration::from_secs(90);

/// One `teamctl watch --once -n NS` snapshot (asserting it is plain text).
async fn snapshot(ns: &str, api: &AggregatedApi) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamctl"))
        .args(["watch", "--once", "-n", ns])
        .env("KUBECONFIG", kubeconfig_path())
        .env("TEAM_API_GROUP", &api.group)
        .env_remove("TEAM_OPERATOR_REDIS_URL")
        .env_remove("TEAM_GATEWAY_URL")
        .env_remove("TEAM")
        .env_remove("TEAM_NAMESPACE")
        .output()
        .await
        .expect("run teamctl watch");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(out.status.success(), "teamctl watch failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "escape codes in --once output:\n{text}");
    text
}

/// The cells of member `name`'s row in the MEMBERS panel: indicator, name, agent, phase, ….
fn member_row(screen: &str, name: &str) -> Option<Vec<String>> {
    let members = screen.split(" MEMBERS\n").nth(1)?.split(" TASKS\n").next()?;
    members
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.get(1).map(String::as_str) == Some(name))
}

/// Runs `teamctl watch --once` until `cond` holds for the screen; panics with the last screen.
async fn screen_until(ns: &str, api: &AggregatedApi, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let s = snapshot(ns, api).await;
        if cond(&s) {
            return s;
        }
        assert!(start.elapsed() < LONG, "timed out after {LONG:?} waiting for the screen to show {what}; last screen:\n{s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn shows(screen: &str, name: &str, indicator: &str, phase: &str) -> bool {
    member_row(screen, name).is_some_and(|r| r[0] == indicator && r[3] == phase)
}

async fn pod_of(members: &Api<Member>, name: &str) -> String {
    let m = wait_for(members, name, LONG, "a pod", |m: &Member| m.status.as_ref().and_then(|s| s.pod_name.clone()).is_some()).await;
    m.status.and_then(|s| s.pod_name).expect("pod name")
}

#[tokio::test]
async fn watch_once_shows_members_phases_as_they_change() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "watch").await;
    let _op = Operator::start(ns.name(), 10);
    let api = aggregated::start(&s, &ns).await;
    let teams: Api<Team> = ns.api();
    let members: Api<Member> = ns.api();
    let pods: Api<Pod> = ns.api();
    let pp = PostParams::default();

    // No team yet: the screen says so.
    let empty = snapshot(ns.name(), &api).await;
    assert!(empty.contains("0 teams") && empty.contains("no teams"), "{empty}");

    // maxAgents 2 and three specialists: two run, one queues.
    teams.create(&pp, &team("alpha", 2)).await.expect("create team");
    for name in ["m1", "m2", "m3"] {
        members.create(&pp, &member(name, "alpha", None)).await.expect("create member");
        // One at a time, so the names follow creation order: general, general-2, general-3.
        wait_for(&members, name, LONG, "a name", |m: &Member| m.agent_name().is_some()).await;
    }
    let s1 = screen_until(ns.name(), &api, "lead and two specialists Active, one Queued", |s| {
        shows(s, "lead", "●", "Active")
            && shows(s, "general", "●", "Active")
            && shows(s, "general-2", "●", "Active")
            && shows(s, "general-3", "◌", "Queued")
    })
    .await;
    assert!(s1.contains("TEAM alpha  Active"), "{s1}");

    // general crashes like an OOM kill; general-2 finishes; general-3 gets the freed slot.
    let p1 = pod_of(&members, "m1").await;
    set_sim_exit(&pods, &p1, 137, None).await;
    let s2 = screen_until(ns.name(), &api, "general Failed with exit 137 (OOMKilled)", |s| {
        member_row(s, "general")
            .is_some_and(|r| r[0] == "✖" && r[3] == "Failed" && r[4..6] == ["exit", "137"] && r.iter().any(|c| c.starts_with("OOMKilled")))
    })
    .await;
    assert!(s2.contains("[AGENT FAILURE] @general failed"), "the lead's inbox shows the failure notice:\n{s2}");
    let p2 = pod_of(&members, "m2").await;
    set_sim_exit(&pods, &p2, 0, None).await;
    screen_until(ns.name(), &api, "general-2 Completed with exit 0, general-3 Active", |s| {
        member_row(s, "general-2").is_some_and(|r| r[0] == "✔" && r[3] == "Completed" && r[4..6] == ["exit", "0"])
            && shows(s, "general-3", "●", "Active")
    })
    .await;

    // The lead ends: the team disbands and the running specialist is cancelled.
    let lead =
        wait_for(&members, "alpha-lead", LONG, "a lead pod", |m: &Member| m.status.as_ref().and_then(|s| s.pod_name.clone()).is_some())
            .await;
    set_sim_exit(&pods, &lead.status.and_then(|s| s.pod_name).expect("lead pod"), 0, None).await;
    let end = screen_until(ns.name(), &api, "the team Disbanded, general-3 Cancelled", |s| {
        s.contains("TEAM alpha  Disbanded") && shows(s, "general-3", "⊘", "Cancelled") && shows(s, "lead", "✔", "Completed")
    })
    .await;
    assert!(end.contains("1 failed"), "{end}");
    api.stop().await;
    ns.cleanup().await;
}
