//! P2 failure notice: a running member's pod turns Failed → `[AGENT FAILURE] @<name>` readable in
//! the lead's inbox (Bus::wait as the lead). Measured from the moment the bench's pod watch sees
//! the pod Failed to the moment the lead's wait returns the notice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use team_operator::api::{Member, Team};
use team_operator::bus::{Bus, BusConfig, TeamKey};
use tokio::sync::oneshot;

use crate::support::{self, SIM_EXIT_CODE, TestNamespace};
use crate::util::*;

/// Failures in flight at once (each waits for its notice before the next).
const IN_FLIGHT: usize = 4;

pub async fn run(client: &Client, failures: usize) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p2").await;
    let cap = failures + 5;
    let op = Operator::start(&ns.name, cap)?;
    let result = measure(client, &ns, failures, cap).await;
    teardown(client, ns, Some(op), Duration::from_secs(60)).await;
    result
}

async fn measure(client: &Client, ns: &TestNamespace, failures: usize, cap: usize) -> anyhow::Result<Value> {
    let teams: Api<Team> = ns.api();
    teams.create(&PostParams::default(), &support::teams::team("fail", cap as i32)).await?;
    let lead = lead_name(client, &ns.name, "fail").await;
    let mut pods = PodWatch::start(client, &ns.name, "agentteams.dev/role=specialist").await;
    let members: Api<Member> = ns.api();
    futures::stream::iter(0..failures)
        .map(|i| {
            let api = members.clone();
            let m = support::teams::member(&format!("f-{i:04}"), "fail", None);
            async move { api.create(&PostParams::default(), &m).await.map(drop) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let all_running = until(&pods.state, Duration::from_secs(180), |s| s.running.len() >= failures).await;
    anyhow::ensure!(all_running, "only {} of {failures} member pods ran", pods.state.lock().unwrap().running.len());

    // The lead's inbox reader: notice arrival per member name.
    let bus = Bus::connect(BusConfig::from_url(support::redis_url())).await?;
    let key = TeamKey::new(ns.name.clone(), "fail");
    let waiters: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>> = Arc::default();
    let reader = tokio::spawn({
        let (bus, key, lead, waiters) = (bus.clone(), key.clone(), lead.clone(), waiters.clone());
        async move {
            loop {
                match bus.wait(&key, &lead, Duration::from_secs(5)).await {
                    Ok(msgs) => {
                        let now = Instant::now();
                        let ids: Vec<String> = msgs.iter().map(|m| m.stream_id.clone()).collect();
                        for m in &msgs {
                            if let Some(rest) = m.body.strip_prefix("[AGENT FAILURE] @") {
                                let name = rest.split_whitespace().next().unwrap_or_default().to_owned();
                                if let Some(tx) = waiters.lock().unwrap().remove(&name) {
                                    let _ = tx.send(now);
                                }
                            }
                        }
                        let _ = bus.ack(&key, &lead, &ids).await;
                    }
                    Err(e) => {
                        eprintln!("  (lead wait: {e})");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    });

    // Pod watch: when each member's pod was seen Failed.
    let failed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failed_waiters: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>> = Arc::default();
    let terminal_rx = std::mem::replace(&mut pods.terminal, tokio::sync::mpsc::unbounded_channel().1);
    let collector = tokio::spawn({
        let (failed_at, failed_waiters) = (failed_at.clone(), failed_waiters.clone());
        let mut rx = terminal_rx;
        async move {
            while let Some(t) = rx.recv().await {
                if let (true, Some(m)) = (t.failed, t.member) {
                    failed_at.lock().unwrap().insert(m.clone(), t.at);
                    if let Some(tx) = failed_waiters.lock().unwrap().remove(&m) {
                        let _ = tx.send(t.at);
                    }
                }
            }
        }
    });

    let targets: Vec<(String, String)> = {
        let s = pods.state.lock().unwrap();
        s.by_member.iter().filter(|(_, p)| s.running.contains(*p)).map(|(m, p)| (m.clone(), p.clone())).collect()
    };
    let pod_api: Api<Pod> = ns.api();
    let results: Vec<Result<f64, String>> = futures::stream::iter(targets.into_iter().take(failures))
        .map(|(member, pod)| {
            let (pod_api, waiters, failed_waiters) = (pod_api.clone(), waiters.clone(), failed_waiters.clone());
            async move {
                let (ntx, nrx) = oneshot::channel();
                let (ftx, frx) = oneshot::channel();
                waiters.lock().unwrap().insert(member.clone(), ntx);
                failed_waiters.lock().unwrap().insert(member.clone(), ftx);
                let patch = json!({ "metadata": { "annotations": { SIM_EXIT_CODE: "1" } } });
                pod_api.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| e.to_string())?;
                let both = async { (frx.await, nrx.await) };
                match tokio::time::timeout(Duration::from_secs(20), both).await {
                    Ok((Ok(failed), Ok(notice))) => Ok(ms(notice.saturating_duration_since(failed))),
                    _ => Err(format!("no notice for {member} within 20 s")),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    reader.abort();
    collector.abort();
    let mut lat: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let mut out = summary(&mut lat);
    out["failures"] = json!(failures);
    out["in_flight"] = json!(IN_FLIGHT);
    out["missing_notices"] = json!(errors.len());
    out["first_errors"] = json!(errors.iter().take(3).collect::<Vec<_>>());
    Ok(out)
}
