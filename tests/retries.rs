//! Retries (issue 16, point 7) on the stack's real node: an agent type's `backoffLimit` starts a
//! failed member again in a new pod after a backoff, and a lead whose pod ends comes back
//! with its inbox and memory instead of disbanding its team, whether deleted by hand or evicted by
//! the node's kubelet (over its ephemeral-storage limit). The operator runs as its real binary
//! with `--retry-backoff-seconds 1` (the backoff doubles per failure from there). Like
//! tests/node.rs these fail, never skip, when the node is missing.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;
use support::node::{AGENT_IMAGE, POD_TIMEOUT, agent_type, node_ip, project_image, real_node, shell_container};
use support::operator::Operator;
use support::teams::{failure_notice, lead_name, member, team};
use support::*;
use team_operator::api::{AgentType, Member, MemberPhase, MemoryMode, Team, TeamPhase};
use team_operator::bus::{MemoryKey, MessageKind, OutgoingMessage, Recipient, TeamKey};
use team_operator::controller::pod::GATEWAY_AUDIENCE;
use team_operator::controller::retry::BACK_OFF;

/// The first retry's backoff in these tests (the second waits 2 s).
const BACKOFF: &str = "1";
/// A first backoff long enough for another member to be admitted within it.
const LONG_BACKOFF: &str = "10";

/// An agent type `name` on the real node running `script`, retried up to `backoff_limit` times.
fn retried(name: &str, script: &str, backoff_limit: i32) -> AgentType {
    AgentType { backoff_limit, ..agent_type(name, shell_container("agent", AGENT_IMAGE, script), |_| {}) }
}

/// A namespace, the operator (first retry after `backoff` seconds) and Team `name` (cap
/// `max_agents`, lead on a kwok node) with `agents` besides the builder's.
async fn team_with(prefix: &str, name: &str, max_agents: i32, agents: Vec<AgentType>, backoff: &str) -> (TestNamespace, Operator) {
    let s = stack().await;
    real_node(&s.client).await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, prefix).await;
    let op = Operator::start_with(ns.name(), 10, &["--retry-backoff-seconds", backoff]);
    let mut t = team(name, max_agents);
    t.spec.agents.extend(agents);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, name).await;
    (ns, op)
}

async fn create_member(ns: &TestNamespace, team: &str, name: &str, agent: &str) {
    let mut m = member(name, team, None);
    m.spec.agent = agent.into();
    ns.api::<Member>().create(&PostParams::default(), &m).await.unwrap_or_else(|e| panic!("creating Member {name}: {e}"));
}

fn pod_name(m: &Member) -> Option<String> {
    m.status.as_ref().and_then(|s| s.pod_name.clone())
}

fn failed_attempts(m: &Member) -> Option<i32> {
    m.status.as_ref().and_then(|s| s.failed_attempts)
}

/// The pods the Member controls (by uid), oldest first.
async fn pods_of(ns: &TestNamespace, m: &Member) -> Vec<Pod> {
    let uid = m.uid().unwrap_or_default();
    let mut pods: Vec<Pod> = ns.api::<Pod>().list(&ListParams::default()).await.expect("pods").items;
    pods.retain(|p| p.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid));
    pods.sort_by_key(|p| p.creation_timestamp().map(|t| t.0));
    pods
}

async fn log_of(ns: &TestNamespace, pod: &str) -> String {
    let params = LogParams { container: Some("agent".into()), ..Default::default() };
    ns.api::<Pod>().logs(pod, &params).await.unwrap_or_else(|e| format!("(no log of pod {pod}: {e})"))
}

fn exit_code(p: &Pod) -> Option<i32> {
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    Some(statuses.first()?.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[tokio::test]
async fn a_member_that_exits_1_with_backoff_limit_2_runs_three_pods_then_fails_with_the_exit_code() {
    let flaky = retried("flaky", "echo attempt $TEAM_ATTEMPT; exit 1", 2);
    let (ns, _op) = team_with("retry-fail", "retries", 1, vec![flaky], BACKOFF).await;
    create_member(&ns, "retries", "flaky", "flaky").await;
    let members: Api<Member> = ns.api();
    let first = wait_for(&members, "flaky", POD_TIMEOUT, "the first pod", |m| pod_name(m).is_some()).await;
    let first_pod = pod_name(&first).unwrap_or_default();

    // podName follows each attempt's pod; between them the member waits out its backoff.
    let second =
        wait_for(&members, "flaky", POD_TIMEOUT, "the second attempt's pod", |m| pod_name(m) == Some(format!("{first_pod}-2"))).await;
    assert_eq!(failed_attempts(&second), Some(1), "{}", describe(&second));
    let failed = wait_for(&members, "flaky", POD_TIMEOUT * 2, "Failed after the third attempt", |m| m.phase().is_terminal()).await;
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(
        (failed.phase(), status.reason.as_deref(), status.exit_code, status.failed_attempts),
        (MemberPhase::Failed, Some("Error"), Some(1), Some(3)),
        "{}",
        describe(&failed)
    );
    assert_eq!(status.pod_name, Some(format!("{first_pod}-3")), "podName names the last attempt's pod");
    let message = status.message.unwrap_or_default();
    assert!(message.contains("exit code 1") && message.contains("attempt 3 of 3"), "{message}");

    // Three pods of distinct names, each failed with exit code 1 and knowing its attempt.
    let pods = pods_of(&ns, &failed).await;
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, [first_pod.clone(), format!("{first_pod}-2"), format!("{first_pod}-3")], "the member's pods");
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(exit_code(p), Some(1), "{}", describe(p));
        assert_eq!(log_of(&ns, &p.name_any()).await.trim(), format!("attempt {}", i + 1));
    }
    // The lead hears of the failure once, when it is final.
    let lead = lead_name(&ns, "retries").await;
    let notice = failure_notice(ns.name(), "retries", &lead, "flaky").await;
    assert!(notice.contains("(exit code 1)") && notice.contains("attempt 3 of 3"), "{notice}");
    ns.cleanup().await;
}

/// The retry holds no slot while it backs off (the Job's parallelism counts active pods only):
/// with a cap of 1, a member created after it starts in between.
#[tokio::test]
async fn a_member_whose_second_attempt_succeeds_completes_and_its_backoff_frees_the_slot() {
    let second_time = retried("second", r#"echo attempt $TEAM_ATTEMPT; [ "$TEAM_ATTEMPT" = 2 ]"#, 3);
    let quick = retried("quick", "echo quick", 0);
    let (ns, _op) = team_with("retry-ok", "second", 1, vec![second_time, quick], LONG_BACKOFF).await;
    create_member(&ns, "second", "second", "second").await;
    let members: Api<Member> = ns.api();
    wait_for(&members, "second", POD_TIMEOUT, "the first attempt to fail and back off", |m| {
        failed_attempts(m) == Some(1) && m.phase() == MemberPhase::Queued
    })
    .await;
    create_member(&ns, "second", "quick", "quick").await;
    let done = wait_for(&members, "second", POD_TIMEOUT * 2, "the second attempt to finish", |m| m.phase().is_terminal()).await;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!((done.phase(), status.exit_code, status.failed_attempts), (MemberPhase::Completed, Some(0), Some(1)), "{}", describe(&done));
    let pods = pods_of(&ns, &done).await;
    assert_eq!(pods.len(), 2, "two attempts, two pods: {:?}", pods.iter().map(ResourceExt::name_any).collect::<Vec<_>>());
    assert_eq!(status.pod_name.as_deref(), Some(pods[1].name_any().as_str()));
    assert_eq!(log_of(&ns, &pods[1].name_any()).await.trim(), "attempt 2");
    let lead_notified = status.conditions.iter().any(|c| c.type_ == "LeadNotified");
    assert!(!lead_notified, "a retried failure is no failure to tell: {}", describe(&done));

    let quick = wait_for(&members, "quick", POD_TIMEOUT, "the other member to start", |m| pod_name(m).is_some()).await;
    let quick_started = quick.status.and_then(|s| s.start_time).expect("startTime").0;
    let retried_at = pods[1].creation_timestamp().expect("creation").0;
    assert!(quick_started < retried_at, "the other member started at {quick_started}, after the retry's pod at {retried_at}");
    ns.cleanup().await;
}

/// The lead's loop: the first pod writes memory and stays in its first turn (so the message sent
/// to it waits unread in its inbox); the second pod prints its turns: turn 1 starts with the
/// memory, turn 2 is the message.
const LEAD: &str = r#"
turn=$(cat)
case "$TEAM_ATTEMPT/$TEAM_TURN" in
1/1) teamctl memory append "written by the first pod" && exec sleep 3600 ;;
2/*) printf 'second pod, turn %s: %s\n' "$TEAM_TURN" "$turn" ;;
*) echo "unexpected attempt/turn $TEAM_ATTEMPT/$TEAM_TURN"; exit 7 ;;
esac
"#;

/// The stack, a namespace, a gateway on the real node's address and the operator (first retry after
/// `backoff` seconds) whose pods' `teamctl` calls it: for members that run in real containers.
async fn with_gateway(prefix: &str, backoff: &str) -> (Stack, TestNamespace, fixture::Gateway, Operator) {
    let s = stack().await;
    real_node(&s.client).await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, prefix).await;
    let gw = fixture::start_gateway_on(&s, Default::default(), &node_ip()).await;
    let op = Operator::start_with(
        ns.name(),
        10,
        &["--gateway-url", &gw.url, "--teamctl-image", &project_image(), "--retry-backoff-seconds", backoff],
    );
    (s, ns, gw, op)
}

/// Asserts that Team `team` is Active now.
async fn assert_team_active(ns: &TestNamespace, team: &str, why: &str) {
    let now = ns.api::<Team>().get(team).await.expect("team");
    assert_eq!(now.status.as_ref().and_then(|s| s.phase), Some(TeamPhase::Active), "{why}: {}", describe(&now));
}

/// Waits until the memory of `team`'s lead (its agent type's memory mode Local: the lead's own)
/// holds `text`.
async fn wait_for_lead_memory(gw: &fixture::Gateway, ns: &TestNamespace, team: &str, text: &str, what: &str) {
    let (memory, key) = (gw.bus.memory(), MemoryKey { namespace: ns.name().into(), project: team.into(), agent: "lead".into() });
    wait_until(POD_TIMEOUT, what, || async { memory.read(&key).await.ok().flatten().is_some_and(|m| m.contains(text)) }).await;
}

/// Creates `t` and waits for its lead's first pod to run: the lead's name and that pod's.
async fn start_lead(ns: &TestNamespace, t: &Team) -> (String, String) {
    ns.api::<Team>().create(&PostParams::default(), t).await.expect("team");
    let team = t.name_any();
    let lead = lead_name(ns, &team).await;
    let running = wait_for(&ns.api::<Member>(), &format!("{team}-lead"), POD_TIMEOUT, "the lead's first pod to run", |m| {
        matches!(m.phase(), MemberPhase::Active | MemberPhase::Idle)
    })
    .await;
    (lead, pod_name(&running).expect("podName"))
}

/// A message from a person to the member `to`.
fn from_tester(to: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        from: "user:tester".into(),
        to: Recipient::Member(to.into()),
        body: body.into(),
        kind: MessageKind::Message,
        id: None,
        sent_by: Some("tester".into()),
    }
}

#[tokio::test]
async fn a_lead_pod_deleted_by_hand_comes_back_under_a_new_name_with_its_inbox_and_memory() {
    let (s, ns, gw, _op) = with_gateway("retry-lead", BACKOFF).await;
    let command = format!("exec teamctl run --runtime exec -- sh -c '{}'", LEAD.replace('\'', r"'\''"));
    let mut lead_type = retried("lead", &command, 1);
    lead_type.memory = MemoryMode::Local;
    let mut t = team("comeback", 1);
    // Long enough for the test to act as the second pod between its turn 2 and its end.
    t.spec.member_timeout_seconds = 15;
    t.spec.agents[0] = lead_type;
    let (lead, first_pod) = start_lead(&ns, &t).await;
    let members: Api<Member> = ns.api();
    let member_name = "comeback-lead";
    wait_for_lead_memory(&gw, &ns, "comeback", "written by the first pod", "the first pod to write its memory").await;

    // The first pod's token acts as the lead; a message waits unread in the lead's inbox.
    let pods: Api<Pod> = ns.api();
    let first = pods.get(&first_pod).await.expect("first pod");
    let first_token = fixture::pod_token(&s, ns.name(), &first, GATEWAY_AUDIENCE).await;
    let read = fixture::ok(fixture::call(&gw.url, Some(&first_token), "agent_memory", json!({ "action": "read" })).await);
    assert_eq!(read["agent"], "lead", "{read}");
    gw.bus.send(&TeamKey::new(ns.name(), "comeback"), from_tester(&lead, "the plan: ship it")).await.expect("send to the lead");

    // Deleted by hand: the lead comes back in a new pod and the team goes on.
    pods.delete(&first_pod, &DeleteParams::default()).await.expect("delete the lead's pod");
    let second_pod = format!("{first_pod}-2");
    let back = wait_for(&members, member_name, POD_TIMEOUT, "the lead's second pod", |m| pod_name(m).as_deref() == Some(&second_pod)).await;
    assert_eq!(failed_attempts(&back), Some(1), "{}", describe(&back));
    assert_team_active(&ns, "comeback", "a lead that is retried does not disband its team").await;

    // Once gone, the first pod's token works no more.
    wait_deleted(&pods, &first_pod, first.uid().as_deref(), POD_TIMEOUT, "the first pod to go").await;
    let refused = fixture::call(&gw.url, Some(&first_token), "agent_memory", json!({ "action": "read" })).await;
    assert_eq!(refused.0, 401, "the deleted pod's token: {}", refused.1);

    // The second pod reads its memory (turn 1) and the message sent before (turn 2), and its own
    // token acts as the same member.
    let turn2 = "second pod, turn 2:";
    wait_until(POD_TIMEOUT, "the second pod's turn 2", || async { log_of(&ns, &second_pod).await.contains(turn2) }).await;
    let second = pods.get(&second_pod).await.expect("second pod");
    let second_token = fixture::pod_token(&s, ns.name(), &second, GATEWAY_AUDIENCE).await;
    let read = fixture::ok(fixture::call(&gw.url, Some(&second_token), "agent_memory", json!({ "action": "read" })).await);
    assert_eq!(read["agent"], "lead", "{read}");
    let teams: Api<Team> = ns.api();
    let disbanded = wait_for(&teams, "comeback", POD_TIMEOUT, "the team to disband once its lead completes", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
    })
    .await;
    let log = log_of(&ns, &second_pod).await;
    let done = members.get(member_name).await.expect("lead");
    assert_eq!((done.phase(), failed_attempts(&done)), (MemberPhase::Completed, Some(1)), "{}\nlog:\n{log}", describe(&done));
    let complete = disbanded.status.iter().flat_map(|s| &s.conditions).find(|c| c.type_ == "Complete").map(|c| c.status.clone());
    assert_eq!(complete.as_deref(), Some("True"), "{}", describe(&disbanded));
    let turn1 = log.split("second pod, turn 2:").next().unwrap_or_default();
    assert!(turn1.contains("second pod, turn 1:") && turn1.contains("written by the first pod"), "turn 1 starts with the memory:\n{log}");
    assert!(log.contains("the plan: ship it"), "turn 2 is the message sent to the first pod:\n{log}");
    ns.cleanup().await;
}

/// The lead's ephemeral-storage limit in the eviction test. The pod's usage counts the teamctl
/// binary its init container copies into an emptyDir (about 100 MB in a debug build) besides the
/// container's writable layer and logs, so the limit leaves room for it; [`FILL_MB`] past it is
/// over the limit whatever teamctl weighs.
const LEAD_STORAGE_LIMIT: &str = "192Mi";
/// What the lead's first pod writes into its writable layer: over [`LEAD_STORAGE_LIMIT`] alone.
const FILL_MB: u32 = 256;
/// The kubelet's eviction manager looks every 10 s, from summary stats that can be a period old.
const EVICTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The lead's loop for the eviction: the first pod writes memory, reads the message the test
/// sends (leaving it unacked, as an agent evicted mid-turn does), notes that in its memory too,
/// then writes past its ephemeral-storage limit and stays; the second pod prints its turns.
fn evicted_lead_script() -> String {
    format!(
        r#"
turn=$(cat)
case "$TEAM_ATTEMPT/$TEAM_TURN" in
1/1)
  teamctl memory append "written by the first pod" || exit 8
  got="no messages"
  while [ "$got" = "no messages" ]; do got=$(teamctl wait --no-ack) || exit 9; done
  teamctl memory append "the first pod read: $got" || exit 8
  dd if=/dev/zero of=/tmp/fill bs=1M count={FILL_MB} 2>/dev/null
  exec sleep 3600 ;;
2/*) printf 'second pod, turn %s: %s\n' "$TEAM_TURN" "$turn" ;;
*) echo "unexpected attempt/turn $TEAM_ATTEMPT/$TEAM_TURN"; exit 7 ;;
esac
"#
    )
}

/// The Events the kubelet wrote about `pod` with `reason`.
async fn kubelet_events(ns: &TestNamespace, pod: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = ns.api();
    let mut found = events.list(&ListParams::default()).await.expect("events").items;
    found.retain(|e| {
        e.reason.as_deref() == Some(reason)
            && e.reporting_controller.as_deref() == Some("kubelet")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
    });
    found
}

/// A Failed pod the kubelet evicted (reason Evicted, and the kubelet's Evicted Event on it) for
/// going over its ephemeral-storage limit; returns the kubelet's message without its closing period
/// (the operator's messages quote it so, adding their own punctuation).
async fn assert_evicted_by_the_kubelet(ns: &TestNamespace, pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("Evicted")), "{}", describe(pod));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("ephemeral local storage"), "evicted for its storage: {message}");
    let name = pod.name_any();
    wait_until(POD_TIMEOUT, "the kubelet's Evicted Event on the pod", || async { !kubelet_events(ns, &name, "Evicted").await.is_empty() })
        .await;
    message.trim().trim_end_matches('.').to_owned()
}

/// Issue 16 point 7 with a real eviction: the kubelet's eviction manager, not the test or the
/// operator, ends the lead's first pod for its ephemeral storage.
#[tokio::test]
async fn a_lead_evicted_by_the_kubelet_for_its_ephemeral_storage_comes_back_with_its_inbox_and_memory() {
    let (s, ns, gw, _op) = with_gateway("retry-evict", LONG_BACKOFF).await;
    let command = format!("exec teamctl run --runtime exec -- sh -c '{}'", evicted_lead_script().replace('\'', r"'\''"));
    let mut container = shell_container("agent", AGENT_IMAGE, &command);
    container.resources = Some(ResourceRequirements {
        limits: Some([("ephemeral-storage".to_string(), Quantity(LEAD_STORAGE_LIMIT.into()))].into()),
        ..Default::default()
    });
    let lead_type = AgentType { backoff_limit: 1, memory: MemoryMode::Local, ..agent_type("lead", container, |_| {}) };
    let mut t = team("evicted", 1);
    t.spec.agents[0] = lead_type;
    let (lead, first_pod) = start_lead(&ns, &t).await;
    let members: Api<Member> = ns.api();
    let member_name = "evicted-lead";
    wait_for_lead_memory(&gw, &ns, "evicted", "written by the first pod", "the first pod to write its memory").await;
    gw.bus.send(&TeamKey::new(ns.name(), "evicted"), from_tester(&lead, "the plan: ship it")).await.expect("send to the lead");
    // The first pod got the message before it wrote past its limit.
    wait_for_lead_memory(&gw, &ns, "evicted", "the first pod read:", "the first pod to read the message").await;

    // The kubelet evicts the first pod; the Member says so while it backs off, then runs its
    // second pod, and the team stays Active throughout.
    let what = "the kubelet to evict the lead's first pod (the eviction manager looks every 10 s) and the lead to back off";
    let backing_off = wait_for(&members, member_name, EVICTION_TIMEOUT, what, |m| {
        m.phase().is_terminal() || (failed_attempts(m) == Some(1) && m.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(BACK_OFF))
    })
    .await;
    assert_eq!(backing_off.phase(), MemberPhase::Queued, "the evicted lead is retried: {}", describe(&backing_off));
    let why = backing_off.status.clone().unwrap_or_default().message.unwrap_or_default();
    assert!(why.starts_with("attempt 1 of 2 failed") && why.contains("(Evicted"), "{why}");
    let pods: Api<Pod> = ns.api();
    let evicted = pods.get(&first_pod).await.expect("the first pod is kept");
    let eviction = assert_evicted_by_the_kubelet(&ns, &evicted).await;
    assert!(why.contains(&format!("{eviction}; a new pod starts")), "the Member's message quotes the kubelet's: {why}");
    assert_team_active(&ns, "evicted", "an evicted lead that is retried does not disband its team").await;

    let second_pod = format!("{first_pod}-2");
    let back = wait_for(&members, member_name, POD_TIMEOUT, "the lead's second pod to run", |m| {
        pod_name(m).as_deref() == Some(&second_pod) && matches!(m.phase(), MemberPhase::Active | MemberPhase::Idle)
    })
    .await;
    assert_eq!(failed_attempts(&back), Some(1), "{}", describe(&back));
    assert_team_active(&ns, "evicted", "an evicted lead that is retried does not disband its team").await;

    // The second pod's turn 1 starts with the memory, its turn 2 is the message the first pod
    // read but never acked.
    let turn2 = "second pod, turn 2:";
    wait_until(POD_TIMEOUT, "the second pod's turn 2", || async { log_of(&ns, &second_pod).await.contains(turn2) }).await;
    let log = log_of(&ns, &second_pod).await;
    let (turn1, turn2) = log.split_once(turn2).unwrap_or_default();
    assert!(turn1.contains("second pod, turn 1:") && turn1.contains("written by the first pod"), "turn 1 starts with the memory:\n{log}");
    assert!(turn2.contains("the plan: ship it"), "turn 2 is the message sent before the eviction:\n{log}");
    // The second pod's own token acts as the lead and reads the same memory.
    let second = pods.get(&second_pod).await.expect("second pod");
    let second_token = fixture::pod_token(&s, ns.name(), &second, GATEWAY_AUDIENCE).await;
    let read = fixture::ok(fixture::call(&gw.url, Some(&second_token), "agent_memory", json!({ "action": "read" })).await);
    assert_eq!(read["agent"], "lead", "{read}");
    assert!(read.to_string().contains("the first pod read:"), "{read}");
    ns.cleanup().await;
}

/// Without a backoffLimit an eviction is a failure like any other: reason Evicted, the lead told.
#[tokio::test]
async fn a_member_evicted_by_the_kubelet_without_a_backoff_limit_fails_with_reason_evicted_and_the_lead_is_told() {
    let mut container = shell_container("agent", AGENT_IMAGE, "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null; exec sleep 3600");
    container.resources = Some(ResourceRequirements {
        limits: Some([("ephemeral-storage".to_string(), Quantity("4Mi".into()))].into()),
        ..Default::default()
    });
    let hog = AgentType { backoff_limit: 0, ..agent_type("hog", container, |_| {}) };
    let (ns, _op) = team_with("retry-evict0", "hogs", 1, vec![hog], BACKOFF).await;
    create_member(&ns, "hogs", "hog", "hog").await;
    let members: Api<Member> = ns.api();
    let what = "the kubelet to evict the member's pod (over its ephemeral-storage limit; the eviction manager looks every 10 s)";
    let failed = wait_for(&members, "hog", EVICTION_TIMEOUT, what, |m| m.phase().is_terminal()).await;
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(
        (failed.phase(), status.reason.as_deref(), status.failed_attempts),
        (MemberPhase::Failed, Some("Evicted"), None),
        "{}",
        describe(&failed)
    );
    let pod = ns.api::<Pod>().get(&pod_name(&failed).expect("podName")).await.expect("the evicted pod is kept");
    let eviction = assert_evicted_by_the_kubelet(&ns, &pod).await;
    assert!(status.message.unwrap_or_default().ends_with(&format!("): {eviction}")), "{}", describe(&failed));
    let lead = lead_name(&ns, "hogs").await;
    let notice = failure_notice(ns.name(), "hogs", &lead, "hog").await;
    assert!(notice.starts_with("[AGENT FAILURE] @hog failed: Evicted") && notice.contains(&format!("{eviction}. Its pending")), "{notice}");
    assert_eq!(pods_of(&ns, &failed).await.len(), 1, "no retry without a backoffLimit");
    assert_team_active(&ns, "hogs", "a member's failure does not disband its team").await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_backoff_limit_out_of_range_is_refused_naming_the_field() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "retry-schema").await;
    for bad in [-1, 11] {
        let mut t = team("bad", 1);
        t.spec.agents[1].backoff_limit = bad;
        let e = ns.api::<Team>().create(&PostParams::default(), &t).await.expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("spec.agents[1].backoffLimit"), "{bad}: {text}");
    }
    ns.cleanup().await;
}
