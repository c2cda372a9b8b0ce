//! P3 messages: send → wait through the gateway's JSON API and through the bus API, versus raw
//! XADD → XREADGROUP with the same redis client, at several numbers of concurrent pairs.
//!
//! Each pair runs a closed loop: the sender sends, the receiver's wait returns it (the latency),
//! the receiver acks (raw: XACK; bus and gateway: with its next wait, one round trip), and only
//! then the sender sends the next. Throughput is delivered messages
//! per second over all pairs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use reqwest::Client as Http;
use serde_json::{Value, json};
use team_operator::bus::{Bus, BusConfig, BusLimits, MessageKind, OutgoingMessage, Recipient, TeamKey};
use team_operator::gateway::{GatewaySettings, GatewayState};
use tokio::sync::mpsc;

use crate::fixture;
use crate::support::{self, TestNamespace};
use crate::util::*;

const WARMUP: usize = 5;
const BODY_BYTES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Raw,
    Bus,
    Gateway,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw_redis",
            Mode::Bus => "bus",
            Mode::Gateway => "gateway_http",
        }
    }
}

struct Setup {
    ns: String,
    bus: Bus,
    key: TeamKey,
    gateway: String,
    tokens: Vec<(String, String)>,
    http: Http,
    redis: redis::Client,
    shared: redis::aio::MultiplexedConnection,
}

pub async fn run(client: &Client, pairs: &[usize], seconds: f64) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p3").await;
    let result = measure(client, &ns, pairs, seconds).await;
    teardown(client, ns, None, Duration::from_secs(30)).await;
    result
}

type Client = kube::Client;

async fn measure(client: &Client, ns: &TestNamespace, pairs: &[usize], seconds: f64) -> anyhow::Result<Value> {
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
    let unlimited = || BusConfig { limits, ..BusConfig::from_url(support::redis_url()) };
    let gw_bus = Bus::connect(unlimited()).await?;
    let gw_client = support::identity::impersonating(&support::identity::chart_user("gateway")).await;
    let gw_state = Arc::new(GatewayState::new(gw_client, gw_bus.clone(), Arc::default(), GatewaySettings::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_url = format!("http://{}", listener.local_addr()?);
    let gw = tokio::spawn(team_operator::gateway::serve(listener, gw_state));
    let names: Vec<String> = (0..max_pairs * 2).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!("P3: making {} members with pod tokens", refs.len());
    let team = fixture::team_with_members(&stack, ns, &gw_bus, "chat", &refs).await;
    let redis = redis::Client::open(support::redis_url())?;
    let shared = redis.get_multiplexed_async_connection().await?;
    let setup = Arc::new(Setup {
        ns: ns.name.clone(),
        bus: Bus::connect(unlimited()).await?,
        key: team.key(&ns.name),
        gateway: gw_url,
        tokens: names.iter().map(|n| (n.clone(), team.token(n).to_owned())).collect(),
        http: Http::new(),
        redis,
        shared,
    });
    let mut rows = Vec::new();
    for &c in pairs {
        let mut by_mode = serde_json::Map::new();
        let mut raw_p99 = f64::NAN;
        let mut raw_p50 = f64::NAN;
        for mode in [Mode::Raw, Mode::Bus, Mode::Gateway] {
            eprintln!("P3: {} with {c} pairs for {seconds} s", mode.name());
            let (mut lat, count, elapsed) = run_mode(&setup, mode, c, seconds).await?;
            let mut s = summary(&mut lat);
            let rate = count as f64 / elapsed;
            s["msgs_per_s"] = json!(rate.round());
            if mode == Mode::Raw {
                raw_p99 = pct(&mut lat, 99.0);
                raw_p50 = pct(&mut lat, 50.0);
            } else {
                s["p99_vs_raw"] = json!(round3(pct(&mut lat, 99.0) / raw_p99));
                s["p50_vs_raw"] = json!(round3(pct(&mut lat, 50.0) / raw_p50));
            }
            by_mode.insert(mode.name().into(), s);
        }
        rows.push(json!({ "pairs": c, "modes": by_mode }));
    }
    gw.abort();
    Ok(json!({ "seconds_per_run": seconds, "body_bytes": BODY_BYTES, "warmup_per_pair": WARMUP, "runs": rows }))
}

/// Runs `pairs` closed loops for `seconds`; the latencies (ms), messages timed, and elapsed s.
async fn run_mode(setup: &Arc<Setup>, mode: Mode, pairs: usize, seconds: f64) -> anyhow::Result<(Vec<f64>, usize, f64)> {
    let start_gate = Arc::new(tokio::sync::Barrier::new(pairs));
    let mut tasks = Vec::new();
    for i in 0..pairs {
        let (setup, gate) = (setup.clone(), start_gate.clone());
        tasks.push(tokio::spawn(async move { pair(setup, mode, i, seconds, gate).await }));
    }
    let mut lat = Vec::new();
    let mut count = 0;
    let mut elapsed: f64 = 0.0;
    for t in tasks {
        let (l, e) = t.await??;
        count += l.len();
        elapsed = elapsed.max(e);
        lat.extend(l);
    }
    Ok((lat, count, elapsed))
}

/// One sender/receiver pair; returns the timed latencies and the timed duration.
async fn pair(setup: Arc<Setup>, mode: Mode, i: usize, seconds: f64, gate: Arc<tokio::sync::Barrier>) -> anyhow::Result<(Vec<f64>, f64)> {
    let (from, from_token) = setup.tokens[2 * i].clone();
    let (to, to_token) = setup.tokens[2 * i + 1].clone();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let stream = format!("bench-raw:{}:inbox:{i}", setup.ns);
    if mode == Mode::Raw {
        let mut c = setup.shared.clone();
        let _: Result<(), _> = redis::cmd("XGROUP").arg("CREATE").arg(&stream).arg("g").arg("$").arg("MKSTREAM").query_async(&mut c).await;
    }
    // The receiver.
    let receiver = {
        let setup = setup.clone();
        let stream = stream.clone();
        let to = to.clone();
        tokio::spawn(async move {
            let mut conn = match mode {
                Mode::Raw => Some(
                    setup
                        .redis
                        .get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new().set_response_timeout(None))
                        .await?,
                ),
                _ => None,
            };
            let mut acks: Vec<String> = Vec::new();
            loop {
                let got: Vec<(String, String)> = match mode {
                    Mode::Raw => {
                        let c = conn.as_mut().expect("conn");
                        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg("g")
                            .arg("c")
                            .arg("COUNT")
                            .arg(100)
                            .arg("BLOCK")
                            .arg(5000)
                            .arg("STREAMS")
                            .arg(&stream)
                            .arg(">")
                            .query_async(c)
                            .await?;
                        let mut out = Vec::new();
                        for k in reply.keys {
                            for id in k.ids {
                                let body: String = id.get("body").unwrap_or_default();
                                out.push((id.id.clone(), body));
                            }
                        }
                        out
                    }
                    Mode::Bus => {
                        let (_, msgs) = setup.bus.ack_and_wait(&setup.key, &to, &std::mem::take(&mut acks), Duration::from_secs(5)).await?;
                        msgs.into_iter().map(|m| (m.stream_id, m.body)).collect()
                    }
                    Mode::Gateway => {
                        let body = json!({ "ack": std::mem::take(&mut acks), "timeout_seconds": 5 });
                        let resp: Value = setup
                            .http
                            .post(format!("{}/v1/tools/wait_messages", setup.gateway))
                            .bearer_auth(&to_token)
                            .json(&body)
                            .send()
                            .await?
                            .error_for_status()?
                            .json()
                            .await?;
                        resp["messages"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|m| {
                                        (
                                            m["stream_id"].as_str().unwrap_or_default().to_owned(),
                                            m["body"].as_str().unwrap_or_default().to_owned(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                };
                let now = Instant::now();
                let mut stop = false;
                let ids: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
                for (_, body) in got {
                    if body.starts_with("stop") {
                        stop = true;
                    } else {
                        let _ = arrived_tx.send((body, now));
                    }
                }
                match mode {
                    Mode::Raw if !ids.is_empty() => {
                        let c = conn.as_mut().expect("conn");
                        let _: usize = redis::cmd("XACK").arg(&stream).arg("g").arg(&ids).query_async(c).await?;
                    }
                    // The bus and the gateway hand acks back with the next wait, as agents do.
                    Mode::Bus | Mode::Gateway => acks = ids,
                    _ => {}
                }
                if stop {
                    match mode {
                        Mode::Bus => {
                            setup.bus.ack(&setup.key, &to, &acks).await?;
                        }
                        Mode::Gateway if !acks.is_empty() => {
                            let body = json!({ "ack": acks, "receive": false });
                            let _ = setup
                                .http
                                .post(format!("{}/v1/tools/wait_messages", setup.gateway))
                                .bearer_auth(&to_token)
                                .json(&body)
                                .send()
                                .await;
                        }
                        _ => {}
                    }
                    return anyhow::Ok(());
                }
            }
        })
    };

    let pad = "x".repeat(BODY_BYTES);
    let send = |seq: String| {
        let (setup, stream, from, to, from_token) = (setup.clone(), stream.clone(), from.clone(), to.clone(), from_token.clone());
        async move {
            match mode {
                Mode::Raw => {
                    let mut c = setup.shared.clone();
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(10_000)
                        .arg("*")
                        .arg("body")
                        .arg(&seq)
                        .query_async(&mut c)
                        .await?;
                }
                Mode::Bus => {
                    setup
                        .bus
                        .send(
                            &setup.key,
                            OutgoingMessage {
                                from,
                                to: Recipient::Member(to),
                                body: seq,
                                kind: MessageKind::Message,
                                id: None,
                                sent_by: None,
                            },
                        )
                        .await?;
                }
                Mode::Gateway => {
                    setup
                        .http
                        .post(format!("{}/v1/tools/send_message", setup.gateway))
                        .bearer_auth(&from_token)
                        .json(&json!({ "to": to, "body": seq }))
                        .send()
                        .await?
                        .error_for_status()?;
                }
            }
            anyhow::Ok(())
        }
    };

    let mut lat = Vec::new();
    let mut seq = 0usize;
    let mut t_start = Instant::now();
    let mut deadline = None;
    loop {
        if seq == WARMUP {
            gate.wait().await;
            t_start = Instant::now();
            deadline = Some(t_start + Duration::from_secs_f64(seconds));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let body = format!("{seq} {pad}");
        let t0 = Instant::now();
        send(body.clone()).await?;
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .map_err(|_| anyhow::anyhow!("pair {i} ({}): message {seq} did not arrive in 10 s", mode.name()))?
            .ok_or_else(|| anyhow::anyhow!("pair {i}: receiver ended"))?;
        anyhow::ensure!(got == body, "pair {i}: got {:?}, sent {:?}", &got[..got.len().min(20)], &body[..20]);
        if seq >= WARMUP {
            lat.push(ms(at - t0));
        }
        seq += 1;
    }
    let elapsed = t_start.elapsed().as_secs_f64();
    send(format!("stop {seq}")).await?;
    receiver.await??;
    Ok((lat, elapsed))
}
