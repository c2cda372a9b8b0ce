//! Shared pieces of the benchmarks: the operator process, pod and member watches, statistics,
//! namespace teardown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use team_operator::api::{Member, MemberPhase, MemberRole, Team};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::support;

// --- the operator --------------------------------------------------------------------------------

/// A `team-operator controller` process scoped to one namespace (release build, default logging),
/// acting as the chart's controller ServiceAccount.
pub struct Operator {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(ns: &str, max_agents: usize) -> anyhow::Result<Self> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{ns}.log"));
        let file = std::fs::File::create(&log)?;
        // BENCH_OPERATOR_BIN: another build's binary, to compare two builds run after run on
        // the same machine (a figure drifts between sittings more than many changes move it).
        let bin = std::env::var_os("BENCH_OPERATOR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_team-operator").into());
        let child = Command::new(bin)
            .args(["controller", "--namespace", ns, "--max-agents", &max_agents.to_string()])
            .args(["--metrics-addr", "127.0.0.1:0"])
            // As the chart's controller account, like the tests' operator: the harness's
            // release refuses lead Members created by anyone else.
            .env("KUBECONFIG", support::operator::controller_kubeconfig())
            .envs(support::redis_env())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("operator exited at once"))?;
        Ok(Operator { child, pid, log })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `VmRSS:`-style line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

// --- pods ----------------------------------------------------------------------------------------

/// A pod that reached Succeeded or Failed, as the bench's watch saw it.
#[derive(Debug)]
#[allow(dead_code)]
pub struct Terminal {
    pub pod: String,
    pub member: Option<String>,
    pub failed: bool,
    pub at: Instant,
}

/// What a pod watch saw: live = exists, not terminal, not being deleted.
#[derive(Default)]
pub struct PodState {
    pub live: HashSet<String>,
    pub max_live: usize,
    pub terminal: HashSet<String>,
    pub succeeded: usize,
    pub failed: usize,
    pub running: HashSet<String>,
    pub last_terminal_at: Option<Instant>,
    /// Agent name (member label) → pod name, for member pods.
    pub by_member: HashMap<String, String>,
    /// Every pod name seen, and when each was first seen (creation as the watch saw it).
    pub seen: HashSet<String>,
    pub created_at: Vec<Instant>,
    /// When each pod was first seen terminal, in order.
    pub terminal_at: Vec<Instant>,
    /// (moment, live pods) at every change of the live count.
    pub samples: Vec<(Instant, usize)>,
    /// Per pod, when the watch first saw it bound to a node, Running, and terminal: where a
    /// pod's life goes (scheduling, the node starting it, its run).
    pub lifecycle: HashMap<String, Lifecycle>,
}

/// When the watch saw one pod reach each step (`created` its first event).
#[derive(Clone, Copy)]
pub struct Lifecycle {
    pub created: Instant,
    pub bound: Option<Instant>,
    pub running: Option<Instant>,
    pub ended: Option<Instant>,
}

pub struct PodWatch {
    pub state: Arc<Mutex<PodState>>,
    pub terminal: mpsc::UnboundedReceiver<Terminal>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Watches the pods of `ns` matching `selector` (empty: all); returns once the initial list
    /// is in.
    pub async fn start(client: &Client, ns: &str, selector: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let mut cfg = watcher::Config::default();
        if !selector.is_empty() {
            cfg = cfg.labels(selector);
        }
        let state = Arc::new(Mutex::new(PodState::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => apply_pod(&st, &tx, p, now),
                    Ok(Event::Delete(p)) => {
                        let mut s = st.lock().unwrap();
                        if s.live.remove(&p.name_any()) {
                            let live = s.live.len();
                            s.samples.push((now, live));
                        }
                        s.running.remove(&p.name_any());
                    }
                    Ok(Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Init) => {}
                    Err(e) => eprintln!("  (pod watch error: {e})"),
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
        PodWatch { state, terminal: rx, task }
    }
}

fn apply_pod(st: &Mutex<PodState>, tx: &mpsc::UnboundedSender<Terminal>, p: Pod, now: Instant) {
    let name = p.name_any();
    let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let deleting = p.metadata.deletion_timestamp.is_some();
    let member = p.labels().get(team_operator::api::labels::MEMBER).cloned();
    let mut s = st.lock().unwrap();
    if let Some(m) = &member {
        s.by_member.insert(m.clone(), name.clone());
    }
    if s.seen.insert(name.clone()) {
        s.created_at.push(now);
    }
    let life = s.lifecycle.entry(name.clone()).or_insert(Lifecycle { created: now, bound: None, running: None, ended: None });
    if p.spec.as_ref().is_some_and(|spec| spec.node_name.is_some()) {
        life.bound.get_or_insert(now);
    }
    if phase == "Running" || terminal {
        life.running.get_or_insert(now);
    }
    if terminal {
        life.ended.get_or_insert(now);
    }
    let live_before = s.live.len();
    if terminal {
        s.live.remove(&name);
        s.running.remove(&name);
        if s.terminal.insert(name.clone()) {
            if phase == "Failed" {
                s.failed += 1;
            } else {
                s.succeeded += 1;
            }
            s.last_terminal_at = Some(now);
            s.terminal_at.push(now);
            let _ = tx.send(Terminal { pod: name, member, failed: phase == "Failed", at: now });
        }
    } else if deleting {
        s.live.remove(&name);
        s.running.remove(&name);
    } else {
        s.live.insert(name.clone());
        s.max_live = s.max_live.max(s.live.len());
        if phase == "Running" {
            s.running.insert(name);
        }
    }
    if s.live.len() != live_before {
        let live = s.live.len();
        s.samples.push((now, live));
    }
}

/// How well a launch of `n` pods under a cap of `p` kept its slots full, from the pod watch:
/// time-averaged slot use (∫ live dt / (p × window), the window from `t0` to the last pod's
/// creation, after which fewer than p are left), the most live at once, turnover (the k-th pod to
/// end → the (p+k)-th pod's creation, which refills its slot; 0 when created before) and the
/// live count over time (for bench/svg.rs), `step` apart.
pub fn launch_shape(s: &PodState, t0: Instant, n: usize, p: usize, step: Duration) -> Value {
    let at = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
    let mut created = s.created_at.clone();
    created.sort();
    let mut ended = s.terminal_at.clone();
    ended.sort();
    let window_end = created.get(n.saturating_sub(1).min(created.len().saturating_sub(1))).copied();
    let slot_use = window_end.filter(|e| *e > t0).map(|end| {
        let (mut area, mut last_t, mut last_live) = (0.0, t0, 0usize);
        for (t, live) in s.samples.iter().filter(|(t, _)| *t <= end) {
            area += last_live.min(p) as f64 * t.saturating_duration_since(last_t).as_secs_f64();
            (last_t, last_live) = (*t, *live);
        }
        area += last_live.min(p) as f64 * end.saturating_duration_since(last_t).as_secs_f64();
        area / (p as f64 * end.duration_since(t0).as_secs_f64())
    });
    let mut turnover: Vec<f64> = ended
        .iter()
        .take(n.saturating_sub(p))
        .enumerate()
        .filter_map(|(k, end)| created.get(p + k).map(|c| ms(c.saturating_duration_since(*end))))
        .collect();
    let mut series = Vec::new();
    if let Some(last) = s.samples.last().map(|(t, _)| at(*t)) {
        let mut i = 0;
        let mut live = 0;
        let mut t = 0.0;
        while t <= last + step.as_secs_f64() && series.len() < 2000 {
            while i < s.samples.len() && at(s.samples[i].0) <= t {
                live = s.samples[i].1;
                i += 1;
            }
            series.push(json!([round3(t), live]));
            t += step.as_secs_f64();
        }
    }
    let stage = |from: fn(&Lifecycle) -> Option<Instant>, to: fn(&Lifecycle) -> Option<Instant>| {
        let mut v: Vec<f64> = s.lifecycle.values().filter_map(|l| Some(ms(to(l)?.saturating_duration_since(from(l)?)))).collect();
        summary(&mut v)
    };
    json!({
        "slot_use": slot_use.map(round3),
        "lifecycle": {
            "created_to_bound": stage(|l| Some(l.created), |l| l.bound),
            "bound_to_running": stage(|l| l.bound, |l| l.running),
            "running_to_ended": stage(|l| l.running, |l| l.ended),
            "created_to_ended": stage(|l| Some(l.created), |l| l.ended),
        },
        "window_s": window_end.map(|e| round3(at(e))),
        "max_live": s.max_live,
        "turnover": summary(&mut turnover),
        "live_series_step_s": step.as_secs_f64(),
        "live_series": series,
    })
}

// --- members -------------------------------------------------------------------------------------

#[derive(Default)]
pub struct MemberState {
    /// Specialists only: object name → (agent name, phase).
    pub members: HashMap<String, (Option<String>, MemberPhase)>,
    pub completed: usize,
    pub last_completed_at: Option<Instant>,
    pub last_change: Option<Instant>,
    pub leads_named: usize,
}

impl MemberState {
    pub fn named(&self) -> usize {
        self.members.values().filter(|(n, _)| n.is_some()).count()
    }
    pub fn in_phase(&self, pred: impl Fn(MemberPhase) -> bool) -> usize {
        self.members.values().filter(|(_, p)| pred(*p)).count()
    }
}

pub struct MemberWatch {
    pub state: Arc<Mutex<MemberState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MemberWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MemberWatch {
    pub async fn start(client: &Client, ns: &str) -> Self {
        let api: Api<Member> = Api::namespaced(client.clone(), ns);
        let state = Arc::new(Mutex::new(MemberState::default()));
        let st = state.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            let mut completed: HashSet<String> = HashSet::new();
            let mut leads: HashSet<String> = HashSet::new();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                match ev {
                    Ok(Event::Apply(m) | Event::InitApply(m)) => {
                        let mut s = st.lock().unwrap();
                        let name = m.name_any();
                        if m.spec.role == MemberRole::Lead {
                            if m.agent_name().is_some() && leads.insert(name) {
                                s.leads_named += 1;
                            }
                            continue;
                        }
                        let v = (m.agent_name().map(str::to_owned), m.phase());
                        if s.members.get(&name) != Some(&v) {
                            s.last_change = Some(now);
                        }
                        if v.1 == MemberPhase::Completed && completed.insert(name.clone()) {
                            s.completed += 1;
                            s.last_completed_at = Some(now);
                        }
                        s.members.insert(name, v);
                    }
                    Ok(Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("  (member watch error: {e})"),
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
        MemberWatch { state, task }
    }
}

/// Waits (polling an in-memory state) until `cond` holds; false on timeout.
pub async fn until<T>(state: &Mutex<T>, timeout: Duration, cond: impl Fn(&T) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond(&state.lock().unwrap()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the Team has a lead name; returns it.
pub async fn lead_name(client: &Client, ns: &str, team: &str) -> String {
    let api: Api<Team> = Api::namespaced(client.clone(), ns);
    let t = support::wait_for(&api, team, Duration::from_secs(60), "the team's lead to be named", |t| {
        t.status.as_ref().and_then(|s| s.lead_name.as_ref()).is_some()
    })
    .await;
    t.status.and_then(|s| s.lead_name).unwrap_or_default()
}

// --- statistics ----------------------------------------------------------------------------------

/// Nearest-rank percentile of `v` (sorted in place).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn summary(v: &mut [f64]) -> Value {
    json!({
        "n": v.len(),
        "p50_ms": round3(pct(v, 50.0)),
        "p99_ms": round3(pct(v, 99.0)),
        "max_ms": round3(pct(v, 100.0)),
        "min_ms": round3(pct(v, 0.0)),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// --- teardown ------------------------------------------------------------------------------------

/// Stops the operator, drops the Teams' finalizers (nobody is left to disband them), deletes the
/// namespace and waits (up to `wait`) until it is gone, and removes the namespace's Redis keys.
pub async fn teardown(client: &Client, ns: support::TestNamespace, op: Option<Operator>, wait: Duration) {
    if let Some(op) = op {
        op.stop().await;
    }
    let name = ns.name.clone();
    let teams: Api<Team> = Api::namespaced(client.clone(), &name);
    if let Ok(list) = teams.list_metadata(&ListParams::default()).await {
        let patch = json!({ "metadata": { "finalizers": null } });
        futures::stream::iter(list.items)
            .map(|t| {
                let (teams, patch) = (teams.clone(), patch.clone());
                async move {
                    let _ = teams.patch(&t.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }
    ns.cleanup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match nss.get_opt(&name).await {
            Ok(None) => break,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let _ = redis_cleanup(&name).await;
}

/// UNLINKs every key of namespace `ns`: team keys, memory keys, the raw benchmark's streams.
pub async fn redis_cleanup(ns: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(support::redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for pattern in [format!("team-operator:{{{ns}/*"), format!("team-operator:memory:{{{ns}/*"), format!("bench-raw:{ns}:*")] {
        let keys: Vec<String> = {
            let iter: redis::AsyncIter<String> =
                redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone().iter_async(&mut conn).await?;
            iter.try_collect().await?
        };
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await?;
        }
    }
    Ok(())
}

/// Writes (create, update, patch, apply) the API server has served since it started, per
/// resource (`members/status`, `pods`, …), from its own `apiserver_request_total`: what a run
/// costs the control plane, whoever made the calls.
pub async fn api_writes(client: &Client) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else { return out };
    let Ok(text) = client.request_text(req).await else { return out };
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_owned())
    };
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let verb = label(line, "verb").unwrap_or_default();
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY") {
            continue;
        }
        let (Some(resource), Some(count)) = (label(line, "resource"), line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())) else {
            continue;
        };
        let key = match label(line, "subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        *out.entry(key).or_default() += count as u64;
    }
    out
}

/// `after - before`, per resource, leaving out what did not grow.
pub fn writes_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().filter_map(|(k, v)| Some((k.clone(), v.checked_sub(*before.get(k).unwrap_or(&0)).filter(|d| *d > 0)?))).collect()
}
