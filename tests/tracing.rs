//! OpenTelemetry traces over OTLP/HTTP, received by an OTLP endpoint of the test's own on
//! loopback that decodes what the real binaries send: the controller's reconciles, and a lead's
//! send_message joined in one trace with the member's wait_messages that received it (the
//! message carries `traceparent`), also when the caller sent a `traceparent` header of its own.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use fixture::*;
use kube::api::PostParams;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};
use support::identity::{chart_user, impersonating_kubeconfig};
use support::operator::Operator;
use support::*;
use team_operator::api::Team;
use team_operator::bus::Bus;
use tokio::process::{Child, Command};

/// One span as the receiver decoded it; ids in lowercase hex.
#[derive(Clone, Debug)]
struct Seen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    links: Vec<(String, String)>,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP trace endpoint on 127.0.0.1: every span POSTed to `/v1/traces`, in order.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP/HTTP protobuf trace export");
                sink.lock().expect("spans").extend(decode(request));
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, spans, task }
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().expect("spans").clone()
    }

    /// The environment that points a process at this receiver, exporting every 100 ms.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", self.url.clone()), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())]
    }

    /// Waits until the spans received satisfy `found`, and returns what it found.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Seen]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let spans = self.spans();
            if let Some(t) = found(&spans) {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not among the {} spans received:\n{spans:#?}", spans.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<Seen> {
    let mut seen = Vec::new();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            seen.push(Seen {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                attributes: attributes(&span.attributes),
            });
        }
    }
    seen
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    let text = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The real `team-operator gateway` binary for namespace `ns`, authenticating as the chart's
/// gateway ServiceAccount, with `env`; killed when dropped.
struct GatewayProcess {
    url: String,
    log: PathBuf,
    _child: Child,
}

impl GatewayProcess {
    async fn start(ns: &str, env: &[(&'static str, String)]) -> Self {
        let log = scratch_dir("gateway-logs").join(format!("{ns}.log"));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let kubeconfig = impersonating_kubeconfig(&chart_user("gateway"), &format!("gateway-{}", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_team-operator"))
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--namespace", ns])
            .env("KUBECONFIG", kubeconfig)
            .envs(redis_env())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("starting team-operator gateway");
        let url = format!("http://127.0.0.1:{port}");
        let gw = GatewayProcess { url, log, _child: child };
        wait_until(TIMEOUT, "the gateway to be ready", || async {
            reqwest::get(format!("{}/readyz", gw.url)).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        gw
    }
}

/// A tool call with a `traceparent` header.
async fn call_traced(url: &str, token: &str, tool: &str, args: Value, traceparent: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/tools/{tool}"))
        .bearer_auth(token)
        .header("traceparent", traceparent)
        .json(&args)
        .send()
        .await
        .expect("gateway reachable");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON answer");
    ok((status, body))
}

/// The receive span of the message sent inside `send`: same trace, `send` its parent.
fn receive_of<'a>(spans: &'a [Seen], send: &Seen) -> Option<&'a Seen> {
    spans.iter().find(|s| s.name == "wait_messages receive" && s.trace_id == send.trace_id && s.parent == send.span_id)
}

#[tokio::test]
async fn a_leads_send_and_the_members_wait_join_one_trace_and_the_controller_traces_its_reconciles() {
    let s = stack().await;
    install_crds(&s.client).await;
    let receiver = Receiver::start().await;

    // The controller: a reconcile of a team in its namespace is a span of its service.
    let ctl_ns = TestNamespace::new(&s.client, "trace-ctl").await;
    let _operator = Operator::start_with_env(&ctl_ns.name, 5, &[], &receiver.env());
    ctl_ns.api::<Team>().create(&PostParams::default(), &support::teams::team("traced", 2)).await.expect("create team");
    receiver
        .wait_for("a reconcile span of team traced from team-operator-controller", |spans| {
            spans
                .iter()
                .find(|s| s.service == "team-operator-controller" && s.attributes.get("team").map(String::as_str) == Some("traced"))
                .cloned()
        })
        .await;

    // The gateway, its real binary, with a team of hand-made members.
    let ns = TestNamespace::new(&s.client, "trace-gw").await;
    let gw = GatewayProcess::start(&ns.name, &receiver.env()).await;
    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let team = team_with_members(&s, &ns, &bus, "alpha", &["general"]).await;

    // A send whose caller is in a trace of its own: the gateway continues it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let send = json!({ "to": "general", "body": "in your trace" });
    call_traced(&gw.url, team.token("lead"), "send_message", send, &traceparent).await;
    let got = ok(call(&gw.url, Some(team.token("general")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    let carried = got["messages"][0]["traceparent"].as_str().unwrap_or_else(|| panic!("the message carries traceparent: {got}"));
    assert!(carried.starts_with(&format!("00-{trace_id}-")), "{carried}");
    let acked = json!([got["messages"][0]["stream_id"]]);

    // A send of nobody's trace: the gateway starts one, and the wait joins it.
    ok(call(&gw.url, Some(team.token("lead")), "send_message", json!({ "to": "general", "body": "new trace" })).await);
    let got = ok(call(&gw.url, Some(team.token("general")), "wait_messages", json!({ "ack": acked, "timeout_seconds": 5 })).await);
    assert_eq!(got["messages"][0]["body"], "new trace", "{got}");

    // Each send, its receive (same trace, the send its parent) and the wait the receive links to.
    let joined = receiver
        .wait_for("two send_message spans of the gateway, each with its receive and the wait it links to", |spans| {
            let sends: Vec<&Seen> = spans.iter().filter(|s| s.service == "team-operator-gateway" && s.name == "send_message").collect();
            let joined: Vec<(Seen, Seen, Seen)> = sends
                .iter()
                .filter_map(|send| {
                    let receive = receive_of(spans, send)?;
                    let (_, link_span) = receive.links.first()?;
                    let wait = spans.iter().find(|s| &s.span_id == link_span)?;
                    Some(((*send).clone(), receive.clone(), wait.clone()))
                })
                .collect();
            (joined.len() == 2).then_some(joined)
        })
        .await;
    assert!(joined.iter().any(|(send, ..)| send.trace_id == trace_id), "the incoming traceparent was continued: {joined:#?}");
    assert!(joined.iter().any(|(send, ..)| send.trace_id != trace_id), "a send without one starts a trace: {joined:#?}");
    for (send, receive, wait) in &joined {
        assert_eq!((receive.trace_id.as_str(), receive.parent.as_str()), (send.trace_id.as_str(), send.span_id.as_str()));
        assert_eq!((wait.name.as_str(), &wait.trace_id), ("wait_messages", &receive.links[0].0), "{wait:#?}");
        assert_ne!(wait.trace_id, send.trace_id, "the wait is the member's own request, linked, not joined");
    }
    eprintln!("gateway log: {}", gw.log.display());
    bus.teardown(&team.key(&ns.name)).await.expect("teardown");
    ns.cleanup().await;
    ctl_ns.cleanup().await;
}
