//! The load of P3 in a process of its own (`fleet --p3-worker`): reads one [`Job`] as a JSON line
//! on stdin, runs it, answers `result <json>` on stdout. A job that sets up standing load (the
//! idle waiters) first answers `ready` and waits for a line on stdin before it measures.
//!
//! Pairs: each pair runs a closed loop: the sender sends, the receiver's wait returns it (the
//! latency), the receiver acks (raw: XACK; bus and gateway: with its next wait, one round trip),
//! and only then the sender sends the next. Throughput is delivered messages per second over all
//! pairs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture};
use reqwest::Client as Http;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use team_operator::bus::{Bus, BusConfig, BusLimits, MessageKind, OutgoingMessage, Recipient, TeamKey};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::p3::PROBED;
use crate::util::*;

pub const WARMUP: usize = 5;
pub const BODY_BYTES: usize = 100;
pub const MODES: [&str; 3] = ["raw_redis", "bus", "gateway_http"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// One of [`MODES`], or `waiters`.
    pub kind: String,
    pub pairs: usize,
    pub seconds: f64,
    pub ns: String,
    pub team: String,
    pub gateway: String,
    /// Member name → pod token: pairs are (0, 1), (2, 3), …; waiters wait as every one of them.
    pub tokens: Vec<(String, String)>,
    pub redis_url: String,
    pub redis_cluster: bool,
    /// Waiters: how many waits in all.
    pub waits: usize,
    pub probes: usize,
    /// Waiters: the token the probes are sent with.
    pub sender: Option<String>,
}

/// The worker's main: one job, one answer.
pub async fn main() -> anyhow::Result<()> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await?.ok_or_else(|| anyhow::anyhow!("no job on stdin"))?;
    let job: Job = serde_json::from_str(&line)?;
    let result = match job.kind.as_str() {
        "waiters" => waiters(&job, &mut stdin).await,
        _ => pairs(&job).await,
    };
    let mut answer = result.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    answer["own_cpu_s"] = json!(cpu_ticks(std::process::id()).map(|t| t as f64 / clock_ticks() as f64));
    println!("result {answer}");
    // The waiters' calls are still open: end without waiting for them.
    std::process::exit(0);
}

/// A connection for raw commands: to the server, or a cluster connection (the raw streams hash
/// to different slots).
#[derive(Clone)]
enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Raw {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Raw::Single(c) => c.req_packed_command(cmd),
            Raw::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(&'a mut self, p: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Raw::Single(c) => c.req_packed_commands(p, offset, count),
            Raw::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        0
    }
}

/// A new raw connection; a blocking one has no response timeout (its BLOCK bounds it).
async fn raw_connection(job: &Job, blocking: bool) -> anyhow::Result<Raw> {
    let timeout = if blocking { None } else { Some(Duration::from_secs(5)) };
    if job.redis_cluster {
        let seeds: Vec<&str> = job.redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let mut b = redis::cluster::ClusterClientBuilder::new(seeds);
        if let Some(t) = timeout {
            b = b.response_timeout(t);
        } else {
            b = b.response_timeout(Duration::from_secs(24 * 3600));
        }
        Ok(Raw::Cluster(b.build()?.get_async_connection().await?))
    } else {
        let client = redis::Client::open(job.redis_url.as_str())?;
        let cfg = AsyncConnectionConfig::new().set_response_timeout(timeout);
        Ok(Raw::Single(client.get_multiplexed_async_connection_with_config(&cfg).await?))
    }
}

struct Setup {
    job: Job,
    bus: Bus,
    key: TeamKey,
    http: Http,
    shared: Raw,
}

async fn pairs(job: &Job) -> anyhow::Result<Value> {
    // The message path at full speed: no per-sender rate limit (tests/flood.rs tests it).
    let limits = BusLimits { send_rate_per_second: 0, ..BusLimits::default() };
    let cfg = BusConfig { cluster: job.redis_cluster, limits, ..BusConfig::from_url(job.redis_url.clone()) };
    let setup = Arc::new(Setup {
        job: job.clone(),
        bus: Bus::connect(cfg).await?,
        key: TeamKey::new(job.ns.clone(), job.team.clone()),
        http: Http::new(),
        shared: raw_connection(job, false).await?,
    });
    let gate = Arc::new(tokio::sync::Barrier::new(job.pairs));
    let tasks: Vec<_> = (0..job.pairs).map(|i| tokio::spawn(pair(setup.clone(), i, gate.clone()))).collect();
    let (mut lat, mut elapsed) = (Vec::new(), 0.0f64);
    for t in tasks {
        let (l, e) = t.await??;
        elapsed = elapsed.max(e);
        lat.extend(l);
    }
    Ok(json!({ "count": lat.len(), "elapsed_s": elapsed, "latencies_ms": lat }))
}

/// What a receiver took out of one wait: (stream id, body).
type Got = Vec<(String, String)>;

fn gateway_messages(resp: &Value) -> Got {
    resp["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (m["stream_id"].as_str().unwrap_or_default().to_owned(), m["body"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One sender/receiver pair; the timed latencies and the timed duration.
async fn pair(setup: Arc<Setup>, i: usize, gate: Arc<tokio::sync::Barrier>) -> anyhow::Result<(Vec<f64>, f64)> {
    let mode = setup.job.kind.clone();
    let (from, from_token) = setup.job.tokens[2 * i].clone();
    let (to, to_token) = setup.job.tokens[2 * i + 1].clone();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let stream = format!("bench-raw:{}:inbox:{i}", setup.job.ns);
    if mode == "raw_redis" {
        let mut c = setup.shared.clone();
        let _: Result<(), _> = redis::cmd("XGROUP").arg("CREATE").arg(&stream).arg("g").arg("$").arg("MKSTREAM").query_async(&mut c).await;
    }
    let receiver = {
        let (setup, stream, to, mode) = (setup.clone(), stream.clone(), to.clone(), mode.clone());
        tokio::spawn(async move {
            let mut conn = if mode == "raw_redis" { Some(raw_connection(&setup.job, true).await?) } else { None };
            let mut acks: Vec<String> = Vec::new();
            let gateway = &setup.job.gateway;
            loop {
                let got: Got = match mode.as_str() {
                    "raw_redis" => {
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
                        reply.keys.into_iter().flat_map(|k| k.ids).map(|id| (id.id.clone(), id.get("body").unwrap_or_default())).collect()
                    }
                    "bus" => {
                        let (_, msgs) = setup.bus.ack_and_wait(&setup.key, &to, &std::mem::take(&mut acks), Duration::from_secs(5)).await?;
                        msgs.into_iter().map(|m| (m.stream_id, m.body)).collect()
                    }
                    _ => {
                        let body = json!({ "ack": std::mem::take(&mut acks), "timeout_seconds": 5 });
                        let url = format!("{gateway}/v1/tools/wait_messages");
                        let resp: Value =
                            setup.http.post(url).bearer_auth(&to_token).json(&body).send().await?.error_for_status()?.json().await?;
                        gateway_messages(&resp)
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
                match mode.as_str() {
                    "raw_redis" if !ids.is_empty() => {
                        let c = conn.as_mut().expect("conn");
                        let _: usize = redis::cmd("XACK").arg(&stream).arg("g").arg(&ids).query_async(c).await?;
                    }
                    "raw_redis" => {}
                    // The bus and the gateway hand acks back with the next wait, as agents do.
                    _ => acks = ids,
                }
                if stop {
                    match mode.as_str() {
                        "bus" => {
                            setup.bus.ack(&setup.key, &to, &acks).await?;
                        }
                        "gateway_http" if !acks.is_empty() => {
                            let body = json!({ "ack": acks, "receive": false });
                            let url = format!("{gateway}/v1/tools/wait_messages");
                            let _ = setup.http.post(url).bearer_auth(&to_token).json(&body).send().await;
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
        let (setup, stream, from, to, from_token, mode) =
            (setup.clone(), stream.clone(), from.clone(), to.clone(), from_token.clone(), mode.clone());
        async move {
            match mode.as_str() {
                "raw_redis" => {
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
                "bus" => {
                    let msg =
                        OutgoingMessage { from, to: Recipient::Member(to), body: seq, kind: MessageKind::Message, id: None, sent_by: None };
                    setup.bus.send(&setup.key, msg).await?;
                }
                _ => {
                    let url = format!("{}/v1/tools/send_message", setup.job.gateway);
                    setup
                        .http
                        .post(url)
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
            deadline = Some(t_start + Duration::from_secs_f64(setup.job.seconds));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let body = format!("{seq} {pad}");
        let t0 = Instant::now();
        send(body.clone()).await?;
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .map_err(|_| anyhow::anyhow!("pair {i} ({mode}): message {seq} did not arrive in 10 s"))?
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

/// Opens `job.waits` waits that stay parked (the first [`PROBED`] members one each, opened last,
/// the others share the rest), says `ready` after each of the two, waits for a line, then sends `job.probes` messages one at a time
/// to the probed members and times each until its wait returns it.
async fn waiters(job: &Job, stdin: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>) -> anyhow::Result<Value> {
    let http = Http::builder().pool_max_idle_per_host(usize::MAX).build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let others = job.tokens.len().saturating_sub(PROBED).max(1);
    let rest = job.waits.saturating_sub(PROBED);
    let t0 = Instant::now();
    let open = |m: usize, token: &String| {
        let n = if m < PROBED { 1 } else { rest / others + usize::from(m - PROBED < rest % others) };
        for _ in 0..n {
            let (http, tx, token, url) = (http.clone(), tx.clone(), token.clone(), format!("{}/v1/tools/wait_messages", job.gateway));
            tokio::spawn(async move {
                let mut ack: Vec<String> = Vec::new();
                // Bounded: a wait lasts up to 300 s, the bench's run of this part less than that.
                for _ in 0..10_000 {
                    let body = json!({ "ack": std::mem::take(&mut ack), "timeout_seconds": 300 });
                    match http.post(&url).bearer_auth(&token).json(&body).send().await {
                        Ok(resp) => {
                            let now = Instant::now();
                            let v: Value = resp.json().await.unwrap_or_default();
                            let got = gateway_messages(&v);
                            ack = got.iter().map(|(id, _)| id.clone()).collect();
                            for (_, b) in got {
                                let _ = tx.send((b, now));
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        }
    };
    // The others first; once the bench says they are in, the probed members' (see p3.rs).
    for (m, (_, token)) in job.tokens.iter().enumerate().skip(PROBED) {
        open(m, token);
    }
    println!("ready");
    stdin.next_line().await?;
    for (m, (_, token)) in job.tokens.iter().enumerate().take(PROBED) {
        open(m, token);
    }
    let opened_s = t0.elapsed().as_secs_f64();
    println!("ready");
    stdin.next_line().await?;
    let sender = job.sender.clone().ok_or_else(|| anyhow::anyhow!("waiters: no sender token"))?;
    let send_url = format!("{}/v1/tools/send_message", job.gateway);
    let (mut lat, mut missing) = (Vec::new(), 0);
    // The first sends also warm the gateway's caches (the sender's token review): not timed.
    for i in 0..job.probes + WARMUP {
        let (to, _) = &job.tokens[i % PROBED.min(job.tokens.len())];
        let body = format!("probe {i}");
        let sent = Instant::now();
        http.post(&send_url).bearer_auth(&sender).json(&json!({ "to": to, "body": body })).send().await?.error_for_status()?;
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some((b, at)) = rx.recv().await {
                if b == body {
                    return Some(at);
                }
            }
            None
        })
        .await;
        match arrived {
            Ok(Some(_)) if i < WARMUP => {}
            Ok(Some(at)) => lat.push(ms(at - sent)),
            _ => missing += 1,
        }
    }
    Ok(json!({ "opened_s": round3(opened_s), "latencies_ms": lat, "missing": missing }))
}
