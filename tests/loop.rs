//! The member loop end to end with real agent runtimes: examples/agents/opencode-team.yaml (a lead
//! and a reviewer running opencode, a critic running Claude Code, all under `teamctl run`),
//! claude-team.yaml and codex-team.yaml on the local stack, against a scripted model server.
//!
//! The lead spawns both specialists through MCP; each calls team_task and send_message("lead");
//! their findings reach the lead as injected turns of its opencode session; the specialists
//! complete by timeout; the lead saves a summary with agent_memory and, quiet, exits; the team
//! disbands. What is asserted is what a user sees: Member phases, the Team Disbanded, the
//! memory text, the task board, and the model server's record of turns (written, as a
//! transcript, to `$CARGO_TARGET_TMPDIR/loop/transcript.txt`).
//!
//! Every member is a real container on the stack's real node: the runtimes' images
//! (hack/images.sh `opencode`, `claude`, `codex`: the npm packages' binaries), `teamctl` copied
//! in by the operator's init container from the project image, the pod's projected token. The
//! gateway, the model server and a refusing proxy run in the test on the node's own address
//! (10.244.0.1), the only place a member pod can reach besides the cluster's Services; every
//! runtime gets HTTP(S)_PROXY pointing at the proxy, which must see no request.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::model_server::{Api as Wire, Conversation, Item, ModelServer, Reply, tool_is};
use support::node::{NODE_TAINT, node_ip, node_name, project_image, real_node};
use support::operator::Operator;
use support::proxy::RefusingProxy;
use support::*;
use team_operator::api::{Member, MemberPhase, TaskState, Team, TeamPhase, TeamTask};
use team_operator::bus::MemoryKey;

const LEAD_PROMPT: &str = "You lead a code review team";
const REVIEWER_PROMPT: &str = "You are the API reviewer";
const CRITIC_PROMPT: &str = "You are the error-message critic";
const REVIEWER_FINDING: &str = "GET /v1/teams has no pagination";
const CRITIC_FINDING: &str = "errors name the field but not the value given";
const SEEDED_MEMORY: &str = "Earlier run: the API had no tests for pagination.";
const CODEX_LEAD_PROMPT: &str = "You lead a Codex review team";
const FOLLOW_UP: &str = "FOLLOW-UP: which endpoint should be fixed first?";

/// The `FINDING …` lines of the user messages: what the specialists reported.
fn findings(c: &Conversation) -> Vec<String> {
    c.user_texts().flat_map(|t| t.lines()).filter(|l| l.starts_with("FINDING ")).map(str::to_owned).collect()
}

/// The lead: spawn the two specialists one after the other, end the turn; on each injected turn
/// note the findings; once both are in, save them to memory; then end.
fn planner(c: &Conversation) -> Reply {
    if let Some(Item::Result { name, .. }) = c.last()
        && tool_is(name, "agent_memory")
    {
        return Reply::text("Summary saved to memory; the review is done.");
    }
    let spawns = c.calls("spawn_member").len();
    let spawned = c.results("spawn_member").len();
    if spawns == 0 {
        let prompt = format!("{REVIEWER_PROMPT}. Review the API: record it on the task board, then report to the lead.");
        return Reply::call("spawn_member", json!({ "agent": "reviewer", "prompt": prompt }));
    }
    if spawns == 1 && spawned == 1 {
        // The mixed team has a `critic` agent type; the Claude Code team has reviewers only.
        let agent = if c.api == Wire::Anthropic { "reviewer" } else { "critic" };
        let prompt = format!("{CRITIC_PROMPT}. Read the error messages: record it on the task board, then report to the lead.");
        return Reply::call("spawn_member", json!({ "agent": agent, "prompt": prompt }));
    }
    let found = findings(c);
    let both = found.iter().any(|f| f.starts_with("FINDING reviewer")) && found.iter().any(|f| f.starts_with("FINDING critic"));
    if both && c.calls("agent_memory").is_empty() {
        let text = format!("Review summary: {}", found.join(" | "));
        return Reply::call("agent_memory", json!({ "action": "write", "text": text }));
    }
    match c.last() {
        Some(Item::Result { name, .. }) if tool_is(name, "spawn_member") => {
            Reply::text("Started the reviewer and the critic; I will wait for their findings.")
        }
        _ => Reply::text(format!("Noted {} finding(s); waiting for the rest.", found.len())),
    }
}

/// The `name` in a tool result's JSON text.
fn task_name(result: &str) -> Option<String> {
    let start = result.find('{')?;
    let mut stream = serde_json::Deserializer::from_str(&result[start..]).into_iter::<Value>();
    let v = stream.next()?.ok()?;
    v.get("name").and_then(Value::as_str).map(str::to_owned)
}

/// A specialist: add its task, complete it with the finding, report to the lead, end.
fn specialist(c: &Conversation, who: &str, finding: &str) -> Reply {
    let created = c.results("team_task");
    if c.calls("team_task").is_empty() {
        return Reply::call("team_task", json!({ "action": "create", "subject": format!("{who}: review") }));
    }
    if c.calls("team_task").len() == 1 && created.len() == 1 {
        return match task_name(created[0]) {
            Some(name) => Reply::call("team_task", json!({ "action": "update", "name": name, "state": "completed", "result": finding })),
            None => Reply::text(format!("I could not read the task name from {:?}", created[0])),
        };
    }
    if c.calls("send_message").is_empty() {
        return Reply::call("send_message", json!({ "to": "lead", "body": format!("FINDING {who}: {finding}") }));
    }
    Reply::text("Reported my finding to the lead.")
}

/// Who speaks, from what the conversation says; requests without tools (opencode's title
/// request) get a title.
fn brain(c: &Conversation) -> (String, Reply) {
    if c.tools.is_empty() {
        return ("(title)".into(), Reply::text("Code review"));
    }
    if c.user_says(LEAD_PROMPT) {
        return ("planner".into(), planner(c));
    }
    if c.user_says(REVIEWER_PROMPT) {
        return ("reviewer".into(), specialist(c, "reviewer", REVIEWER_FINDING));
    }
    if c.user_says(CRITIC_PROMPT) {
        return ("critic".into(), specialist(c, "critic", CRITIC_FINDING));
    }
    ("(other)".into(), Reply::text("ok"))
}

/// The Codex team's lead: spawn the reviewer and end the turn; when its finding comes in, ask it
/// a follow-up question; when the answer comes in, save both to memory.
fn codex_lead(c: &Conversation) -> Reply {
    match c.last() {
        Some(Item::Result { name, .. }) if tool_is(name, "agent_memory") => {
            return Reply::text("Summary saved to memory; the review is done.");
        }
        Some(Item::Result { name, .. }) if tool_is(name, "send_message") => {
            return Reply::text("Asked a follow-up; waiting for the answer.");
        }
        Some(Item::Result { name, .. }) if tool_is(name, "spawn_member") => {
            return Reply::text("Started the reviewer; waiting for its finding.");
        }
        _ => {}
    }
    if c.calls("spawn_member").is_empty() {
        let prompt = format!("{REVIEWER_PROMPT}. Review the API: record it on the task board, then report to the lead.");
        return Reply::call("spawn_member", json!({ "agent": "reviewer", "prompt": prompt }));
    }
    let said = |head: &str| c.user_texts().flat_map(str::lines).find(|l| l.starts_with(head)).map(str::to_owned);
    match (said("FINDING reviewer"), said("ANSWER reviewer")) {
        (Some(finding), Some(answer)) if c.calls("agent_memory").is_empty() => {
            Reply::call("agent_memory", json!({ "action": "write", "text": format!("Review summary: {finding} | {answer}") }))
        }
        (Some(_), None) if c.calls("send_message").is_empty() => {
            // To the member the spawn result names.
            let to = c.results("spawn_member").first().and_then(|r| task_name(r)).unwrap_or_else(|| "reviewer".into());
            Reply::call("send_message", json!({ "to": to, "body": FOLLOW_UP }))
        }
        _ => Reply::text("Waiting."),
    }
}

/// The Codex team's reviewer: turn 1 as every specialist's; a follow-up question is answered
/// from what its thread holds, the task it created in turn 1 (none if the thread were new).
fn codex_reviewer(c: &Conversation) -> Reply {
    if !c.user_says("FOLLOW-UP") {
        return specialist(c, "reviewer", REVIEWER_FINDING);
    }
    if c.calls("send_message").len() == 1 {
        let body = match c.results("team_task").first().and_then(|r| task_name(r)) {
            Some(task) => format!("ANSWER reviewer: fix GET /v1/teams first (task {task})"),
            None => "ANSWER reviewer: this thread has no earlier turn".to_owned(),
        };
        return Reply::call("send_message", json!({ "to": "lead", "body": body }));
    }
    Reply::text("Answered the follow-up.")
}

fn codex_brain(c: &Conversation) -> (String, Reply) {
    if c.user_says(CODEX_LEAD_PROMPT) {
        return ("lead".into(), codex_lead(c));
    }
    if c.user_says(REVIEWER_PROMPT) {
        return ("reviewer".into(), codex_reviewer(c));
    }
    ("(other)".into(), Reply::text("ok"))
}

/// The documents of an example manifest.
fn example(file: &str) -> Vec<Value> {
    let path = format!("{}/examples/agents/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("yaml"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("json"))
        .collect()
}

/// Puts an agent type's pods on the real node and points their runtimes at the refusing proxy:
/// the only changes the tests make to the example.
fn onto_the_node(team: &mut Value, proxy_env: &[(&str, String)]) {
    for agent in team["spec"]["agents"].as_array_mut().expect("agents") {
        let spec = &mut agent["template"]["spec"];
        spec["nodeSelector"] = json!({ "kubernetes.io/hostname": node_name() });
        spec["tolerations"] = json!([{ "key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule" }]);
        for container in spec["containers"].as_array_mut().expect("containers") {
            let env = container["env"].as_array_mut().expect("env");
            env.extend(proxy_env.iter().map(|(k, v)| json!({ "name": k, "value": v })));
        }
    }
}

/// The images of `team`'s agent types, which hack/images.sh must have imported into the node's
/// containerd (no registry can be reached); panics naming the missing ones.
async fn assert_images_on_the_node(client: &kube::Client, team: &Value) {
    let node = real_node(client).await;
    let present: Vec<String> =
        node.status.and_then(|s| s.images).unwrap_or_default().into_iter().flat_map(|i| i.names.unwrap_or_default()).collect();
    for agent in team["spec"]["agents"].as_array().expect("agents") {
        for c in agent["template"]["spec"]["containers"].as_array().expect("containers") {
            let image = c["image"].as_str().expect("image");
            assert!(
                present.iter().any(|p| p == image || p.ends_with(&format!("/{image}"))),
                "image {image} is not on the real node: run `hack/images.sh opencode claude codex` (make test does)"
            );
        }
    }
}

fn phase_of(members: &[Member], name: &str) -> (Option<MemberPhase>, Option<i32>) {
    let m = members.iter().find(|m| m.agent_name() == Some(name));
    (m.map(|m| m.phase()), m.and_then(|m| m.status.as_ref().and_then(|s| s.exit_code)))
}

/// One example Team at work: the stack's operator, the gateway, the model stand-in and the
/// refusing proxy; what is left when the team disbanded.
struct Finished {
    s: Stack,
    ns: TestNamespace,
    gw: fixture::Gateway,
    model: ModelServer,
    proxy: RefusingProxy,
    _operator: Operator,
    team: Team,
    memory_key: MemoryKey,
}

/// Applies `file` (its ConfigMaps and Team, onto the real node, with `member_timeout` when given)
/// with the lead's agent type `lead_agent` remembering [`SEEDED_MEMORY`] and `brain` as the
/// model, and waits until the team disbands.
async fn run_example(
    file: &str,
    prefix: &str,
    lead_agent: &str,
    member_timeout: Option<i64>,
    brain: fn(&Conversation) -> (String, Reply),
) -> Finished {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, prefix).await;
    let host = node_ip();
    let model = ModelServer::start_on(&format!("{host}:0"), brain).await;
    let proxy = RefusingProxy::start_on(&host).await;
    let gw = fixture::start_gateway_on(
        &s,
        team_operator::gateway::GatewaySettings { name_wait: Duration::from_secs(3), ..Default::default() },
        &host,
    )
    .await;
    let operator = Operator::start_with(&ns.name, 10, &["--gateway-url", &gw.url, "--teamctl-image", &project_image()]);

    // The model endpoint Secret the manifest reads, pointing at the stand-in.
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("model-endpoint".into()), ..Default::default() },
        data: Some(
            [
                ("openai-base-url", format!("{}/v1", model.url)),
                ("anthropic-base-url", model.url.clone()),
                ("api-key", "stand-in-key".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
            .collect(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("secret");

    let mut team_name = String::new();
    let mut memory_key = None;
    for mut doc in example(file) {
        match doc["kind"].as_str() {
            Some("ConfigMap") => {
                let cm: ConfigMap = serde_json::from_value(doc).expect("ConfigMap");
                ns.api::<ConfigMap>().create(&PostParams::default(), &cm).await.expect("create ConfigMap");
            }
            Some("Team") => {
                onto_the_node(&mut doc, &proxy.env());
                assert_images_on_the_node(&s.client, &doc).await;
                if let Some(t) = member_timeout {
                    doc["spec"]["memberTimeoutSeconds"] = json!(t);
                }
                let team: Team = serde_json::from_value(doc).expect("Team");
                team_name = team.name_any();
                // What the lead's agent type remembers from an earlier run.
                let key = MemoryKey { namespace: ns.name.clone(), project: team.memory_project(), agent: lead_agent.into() };
                gw.bus.memory().write(&key, SEEDED_MEMORY).await.expect("seed memory");
                memory_key = Some(key);
                ns.api::<Team>().create(&PostParams::default(), &team).await.expect("create Team");
            }
            other => panic!("unexpected kind {other:?} in the example"),
        }
    }
    let teams: Api<Team> = ns.api();
    let what = format!("team {team_name} to disband after its lead finished");
    let team = wait_for(&teams, &team_name, Duration::from_secs(300), &what, |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
    })
    .await;
    let memory_key = memory_key.expect("a Team in the example");
    Finished { s, ns, gw, model, proxy, _operator: operator, team, memory_key }
}

impl Finished {
    /// Writes the transcript and the member pods' logs under `$CARGO_TARGET_TMPDIR/<dir>`; the
    /// context for failure messages.
    async fn record(&self, dir: &str) -> String {
        let transcript = self.model.transcript();
        let dir = scratch_dir(dir);
        std::fs::write(dir.join("transcript.txt"), &transcript).expect("transcript");
        let mut logs = String::new();
        for m in self.members().await {
            let status = m.status.clone().unwrap_or_default();
            let name = m.agent_name().unwrap_or("?").to_owned();
            logs += &format!(
                "--- {name} ({}) exit {:?}\n{}\n",
                status.pod_name.as_deref().unwrap_or("-"),
                status.exit_code,
                self.log_of(&name).await
            );
        }
        std::fs::write(dir.join("agents.log"), &logs).expect("agent logs");
        format!("transcript:\n{transcript}\nagent logs in {}", dir.join("agents.log").display())
    }

    async fn members(&self) -> Vec<Member> {
        self.ns.api::<Member>().list(&ListParams::default()).await.expect("members").items
    }

    /// The agent container's log of `member`'s pod, from the node's kubelet (`kubectl logs`).
    async fn log_of(&self, member: &str) -> String {
        let members = self.members().await;
        let m = members.iter().find(|m| m.agent_name() == Some(member)).unwrap_or_else(|| panic!("no member {member}"));
        let Some(pod) = m.status.as_ref().and_then(|s| s.pod_name.clone()) else { return String::new() };
        let params = LogParams { container: Some("agent".into()), ..Default::default() };
        self.ns.api::<Pod>().logs(&pod, &params).await.unwrap_or_else(|e| format!("(no log of pod {pod}: {e})"))
    }

    /// The tool calls the model made as `who`, under the names the runtime offered them as.
    fn calls_of(&self, who: &str) -> Vec<String> {
        self.model.turns().iter().filter(|t| t.who == who).flat_map(|t| t.reply.calls.iter().map(|(n, _)| n.clone())).collect()
    }

    /// Nothing left the machine and every request was one the stand-in serves.
    fn assert_offline(&self) {
        assert_eq!(self.proxy.requests(), Vec::<String>::new(), "a runtime tried to reach the outside");
        assert_eq!(self.model.unknown(), Vec::<String>::new(), "requests the model server does not serve");
    }

    async fn cleanup(self) {
        let _ = &self.s;
        self.gw.bus.teardown(&team_operator::bus::TeamKey::new(self.ns.name.clone(), self.team.name_any())).await.ok();
        self.ns.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_and_two_specialists_on_real_runtimes_run_the_loop_to_disband() {
    let run = run_example("opencode-team.yaml", "loop", "planner", None, brain).await;
    let Finished { ref model, ref team, ref memory_key, ref gw, ref ns, .. } = run;
    let context = run.record("loop").await;

    // Members: the lead and both specialists completed (exit 0), none failed or was cancelled.
    let members = run.members().await;
    for name in ["planner", "reviewer", "critic"] {
        assert_eq!(phase_of(&members, name), (Some(MemberPhase::Completed), Some(0)), "member {name}\n{context}");
    }
    assert_eq!(members.len(), 3, "{context}");
    assert_eq!(team.status.as_ref().and_then(|s| s.lead_name.as_deref()), Some("planner"));

    // Usage, as teamctl run reported it from each runtime's own output (opencode's step_finish
    // tokens, Claude Code's result usage): the lead ran 3 turns, each specialist 1.
    for (name, turns) in [("planner", 3), ("reviewer", 1), ("critic", 1)] {
        let usage = members.iter().find(|m| m.agent_name() == Some(name)).and_then(|m| m.status.as_ref()?.usage).unwrap_or_default();
        assert!(usage.turns == turns && usage.tokens > 0, "{name}'s status.usage: {usage:?}\n{context}");
    }

    // The specialists completed by timeout: quiet for memberTimeoutSeconds after their report.
    for name in ["reviewer", "critic"] {
        let log = run.log_of(name).await;
        assert!(log.contains("no message for 20s: done"), "{name} did not complete by timeout:\n{log}");
    }
    let lead_log = run.log_of("planner").await;
    assert!(lead_log.contains("no message for 45s: done"), "the lead did not finish quiet:\n{lead_log}");

    // The lead's memory holds what both specialists reported.
    let memory = gw.bus.memory().read(memory_key).await.expect("memory").unwrap_or_default();
    assert!(memory.contains(REVIEWER_FINDING) && memory.contains(CRITIC_FINDING), "memory: {memory:?}\n{context}");

    // The task board: one completed task per specialist, with its finding as the result.
    let tasks = ns.api::<TeamTask>().list(&ListParams::default()).await.expect("tasks").items;
    let done: Vec<(Option<String>, String)> = tasks
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::Completed))
        .map(|t| (t.status.as_ref().and_then(|s| s.result.clone()), t.spec.subject.clone()))
        .collect();
    for finding in [REVIEWER_FINDING, CRITIC_FINDING] {
        assert!(done.iter().any(|(r, _)| r.as_deref() == Some(finding)), "no completed task with {finding:?}: {done:?}");
    }

    // The model's record: the lead's turn 1 started with its memory; each finding reached the
    // lead as an injected turn of the same conversation; each specialist used the team tools
    // under its runtime's names for them (opencode: team_<tool>, Claude Code: mcp__team__<tool>).
    let turns = model.turns();
    let lead: Vec<_> = turns.iter().filter(|t| t.who == "planner").collect();
    assert!(lead.first().is_some_and(|t| t.saw.contains(SEEDED_MEMORY) && t.saw.contains(LEAD_PROMPT)), "{context}");
    for who in ["reviewer", "critic"] {
        let injected = lead.iter().find(|t| t.saw.contains("new message") && t.saw.contains(&format!("FINDING {who}")));
        let injected = injected.unwrap_or_else(|| panic!("the lead never got {who}'s finding as a turn\n{context}"));
        assert!(injected.items > 3, "the finding came into the lead's continued session, not a new one\n{context}");
    }
    let called = |who: &str| -> Vec<String> {
        turns.iter().filter(|t| t.who == who).flat_map(|t| t.reply.calls.iter().map(|(n, _)| n.clone())).collect()
    };
    assert_eq!(called("reviewer"), ["team_team_task", "team_team_task", "team_send_message"], "{context}");
    assert_eq!(called("critic"), ["mcp__team__team_task", "mcp__team__team_task", "mcp__team__send_message"], "{context}");
    assert_eq!(called("planner")[..2], ["team_spawn_member", "team_spawn_member"], "{context}");
    assert!(turns.iter().any(|t| t.who == "critic" && t.path.ends_with("/v1/messages") && t.stream), "Claude Code streamed: {context}");
    assert!(turns.iter().any(|t| t.who == "reviewer" && t.path.ends_with("/chat/completions") && t.stream), "opencode streamed: {context}");

    // Nothing left the machine.
    run.assert_offline();
    eprintln!("{}", model.transcript());
    run.cleanup().await;
}

/// The Claude Code team (examples/agents/claude-team.yaml): the lead is Claude Code too, so the
/// findings come into its session through `claude -p --resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_team_runs_the_loop_to_disband() {
    // memberTimeoutSeconds 30 instead of the example's 60, to keep the test short (the lead's
    // wait for the first finding is bounded by it too).
    let run = run_example("claude-team.yaml", "loop-claude", "lead", Some(30), brain).await;
    let context = run.record("loop-claude").await;
    let members = run.members().await;
    for name in ["lead", "reviewer", "reviewer-2"] {
        assert_eq!(phase_of(&members, name), (Some(MemberPhase::Completed), Some(0)), "member {name}\n{context}");
        let log = run.log_of(name).await;
        assert!(log.contains("no message for 30s: done"), "{name} did not finish quiet:\n{log}");
    }
    let memory = run.gw.bus.memory().read(&run.memory_key).await.expect("memory").unwrap_or_default();
    assert!(memory.contains(REVIEWER_FINDING) && memory.contains(CRITIC_FINDING), "memory: {memory:?}\n{context}");
    let turns = run.model.turns();
    let lead: Vec<_> = turns.iter().filter(|t| t.who == "planner").collect();
    assert!(lead.iter().all(|t| t.api == Wire::Anthropic), "{context}");
    assert!(lead.first().is_some_and(|t| t.saw.contains(SEEDED_MEMORY)), "turn 1 starts with the memory\n{context}");
    let turn_one_items = lead.first().map_or(0, |t| t.items);
    for who in ["reviewer", "critic"] {
        let injected = lead.iter().find(|t| t.saw.contains("new message") && t.saw.contains(&format!("FINDING {who}")));
        let injected = injected.unwrap_or_else(|| panic!("the lead never got {who}'s finding as a turn\n{context}"));
        assert!(injected.items > turn_one_items + 2, "the finding came into the lead's resumed session, not a new one\n{context}");
    }
    for who in ["reviewer", "critic"] {
        assert_eq!(run.calls_of(who), ["mcp__team__team_task", "mcp__team__team_task", "mcp__team__send_message"], "{context}");
    }
    assert_eq!(run.calls_of("planner")[..2], ["mcp__team__spawn_member", "mcp__team__spawn_member"], "{context}");
    run.assert_offline();
    run.cleanup().await;
}

/// The Codex team (examples/agents/codex-team.yaml): the lead and its reviewer run `codex exec`;
/// the reviewer's finding comes into the lead's thread through `codex exec resume`, and so does
/// the lead's follow-up question into the reviewer's, which answers from its first turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codex_team_runs_the_loop_to_disband() {
    let run = run_example("codex-team.yaml", "loop-codex", "lead", None, codex_brain).await;
    let context = run.record("loop-codex").await;
    let members = run.members().await;
    assert_eq!(members.len(), 2, "{context}");
    for (name, quiet) in [("lead", 45), ("reviewer", 20)] {
        assert_eq!(phase_of(&members, name), (Some(MemberPhase::Completed), Some(0)), "member {name}\n{context}");
        let log = run.log_of(name).await;
        assert!(log.contains(&format!("no message for {quiet}s: done")), "{name} did not finish quiet:\n{log}");
    }

    // The reviewer's task, completed with its finding; the lead's memory holds the finding and
    // the answer to its follow-up, which names that task.
    let tasks = run.ns.api::<TeamTask>().list(&ListParams::default()).await.expect("tasks").items;
    let task = tasks
        .iter()
        .find(|t| t.status.as_ref().and_then(|s| s.result.as_deref()) == Some(REVIEWER_FINDING))
        .unwrap_or_else(|| panic!("no task completed with the finding\n{context}"));
    assert_eq!(task.status.as_ref().and_then(|s| s.state), Some(TaskState::Completed));
    let answer = format!("ANSWER reviewer: fix GET /v1/teams first (task {})", task.name_any());
    let memory = run.gw.bus.memory().read(&run.memory_key).await.expect("memory").unwrap_or_default();
    assert!(memory.contains(REVIEWER_FINDING) && memory.contains(&answer), "memory: {memory:?}\n{context}");

    // Every request was Codex's: the Responses API, streamed; the team tools under Codex's names.
    let turns = run.model.turns();
    assert!(turns.iter().all(|t| t.api == Wire::Responses && t.path == "/v1/responses" && t.stream), "{context}");
    let mcp = |tool: &str| format!("mcp__team__{tool}");
    let (task_call, send) = (mcp("team_task"), mcp("send_message"));
    assert_eq!(run.calls_of("reviewer"), [&task_call, &task_call, &send, &send].map(String::clone), "{context}");
    assert_eq!(run.calls_of("lead"), [mcp("spawn_member"), send.clone(), mcp("agent_memory")], "{context}");

    // The lead's turns 2 and 3 and the reviewer's turn 2 continued their threads: each request
    // carried the earlier turns' items, and each pod's Codex reported one thread throughout.
    let by = |who: &str| -> Vec<_> { turns.iter().filter(|t| t.who == who).collect() };
    let (lead, reviewer) = (by("lead"), by("reviewer"));
    assert!(lead.first().is_some_and(|t| t.saw.contains(SEEDED_MEMORY) && t.saw.contains(CODEX_LEAD_PROMPT)), "{context}");
    for (turns, news) in [(&lead, "FINDING reviewer"), (&lead, "ANSWER reviewer"), (&reviewer, FOLLOW_UP)] {
        let first = turns.first().map_or(0, |t| t.items);
        let injected = turns.iter().find(|t| t.saw.contains("new message") && t.saw.contains(news));
        let injected = injected.unwrap_or_else(|| panic!("no turn brought {news:?}\n{context}"));
        assert!(injected.items > first + 2, "{news:?} came into a new thread, not the resumed one\n{context}");
    }
    let answered = reviewer.iter().flat_map(|t| &t.reply.calls).filter_map(|(_, a)| a["body"].as_str()).any(|b| b == answer);
    assert!(answered, "the reviewer's answer does not name its first turn's task {}\n{context}", task.name_any());
    for name in ["lead", "reviewer"] {
        let log = run.log_of(name).await;
        // One `thread.started` per turn (codex exec prints it on resume too), one id.
        let mut threads: Vec<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "thread.started")
            .filter_map(|v| v["thread_id"].as_str().map(str::to_owned))
            .collect();
        let turns = threads.len();
        threads.dedup();
        assert!(turns >= 2 && threads.len() == 1, "{name}: {turns} turns in threads {threads:?}\n{log}");
    }
    run.assert_offline();
    run.cleanup().await;
}

// --- The loop's own rules, with `--runtime exec` (a shell script per turn) ----------------------

/// A `teamctl run` of member `member` of `team` with `--runtime exec -- sh -c SCRIPT`; the script
/// appends what each turn got to `turns.txt` in `dir`.
fn exec_run(gw: &fixture::Gateway, token: &str, dir: &std::path::Path, script: &str, extra: &[(&str, &str)]) -> tokio::process::Child {
    support::member_loop::exec_member(
        &gw.url,
        token,
        "check the build",
        &["--idle-timeout", "3", "--grace-seconds", "5"],
        script,
        dir,
        extra,
    )
}

/// Appends each turn's number and stdin to turns.txt.
const RECORD: &str = r#"printf '=== turn %s\n' "$TEAM_TURN" >> turns.txt; cat >> turns.txt"#;

async fn exit_of(child: &mut tokio::process::Child, within: Duration) -> i32 {
    let status = tokio::time::timeout(within, child.wait()).await.expect("teamctl run ended in time").expect("wait");
    status.code().unwrap_or(-1)
}

fn read(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("turns.txt")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runtime_turns_acks_timeout_crash_disband_and_sigterm() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "loop-exec").await;
    let gw = fixture::start_gateway(&s).await;
    let team = fixture::team_with_members(&s, &ns, &gw.bus, "omega", &["general", "general-2", "general-3", "general-4"]).await;
    let key = team.key(&ns.name);
    let lead = team.token("lead").to_owned();
    let send = |to: &str, body: &str| {
        let (url, lead, to, body) = (gw.url.clone(), lead.clone(), to.to_owned(), body.to_owned());
        async move { fixture::ok(fixture::call(&url, Some(&lead), "send_message", json!({ "to": to, "body": body })).await) }
    };

    // Turns: 1 is the prompt, with the memory first (memory: local); a message is turn 2 of the
    // same run; after 3 s without one it exits 0, and what turn 2 handled was acked.
    let dir = scratch_dir(&format!("loop-exec/{}/turns", ns.name));
    let memory = MemoryKey { namespace: ns.name.clone(), project: "omega".into(), agent: "general".into() };
    gw.bus.memory().write(&memory, "the build needs --locked").await.expect("memory");
    let mut run = exec_run(&gw, team.token("general"), &dir, RECORD, &[("TEAM_MEMORY", "local")]);
    wait_until(TIMEOUT, "turn 1", || async { read(&dir).contains("=== turn 1") }).await;
    send("general", "please also run clippy").await;
    wait_until(TIMEOUT, "turn 2", || async { read(&dir).contains("please also run clippy") }).await;
    assert_eq!(exit_of(&mut run, Duration::from_secs(20)).await, 0, "{}", read(&dir));
    let turns = read(&dir);
    let (one, two) = turns.split_once("=== turn 2").expect("two turns");
    assert!(one.find("the build needs --locked") < one.find("check the build"), "memory before the prompt: {one}");
    assert!(two.contains("[message from lead]\nplease also run clippy"), "{two}");
    assert!(!turns.contains("=== turn 3"), "{turns}");
    let counts = gw.bus.inbox_counts(&key, "general").await.expect("counts");
    assert_eq!((counts.pending, counts.undelivered), (0, 0), "turn 2's message was acked by the last wait");
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    assert!(log.contains("no message for 3s: done"), "{log}");

    // A runtime that fails ends the member with its exit code.
    let dir = scratch_dir(&format!("loop-exec/{}/crash", ns.name));
    let script = format!("{RECORD}; [ \"$TEAM_TURN\" = 2 ] && exit 7; exit 0");
    let mut run = exec_run(&gw, team.token("general-2"), &dir, &script, &[]);
    wait_until(TIMEOUT, "turn 1", || async { read(&dir).contains("=== turn 1") }).await;
    send("general-2", "crash now").await;
    assert_eq!(exit_of(&mut run, Duration::from_secs(20)).await, 7);

    // A disband notice ends it at once, with no turn for it.
    let dir = scratch_dir(&format!("loop-exec/{}/disband", ns.name));
    let mut run = exec_run(&gw, team.token("general-3"), &dir, RECORD, &[]);
    wait_until(TIMEOUT, "turn 1", || async { read(&dir).contains("=== turn 1") }).await;
    gw.bus
        .system_notice(&key, "general-3", "[TEAM DISBANDED] team omega disbanded: test. Stop working and exit.".into(), "d-1".into())
        .await
        .expect("notice");
    assert_eq!(exit_of(&mut run, Duration::from_secs(10)).await, 0);
    assert!(!read(&dir).contains("=== turn 2"), "{}", read(&dir));

    // SIGTERM reaches the runtime, which ends the turn; the member exits 143.
    let dir = scratch_dir(&format!("loop-exec/{}/sigterm", ns.name));
    let script = "trap 'echo got-term >> turns.txt; exit 0' TERM; echo started >> turns.txt; sleep 60 & wait";
    let mut run = exec_run(&gw, team.token("general-4"), &dir, script, &[]);
    wait_until(TIMEOUT, "the runtime to start", || async { read(&dir).contains("started") }).await;
    let pid = libc::pid_t::try_from(run.id().expect("pid")).expect("pid");
    // SAFETY: kill(2) with plain integers on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    assert_eq!(exit_of(&mut run, Duration::from_secs(10)).await, 143);
    assert!(read(&dir).contains("got-term"), "the runtime was told: {}", read(&dir));

    gw.bus.teardown(&key).await.ok();
    ns.cleanup().await;
}
