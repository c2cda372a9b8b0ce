//! Notices to the lead (`spec.leadNotices`), end to end on the stack: `[IDLE] @<name>` once per
//! turn from the gateway, when a member under `teamctl run` finishes a turn and waits (not per
//! wait), and `[DONE] @<name>` once per member from the operator when it completes, also across
//! an operator restart. What is asserted is what the lead reads: its own wait_messages.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::operator::Operator;
use support::teams::{lead_name, member, team};
use support::*;
use team_operator::api::{Member, MemberPhase, Team};
use team_operator::bus::{Bus, TeamKey};

/// The bodies and senders of what one wait of the lead (`timeout` seconds) returns, acked.
async fn lead_reads(gw: &fixture::Gateway, lead: &str, timeout: u64) -> (Vec<String>, Vec<String>) {
    let v = fixture::ok(fixture::call(&gw.url, Some(lead), "wait_messages", json!({ "timeout_seconds": timeout })).await);
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let field = |name: &str| messages.iter().filter_map(|m| m[name].as_str().map(str::to_owned)).collect::<Vec<_>>();
    let (ids, bodies, from) = (field("stream_id"), field("body"), field("from"));
    fixture::ok(fixture::call(&gw.url, Some(lead), "wait_messages", json!({ "ack": ids, "receive": false })).await);
    (bodies, from)
}

/// The lead's next messages: its waits until one returns some (the team's waits block 5 s).
async fn lead_next(gw: &fixture::Gateway, lead: &str) -> (Vec<String>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let got = lead_reads(gw, lead, 5).await;
        if !got.0.is_empty() || tokio::time::Instant::now() > deadline {
            return got;
        }
    }
}

fn read(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("turns.txt")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_is_told_once_per_turn_that_a_member_waits() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "notice-idle").await;
    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let fix = fixture::team_with_members(&s, &ns, &bus, "iota", &["general"]).await;
    ns.api::<Team>()
        .patch("iota", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "leadNotices": { "idle": true } } })))
        .await
        .expect("leadNotices.idle");
    // Started after the patch, so its watch of Teams lists the team as patched.
    let gw = fixture::start_gateway(&s).await;
    let lead = fix.token("lead").to_owned();

    // The member loop, as in a member pod: turn 1 is the prompt; a message makes turn 2.
    let dir = scratch_dir(&format!("lead-notices/{}", ns.name));
    let script = r#"printf '=== turn %s\n' "$TEAM_TURN" >> turns.txt; cat >> turns.txt"#;
    let mut run =
        support::member_loop::exec_member(&gw.url, fix.token("general"), "check the build", &["--idle-timeout", "8"], script, &dir, &[]);

    let (bodies, from) = lead_next(&gw, &lead).await;
    assert!(read(&dir).contains("=== turn 1"), "the notice follows turn 1: {}", read(&dir));
    assert_eq!(bodies, vec!["[IDLE] @general finished its turn and waits for messages.".to_owned()], "after turn 1");
    assert_eq!(from, vec!["team-operator".to_owned()]);

    fixture::ok(fixture::call(&gw.url, Some(&lead), "send_message", json!({ "to": "general", "body": "also run clippy" })).await);
    let (bodies, _) = lead_next(&gw, &lead).await;
    assert!(read(&dir).contains("also run clippy"), "turn 2 ran: {}", read(&dir));
    assert_eq!(bodies, vec!["[IDLE] @general finished its turn and waits for messages.".to_owned()], "after turn 2");

    let status = tokio::time::timeout(Duration::from_secs(30), run.wait()).await.expect("teamctl run ended").expect("wait");
    assert_eq!(status.code(), Some(0), "{}", std::fs::read_to_string(dir.join("run.log")).unwrap_or_default());
    // More waits in the same pause (an MCP client waits in calls of 50 s): each blocks past the
    // 2 s after which the member reads Idle, and none tells the lead again.
    for _ in 0..2 {
        let v = fixture::ok(fixture::call(&gw.url, Some(fix.token("general")), "wait_messages", json!({ "timeout_seconds": 3 })).await);
        assert_eq!(v["timed_out"], Value::Bool(true), "{v}");
    }
    let (bodies, _) = lead_reads(&gw, &lead, 3).await;
    assert_eq!(bodies, Vec::<String>::new(), "one notice per turn, not per wait; none about the lead's own waits");

    bus.teardown(&fix.key(&ns.name)).await.ok();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_is_told_once_when_a_member_completes_even_across_a_restart() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "notice-done").await;
    let mut op = Operator::start(ns.name(), 10);
    let mut t = team("kappa", 3);
    t.spec.lead_notices.done = true;
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let lead = lead_name(&ns, "kappa").await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("worker", "kappa", Some((0, "1s")))).await.expect("member");

    let done = wait_for(&members, "worker", TIMEOUT, "Completed", |m| m.phase() == MemberPhase::Completed).await;
    let agent_name = done.agent_name().expect("name").to_owned();
    let st = done.status.expect("status");
    let told = st.conditions.iter().find(|c| c.type_ == "LeadNotified").unwrap_or_else(|| panic!("no LeadNotified: {:?}", st.conditions));
    assert_eq!((told.status.as_str(), told.reason.as_str()), ("True", "NoticeSent"), "recorded in the write of Completed");

    let key = TeamKey::new(ns.name(), "kappa");
    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let inbox = bus.wait(&key, &lead, Duration::from_secs(10)).await.expect("the lead's inbox");
    let bodies: Vec<&str> = inbox.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec![format!("[DONE] @{agent_name} completed (exit code 0).")], "the lead's inbox");
    let ids: Vec<String> = inbox.iter().map(|m| m.stream_id.clone()).collect();
    bus.ack(&key, &lead, &ids).await.expect("ack");
    assert_eq!(op.metric("team_operator_notices_total{notice=\"member_done\"}").await, Some(1.0));

    // A restarted operator reconciles the completed member again and tells nobody.
    op.kill().await;
    let op = Operator::start(ns.name(), 10);
    op.wait_metric("team_operator_members{phase=\"Completed\"}", 1.0, TIMEOUT).await;
    let again = bus.wait(&key, &lead, Duration::from_secs(3)).await.expect("the lead's inbox");
    assert!(again.is_empty(), "told once: {again:?}");
    assert_eq!(op.metric("team_operator_notices_total{notice=\"member_done\"}").await, Some(0.0));

    ns.cleanup().await;
}
