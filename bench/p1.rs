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
use crate::support::{self, SIM_DURATION, SIM_EXIT_CODE, TestNamespace};
use crate::util::*;

#[derive(Clone)]
pub struct Sizes {
    pub n: usize,
    pub p: usize,
    pub duration: String,
}

/// Timeout of one run: generous against the slowest (Job at QPS 20).
fn run_timeout(s: &Sizes) -> Duration {
    Duration::from_secs(120 + (s.n as u64) / 2)
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
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
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
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
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
        let st = pods.state.lock().unwrap();
        anyhow::Ok(json!({
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
async fn counted(client: &Client, s: &Sizes, run: impl Future<Output = anyhow::Result<Value>>) -> anyhow::Result<Value> {
    let before = api_writes(client).await;
    let mut v = run.await?;
    let writes = writes_between(&before, &api_writes(client).await);
    let total: u64 = writes.values().sum();
    v["api_writes_per_member"] = json!(round3(total as f64 / s.n as f64));
    v["api_writes"] = json!(writes);
    Ok(v)
}

pub async fn run(client: &Client, args: &Args, s: &Sizes) -> Value {
    let mut out = BTreeMap::new();
    let record = |r: anyhow::Result<Value>| r.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    eprintln!("P1: operator, {} members, maxAgents {}", s.n, s.p);
    let (c, sz) = (client.clone(), s.clone());
    out.insert("operator", record(crate::guard(async move { counted(&c, &sz, operator(&c, &sz)).await }).await));
    eprintln!("P1: bare loop");
    let (c, sz) = (client.clone(), s.clone());
    out.insert("bare_loop", record(crate::guard(async move { counted(&c, &sz, bare(&c, &sz)).await }).await));
    let before = kcm_limits();
    if args.no_kcm_restart {
        let lim = before.unwrap_or((0, 0));
        eprintln!("P1: Job at the controller-manager's current limits {lim:?}");
        out.insert(
            "job_default_limits",
            record({
                let (c, sz) = (client.clone(), s.clone());
                crate::guard(async move { counted(&c, &sz, job(&c, &sz, lim)).await }).await
            }),
        );
    } else {
        eprintln!("P1: Job at the default limits 20/30");
        let r = match restart_kcm(20, 30).await {
            Ok(()) => {
                let (c, sz) = (client.clone(), s.clone());
                crate::guard(async move { counted(&c, &sz, job(&c, &sz, (20, 30))).await }).await
            }
            Err(e) => Err(e),
        };
        out.insert("job_default_limits", record(r));
        let (q, b) = (args.high_qps, args.high_burst);
        eprintln!("P1: Job at high limits {q}/{b}");
        let r = match restart_kcm(q, b).await {
            Ok(()) => {
                let (c, sz) = (client.clone(), s.clone());
                crate::guard(async move { counted(&c, &sz, job(&c, &sz, (q, b))).await }).await
            }
            Err(e) => Err(e),
        };
        out.insert("job_high_limits", record(r));
        let (q0, b0) = before.unwrap_or((20, 30));
        if let Err(e) = restart_kcm(q0, b0).await {
            eprintln!("  could not restore the controller-manager's limits: {e:#}");
        }
    }
    json!({ "members": s.n, "max_agents": s.p, "pod_duration": s.duration, "runs": out })
}
