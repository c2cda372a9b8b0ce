//! Budgets end to end on the stack (`spec.agents[].budget`, `spec.budget`): members under the
//! real controller (kwok pods) run `teamctl run` locally with their pods' projected tokens,
//! against the gateway in-process. What is asserted is what a user sees: the Member's phase and
//! reason, its `status.usage` and the Team's (read with kubectl), the lead's inbox, the loop's
//! turns, the metrics. A retried member's usage over its attempts runs on the real node, its
//! `teamctl run` in its pods.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::model_server::{Conversation, ModelServer, Reply};
use support::node::{AGENT_IMAGE, POD_TIMEOUT, agent_type, node_ip, project_image, real_node, shell_container};
use support::operator::Operator;
use support::proxy::RefusingProxy;
use support::teams::{lead_name, member, team};
use support::*;
use team_operator::api::{AgentType, Budget, Member, MemberPhase, Team, Usage};
use team_operator::bus::{MessageKind, OutgoingMessage, Recipient, TeamKey};

fn usage(m: &Member) -> Option<Usage> {
    m.status.as_ref().and_then(|s| s.usage)
}

fn reason(m: &Member) -> Option<&str> {
    m.status.as_ref().and_then(|s| s.reason.as_deref())
}

/// `kubectl get <object> -n <ns> -o jsonpath=<path>`: what a user reads.
async fn kubectl_jsonpath(ns: &str, object: &str, path: &str) -> String {
    let cache = scratch_dir("budgets-kubectl-cache");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .arg("--cache-dir")
        .arg(&cache)
        .args(["-n", ns, "get", object, "-o", &format!("jsonpath={path}")])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl (is the stack's PATH set? `eval \"$(hack/stack.sh env)\"`): {e}"));
    assert!(out.status.success(), "kubectl get {object}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The member loop's turns, as the agent script recorded them.
const RECORD: &str = r#"printf '=== turn %s\n' "$TEAM_TURN" >> turns.txt; cat >> turns.txt"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_its_turn_budget_is_stopped_and_the_lead_told() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "budget-turns").await;
    let op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let mut t = team("sigma", 3);
    t.spec.agents.iter_mut().filter(|a| a.name == "general").for_each(|a| a.budget = Some(Budget { turns: Some(2), ..Default::default() }));
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, "sigma").await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("worker", "sigma", None)).await.expect("member");
    let m = wait_for(&members, "worker", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let name = m.agent_name().expect("name").to_owned();
    let pod_name = m.status.as_ref().and_then(|s| s.pod_name.clone()).expect("pod");
    let me = fixture::member_token(&s, &ns, &m).await;
    let lead = fixture::member_token(&s, &ns, &members.get("sigma-lead").await.expect("lead member")).await;

    let dir = scratch_dir(&format!("budgets/{}", ns.name));
    let read = || std::fs::read_to_string(dir.join("turns.txt")).unwrap_or_default();
    let log = || std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    let mut run = support::member_loop::exec_member(&gw.url, &me, "count to three", &["--idle-timeout", "60"], RECORD, &dir, &[]);

    // Turns 1 and 2 are within the budget, and show in the status as they begin.
    wait_for(&members, "worker", TIMEOUT, "usage of turn 1", |m| usage(m).is_some_and(|u| u.turns == 1)).await;
    assert!(read().contains("=== turn 1"), "{}", read());
    fixture::ok(fixture::call(&gw.url, Some(&lead), "send_message", json!({ "to": name, "body": "and two" })).await);
    wait_for(&members, "worker", TIMEOUT, "usage of turn 2", |m| usage(m).is_some_and(|u| u.turns == 2)).await;
    assert_eq!(kubectl_jsonpath(ns.name(), "member/worker", "{.status.usage.turns}").await, "2", "as kubectl shows it");

    // A third turn would be over: it does not begin, and the operator stops the member.
    fixture::ok(fixture::call(&gw.url, Some(&lead), "send_message", json!({ "to": name, "body": "and three" })).await);
    let failed = wait_for(&members, "worker", TIMEOUT, "Failed BudgetExceeded", |m| m.phase() == MemberPhase::Failed).await;
    assert_eq!(reason(&failed), Some("BudgetExceeded"), "{:?}", failed.status);
    let message = failed.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert_eq!(message, "the budget of agent type general is spent: turn 3 began, over the budget of 2 turns");
    assert_eq!(usage(&failed), Some(Usage { turns: 3, tokens: 0 }));
    assert!(read().contains("and two") && !read().contains("=== turn 3"), "turn 3 never ran: {}", read());
    // The loop logs why it stops after its report was answered, which is what stops it: the
    // Member can read Failed first.
    wait_until(TIMEOUT, "the loop to say it does not start turn 3", || async { log().contains("not starting turn 3") }).await;

    // The way of every failure: the lead is told, the pod is deleted.
    let told = fixture::next_bodies(&gw, &lead).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].starts_with(&format!("[AGENT FAILURE] @{name} failed: BudgetExceeded. the budget of agent type general")), "{told:?}");
    let pods: Api<Pod> = ns.api();
    wait_until(TIMEOUT, "the member's pod deleted", || async {
        pods.get_opt(&pod_name).await.ok().flatten().is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;

    // The team's usage sums its members' (the lead reported none), as kubectl shows it.
    wait_until(TIMEOUT, "the team's usage", || async { kubectl_jsonpath(ns.name(), "team/sigma", "{.status.usage.turns}").await == "3" })
        .await;
    assert_eq!(op.metric("team_operator_members_over_budget_total{budget=\"member\"}").await, Some(1.0));
    assert_eq!(gw.state.metrics.usage_turns.get(), 3);

    run.kill().await.ok();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_over_its_token_budget_stops_who_works_and_admits_nobody() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "budget-team").await;
    let _op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let mut t = team("tau", 5);
    // Waits long enough that the idle member is still in its first one when the test looks.
    t.spec.member_timeout_seconds = 120;
    t.spec.budget = Some(Budget { tokens: Some(1000), ..Default::default() });
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, "tau").await;
    let members: Api<Member> = ns.api();
    let teams: Api<Team> = ns.api();
    for n in ["early", "late"] {
        members.create(&PostParams::default(), &member(n, "tau", None)).await.expect("member");
    }
    let early = wait_for(&members, "early", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let late = wait_for(&members, "late", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let dir = scratch_dir(&format!("budgets/{}", ns.name));

    // An exec agent reports its own tokens (teamctl usage): 600, then it waits for messages.
    let early_dir = dir.join("early");
    std::fs::create_dir_all(&early_dir).expect("dir");
    let reports = r#"teamctl usage --turns "$TEAM_TURN" --tokens 600"#;
    let mut early_run = support::member_loop::exec_member(
        &gw.url,
        &fixture::member_token(&s, &ns, &early).await,
        "work",
        &["--idle-timeout", "120"],
        reports,
        &early_dir,
        &[],
    );
    wait_for(&members, "early", TIMEOUT, "Idle with 600 tokens", |m| {
        m.phase() == MemberPhase::Idle && usage(m).is_some_and(|u| u.tokens == 600)
    })
    .await;
    wait_for(&teams, "tau", TIMEOUT, "the team's usage", |t| t.status.as_ref().and_then(|s| s.usage).is_some_and(|u| u.tokens == 600))
        .await;

    // The second one's 600 put the team over 1000 while it goes on working: it is stopped; the
    // idle one is left alone.
    let late_dir = dir.join("late");
    std::fs::create_dir_all(&late_dir).expect("dir");
    let works_on = r#"teamctl usage --turns "$TEAM_TURN" --tokens 600 > usage.txt; sleep 20"#;
    let mut late_run = support::member_loop::exec_member(
        &gw.url,
        &fixture::member_token(&s, &ns, &late).await,
        "work",
        &["--idle-timeout", "60"],
        works_on,
        &late_dir,
        &[],
    );
    let spent = wait_for(&teams, "tau", TIMEOUT, "BudgetExceeded", |t| {
        t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "BudgetExceeded" && c.status == "True"))
    })
    .await;
    let c = spent.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "BudgetExceeded").cloned()).expect("condition");
    assert_eq!((c.reason.as_str(), c.message.as_str()), ("TokensSpent", "1200 tokens used, over the budget of 1000 tokens"));
    let stopped = wait_for(&members, "late", TIMEOUT, "Failed", |m| m.phase() == MemberPhase::Failed).await;
    assert_eq!(reason(&stopped), Some("BudgetExceeded"));
    assert!(stopped.status.and_then(|s| s.message).unwrap_or_default().contains("team tau's budget is spent"));
    let answer = std::fs::read_to_string(late_dir.join("usage.txt")).unwrap_or_default();
    assert!(answer.contains("over budget: team tau's budget is spent"), "the report's answer: {answer}");
    assert_eq!(members.get("early").await.expect("early").phase(), MemberPhase::Idle, "an idle member may end by itself");
    assert_eq!(kubectl_jsonpath(ns.name(), "team/tau", "{.status.usage.tokens}").await, "1200");

    // A member created now is refused, not admitted.
    members.create(&PostParams::default(), &member("newcomer", "tau", None)).await.expect("member");
    let refused = wait_for(&members, "newcomer", TIMEOUT, "Failed", |m| m.phase() == MemberPhase::Failed).await;
    assert_eq!(reason(&refused), Some("BudgetExceeded"));
    assert!(refused.status.as_ref().and_then(|s| s.pod_name.as_ref()).is_none(), "never admitted: {:?}", refused.status);

    early_run.kill().await.ok();
    late_run.kill().await.ok();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_its_wall_clock_budget_is_stopped() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "budget-seconds").await;
    let _op = Operator::start(ns.name(), 10);
    let mut t = team("upsilon", 3);
    t.spec
        .agents
        .iter_mut()
        .filter(|a| a.name == "general")
        .for_each(|a| a.budget = Some(Budget { seconds: Some(3), ..Default::default() }));
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("slow", "upsilon", None)).await.expect("member");
    let m = wait_for(&members, "slow", TIMEOUT, "Failed", |m| m.phase().is_terminal()).await;
    let st = m.status.expect("status");
    assert_eq!((st.phase, st.reason.as_deref()), (Some(MemberPhase::Failed), Some("BudgetExceeded")));
    assert!(st.message.unwrap_or_default().contains("its wall-clock budget of 3s has run out"));
    let ran = st.completion_time.expect("completion").0.duration_since(st.start_time.expect("start").0).as_secs();
    assert!((3..TIMEOUT.as_secs() as i64).contains(&ran), "stopped once its 3 s were up, not before: {ran}s");
    ns.cleanup().await;
}

/// opencode's config for the scripted model server at `url`.
fn opencode_config(url: &str) -> String {
    json!({
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": false,
        "share": "disabled",
        "provider": { "endpoint": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Model endpoint",
            "options": { "baseURL": format!("{url}/v1"), "apiKey": "stand-in-key" },
            "models": { "team-model": { "name": "team-model" } },
        } },
        "model": "endpoint/team-model",
    })
    .to_string()
}

/// A real runtime's tokens, read from its own output: opencode against the scripted model
/// server (110 tokens a request), a budget of 150 tokens. Turn 1 (110) is within it; turn 2
/// (220) goes over; turn 3 never begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_tokens_are_held_against_the_budget() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "budget-tokens").await;
    let _op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let model = ModelServer::start(|c: &Conversation| match c.tools.is_empty() {
        true => ("(title)".into(), Reply::text("Counting")),
        false => ("worker".into(), Reply::text("noted")),
    })
    .await;
    let proxy = RefusingProxy::start().await;
    let mut t = team("phi", 3);
    t.spec
        .agents
        .iter_mut()
        .filter(|a| a.name == "general")
        .for_each(|a| a.budget = Some(Budget { tokens: Some(150), ..Default::default() }));
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let members: Api<Member> = ns.api();
    let lead = fixture::member_token(
        &s,
        &ns,
        &wait_for(&members, "phi-lead", TIMEOUT, "the lead's pod", |m| m.status.as_ref().is_some_and(|s| s.pod_name.is_some())).await,
    )
    .await;
    members.create(&PostParams::default(), &member("counter", "phi", None)).await.expect("member");
    let m = wait_for(&members, "counter", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let name = m.agent_name().expect("name").to_owned();

    let dir = scratch_dir(&format!("budgets/{}", ns.name));
    let home = dir.display().to_string();
    let config = opencode_config(&model.url);
    let mut env: Vec<(&str, &str)> = vec![("HOME", &home), ("OPENCODE_CONFIG_CONTENT", &config)];
    let proxy_env = proxy.env();
    env.extend(proxy_env.iter().map(|(k, v)| (*k, v.as_str())));
    let log = || std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    let mut run = support::member_loop::runtime_member(
        "opencode",
        &["opencode"],
        &gw.url,
        &fixture::member_token(&s, &ns, &m).await,
        "count the requests",
        &["--idle-timeout", "60"],
        &dir,
        &env,
    );

    let within =
        wait_for(&members, "counter", Duration::from_secs(90), "turn 1's tokens", |m| usage(m).is_some_and(|u| u.tokens > 0)).await;
    assert_eq!(usage(&within), Some(Usage { turns: 1, tokens: 110 }), "{}\n{}", log(), model.transcript());
    assert!(matches!(within.phase(), MemberPhase::Active | MemberPhase::Idle), "within the budget it runs on: {:?}", within.status);
    fixture::ok(fixture::call(&gw.url, Some(&lead), "send_message", json!({ "to": name, "body": "once more" })).await);
    let failed = wait_for(&members, "counter", Duration::from_secs(90), "Failed", |m| m.phase() == MemberPhase::Failed).await;
    assert_eq!(reason(&failed), Some("BudgetExceeded"), "{}", log());
    let message = failed.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert_eq!(message, "the budget of agent type general is spent: 220 tokens used, over the budget of 150 tokens");
    assert_eq!(usage(&failed), Some(Usage { turns: 2, tokens: 220 }));
    assert_eq!(model.turns().iter().filter(|t| t.who == "worker").count(), 2, "two turns reached the model:\n{}", model.transcript());
    assert!(proxy.requests().is_empty(), "opencode went outside: {:?}", proxy.requests());

    run.kill().await.ok();
    ns.cleanup().await;
}

/// The retried member's agent: each turn reports 100 tokens of its own (`teamctl usage`,
/// counted from its run's start); the first attempt's turn 2 fails, which fails its pod.
const RETRIED: &str = r#"
cat > /dev/null
teamctl usage --turns "$TEAM_TURN" --tokens $((TEAM_TURN * 100))
case "$TEAM_ATTEMPT/$TEAM_TURN" in
1/2) echo "attempt 1 fails in turn 2"; exit 3 ;;
esac
"#;

/// A retry's new pod counts on from what the earlier attempt used: budget 4 turns,
/// backoffLimit 1. Attempt 1 runs turns 1 and 2 (200 tokens) and fails in turn 2; attempt 2
/// runs the prompt and the message its predecessor had not acknowledged, the member's turns 3
/// and 4 (400 tokens); a message more would be turn 5: it does not begin, and the member is
/// stopped with BudgetExceeded, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_members_usage_runs_on_from_its_earlier_attempt_and_its_budget_holds_across_them() {
    let s = stack().await;
    real_node(&s.client).await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "budget-retry").await;
    let gw = fixture::start_gateway_on(&s, Default::default(), &node_ip()).await;
    let image = project_image();
    let _op = Operator::start_with(ns.name(), 10, &["--gateway-url", &gw.url, "--teamctl-image", &image, "--retry-backoff-seconds", "1"]);
    let command = format!("exec teamctl run --runtime exec -- sh -c '{}'", RETRIED.replace('\'', r"'\''"));
    let retried = AgentType {
        backoff_limit: 1,
        budget: Some(Budget { turns: Some(4), ..Default::default() }),
        ..agent_type("retried", shell_container("agent", AGENT_IMAGE, &command), |_| {})
    };
    let mut t = team("chi", 3);
    // Long enough that a member waits for the test's message rather than completing.
    t.spec.member_timeout_seconds = 60;
    t.spec.agents.push(retried);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, "chi").await;
    let members: Api<Member> = ns.api();
    let mut m = member("flaky", "chi", None);
    m.spec.agent = "retried".into();
    members.create(&PostParams::default(), &m).await.expect("member");
    let send = |to: String, body: &'static str| {
        let bus = gw.bus.clone();
        let key = TeamKey::new(ns.name(), "chi");
        async move {
            let message = OutgoingMessage {
                from: "user:tester".into(),
                to: Recipient::Member(to),
                body: body.into(),
                kind: MessageKind::Message,
                id: None,
                sent_by: Some("tester".into()),
            };
            bus.send(&key, message).await.expect("send to the member");
        }
    };
    let pod_name = |m: &Member| m.status.as_ref().and_then(|s| s.pod_name.clone());

    // Attempt 1: turn 1, then turn 2 (a message), which fails the pod.
    let first = wait_for(&members, "flaky", POD_TIMEOUT, "attempt 1 waiting after turn 1", |m| {
        m.phase() == MemberPhase::Idle && usage(m) == Some(Usage { turns: 1, tokens: 100 })
    })
    .await;
    let name = first.agent_name().expect("name").to_owned();
    let first_pod = pod_name(&first).expect("podName");
    send(name.clone(), "turn two").await;

    // Attempt 2, a new pod, runs turns 3 and 4 of the member and waits.
    let second_pod = format!("{first_pod}-2");
    let second = wait_for(&members, "flaky", POD_TIMEOUT, "attempt 2 waiting, its usage on top of attempt 1's", |m| {
        pod_name(m).as_deref() == Some(second_pod.as_str())
            && m.phase() == MemberPhase::Idle
            && usage(m) == Some(Usage { turns: 4, tokens: 400 })
    })
    .await;
    assert_eq!(second.status.as_ref().and_then(|s| s.failed_attempts), Some(1), "{:?}", second.status);
    assert_eq!(
        kubectl_jsonpath(ns.name(), "member/flaky", "{.status.usage.turns}/{.status.usage.tokens}").await,
        "4/400",
        "as kubectl shows it"
    );

    // A message more would be the member's turn 5: over the budget of 4, so it is stopped.
    send(name, "turn five").await;
    let failed = wait_for(&members, "flaky", POD_TIMEOUT, "Failed", |m| m.phase().is_terminal()).await;
    let st = failed.status.clone().unwrap_or_default();
    assert_eq!((st.phase, st.reason.as_deref()), (Some(MemberPhase::Failed), Some("BudgetExceeded")), "{:?}", failed.status);
    assert_eq!(st.message.as_deref(), Some("the budget of agent type retried is spent: turn 5 began, over the budget of 4 turns"));
    assert_eq!((st.usage, st.failed_attempts, st.pod_name), (Some(Usage { turns: 5, tokens: 400 }), Some(1), Some(second_pod)));
    ns.cleanup().await;
}
