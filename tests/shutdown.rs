//! The shutdown handshake end to end on the stack. The lead asks a member under `teamctl run`
//! (the exec runtime: a shell script that saves its memory and answers) to stop: the request is
//! the member's next turn, its answer goes back through `shutdown_response`, an approving member
//! exits 0 once its turn ends and a rejecting one goes on, and the lead hears each answer. A
//! disband holds the running members for `spec.shutdownGraceSeconds`: one that ends by itself
//! Completes, one that rejects is cancelled at once, a silent one is cancelled when the grace
//! ends, and the Team waits for all of that before it goes.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::operator::Operator;
use support::teams::{lead_name, member, team};
use support::tokens::pod_token;
use support::*;
use team_operator::api::{Member, MemberPhase, ShutdownState, Team};
use team_operator::bus::MemoryKey;
use team_operator::controller::pod::GATEWAY_AUDIENCE;

fn read(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("turns.txt")).unwrap_or_default()
}

/// The exec agent: records each turn; a turn holding a shutdown request saves the memory and
/// answers with `ANSWER` (`approve`, or `reject --reason …`).
fn agent(answer: &str) -> String {
    format!(
        r#"printf '=== turn %s\n' "$TEAM_TURN" >> turns.txt; t=$(cat); printf '%s\n' "$t" >> turns.txt
case "$t" in *"[SHUTDOWN REQUEST]"*) teamctl memory write "saved before stopping" && teamctl shutdown {answer} >> turns.txt 2>&1 ;; esac"#
    )
}

fn run(gw: &fixture::Gateway, token: &str, dir: &std::path::Path, script: &str) -> tokio::process::Child {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_teamctl"));
    let path =
        format!("{}:{}", bin.parent().map(|p| p.display().to_string()).unwrap_or_default(), std::env::var("PATH").unwrap_or_default());
    tokio::process::Command::new(bin)
        .args(["run", "--runtime", "exec", "--idle-timeout", "60", "--", "sh", "-c", script])
        .env_clear()
        .env("PATH", path)
        .env("TEAM_GATEWAY_URL", &gw.url)
        .env("TEAM_TOKEN", token)
        .env("TEAM_PROMPT", "refactor the parser")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("teamctl run")
}

/// The lead's next message bodies (waits until some come).
async fn lead_next(gw: &fixture::Gateway, lead: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v = fixture::ok(fixture::call(&gw.url, Some(lead), "wait_messages", json!({ "timeout_seconds": 5 })).await);
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        let ids: Vec<Value> = messages.iter().map(|m| m["stream_id"].clone()).collect();
        fixture::ok(fixture::call(&gw.url, Some(lead), "wait_messages", json!({ "ack": ids, "receive": false })).await);
        if !messages.is_empty() || tokio::time::Instant::now() > deadline {
            return messages.iter().filter_map(|m| m["body"].as_str().map(str::to_owned)).collect();
        }
    }
}

fn shutdown_of(m: &Member) -> Option<ShutdownState> {
    m.status.as_ref().and_then(|s| s.shutdown.as_ref()).map(|s| s.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_asks_a_member_to_stop_and_it_approves_or_rejects_through_the_tool() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "shutdown-ask").await;
    let gw = fixture::start_gateway(&s).await;
    let fix = fixture::team_with_members(&s, &ns, &gw.bus, "sigma", &["general", "general-2"]).await;
    let lead = fix.token("lead").to_owned();
    let members: Api<Member> = ns.api();

    // Refusals name the rule.
    let (code, v) = fixture::call(&gw.url, Some(fix.token("general")), "shutdown_response", json!({ "action": "approve" })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("conflict")), "no request is pending: {v}");
    let (code, v) = fixture::call(&gw.url, Some(fix.token("general")), "shutdown_request", json!({ "member": "general-2" })).await;
    assert_eq!(code, 403, "the lead's: {v}");
    let (code, v) = fixture::call(&gw.url, Some(&lead), "shutdown_request", json!({ "member": "nobody" })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("unknown_recipient")), "{v}");

    // general approves: it saves its memory in the turn the request made, and exits 0.
    let dir = scratch_dir(&format!("shutdown/{}/approve", ns.name));
    let mut approving = run(&gw, fix.token("general"), &dir, &agent("approve"));
    wait_until(TIMEOUT, "turn 1", || async { read(&dir).contains("=== turn 1") }).await;
    let asked = fixture::ok(
        fixture::call(&gw.url, Some(&lead), "shutdown_request", json!({ "member": "general", "reason": "the parser is done" })).await,
    );
    assert_eq!(asked["state"], "Requested", "{asked}");
    let status = tokio::time::timeout(TIMEOUT, approving.wait()).await.expect("it stopped in time").expect("wait");
    let turns = read(&dir);
    assert_eq!(status.code(), Some(0), "{turns}\n{}", std::fs::read_to_string(dir.join("run.log")).unwrap_or_default());
    assert!(turns.contains("=== turn 2") && turns.contains("[SHUTDOWN REQUEST] from lead: the parser is done"), "{turns}");
    assert!(!turns.contains("=== turn 3"), "it ended when the turn of the request ended: {turns}");
    let m = members.get("sigma-general").await.expect("member");
    let st = m.status.and_then(|s| s.shutdown).expect("status.shutdown");
    assert_eq!((st.state, st.requested_by.as_deref()), (ShutdownState::Approved, Some("lead")));
    let memory = MemoryKey { namespace: ns.name.clone(), project: "sigma".into(), agent: "general".into() };
    assert_eq!(gw.bus.memory().read(&memory).await.expect("memory").as_deref(), Some("saved before stopping"));
    let told = lead_next(&gw, &lead).await;
    assert_eq!(told, vec!["[SHUTDOWN ANSWER] @general approved your shutdown request; it exits when its turn ends.".to_owned()]);

    // general-2 rejects with a reason, and goes on: a later message is its next turn.
    let dir = scratch_dir(&format!("shutdown/{}/reject", ns.name));
    let mut rejecting = run(&gw, fix.token("general-2"), &dir, &agent("reject --reason 'the tests still fail'"));
    wait_until(TIMEOUT, "turn 1", || async { read(&dir).contains("=== turn 1") }).await;
    fixture::ok(fixture::call(&gw.url, Some(&lead), "shutdown_request", json!({ "member": "general-2" })).await);
    let told = lead_next(&gw, &lead).await;
    assert_eq!(told, vec!["[SHUTDOWN ANSWER] @general-2 rejected your shutdown request: the tests still fail".to_owned()]);
    let m = wait_for(&members, "sigma-general-2", TIMEOUT, "Rejected", |m| shutdown_of(m) == Some(ShutdownState::Rejected)).await;
    assert_eq!(m.status.and_then(|s| s.shutdown).and_then(|s| s.answer).as_deref(), Some("the tests still fail"));
    fixture::ok(fixture::call(&gw.url, Some(&lead), "send_message", json!({ "to": "general-2", "body": "then fix them" })).await);
    wait_until(TIMEOUT, "turn 3", || async { read(&dir).contains("then fix them") }).await;
    assert!(rejecting.try_wait().expect("try_wait").is_none(), "a rejecting member goes on");
    let (code, v) = fixture::call(&gw.url, Some(fix.token("general-2")), "shutdown_response", json!({ "action": "approve" })).await;
    assert_eq!(code, 409, "answered already: {v}");
    let (code, v) = fixture::call(&gw.url, Some(fix.token("general-2")), "shutdown_response", json!({ "action": "reject" })).await;
    assert_eq!(code, 400, "a rejection needs a reason: {v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("`reason`"), "{v}");
    rejecting.kill().await.ok();

    gw.bus.teardown(&fix.key(&ns.name)).await.ok();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disband_waits_the_grace_for_running_members_to_end_before_it_deletes_their_pods() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "shutdown-grace").await;
    let _op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let mut t = team("tau", 3);
    t.spec.shutdown_grace_seconds = 12;
    let teams: Api<Team> = ns.api();
    teams.create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, "tau").await;
    let members: Api<Member> = ns.api();
    let pods: Api<Pod> = ns.api();
    let mut tokens = Vec::new();
    for name in ["ender", "rejecter", "silent"] {
        members.create(&PostParams::default(), &member(name, "tau", None)).await.expect("member");
        let m = wait_for(&members, name, TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
        let pod = pods.get(&m.status.and_then(|s| s.pod_name).expect("pod")).await.expect("pod");
        tokens.push(pod_token(&s.client, ns.name(), &pod, GATEWAY_AUDIENCE, 600).await.expect("token"));
    }

    // Counted active: the Team's reconcile has put them on the roster (it writes the counts after).
    wait_for(&teams, "tau", TIMEOUT, "three members counted active", |t| t.status.as_ref().is_some_and(|s| s.active == 3)).await;
    teams.delete("tau", &DeleteParams::default()).await.expect("delete team");
    // Each running member is asked to stop, as a notice its wait returns.
    for token in &tokens {
        let v = fixture::ok(fixture::call(&gw.url, Some(token), "wait_messages", json!({ "timeout_seconds": 10 })).await);
        let body = v["messages"][0]["body"].as_str().unwrap_or_default().to_owned();
        assert!(body.starts_with("[SHUTDOWN REQUEST] from team-operator: team tau disbanded"), "{v}");
    }
    // The rejecter is not waited for; the ender approves and its agent exits 0.
    fixture::ok(fixture::call(&gw.url, Some(&tokens[1]), "shutdown_response", json!({ "action": "reject", "reason": "mid-write" })).await);
    fixture::ok(fixture::call(&gw.url, Some(&tokens[0]), "shutdown_response", json!({ "action": "approve" })).await);
    let rejecter = wait_for(&members, "rejecter", TIMEOUT, "Cancelled", |m| m.phase() == MemberPhase::Cancelled).await;
    let silent = members.get("silent").await.expect("silent");
    assert_eq!(silent.phase(), MemberPhase::Active, "the silent member is held while the grace lasts");
    let ender_pod = members.get("ender").await.expect("ender").status.and_then(|s| s.pod_name).expect("pod");
    set_sim_exit(&pods, &ender_pod, 0, None).await;
    let ender = wait_for(&members, "ender", TIMEOUT, "Completed", |m| m.phase() == MemberPhase::Completed).await;
    assert_eq!(ender.status.and_then(|s| s.shutdown).map(|s| s.state), Some(ShutdownState::Approved));

    let silent = wait_for(&members, "silent", TIMEOUT, "Cancelled after the grace", |m| m.phase() == MemberPhase::Cancelled).await;
    let cancelled_at = |m: &Member| m.status.as_ref().and_then(|s| s.completion_time.clone()).expect("completionTime").0;
    let waited = cancelled_at(&silent).duration_since(cancelled_at(&rejecter));
    assert!(waited.as_secs() >= 8, "the silent member was cancelled when the 12 s grace ended, {waited:?} after the rejecter");
    wait_deleted(&teams, "tau", None, TIMEOUT, "the Team, once its disband is done").await;
    ns.cleanup().await;
}
