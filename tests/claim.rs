//! `team_task claim` on the real stack: members racing through the gateway get distinct tasks or
//! a conflict, never the same task; and a Team with `spec.tasks.releaseOnOwnerFailure` hands a
//! failed member's pending tasks back to the board, where another member claims them.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use fixture::*;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::operator::Operator;
use support::teams::{member, task, team};
use support::*;
use team_operator::api::{Member, MemberPhase, TaskState, Team, TeamTask};
use team_operator::bus::{Bus, TeamKey};

fn claim(name: Option<&str>) -> Value {
    match name {
        Some(n) => json!({ "action": "claim", "name": n }),
        None => json!({ "action": "claim" }),
    }
}

/// Claims tasks for the member of `token` until the board has none left; the names it got.
async fn claim_all(url: &str, token: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let answer = call(url, Some(token), "team_task", claim(None)).await;
        if answer.0 == 404 {
            assert_error(&answer, 404, "not_found", "no pending, unblocked, unowned task");
            return got;
        }
        got.push(ok(answer)["name"].as_str().expect("a task name").to_owned());
    }
}

#[tokio::test]
async fn members_racing_for_tasks_each_get_their_own_or_a_conflict() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "claim-race").await;
    let gw = start_gateway(&s).await;
    let fix = team_with_members(&s, &ns, &gw.bus, "nu", &["general", "general-2"]).await;
    let (lead, a, b) = (fix.token("lead"), fix.token("general"), fix.token("general-2"));
    let tasks: Api<TeamTask> = ns.api();
    let create = |subject: String, depends_on: Vec<String>| json!({ "action": "create", "subject": subject, "depends_on": depends_on });

    // Twelve open tasks, one more behind a dependency, one owned already.
    let mut open = BTreeSet::new();
    for i in 0..12 {
        open.insert(
            ok(call(&gw.url, Some(lead), "team_task", create(format!("part {i}"), vec![])).await)["name"].as_str().unwrap().to_owned(),
        );
    }
    let first = open.iter().next().cloned().expect("a task");
    let blocked = ok(call(&gw.url, Some(lead), "team_task", create("after part 0".into(), vec![first.clone()])).await);
    let blocked = blocked["name"].as_str().expect("name").to_owned();
    let owned = ok(call(&gw.url, Some(lead), "team_task", json!({ "action": "create", "subject": "mine", "owner": "lead" })).await);
    let owned = owned["name"].as_str().expect("name").to_owned();
    assert_error(&call(&gw.url, Some(a), "team_task", claim(Some(&owned))).await, 409, "conflict", "owned by lead");
    assert_error(&call(&gw.url, Some(a), "team_task", claim(Some(&blocked))).await, 409, "conflict", "blocked");

    // Two members claim at the same time until nothing is left: every open task is taken once.
    let (got_a, got_b) = tokio::join!(claim_all(&gw.url, a), claim_all(&gw.url, b));
    let (set_a, set_b): (BTreeSet<String>, BTreeSet<String>) = (got_a.iter().cloned().collect(), got_b.iter().cloned().collect());
    assert_eq!(set_a.len() + set_b.len(), got_a.len() + got_b.len(), "a member claimed one task twice: {got_a:?} {got_b:?}");
    assert!(!set_a.is_empty() && !set_b.is_empty(), "both members must have raced for the board: {got_a:?} {got_b:?}");
    assert!(set_a.is_disjoint(&set_b), "both members got {:?}", set_a.intersection(&set_b).collect::<Vec<_>>());
    assert_eq!(set_a.union(&set_b).cloned().collect::<BTreeSet<_>>(), open, "the blocked and the owned task are not claimable");
    for (owner, names) in [("general", &set_a), ("general-2", &set_b)] {
        for name in names {
            let stored = tasks.get(name).await.expect("task");
            assert_eq!(stored.spec.owner.as_deref(), Some(owner), "{}", describe(&stored));
            assert_eq!(stored.state(), TaskState::Pending, "claiming sets the owner only");
        }
    }

    // One named task, two claims at once: one wins, the other is told.
    let contested = ok(call(&gw.url, Some(lead), "team_task", create("contested".into(), vec![])).await);
    let contested = contested["name"].as_str().expect("name").to_owned();
    let (ra, rb) = tokio::join!(
        call(&gw.url, Some(a), "team_task", claim(Some(&contested))),
        call(&gw.url, Some(b), "team_task", claim(Some(&contested)))
    );
    let (winner, loser) = match (ra.0, rb.0) {
        (200, 409) => ("general", rb),
        (409, 200) => ("general-2", ra),
        other => panic!("one claim must win and one be a conflict, got {other:?}: {ra:?} {rb:?}"),
    };
    assert_error(&loser, 409, "conflict", &contested);
    assert_eq!(tasks.get(&contested).await.expect("task").spec.owner.as_deref(), Some(winner));
    // Claiming what one already holds is a no-op.
    let token = if winner == "general" { a } else { b };
    assert_eq!(ok(call(&gw.url, Some(token), "team_task", claim(Some(&contested))).await)["owner"], winner);

    gw.bus.teardown(&fix.key(&ns.name)).await.expect("teardown");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_failed_members_pending_tasks_go_back_to_the_board_when_the_team_says_so() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "claim-release").await;
    let _op = Operator::start(ns.name(), 10);
    let mut t = team("xi", 3);
    t.spec.tasks.release_on_owner_failure = true;
    let created = ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    assert!(created.spec.tasks.release_on_owner_failure, "the stack's Team CRD lacks spec.tasks (an older crds/ applied?)");
    let lead =
        wait_for(&ns.api::<Team>(), "xi", TIMEOUT, "the lead to be named", |t| t.status.as_ref().is_some_and(|s| s.lead_name.is_some()))
            .await
            .status
            .and_then(|s| s.lead_name)
            .expect("lead");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("crasher", "xi", None)).await.expect("member");
    let crasher = wait_for(&members, "crasher", TIMEOUT, "a pod", |m| m.status.as_ref().is_some_and(|s| s.pod_name.is_some())).await;
    let name = crasher.agent_name().expect("name").to_owned();

    let tasks: Api<TeamTask> = ns.api();
    for t in [task("waiting", "xi", Some(&name), &[]), task("started", "xi", Some(&name), &[])] {
        tasks.create(&PostParams::default(), &t).await.expect("task");
    }
    wait_for(&tasks, "started", TIMEOUT, "pending", |t| t.status.as_ref().is_some_and(|s| s.state == Some(TaskState::Pending))).await;
    tasks
        .patch_status("started", &PatchParams::default(), &Patch::Merge(json!({ "status": { "state": "in_progress" } })))
        .await
        .expect("start");
    set_sim_exit(&ns.api(), crasher.status.and_then(|s| s.pod_name).as_deref().expect("pod"), 3, None).await;
    wait_for(&members, "crasher", TIMEOUT, "Failed", |m| m.phase() == MemberPhase::Failed).await;

    let released = wait_for(&tasks, "waiting", TIMEOUT, "back on the board, unowned", |t| t.spec.owner.is_none()).await;
    assert_eq!(released.state(), TaskState::Pending, "{}", describe(&released));
    let started = wait_for(&tasks, "started", TIMEOUT, "failed", |t| t.state() == TaskState::Failed).await;
    assert_eq!(started.status.and_then(|s| s.reason).as_deref(), Some("OwnerFailed"), "in_progress work fails as before");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    wait_for_any(&events, TIMEOUT, "an OwnerReleased Event on the task", |e: &k8s_openapi::api::events::v1::Event| {
        e.reason.as_deref() == Some("OwnerReleased") && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("waiting")
    })
    .await;

    // The lead is told which way its member's tasks went.
    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let inbox = bus.wait(&TeamKey::new(ns.name(), "xi"), &lead, Duration::from_secs(10)).await.expect("lead inbox");
    let notice = inbox.iter().find(|m| m.body.starts_with(&format!("[AGENT FAILURE] @{name}"))).expect("a failure notice");
    assert!(notice.body.contains("pending tasks are back on the board"), "{}", notice.body);

    // Another member claims it, through the real gateway as that member's pod.
    members.create(&PostParams::default(), &member("heir", "xi", None)).await.expect("member");
    let heir = wait_for(&members, "heir", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let gw = start_gateway(&s).await;
    let pod = ns.api::<k8s_openapi::api::core::v1::Pod>().get(heir.status.as_ref().and_then(|s| s.pod_name.as_deref()).expect("pod")).await;
    let token = pod_token(&s, ns.name(), &pod.expect("heir's pod"), team_operator::controller::pod::GATEWAY_AUDIENCE).await;
    let claimed = ok(call(&gw.url, Some(&token), "team_task", claim(None)).await);
    assert_eq!((claimed["name"].as_str(), claimed["owner"].as_str()), (Some("waiting"), heir.agent_name()), "{claimed}");
    ns.cleanup().await;
}
