//! P3 messages: send → wait through the gateway's JSON API and through the bus API, versus raw
//! XADD → XREADGROUP with the same redis client, at several numbers of concurrent pairs; and
//! many idle `wait_messages` waiters: the Redis connections they hold, and how fast one of them
//! wakes on a send.
//!
//! The gateway runs in this process; the load (every sender, receiver and waiter) is a process of
//! its own (this binary again, `--p3-worker`, see p3_load.rs), so the two are measured apart: the
//! CPU seconds of each, and of Redis, come with every run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use team_operator::api::Team;
use team_operator::bus::{Bus, BusConfig, BusLimits, TeamKey};
use team_operator::gateway::{GatewaySettings, GatewayState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::fixture;
use crate::floor::{self, CpuSnapshot};
use crate::p3_load::{Job, MODES};
use crate::support::{self, TestNamespace};
use crate::util::*;

type Client = kube::Client;

/// The waiters' part: `total` waits over `members` members. The first [`PROBED`] members hold one
/// wait each and receive the probes (a send wakes exactly one wait); the others share the rest.
#[derive(Clone, Copy, Debug)]
pub struct Waiters {
    pub total: usize,
    pub members: usize,
    pub probes: usize,
}

pub const PROBED: usize = 10;

pub async fn run(client: &Client, pairs: &[usize], seconds: f64, waiters: Waiters) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p3").await;
    let result = measure(client, &ns, pairs, seconds, waiters).await;
    teardown(client, ns, None, Duration::from_secs(60)).await;
    result
}

async fn measure(client: &Client, ns: &TestNamespace, pairs: &[usize], seconds: f64, waiters: Waiters) -> anyhow::Result<Value> {
    let max_pairs = pairs.iter().copied().max().unwrap_or(1);
    let stack = support::Stack {
        client: client.clone(),
        redis_url: support::redis_url(),
        redis_cluster: support::redis_cluster(),
        kubeconfig: support::kubeconfig_path(),
    };
    // The message path at full speed: the per-sender rate limit (tests/flood.rs tests it) is off
    // in the bus and in the gateway, which is served here on such a bus.
    let limits = BusLimits { send_rate_per_second: 0, ..BusLimits::default() };
    let gw_bus = Bus::connect(BusConfig { limits, ..support::bus_config() }).await?;
    let gw_client = support::identity::impersonating(&support::identity::chart_user("gateway")).await;
    let gw_state = Arc::new(GatewayState::new(gw_client, gw_bus.clone(), Arc::default(), GatewaySettings::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_url = format!("http://{}", listener.local_addr()?);
    let gw = tokio::spawn(team_operator::gateway::serve(listener, gw_state));
    let names: Vec<String> = (0..max_pairs * 2).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!("P3: making {} members with pod tokens", refs.len());
    let team = fixture::team_with_members(&stack, ns, &gw_bus, "chat", &refs).await;
    let base = Job {
        kind: String::new(),
        pairs: 0,
        seconds,
        ns: ns.name.clone(),
        team: team.name.clone(),
        gateway: gw_url.clone(),
        tokens: names.iter().map(|n| (n.clone(), team.token(n).to_owned())).collect(),
        redis_url: support::redis_url(),
        redis_cluster: support::redis_cluster(),
        waits: 0,
        probes: 0,
        sender: None,
    };
    let mut rows = Vec::new();
    for &c in pairs {
        let mut by_mode = serde_json::Map::new();
        let mut raw: Option<(f64, f64)> = None;
        for mode in MODES {
            eprintln!("P3: {mode} with {c} pairs for {seconds} s");
            let job = Job { kind: mode.into(), pairs: c, ..base.clone() };
            let commands_before = floor::redis_commands().await;
            let (mut out, _) = worker(&job, Vec::new()).await?;
            let commands = floor::redis_commands().await.zip(commands_before).map(|(a, b)| a.saturating_sub(b));
            let mut lat: Vec<f64> = serde_json::from_value(out["latencies_ms"].take())?;
            let rate = out["count"].as_f64().unwrap_or(0.0) / out["elapsed_s"].as_f64().unwrap_or(f64::NAN);
            let mut s = summary(&mut lat);
            s["msgs_per_s"] = json!(rate.round());
            s["cpu"] = out["cpu"].take();
            s["per_message"] = per_message(&s, commands);
            let (p50, p99) = (pct(&mut lat, 50.0), pct(&mut lat, 99.0));
            match raw {
                None => raw = Some((p50, p99)),
                Some((r50, r99)) => {
                    s["p99_vs_raw"] = json!(round3(p99 / r99));
                    s["p50_vs_raw"] = json!(round3(p50 / r50));
                    let raw_rate = by_mode["raw_redis"]["msgs_per_s"].as_f64().unwrap_or(f64::NAN);
                    s["throughput_vs_raw"] = json!(round3(rate / raw_rate));
                }
            }
            by_mode.insert(mode.into(), s);
        }
        rows.push(json!({ "pairs": c, "modes": by_mode }));
    }
    let idle = if waiters.total > 0 && waiters.members > PROBED {
        idle_waiters(&stack, ns, &gw_bus, &gw_url, &base, waiters).await.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
    } else {
        Value::Null
    };
    gw.abort();
    Ok(json!({
        "seconds_per_run": seconds,
        "body_bytes": crate::p3_load::BODY_BYTES,
        "warmup_per_pair": crate::p3_load::WARMUP,
        "redis_cluster": support::redis_cluster(),
        "runs": rows,
        "idle_waiters": idle,
    }))
}

/// What one delivered message cost: Redis commands (`total_commands_processed`, the scripts'
/// own calls included, whoever sent them: the warm-up and stop messages and other users of the
/// stack too) and CPU microseconds of Redis, the gateway's process and the load generator.
fn per_message(s: &Value, commands: Option<u64>) -> Value {
    let n = s["n"].as_f64().filter(|&n| n > 0.0).unwrap_or(f64::NAN);
    let cpu = &s["cpu"]["per_component_s"];
    let us = |component: &str| cpu[component].as_f64().map(|x| round3(x * 1e6 / n));
    json!({
        "redis_commands": commands.map(|c| round3(c as f64 / n)),
        "redis_cpu_us": us("redis"),
        "gateway_and_bench_cpu_us": us("gateway_and_bench"),
        "load_generator_cpu_us": us("load_generator"),
    })
}

/// What runs while the worker waits after a `ready`.
type Between<'a> = Box<dyn FnOnce() -> futures::future::BoxFuture<'a, Value> + Send + 'a>;

/// Runs one job in a worker process; its JSON answer. `ready`: each time the worker says `ready`
/// (a step of its load is in place) it waits for a line on stdin; the next callback runs in
/// between (what the last returns comes back beside the answer). The CPU seconds of this process
/// (the gateway), of the worker and of the stack's components over the job are added as `cpu`.
async fn worker<'a>(job: &Job, ready: Vec<Between<'a>>) -> anyhow::Result<(Value, Value)> {
    let mut ready = ready.into_iter();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--p3-worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let cpu0 = CpuSnapshot::take(&[("gateway_and_bench", std::process::id()), ("load_generator", pid)]);
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(format!("{}\n", serde_json::to_string(job)?).as_bytes()).await?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut between = Value::Null;
    let mut answer = None;
    let deadline = Duration::from_secs(600);
    while let Some(line) =
        tokio::time::timeout(deadline, lines.next_line()).await.map_err(|_| anyhow::anyhow!("worker silent for 10 min"))??
    {
        if line == "ready" {
            if let Some(f) = ready.next() {
                between = f().await;
            }
            stdin.write_all(b"go\n").await?;
        } else if let Some(json) = line.strip_prefix("result ") {
            // The worker's last CPU figure is its own, read before it answers.
            answer = Some(serde_json::from_str::<Value>(json)?);
            break;
        }
    }
    let mut answer = answer.ok_or_else(|| anyhow::anyhow!("the worker ended without a result"))?;
    let mut cpu = CpuSnapshot::take(&[("gateway_and_bench", std::process::id()), ("load_generator", pid)]).since(&cpu0);
    let _ = child.wait().await;
    if let Some(e) = answer.get("error") {
        anyhow::bail!("worker: {}", e.as_str().unwrap_or_default());
    }
    if let Some(own) = answer.get("own_cpu_s").and_then(Value::as_f64) {
        cpu["per_component_s"]["load_generator"] = json!(round3(own));
    }
    answer["cpu"] = cpu;
    Ok((answer, between))
}

/// `total` idle `wait_messages` calls (a team whose members may wait 300 s), the Redis
/// connections they hold once parked, then `probes` sends, each to a member holding one wait,
/// timed until that wait returns it.
async fn idle_waiters(
    stack: &support::Stack,
    ns: &TestNamespace,
    gw_bus: &Bus,
    gw_url: &str,
    base: &Job,
    w: Waiters,
) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..w.members).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!("P3: {} idle waiters over {} members", w.total, w.members);
    let team = fixture::team_with_members(stack, ns, gw_bus, "idle", &refs).await;
    let teams: Api<Team> = ns.api();
    teams.patch("idle", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "memberTimeoutSeconds": 300 } }))).await?;
    // Until the gateway's watch of Teams has the new bound.
    let probe_token = team.token("w0").to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, answer) = fixture::call(gw_url, Some(&probe_token), "wait_messages", json!({ "timeout_seconds": 0 })).await;
        if answer["max_timeout_seconds"] == json!(300) {
            break;
        }
        anyhow::ensure!(Instant::now() < until, "the gateway never saw memberTimeoutSeconds 300: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connections_before = floor::redis_connections().await;
    let total = w.total;
    let job = Job {
        kind: "waiters".into(),
        team: "idle".into(),
        tokens: names.iter().map(|n| (n.clone(), team.token(n).to_owned())).collect(),
        waits: w.total,
        probes: w.probes,
        sender: Some(team.token("lead").to_owned()),
        ..base.clone()
    };
    // The worker opens the waits of the members not probed first; once they are in the gateway
    // (the pooled seats all taken by them), it opens the probed members' waits, which park past
    // the pool: the probes time the wake-up path, not a pooled blocking read.
    let others = total.saturating_sub(PROBED);
    let until_blocked = |bus: Bus, n: usize| async move {
        let until = Instant::now() + Duration::from_secs(120);
        while bus.blocked_waits() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let bus = gw_bus.clone();
    let opened_others: Between = Box::new(move || -> futures::future::BoxFuture<'static, Value> {
        Box::pin(async move {
            until_blocked(bus, others).await;
            Value::Null
        })
    });
    let bus = gw_bus.clone();
    let parked: Between = Box::new(move || -> futures::future::BoxFuture<'static, Value> {
        Box::pin(async move {
            until_blocked(bus.clone(), total).await;
            // Idle markers and the last waits settle; then the count.
            tokio::time::sleep(Duration::from_secs(1)).await;
            json!({
                "blocked": bus.blocked_waits(),
                "parked": bus.parked_waits(),
                "redis_connections": floor::redis_connections().await,
                "gateway_process_redis_connections": floor::process_redis_connections(std::process::id()),
            })
        })
    });
    let result = worker(&job, vec![opened_others, parked]).await;
    // The waits the worker left open end now (teardown wakes them), not at their 300 s bound in
    // the middle of the next part.
    gw_bus.teardown(&TeamKey::new(ns.name.clone(), "idle")).await?;
    let until = Instant::now() + Duration::from_secs(60);
    while gw_bus.blocked_waits() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut answer, during) = result?;
    let mut lat: Vec<f64> = serde_json::from_value(answer["latencies_ms"].take())?;
    let held = during["redis_connections"].as_u64().zip(connections_before.map(|c| c as u64)).map(|(a, b)| a.saturating_sub(b));
    let mut wake = summary(&mut lat);
    wake["missing"] = answer["missing"].take();
    Ok(json!({
        "waiters": total,
        "members": w.members,
        "probed_members": PROBED,
        "blocked_in_gateway": during["blocked"],
        "parked_in_gateway": during["parked"],
        "pooled_seats": team_operator::bus::POOLED_WAITS,
        "gateway_process_redis_connections": during["gateway_process_redis_connections"],
        "redis_connections_before": connections_before,
        "redis_connections_while_parked": during["redis_connections"],
        "redis_connections_held": held,
        "wake": wake,
        "opened_s": answer["opened_s"],
        "cpu": answer["cpu"],
    }))
}
