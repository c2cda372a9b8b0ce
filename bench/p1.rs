//! P1 fleet launch: a Team of N members under maxAgents P, versus an Indexed Job (completions N,
//! parallelism P) at the controller-manager's default and at high client limits, versus a bare
//! watch-driven loop that keeps P pods alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use team_operator::api::{Member, Team};

use crate::Args;
use crate::floor::{self, CpuSnapshot};
use crate::support::{self, SIM_DURATION, SIM_EXIT_CODE, TestNamespace};
use crate::util::*;

/// Resolution of the live-pods series kept for the chart.
const SERIES_STEP: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Sizes {
    pub n: usize,
    pub p: usize,
    pub duration: String,
}

/// Timeout of one run: generous against the slowest (Job at QPS 20), and at most 10 minutes so
/// a run that stalls still leaves time for the rest.
fn run_timeout(s: &Sizes) -> Duration {
    Duration::from_secs((120 + (s.n as u64) / 2).min(600))
}

/// The pod template every variant runs: the kwok agent of tests/support with the sim annotations.
fn template(s: &Sizes) -> Value {
    json!({
        "metadata": { "annotations": { SIM_EXIT_CODE: "0", SIM_DURATION: s.duration } },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{ "name": "agent", "image": "agentteams.dev/sim-agent:latest" }],
            "nodeSelector": { "type": "kwok" },
            "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
        }
    })
}

pub async fn operator(client: &Client, s: &Sizes) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p1-operator").await;
    let op = Operator::start(&ns.name, s.p)?;
    let cpu0 = CpuSnapshot::take(&[("operator", op.pid), ("bench", std::process::id())]);
    let result = async {
        let teams: Api<Team> = ns.api();
        teams.create(&PostParams::default(), &support::teams::team("fleet", s.p as i32)).await?;
        let lead = lead_name(client, &ns.name, "fleet").await;
        let pods = PodWatch::start(client, &ns.name, "agentteams.dev/role=specialist").await;
        let members = MemberWatch::start(client, &ns.name).await;
        let api: Api<Member> = ns.api();

        let t0 = Instant::now();
        let created = futures::stream::iter(0..s.n)
            .map(|i| {
                let api = api.clone();
                let m = support::teams::member(&format!("m-{i:05}"), "fleet", Some((0, &s.duration)));
                async move { api.create(&PostParams::default(), &m).await.map(drop) }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let create_errors = created.iter().filter(|r| r.is_err()).count();
        let created_in = t0.elapsed();
        let done = until(&members.state, run_timeout(s), |m| m.completed >= s.n).await;
        let wall = members.state.lock().unwrap().last_completed_at.map(|t| t - t0);
        let pods_done = pods.state.lock().unwrap().last_terminal_at.map(|t| t - t0);
        let cpu = CpuSnapshot::take(&[("operator", op.pid), ("bench", std::process::id())]).since(&cpu0);
        let peak_rss_mib = status_kib(op.pid, "VmHWM:").map(|k| round3(k as f64 / 1024.0));
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
            "shape": launch_shape(&st, t0, s.n, s.p, SERIES_STEP),
            "cpu": cpu,
            "operator_peak_rss_mib": peak_rss_mib,
            "finished": done,
            "wall_s": wall.filter(|_| done).map(|d| round3(d.as_secs_f64())),
            "all_pods_succeeded_s": pods_done.map(|d| round3(d.as_secs_f64())),
            "create_members_s": round3(created_in.as_secs_f64()),
            "create_errors": create_errors,
            "pods_succeeded": st.succeeded,
            "pods_failed": st.failed,
            "max_live_pods": st.max_live,
            "completed_members": members.state.lock().unwrap().completed,
            "lead": lead,
            "operator_log": op.log.display().to_string(),
        }))
    }
    .await;
    teardown(client, ns, Some(op), Duration::from_secs(90)).await;
    result
}

pub async fn job(client: &Client, s: &Sizes, kcm: (u32, u32)) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p1-job").await;
    let result = async {
        let pods = PodWatch::start(client, &ns.name, "batch.kubernetes.io/job-name=fleet").await;
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": "fleet" },
            "spec": {
                "completions": s.n,
                "parallelism": s.p,
                "completionMode": "Indexed",
                "backoffLimit": 0,
                "template": template(s),
            }
        }))?;
        let jobs: Api<Job> = ns.api();
        let cpu0 = CpuSnapshot::take(&[("bench", std::process::id())]);
        let t0 = Instant::now();
        jobs.create(&PostParams::default(), &job).await?;
        let n = s.n as i32;
        let timeout = run_timeout(s);
        let waited = tokio::spawn({
            let jobs = jobs.clone();
            async move {
                support::wait_for(&jobs, "fleet", timeout, "the Job to complete", move |j: &Job| {
                    let st = j.status.as_ref();
                    st.and_then(|s| s.succeeded).unwrap_or(0) >= n
                        && st
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
                })
                .await;
                Instant::now()
            }
        })
        .await;
        let wall = waited.ok().map(|t| t - t0);
        let cpu = CpuSnapshot::take(&[("bench", std::process::id())]).since(&cpu0);
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
            "shape": launch_shape(&st, t0, s.n, s.p, SERIES_STEP),
            "cpu": cpu,
            "finished": wall.is_some(),
            "kcm_kube_api_qps": kcm.0,
            "kcm_kube_api_burst": kcm.1,
            "wall_s": wall.map(|d| round3(d.as_secs_f64())),
            "all_pods_succeeded_s": st.last_terminal_at.map(|t| round3((t - t0).as_secs_f64())),
            "pods_succeeded": st.succeeded,
            "pods_failed": st.failed,
            "max_live_pods": st.max_live,
        }))
    }
    .await;
    teardown(client, ns, None, Duration::from_secs(90)).await;
    result
}

/// The physical limit: create pods directly, P at a time, a new one as soon as the watch shows
/// one finished. Nothing else.
pub async fn bare(client: &Client, s: &Sizes) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p1-bare").await;
    let result = async {
        let mut pods = PodWatch::start(client, &ns.name, "bench=bare").await;
        let api: Api<Pod> = ns.api();
        let mut tmpl = template(s);
        tmpl["metadata"]["labels"] = json!({ "bench": "bare" });
        let tmpl = Arc::new(tmpl);
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let create = |i: usize| {
            let (api, tmpl, errors) = (api.clone(), tmpl.clone(), errors.clone());
            tokio::spawn(async move {
                let mut v = (*tmpl).clone();
                v["metadata"]["name"] = json!(format!("bare-{i:05}"));
                let pod: Pod = serde_json::from_value(v).expect("pod");
                if let Err(e) = api.create(&PostParams::default(), &pod).await {
                    eprintln!("  (bare create: {e})");
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        };
        let cpu0 = CpuSnapshot::take(&[("bench", std::process::id())]);
        let t0 = Instant::now();
        let mut next = 0;
        while next < s.n.min(s.p) {
            create(next);
            next += 1;
        }
        let deadline = tokio::time::Instant::now() + run_timeout(s);
        let mut done = 0;
        while done < s.n {
            match tokio::time::timeout_at(deadline, pods.terminal.recv()).await {
                Ok(Some(_)) => {
                    done += 1;
                    if next < s.n {
                        create(next);
                        next += 1;
                    }
                }
                _ => break,
            }
        }
        let wall = t0.elapsed();
        let cpu = CpuSnapshot::take(&[("bench", std::process::id())]).since(&cpu0);
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
            "shape": launch_shape(&st, t0, s.n, s.p, SERIES_STEP),
            "cpu": cpu,
            "finished": done >= s.n,
            "wall_s": (done >= s.n).then(|| round3(wall.as_secs_f64())),
            "pods_succeeded": st.succeeded,
            "pods_failed": st.failed,
            "max_live_pods": st.max_live,
            "create_errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        }))
    }
    .await;
    teardown(client, ns, None, Duration::from_secs(90)).await;
    result
}

/// The controller-manager's --kube-api-qps / --kube-api-burst, read from its command line.
pub fn kcm_limits() -> Option<(u32, u32)> {
    let pidfile = support::stack_dir().join("pids/kube-controller-manager.pid");
    let pid = std::fs::read_to_string(pidfile).ok()?;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let get = |flag: &str| args.iter().find_map(|a| a.strip_prefix(flag)).and_then(|v| v.parse().ok());
    Some((get("--kube-api-qps=")?, get("--kube-api-burst=")?))
}

/// Restarts the controller-manager with these client limits (hack/stack.sh restart-kcm).
pub async fn restart_kcm(qps: u32, burst: u32) -> anyhow::Result<()> {
    if kcm_limits() == Some((qps, burst)) {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/stack.sh");
    let status = tokio::process::Command::new(script)
        .arg("restart-kcm")
        .env("KCM_KUBE_API_QPS", qps.to_string())
        .env("KCM_KUBE_API_BURST", burst.to_string())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "hack/stack.sh restart-kcm failed");
    // Let its informers sync before the Job is created.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// Runs one variant and adds the API writes it cost (its namespace's teardown included: creates
/// and updates only, deletions are not counted) in total and per member.
pub async fn counted(client: &Client, s: &Sizes, run: impl Future<Output = anyhow::Result<Value>>) -> anyhow::Result<Value> {
    let before = api_writes(client).await;
    let redis_before = floor::redis_commands().await;
    let mut v = run.await?;
    let writes = writes_between(&before, &api_writes(client).await);
    let redis = floor::redis_commands().await.zip(redis_before).map(|(a, b)| a.saturating_sub(b));
    let total: u64 = writes.values().sum();
    v["api_writes_per_member"] = json!(round3(total as f64 / s.n as f64));
    v["api_writes"] = json!(writes);
    v["redis_commands_per_member"] = json!(redis.map(|r| round3(r as f64 / s.n as f64)));
    Ok(v)
}

/// The variants repeated (interleaved) and the one run once.
const REPEATED: [&str; 3] = ["operator", "job_high_limits", "bare_loop"];

async fn variant(client: &Client, s: &Sizes, which: &str, kcm: (u32, u32)) -> Value {
    let (c, sz, which) = (client.clone(), s.clone(), which.to_owned());
    let r = crate::guard(async move {
        match which.as_str() {
            "operator" => counted(&c, &sz, operator(&c, &sz)).await,
            "bare_loop" => counted(&c, &sz, bare(&c, &sz)).await,
            _ => counted(&c, &sz, job(&c, &sz, kcm)).await,
        }
    })
    .await;
    r.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
}

pub async fn run(client: &Client, args: &Args, s: &Sizes) -> Value {
    let mut runs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let scheduler = json!(floor::scheduler_limits());
    eprintln!("P1: API write ceiling, {} s", args.ceiling_seconds);
    let ceiling = floor::write_ceiling(client, args.ceiling_seconds).await.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    let kcm_before = kcm_limits();
    let (q, b) = (args.high_qps, args.high_burst);
    let high = if args.no_kcm_restart { kcm_before.unwrap_or((0, 0)) } else { (q, b) };
    if let Err(e) = restart_kcm(high.0, high.1).await {
        eprintln!("  could not set the controller-manager's limits: {e:#}");
    }
    for rep in 0..args.repetitions {
        for which in REPEATED.into_iter().filter(|w| args.p1_variants.iter().any(|v| v == w)) {
            eprintln!("P1: {which}, {} members, maxAgents {}, repetition {}/{}", s.n, s.p, rep + 1, args.repetitions);
            runs.entry(which).or_default().push(variant(client, s, which, high).await);
        }
    }
    if !args.no_kcm_restart {
        eprintln!("P1: Job at the default limits 20/30 (once)");
        let r = match restart_kcm(20, 30).await {
            Ok(()) => variant(client, s, "job_default_limits", (20, 30)).await,
            Err(e) => json!({ "error": format!("{e:#}") }),
        };
        runs.entry("job_default_limits").or_default().push(r);
        let (q0, b0) = kcm_before.unwrap_or((20, 30));
        if let Err(e) = restart_kcm(q0, b0).await {
            eprintln!("  could not restore the controller-manager's limits: {e:#}");
        }
    }
    let summary: serde_json::Map<String, Value> = runs.iter().map(|(k, v)| (k.to_string(), summarize(v))).collect();
    let of = |k: &str| runs.get(k).map(Vec::as_slice).unwrap_or(&[]);
    let ratio = |other: &str| ratios(of("operator"), of(other));
    json!({
        "members": s.n,
        "max_agents": s.p,
        "pod_duration": s.duration,
        "repetitions": args.repetitions,
        "scheduler_limits": scheduler,
        "write_ceiling": ceiling,
        "summary": summary,
        "operator_vs": { "job_high_limits": ratio("job_high_limits"), "bare_loop": ratio("bare_loop"), "job_default_limits": ratio("job_default_limits") },
        "runs": runs,
    })
}

/// min / median / max of a figure over the repetitions that have it.
pub fn spread(v: &mut [f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    json!({ "n": v.len(), "min": round3(v[0]), "median": round3(median), "max": round3(v[v.len() - 1]) })
}

fn figure(runs: &[Value], path: &[&str]) -> Vec<f64> {
    runs.iter().filter_map(|r| path.iter().try_fold(r, |v, k| v.get(*k)).and_then(Value::as_f64)).collect()
}

/// A variant's repetitions in figures: wall, writes and Redis commands per member, slot use,
/// turnover, the most live pods, the CPU seconds of each component.
fn summarize(runs: &[Value]) -> Value {
    let f = |path: &[&str]| spread(&mut figure(runs, path));
    let mut cpu = serde_json::Map::new();
    for r in runs {
        for (k, _) in r["cpu"]["per_component_s"].as_object().into_iter().flatten() {
            cpu.entry(k.clone()).or_insert_with(|| f(&["cpu", "per_component_s", k]));
        }
    }
    json!({
        "finished": runs.iter().filter(|r| r["finished"] == json!(true)).count(),
        "wall_s": f(&["wall_s"]),
        "api_writes_per_member": f(&["api_writes_per_member"]),
        "redis_commands_per_member": f(&["redis_commands_per_member"]),
        "slot_use": f(&["shape", "slot_use"]),
        "max_live": f(&["shape", "max_live"]),
        "turnover_p99_ms": f(&["shape", "turnover", "p99_ms"]),
        "cpu_s": cpu,
    })
}

/// The operator's wall time over the other's, repetition by repetition (the runs interleave, so
/// each pair saw the same machine), and of the medians.
fn ratios(op: &[Value], other: &[Value]) -> Value {
    let mut per_rep: Vec<f64> = op.iter().zip(other).filter_map(|(a, b)| Some(a["wall_s"].as_f64()? / b["wall_s"].as_f64()?)).collect();
    let median = |v: &mut Vec<f64>| spread(v).get("median").and_then(Value::as_f64);
    let of_medians = median(&mut figure(op, &["wall_s"])).zip(median(&mut figure(other, &["wall_s"]))).map(|(a, b)| round3(a / b));
    json!({ "of_medians": of_medians, "per_repetition": spread(&mut per_rep) })
}
