//! MCP end to end on the local stack: the rmcp client and a third-party client (the official
//! Python SDK, tests/mcp-client/client.py) run initialize, tools/list and tools/call for every
//! tool against the gateway's /mcp and against `teamctl mcp` (stdio, forwarding to the gateway).
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::process::Stdio;
use std::time::Duration;

use fixture::*;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use support::*;
use team_operator::gateway::GatewaySettings;

const TOOLS: [&str; 13] = [
    "send_message",
    "wait_messages",
    "team_task",
    "agent_memory",
    "spawn_member",
    "team_create",
    "team_delete",
    "get",
    "shutdown_request",
    "shutdown_response",
    "plan_submit",
    "plan_review",
    "usage_report",
];

/// One call of every tool, as the lead of a team with a specialist `general`; `sub` names the
/// team the lead creates and deletes again. The last call is a bad one.
fn every_tool(sub: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("get", json!({ "kind": "members" })),
        ("send_message", json!({ "to": "general", "body": "via mcp" })),
        ("wait_messages", json!({ "timeout_seconds": 0 })),
        ("team_task", json!({ "action": "create", "subject": "from mcp" })),
        ("agent_memory", json!({ "action": "write", "text": "mcp memory" })),
        ("spawn_member", json!({ "agent": "general", "prompt": "from mcp" })),
        ("team_create", json!({ "name": sub })),
        ("team_delete", json!({ "team": sub })),
        ("send_message", json!({ "to": "general", "body": "x", "bogus": 1 })),
    ]
}

/// Checks the answers of [`every_tool`]: `(tool, is_error, structured result)`.
fn check_answers(sub: &str, answers: &[(String, bool, Value)]) {
    assert_eq!(answers.len(), 9);
    for (tool, is_error, value) in &answers[..8] {
        assert!(!is_error, "{tool} failed: {value}");
    }
    assert_eq!(answers[1].2["delivered"][0]["to"], "general", "{:?}", answers[1]);
    assert!(answers[3].2["name"].as_str().is_some_and(|n| n.contains("-task-")), "{:?}", answers[3]);
    assert_eq!(answers[6].2["name"], sub, "{:?}", answers[6]);
    assert_eq!(answers[7].2["deleted"], sub, "{:?}", answers[7]);
    let (_, is_error, bad) = &answers[8];
    assert!(is_error, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_argument", "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap_or_default().contains("bogus"), "{bad}");
}

fn check_tools(tools: &[(String, String, Value)]) {
    let mut names: Vec<&str> = tools.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort();
    let mut want = TOOLS.to_vec();
    want.sort();
    assert_eq!(names, want);
    for (name, description, schema) in tools {
        assert!(description.len() > 60, "{name} needs a description a model can use: {description:?}");
        assert_eq!(schema["type"], "object", "{name}: {schema}");
        assert!(schema["properties"].as_object().is_some_and(|p| !p.is_empty()), "{name}: {schema}");
    }
}

async fn with_rmcp(client: RunningService<RoleClient, ()>, sub: &str) {
    let info = client.peer_info().expect("initialized");
    assert_eq!(info.server_info.as_ref().map(|s| s.name.as_str()), Some("team-operator"));
    let tools = client.list_all_tools().await.expect("tools/list");
    check_annotations(&tools);
    let tools: Vec<(String, String, Value)> = tools
        .into_iter()
        .map(|t| (t.name.to_string(), t.description.map(|d| d.to_string()).unwrap_or_default(), Value::Object((*t.input_schema).clone())))
        .collect();
    check_tools(&tools);
    let mut answers = Vec::new();
    for (tool, args) in every_tool(sub) {
        let Value::Object(args) = args else { unreachable!() };
        let r = client.call_tool(CallToolRequestParams::new(tool).with_arguments(args)).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
        answers.push((tool.to_owned(), r.is_error == Some(true), r.structured_content.unwrap_or(Value::Null)));
    }
    check_answers(sub, &answers);
    let _ = client.cancel().await;
}

/// tools/list tells a client which tools change nothing, which may destroy, which are
/// idempotent, and the shape of each answer.
fn check_annotations(tools: &[rmcp::model::Tool]) {
    let hint = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tool {name}"));
        let a = t.annotations.clone().unwrap_or_else(|| panic!("{name} has no annotations"));
        let out = t.output_schema.clone().unwrap_or_else(|| panic!("{name} has no output schema"));
        assert_eq!(out.get("type"), Some(&json!("object")), "{name}: {out:?}");
        (a.read_only_hint, a.destructive_hint, a.idempotent_hint)
    };
    assert_eq!(hint("get"), (Some(true), Some(false), Some(true)));
    assert_eq!(hint("team_delete"), (Some(false), Some(true), Some(true)));
    assert_eq!(hint("send_message"), (Some(false), Some(false), Some(false)));
    assert_eq!(hint("agent_memory").1, Some(true), "write replaces the memory");
    for t in tools {
        let out = t.output_schema.clone().unwrap_or_default();
        assert!(out.get("properties").and_then(|p| p.as_object()).is_some_and(|p| p.len() > 1), "{}: {out:?}", t.name);
    }
}

/// A client that counts the progress notifications it gets.
#[derive(Clone, Default)]
struct Progress(std::sync::Arc<std::sync::Mutex<Vec<f64>>>);

impl rmcp::ClientHandler for Progress {
    async fn on_progress(&self, params: rmcp::model::ProgressNotificationParam, _: rmcp::service::NotificationContext<RoleClient>) {
        if let Ok(mut p) = self.0.lock() {
            p.push(params.progress);
        }
    }
}

/// Over MCP a wait_messages blocks at most the gateway's MCP bound, however long it asks for,
/// answers `timed_out: true`, and meanwhile sends progress to a client that asked for it.
#[tokio::test]
async fn mcp_waits_are_bounded_and_report_progress() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "mcp-wait").await;
    let bound = Duration::from_secs(3);
    let gw = start_gateway_with(&s, GatewaySettings { mcp_wait_bound: bound, ..quick_gateway() }).await;
    let team = team_with_members(&s, &ns, &gw.bus, "eta", &["general"]).await;
    // The team lets a wait block 5 s (team_with_members); MCP cuts it to 3.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gw.url)).auth_header(team.token("general").to_owned()),
    );
    let progress = Progress::default();
    let client = progress.clone().serve(transport).await.expect("initialize");
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.set_progress_token(rmcp::model::ProgressToken(rmcp::model::NumberOrString::Number(7)));
    let mut params =
        CallToolRequestParams::new("wait_messages").with_arguments(json!({ "timeout_seconds": 3600 }).as_object().cloned().unwrap());
    params.meta = Some(meta);
    let started = std::time::Instant::now();
    let r = client.call_tool(params).await.expect("wait_messages");
    let took = started.elapsed();
    let answer = r.structured_content.clone().unwrap_or_default();
    assert_eq!(answer["timed_out"], true, "{answer}");
    assert!(took >= bound && took < bound + Duration::from_secs(3), "the wait took {took:?}, bound {bound:?}");
    let seen = progress.0.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(seen.len() >= 2, "progress notifications while waiting: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress must grow: {seen:?}");
    // A message that comes ends the wait at once.
    let waiting = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            let args = json!({ "timeout_seconds": 30 }).as_object().cloned().unwrap();
            peer.call_tool(CallToolRequestParams::new("wait_messages").with_arguments(args)).await
        })
    };
    for _ in 0..200 {
        if gw.bus.blocked_waits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gw.bus.blocked_waits() > 0, "the MCP wait never blocked");
    ok(call(&gw.url, Some(team.token("lead")), "send_message", json!({ "to": "general", "body": "wake up" })).await);
    let r = waiting.await.unwrap().expect("wait_messages");
    let answer = r.structured_content.unwrap_or_default();
    assert_eq!(answer["messages"][0]["body"], "wake up", "{answer}");
    assert_eq!(answer["timed_out"], false, "{answer}");
    let handled = answer["messages"][0]["stream_id"].clone();
    let _ = client.cancel().await;

    // `teamctl mcp` bounds its waits the same way (TEAM_MCP_WAIT_SECONDS, default 50).
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamctl"));
    cmd.arg("mcp")
        .env("TEAM_GATEWAY_URL", &gw.url)
        .env("TEAM_TOKEN", team.token("general"))
        .env("TEAM_MCP_WAIT_SECONDS", "2")
        .env_remove("TEAM_TOKEN_FILE")
        .env_remove("TEAM")
        .env_remove("TEAM_NAMESPACE")
        .stderr(Stdio::inherit());
    let stdio = ().serve(TokioChildProcess::new(cmd).expect("spawn teamctl mcp")).await.expect("initialize over stdio");
    let started = std::time::Instant::now();
    // The message of the wait before is handed back, or it would come again (at least once).
    let args = json!({ "timeout_seconds": 3600, "ack": [handled] }).as_object().cloned().unwrap();
    let r = stdio.call_tool(CallToolRequestParams::new("wait_messages").with_arguments(args)).await.expect("wait_messages");
    let took = started.elapsed();
    assert_eq!(r.structured_content.unwrap_or_default()["timed_out"], true);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "teamctl mcp's wait took {took:?}");
    let _ = stdio.cancel().await;
    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

fn quick_gateway() -> GatewaySettings {
    GatewaySettings { name_wait: Duration::from_millis(300), ..Default::default() }
}

#[tokio::test]
async fn rmcp_client_over_http_and_teamctl_stdio() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "mcp-rmcp").await;
    let gw = start_gateway_with(&s, quick_gateway()).await;
    let team = team_with_members(&s, &ns, &gw.bus, "delta", &["general"]).await;
    allow_sub_teams(&ns, "delta").await;
    let lead = team.token("lead").to_owned();

    // Streamable HTTP against the gateway.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gw.url)).auth_header(lead.clone()),
    );
    let client = ().serve(transport).await.expect("initialize over HTTP");
    with_rmcp(client, "delta-sub-http").await;

    // stdio against `teamctl mcp`, which forwards to the gateway.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamctl"));
    cmd.arg("mcp")
        .env("TEAM_GATEWAY_URL", &gw.url)
        .env("TEAM_TOKEN", &lead)
        .env_remove("TEAM_TOKEN_FILE")
        .env_remove("TEAM")
        .env_remove("TEAM_NAMESPACE")
        .stderr(Stdio::inherit());
    let client = ().serve(TokioChildProcess::new(cmd).expect("spawn teamctl mcp")).await.expect("initialize over stdio");
    with_rmcp(client, "delta-sub-stdio").await;

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// Runs tests/mcp-client/client.py (the official Python MCP SDK) and returns its report.
async fn python_client(args: &[&str], env: &[(&str, &str)], calls: &[(&str, Value)]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp-client/client.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script)
        .args(args)
        .env_remove("TEAM_TOKEN_FILE")
        .env_remove("TEAM")
        .env_remove("TEAM_NAMESPACE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("python3 on PATH");
    let input = serde_json::to_vec(&calls.iter().map(|(t, a)| json!([t, a])).collect::<Vec<_>>()).unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("python client finished").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python MCP client failed ({}); is the SDK installed (`pip install mcp==2.3.0`)?\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python client printed no JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)))
}

fn check_python(report: &Value, sub: &str) {
    assert_eq!(report["server"], "team-operator", "{report}");
    let tools: Vec<(String, String, Value)> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["description"].as_str().unwrap_or_default().to_owned(), t["schema"].clone()))
        .collect();
    check_tools(&tools);
    let answers: Vec<(String, bool, Value)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let structured = match &r["structured"] {
                Value::Null => serde_json::from_str(r["text"].as_str().unwrap_or_default()).unwrap_or(Value::Null),
                v => v.clone(),
            };
            (r["tool"].as_str().unwrap().to_owned(), r["is_error"] == true, structured)
        })
        .collect();
    check_answers(sub, &answers);
}

#[tokio::test]
async fn python_sdk_client_over_http_and_teamctl_stdio() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "mcp-python").await;
    let gw = start_gateway_with(&s, quick_gateway()).await;
    let team = team_with_members(&s, &ns, &gw.bus, "epsilon", &["general"]).await;
    allow_sub_teams(&ns, "epsilon").await;
    let lead = team.token("lead").to_owned();

    let mcp_url = format!("{}/mcp", gw.url);
    let report = python_client(&["http", &mcp_url], &[("MCP_TOKEN", &lead)], &every_tool("epsilon-sub-http")).await;
    check_python(&report, "epsilon-sub-http");

    let teamctl = env!("CARGO_BIN_EXE_teamctl");
    let report = python_client(
        &["stdio", teamctl, "mcp"],
        &[("TEAM_GATEWAY_URL", &gw.url), ("TEAM_TOKEN", &lead)],
        &every_tool("epsilon-sub-stdio"),
    )
    .await;
    check_python(&report, "epsilon-sub-stdio");

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teamctl_commands_and_exit_codes() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "teamctl").await;
    let gw = start_gateway_with(&s, quick_gateway()).await;
    let team = team_with_members(&s, &ns, &gw.bus, "zeta", &["general"]).await;
    allow_sub_teams(&ns, "zeta").await;
    let dir = scratch_dir(&format!("teamctl-{}", ns.name));
    let token_file = dir.join("token");
    std::fs::write(&token_file, team.token("general")).unwrap();

    let run = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_teamctl"));
        cmd.args(args).env("TEAM_GATEWAY_URL", &gw.url).env_remove("TEAM").env_remove("TEAM_NAMESPACE").env_remove("TEAM_TOKEN");
        match token {
            Some(t) => cmd.env("TEAM_TOKEN", t).env_remove("TEAM_TOKEN_FILE"),
            None => cmd.env("TEAM_TOKEN_FILE", &token_file),
        };
        let out = cmd.output().expect("run teamctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok_run = |args: &[&str], token: Option<&str>| {
        let (code, out, err) = run(args, token);
        assert_eq!(code, 0, "teamctl {args:?}: {out}{err}");
        out
    };

    let lead = Some(team.token("lead"));
    // Blocking calls run on a thread so the gateway (on this runtime) keeps serving.
    let blocking = |args: Vec<String>, token: Option<String>| {
        let gw_url = gw.url.clone();
        let token_file = token_file.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_teamctl"));
            cmd.args(&args).env("TEAM_GATEWAY_URL", gw_url).env_remove("TEAM").env_remove("TEAM_NAMESPACE");
            match token {
                Some(t) => cmd.env("TEAM_TOKEN", t).env_remove("TEAM_TOKEN_FILE"),
                None => cmd.env("TEAM_TOKEN_FILE", token_file).env_remove("TEAM_TOKEN"),
            };
            let out = cmd.output().expect("run teamctl");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, out, err) =
        blocking(vec!["send".into(), "general".into(), "hello".into(), "from".into(), "lead".into()], lead.map(str::to_owned))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent") && out.contains("general"), "{out}");
    let (code, out, err) = blocking(vec!["wait".into(), "--timeout".into(), "5".into()], None).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("lead -> general: hello from lead"), "{out}");
    // teamctl wait acknowledged it: the next wait is empty.
    let (code, out, _) = blocking(vec!["-o".into(), "json".into(), "wait".into(), "--timeout".into(), "1".into()], None).await.unwrap();
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], json!([]), "{v}");

    let out = tokio::task::block_in_place(|| ok_run(&["-o", "json", "task", "create", "write tests", "--owner", "general"], None));
    let task: Value = serde_json::from_str(&out).unwrap();
    let name = task["name"].as_str().unwrap().to_owned();
    tokio::task::block_in_place(|| ok_run(&["task", "update", &name, "--state", "in_progress"], None));
    let out = tokio::task::block_in_place(|| ok_run(&["task", "list"], None));
    assert!(out.contains(&name) && out.contains("in_progress"), "{out}");
    tokio::task::block_in_place(|| ok_run(&["memory", "write", "remember", "this"], None));
    let out = tokio::task::block_in_place(|| ok_run(&["memory", "read"], None));
    assert_eq!(out.trim(), "remember this");
    let out = tokio::task::block_in_place(|| ok_run(&["get", "members"], None));
    assert!(out.contains("general") && out.contains("lead"), "{out}");

    // Exit codes: refused 2, usage 1, unavailable 3.
    let (code, _, err) = tokio::task::block_in_place(|| run(&["team", "delete"], None));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| run(&["get", "things"], None));
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = tokio::task::block_in_place(|| run(&["send", "general", "x"], Some("forged")));
    assert_eq!(code, 2);
    let (code, _, err) = tokio::task::block_in_place(|| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_teamctl"))
            .args(["--gateway", "http://127.0.0.1:1", "--token", "x", "get", "teams"])
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::new(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert_eq!(code, 3, "{err}");
    let (code, out, _) = tokio::task::block_in_place(|| run(&["--help"], None));
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes"), "{out}");

    // install copies the binary.
    let out = tokio::task::block_in_place(|| ok_run(&["install", dir.join("bin").to_str().unwrap()], None));
    assert!(out.contains("installed"), "{out}");
    assert!(dir.join("bin/teamctl").is_file());

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}
