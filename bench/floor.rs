//! What bounds every variant on this machine, measured in the same run: the client limits of
//! kube-scheduler (lifted for every variant), the API server's write ceiling, and the CPU seconds
//! each component spent (from /proc, by the pids hack/stack.sh recorded).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::{self, TestNamespace};
use crate::util::*;

/// The stack components whose CPU is counted, by their pid file in the stack's `pids/`.
const COMPONENTS: [(&str, &str); 6] = [
    ("apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("scheduler", "kube-scheduler"),
    ("kcm", "kube-controller-manager"),
    ("kwok", "kwok"),
    ("redis", "redis"),
];

fn recorded_pid(file: &str) -> Option<u32> {
    std::fs::read_to_string(support::stack_dir().join(format!("pids/{file}.pid"))).ok()?.trim().parse().ok()
}

/// CPU ticks of the stack's components and of the given extra processes, at one moment.
pub struct CpuSnapshot {
    at: Instant,
    ticks: BTreeMap<String, (u32, u64)>,
}

impl CpuSnapshot {
    /// `extra`: (name, pid) of processes of the run (the operator, the gateway, the bench itself).
    pub fn take(extra: &[(&str, u32)]) -> Self {
        let mut ticks = BTreeMap::new();
        let stack = COMPONENTS.iter().filter_map(|(name, file)| Some((*name, recorded_pid(file)?)));
        for (name, pid) in stack.chain(extra.iter().copied()) {
            if let Some(t) = cpu_ticks(pid) {
                ticks.insert(name.to_owned(), (pid, t));
            }
        }
        CpuSnapshot { at: Instant::now(), ticks }
    }

    /// CPU seconds per component since `earlier` (a component restarted in between: left out),
    /// their sum, and the wall seconds.
    pub fn since(&self, earlier: &CpuSnapshot) -> Value {
        let hz = clock_ticks() as f64;
        let mut out = serde_json::Map::new();
        let mut total = 0.0;
        for (name, (pid, t)) in &self.ticks {
            if let Some((_, t0)) = earlier.ticks.get(name).filter(|(p0, _)| p0 == pid) {
                let s = t.saturating_sub(*t0) as f64 / hz;
                total += s;
                out.insert(name.clone(), json!(round3(s)));
            }
        }
        json!({ "per_component_s": out, "total_s": round3(total), "wall_s": round3(self.at.duration_since(earlier.at).as_secs_f64()) })
    }
}

/// kube-scheduler's --kube-api-qps / --kube-api-burst, read from its command line (absent: the
/// upstream 50 / 100).
pub fn scheduler_limits() -> Option<(u32, u32)> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", recorded_pid("kube-scheduler")?)).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let get = |flag: &str, default: u32| args.iter().find_map(|a| a.strip_prefix(flag)).and_then(|v| v.parse().ok()).unwrap_or(default);
    Some((get("--kube-api-qps=", 50), get("--kube-api-burst=", 100)))
}

/// Restarts kube-scheduler with these client limits (hack/stack.sh restart-scheduler) unless it
/// runs with them already.
pub async fn restart_scheduler(qps: u32, burst: u32) -> anyhow::Result<()> {
    if scheduler_limits() == Some((qps, burst)) {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/stack.sh");
    let status = tokio::process::Command::new(script)
        .arg("restart-scheduler")
        .env("SCHEDULER_KUBE_API_QPS", qps.to_string())
        .env("SCHEDULER_KUBE_API_BURST", burst.to_string())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "hack/stack.sh restart-scheduler failed");
    anyhow::ensure!(scheduler_limits() == Some((qps, burst)), "kube-scheduler did not come back with {qps}/{burst}");
    Ok(())
}

/// Concurrent writers of the ceiling run, and its bounds.
const CEILING_CONCURRENCY: usize = 64;
const CEILING_OPS_MAX: u64 = 100_000;

/// The API write ceiling W: `CEILING_CONCURRENCY` loops each creating a ConfigMap and patching
/// it, for `seconds` (and at most `CEILING_OPS_MAX` writes), in a namespace of its own. Writes
/// per second whoever asks: no variant can launch faster than W / (its writes per member).
pub async fn write_ceiling(client: &Client, seconds: f64) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-ceiling").await;
    let api: Api<ConfigMap> = ns.api();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(seconds);
    let cpu0 = CpuSnapshot::take(&[("bench", std::process::id())]);
    let loops: Vec<_> = (0..CEILING_CONCURRENCY)
        .map(|w| {
            let (api, done, errors) = (api.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until && done.load(Ordering::Relaxed) < CEILING_OPS_MAX {
                    let name = format!("w{w}-{i}");
                    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": name }, "data": { "v": "0" } })).expect("cm");
                    let patch = json!({ "data": { "v": "1" } });
                    for ok in [
                        api.create(&PostParams::default(), &cm).await.is_ok(),
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok(),
                    ] {
                        let counter = if ok { &done } else { &errors };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(&[("bench", std::process::id())]).since(&cpu0);
    teardown(client, ns, None, Duration::from_secs(120)).await;
    let writes = done.load(Ordering::Relaxed);
    Ok(json!({
        "concurrency": CEILING_CONCURRENCY,
        "seconds": round3(elapsed),
        "writes": writes,
        "errors": errors.load(Ordering::Relaxed),
        "writes_per_s": (writes as f64 / elapsed).round(),
        "cpu": cpu,
    }))
}

/// Commands Redis has processed since it started (INFO stats), whoever sent them.
pub async fn redis_commands() -> Option<u64> {
    let mut total = 0;
    for url in support::redis_url().split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("stats").query_async(&mut conn).await.ok()?;
        total += info.lines().find_map(|l| l.strip_prefix("total_commands_processed:")).and_then(|v| v.trim().parse::<u64>().ok())?;
    }
    Some(total)
}

/// Client connections Redis holds now (normal and Pub/Sub), over every node of a cluster.
pub async fn redis_connections() -> Option<usize> {
    let mut total = 0;
    for url in support::redis_url().split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut conn).await.ok()?;
        total += info.lines().find_map(|l| l.strip_prefix("connected_clients:")).and_then(|v| v.trim().parse::<usize>().ok())?;
    }
    Some(total)
}

/// The established TCP connections of process `pid` to the Redis servers of the run (the ports of
/// `support::redis_url()`): its sockets (`/proc/<pid>/fd`) matched by inode against
/// `/proc/net/tcp{,6}`. Unlike Redis's own client count, other users of the stack do not count.
pub fn process_redis_connections(pid: u32) -> Option<usize> {
    let ports: Vec<u16> = support::redis_url()
        .split(',')
        .filter_map(|u| redis::IntoConnectionInfo::into_connection_info(u.trim()).ok())
        .filter_map(|info| match *info.addr() {
            redis::ConnectionAddr::Tcp(_, port) | redis::ConnectionAddr::TcpTls { port, .. } => Some(port),
            _ => None,
        })
        .collect();
    let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl, local, remote (hex addr:port), state (01 established), …, inode (10th).
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9)) else { continue };
            let port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && port.is_some_and(|p| ports.contains(&p)) && sockets.contains(*inode) {
                count += 1;
            }
        }
    }
    Some(count)
}
