//! `make bench` (`cargo bench --bench fleet -- [flags]`): the operator against what a user would
//! use instead, on the running local stack, in one run. Prints a table with the goals beside the
//! figures (never asserted) and writes bench/results/latest.json with the machine, the versions and
//! the parameters.
//!
//! - P1 fleet launch: Team (N members, maxAgents P) vs Indexed Job (default and high
//!   controller-manager client limits) vs a bare watch-driven loop, with kube-scheduler's client
//!   limits lifted for all and the API write ceiling measured first; wall times (repeated,
//!   interleaved), ratios, slot use, turnover, writes and CPU seconds per component.
//! - P2 failure notice: pod Failed → `[AGENT FAILURE]` in the lead's inbox; p50/p99.
//! - P3 messages: gateway HTTP and bus API vs raw XADD → XREADGROUP, the load in a process of its
//!   own; p50/p99, msg/s; idle waiters: Redis connections held, wake-up latency.
//! - P4 footprint: operator RSS and idle CPU with many members; memory op latency.
//! - P5 scale: one Team of 10,000 members at maxAgents 1,000; kill -9 of its operator; disband
//!   of a 1,000-member team.
//!
//! Needs `make stack-up`. Uses namespaces of its own (bench-*), deleted afterwards. P1 restarts
//! kube-scheduler and kube-controller-manager (hack/stack.sh restart-scheduler, restart-kcm) to
//! change their limits, then restores them; `--no-kcm-restart` leaves the controller-manager.

#[path = "../tests/fixtures/gateway.rs"]
mod fixture;
mod floor;
mod p1;
mod p2;
mod p3;
mod p3_load;
mod p4;
mod p5;
#[path = "../tests/support/mod.rs"]
mod support;
mod svg;
mod util;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

/// The allocator `team-operator` runs with (src/main.rs), so P3's gateway, served in this
/// process, allocates as the gateway binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, Clone)]
#[command(about = "team-operator benchmarks (P1 fleet launch, P2 failure notice, P3 messages, P4 footprint, P5 scale)")]
pub struct Args {
    /// Small sizes for a run of a few minutes (N=200 P=20, 50 failures, 1.5 s message runs,
    /// 1,000 members over 100 teams).
    #[arg(long)]
    pub quick: bool,
    /// Which parts to run (comma-separated: p1,p2,p3,p4,p5).
    #[arg(long, value_delimiter = ',', default_value = "p1,p2,p3,p4,p5")]
    pub only: Vec<String>,
    /// P1: members (and Job completions, bare-loop pods). Default 1000 (quick 200).
    #[arg(long)]
    pub members: Option<usize>,
    /// P1: maxAgents, --max-agents, Job parallelism, the bare loop's semaphore. Default 100 (quick 20).
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// P1: how long each pod runs (Go duration, read by kwok).
    #[arg(long, default_value = "1s")]
    pub pod_duration: String,
    /// P2: failures measured. Default 200 (quick 50).
    #[arg(long)]
    pub failures: Option<usize>,
    /// P3: seconds per (mode, pairs) run. Default 5 (quick 1.5).
    #[arg(long)]
    pub message_seconds: Option<f64>,
    /// P3: concurrent pairs.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub pairs: Vec<usize>,
    /// P4: teams. Default 1000 (quick 100).
    #[arg(long)]
    pub teams: Option<usize>,
    /// P4: members per team. Default 10.
    #[arg(long, default_value_t = 10)]
    pub members_per_team: usize,
    /// P4: the operator's --max-agents (the rest of the members stay Queued).
    #[arg(long, default_value_t = 100)]
    pub footprint_max_agents: usize,
    /// P4: seconds of idle CPU measurement once settled. Default 20 (quick 10).
    #[arg(long)]
    pub idle_seconds: Option<u64>,
    /// P1: the controller-manager's "high" client limits, for the equal-limits Job row.
    #[arg(long, default_value_t = 1000)]
    pub high_qps: u32,
    #[arg(long, default_value_t = 2000)]
    pub high_burst: u32,
    /// P1: do not restart kube-controller-manager; run the Job once at its current limits.
    #[arg(long)]
    pub no_kcm_restart: bool,
    /// P1: repetitions of the operator, Job (high limits) and bare-loop rows, interleaved.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// P1: which of the repeated rows to run (comma-separated: operator,job_high_limits,bare_loop);
    /// a row left out has no figures, and no ratio to it.
    #[arg(long, value_delimiter = ',', default_value = "operator,job_high_limits,bare_loop")]
    pub p1_variants: Vec<String>,
    /// P1: seconds of the API write ceiling run.
    #[arg(long, default_value_t = 10.0)]
    pub ceiling_seconds: f64,
    /// P3: idle wait_messages waiters (0: none). Default 10000 (quick 1000).
    #[arg(long)]
    pub waiters: Option<usize>,
    /// P3: members the waiters wait as.
    #[arg(long, default_value_t = 100)]
    pub waiter_members: usize,
    /// P3: sends timed until one waiter wakes.
    #[arg(long, default_value_t = 200)]
    pub wake_probes: usize,
    /// P5: members of the scale Team. Default 10000 (quick 1000).
    #[arg(long)]
    pub scale_members: Option<usize>,
    /// P5: its maxAgents. Default 1000 (quick 100).
    #[arg(long)]
    pub scale_parallelism: Option<usize>,
    /// P5: members of the disbanded team (all live at once). Default 1000 (quick 100).
    #[arg(long)]
    pub disband_members: Option<usize>,
    /// P5: which rows (comma-separated: launch,kill,disband).
    #[arg(long, value_delimiter = ',', default_value = "launch,kill,disband")]
    pub scale_rows: Vec<String>,
    /// Only redraw the table (into the JSON) and the chart (the JSON at --out → the same name with
    /// .svg) from the JSON's results; no stack needed.
    #[arg(long)]
    pub svg: bool,
    /// Internal: run as P3's load generator (a job on stdin).
    #[arg(long, hide = true)]
    pub p3_worker: bool,
    /// Where to write the JSON.
    #[arg(long, default_value = "bench/results/latest.json")]
    pub out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// Runs a part on its own task so that a panic in a harness helper fails that part only.
pub async fn guard<F>(f: F) -> anyhow::Result<Value>
where
    F: std::future::Future<Output = anyhow::Result<Value>> + Send + 'static,
{
    match tokio::spawn(f).await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("panicked: {}", panic_text(e))),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn environment(client: &kube::Client) -> (Value, Value) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("").trim().to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": util::round3(mem_kib as f64 / 1024.0 / 1024.0),
        "kernel": sh("uname", &["-sr"]),
    });
    let lib = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/lib.sh")).unwrap_or_default();
    let pinned = |k: &str| lib.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_owned();
    let redis_version = async {
        let c = redis::Client::open(support::redis_url()).ok()?;
        let mut conn = c.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
        info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(|s| s.trim().to_owned())
    }
    .await;
    let versions = json!({
        "team_operator": env!("CARGO_PKG_VERSION"),
        "git_commit": sh("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]),
        "git_dirty": !sh("git", &["-C", env!("CARGO_MANIFEST_DIR"), "status", "--porcelain", "--", "src"]).is_empty(),
        "rustc": sh("rustc", &["--version"]),
        "kubernetes": client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(),
        "etcd": pinned("ETCD_VERSION"),
        "kwok": pinned("KWOK_VERSION"),
        "kwok_nodes": std::env::var("KWOK_NODES").unwrap_or_else(|_| "4".into()),
        "redis": redis_version,
        "kube_rs_client_rate_limit": "none (kube-rs has no client-side rate limiter; the operator adds none)",
    });
    (machine, versions)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.p3_worker {
        return p3_load::main().await;
    }
    if args.svg {
        let out = resolve(&args.out);
        let mut report: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        // The table again from the results, so a change of its wording reaches a past run.
        let par = &report["parameters"];
        let size = |v: &Value| v.as_u64().unwrap_or(0) as usize;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let p1s =
            p1::Sizes { n: size(&par["p1"]["members"]), p: size(&par["p1"]["max_agents"]), duration: text(&par["p1"]["pod_duration"]) };
        let p5s = p5::Sizes {
            n: size(&par["p5"]["members"]),
            p: size(&par["p5"]["max_agents"]),
            disband: size(&par["p5"]["disband_members"]),
            duration: text(&par["p1"]["pod_duration"]),
            rows: par["p5"]["rows"].as_array().into_iter().flatten().map(text).collect(),
        };
        let rows = table::rows(&report["results"], &p1s, &p5s);
        report["table"] = rows.iter().map(|r| json!({ "part": r.0, "metric": r.1, "value": r.2, "goal": r.3, "verdict": r.4 })).collect();
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("{}", table::render(&rows));
        return draw(&report, &out);
    }
    let q = args.quick;
    let parts: Vec<String> = args.only.iter().map(|s| s.trim().to_lowercase()).collect();
    let want = |p: &str| parts.iter().any(|x| x == p);
    let stack = support::stack().await;
    let client = stack.client.clone();
    support::install_crds(&client).await;
    let (machine, versions) = environment(&client).await;

    let p1s = p1::Sizes {
        n: args.members.unwrap_or(if q { 200 } else { 1000 }),
        p: args.parallelism.unwrap_or(if q { 20 } else { 100 }),
        duration: args.pod_duration.clone(),
    };
    let failures = args.failures.unwrap_or(if q { 50 } else { 200 });
    let msg_seconds = args.message_seconds.unwrap_or(if q { 1.5 } else { 5.0 });
    let waiters = p3::Waiters {
        total: args.waiters.unwrap_or(if q { 1000 } else { 10_000 }),
        members: args.waiter_members,
        probes: args.wake_probes,
    };
    let p5s = p5::Sizes {
        n: args.scale_members.unwrap_or(if q { 1000 } else { 10_000 }),
        p: args.scale_parallelism.unwrap_or(if q { 100 } else { 1000 }),
        disband: args.disband_members.unwrap_or(if q { 100 } else { 1000 }),
        duration: args.pod_duration.clone(),
        rows: args.scale_rows.iter().map(|r| r.trim().to_lowercase()).collect(),
    };
    let p4s = p4::Sizes {
        teams: args.teams.unwrap_or(if q { 100 } else { 1000 }),
        per_team: args.members_per_team,
        max_agents: args.footprint_max_agents,
        idle_seconds: args.idle_seconds.unwrap_or(if q { 10 } else { 20 }),
    };
    let parameters = json!({
        "quick": q,
        "parts": parts,
        "p1": {
            "members": p1s.n, "max_agents": p1s.p, "pod_duration": p1s.duration,
            "high_kcm_limits": [args.high_qps, args.high_burst], "scheduler_limits": [args.high_qps, args.high_burst],
            "kcm_restart": !args.no_kcm_restart, "repetitions": args.repetitions, "ceiling_seconds": args.ceiling_seconds,
        },
        "p2": { "failures": failures },
        "p3": { "seconds_per_run": msg_seconds, "pairs": args.pairs, "waiters": waiters.total, "waiter_members": waiters.members, "wake_probes": waiters.probes },
        "p5": { "members": p5s.n, "max_agents": p5s.p, "disband_members": p5s.disband, "rows": p5s.rows },
        "p4": { "teams": p4s.teams, "members_per_team": p4s.per_team, "max_agents": p4s.max_agents, "idle_seconds": p4s.idle_seconds },
    });
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let mut results = serde_json::Map::new();
    let err = |e: anyhow::Error| json!({ "error": format!("{e:#}") });
    let out = resolve(&args.out);
    // Written after every part, so a run cut short still leaves what it measured.
    let write = |results: &serde_json::Map<String, Value>, done: bool| -> anyhow::Result<Vec<table::Row>> {
        let results = Value::Object(results.clone());
        let rows = table::rows(&results, &p1s, &p5s);
        let report = json!({
            "started_at": started.to_rfc3339(),
            "duration_s": util::round3(t0.elapsed().as_secs_f64()),
            "complete": done,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": machine,
            "versions": versions,
            "parameters": parameters,
            "results": results,
            "table": rows.iter().map(|r| json!({ "part": r.0, "metric": r.1, "value": r.2, "goal": r.3, "verdict": r.4 })).collect::<Vec<_>>(),
        });
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
        Ok(rows)
    };

    // Every part at kube-scheduler client limits that do not bind (P1's floor), restored at the end.
    let scheduler_before = floor::scheduler_limits();
    eprintln!("kube-scheduler at client limits {}/{} (was {scheduler_before:?})", args.high_qps, args.high_burst);
    if let Err(e) = floor::restart_scheduler(args.high_qps, args.high_burst).await {
        eprintln!("  could not set kube-scheduler's limits: {e:#}");
    }

    // P3, P1 and P5 first: a run cut short keeps the figures of the issue (#14) it measures.
    if want("p3") {
        let (c, pairs) = (client.clone(), args.pairs.clone());
        let r = guard(async move { p3::run(&c, &pairs, msg_seconds, waiters).await }).await;
        results.insert("p3_messages".into(), r.unwrap_or_else(err));
        write(&results, false)?;
    }
    if want("p1") {
        results.insert("p1_fleet_launch".into(), p1::run(&client, &args, &p1s).await);
        write(&results, false)?;
    }
    if want("p5") {
        results.insert("p5_scale".into(), p5::run(&client, &p5s).await);
        write(&results, false)?;
    }
    if want("p2") {
        eprintln!("P2: {failures} failures");
        let c = client.clone();
        let r = guard(async move { p2::run(&c, failures).await }).await;
        results.insert("p2_failure_notice".into(), r.unwrap_or_else(err));
        write(&results, false)?;
    }
    if want("p4") {
        eprintln!("P4: {} teams × {} members, --max-agents {}", p4s.teams, p4s.per_team, p4s.max_agents);
        let c = client.clone();
        let s = p4::Sizes { ..p4s };
        let r = guard(async move { p4::run(&c, &s).await }).await;
        results.insert("p4_footprint".into(), r.unwrap_or_else(err));
        write(&results, false)?;
    }
    if let Some((q, b)) = scheduler_before
        && let Err(e) = floor::restart_scheduler(q, b).await
    {
        eprintln!("  could not restore kube-scheduler's limits: {e:#}");
    }
    let rows = write(&results, true)?;
    println!("{}", table::render(&rows));
    draw(&serde_json::from_str(&std::fs::read_to_string(&out)?)?, &out)?;
    eprintln!("wrote {} ({:.0} s)", out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

mod table;

/// `--out` against the repository, as `make bench` runs from it.
fn resolve(out: &std::path::Path) -> PathBuf {
    if out.is_absolute() { out.to_owned() } else { std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(out) }
}

/// Writes the chart of `report` beside its JSON.
fn draw(report: &Value, json: &std::path::Path) -> anyhow::Result<()> {
    let path = json.with_extension("svg");
    std::fs::write(&path, svg::render(report))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
