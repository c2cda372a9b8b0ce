//! P5 scale: one Team of N members at maxAgents P (launch: wall, writes and Redis commands per
//! member, operator CPU); the same Team with its operator killed (-9) once a tenth of it has
//! completed (time from the restart to the first admission, peak RSS, the cap over the whole run);
//! and the disband of a team whose D members all run (Team delete → every pod gone, every key
//! gone).

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use team_operator::api::{Member, Team};

use crate::floor::CpuSnapshot;
use crate::p1;
use crate::support::{self, TestNamespace};
use crate::util::*;

pub struct Sizes {
    pub n: usize,
    pub p: usize,
    pub disband: usize,
    pub duration: String,
    pub rows: Vec<String>,
}

pub async fn run(client: &Client, s: &Sizes) -> Value {
    let mut out = serde_json::Map::new();
    let err = |e: anyhow::Error| json!({ "error": format!("{e:#}") });
    let sizes = p1::Sizes { n: s.n, p: s.p, duration: s.duration.clone() };
    let want = |r: &str| s.rows.iter().any(|x| x == r);
    if want("launch") {
        eprintln!("P5: launch of {} members, maxAgents {}", s.n, s.p);
        let (c, sz) = (client.clone(), sizes.clone());
        let r = crate::guard(async move { p1::counted(&c, &sz, p1::operator(&c, &sz)).await }).await;
        out.insert("launch".into(), r.unwrap_or_else(err));
    }
    if want("kill") {
        eprintln!("P5: kill -9 of the operator of {} members, maxAgents {}", s.n, s.p);
        let (c, sz) = (client.clone(), sizes.clone());
        out.insert("kill".into(), crate::guard(async move { kill(&c, &sz).await }).await.unwrap_or_else(err));
    }
    if want("disband") {
        eprintln!("P5: disband of {} running members", s.disband);
        let (c, d) = (client.clone(), s.disband);
        out.insert("disband".into(), crate::guard(async move { disband(&c, d).await }).await.unwrap_or_else(err));
    }
    Value::Object(out)
}

/// Creates `n` members of `team` (32 at a time, as a user's `kubectl apply` would: no owner);
/// how many failed.
async fn create_members(api: &Api<Member>, team: &str, n: usize, exit: Option<(i32, &str)>) -> usize {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let m = support::teams::member(&format!("m-{i:05}"), team, exit);
            async move { api.create(&PostParams::default(), &m).await.is_err() }
        })
        .buffer_unordered(32)
        .filter(|e| std::future::ready(*e))
        .count()
        .await
}

async fn kill(client: &Client, s: &p1::Sizes) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p5-kill").await;
    let op = Operator::start(&ns.name, s.p)?;
    let result = async {
        let teams: Api<Team> = ns.api();
        teams.create(&PostParams::default(), &support::teams::team("scale", s.p as i32)).await?;
        lead_name(client, &ns.name, "scale").await;
        let pods = PodWatch::start(client, &ns.name, "agentteams.dev/role=specialist").await;
        let members = MemberWatch::start(client, &ns.name).await;
        let errors = create_members(&ns.api(), "scale", s.n, Some((0, &s.duration))).await;
        let tenth = (s.n / 10).max(1);
        let reached = until(&members.state, Duration::from_secs(300), |m| m.completed >= tenth).await;
        anyhow::ensure!(reached, "only {} of {tenth} members completed before the kill", members.state.lock().unwrap().completed);
        let old_rss = status_kib(op.pid, "VmHWM:");
        op.stop().await; // SIGKILL
        let killed_at = Instant::now();
        // The watch still delivers the last creations of the killed process: let it drain, so
        // that the first pod seen after the restart is the new process's own.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let created_before = pods.state.lock().unwrap().created_at.len();
        let op = Operator::start(&ns.name, s.p)?;
        let restarted_at = Instant::now();
        let admitted = until(&pods.state, Duration::from_secs(120), |p| p.created_at.len() > created_before).await;
        let first_admission = pods.state.lock().unwrap().created_at.get(created_before).map(|t| t.saturating_duration_since(restarted_at));
        // A while at work after the restart, for its peak RSS and the cap.
        let observe = Duration::from_secs(20);
        tokio::time::sleep(observe).await;
        let new_rss = status_kib(op.pid, "VmHWM:");
        let st = pods.state.lock().unwrap();
        let json = json!({
            "members": s.n,
            "max_agents": s.p,
            "create_errors": errors,
            "killed_after_completed": tenth,
            "first_admission_after_restart_s": first_admission.filter(|_| admitted).map(|d| round3(d.as_secs_f64())),
            "restart_after_kill_s": round3(restarted_at.duration_since(killed_at).as_secs_f64()),
            "peak_rss_mib_before_kill": old_rss.map(|k| round3(k as f64 / 1024.0)),
            "peak_rss_mib_after_restart": new_rss.map(|k| round3(k as f64 / 1024.0)),
            "observed_after_restart_s": observe.as_secs(),
            "max_live_pods": st.max_live,
            "cap_never_exceeded": st.max_live <= s.p,
            "completed_at_end": members.state.lock().unwrap().completed,
        });
        drop(st);
        anyhow::Ok((json, op))
    }
    .await;
    match result {
        Ok((json, op)) => {
            teardown(client, ns, Some(op), Duration::from_secs(120)).await;
            Ok(json)
        }
        Err(e) => {
            teardown(client, ns, None, Duration::from_secs(120)).await;
            Err(e)
        }
    }
}

/// The keys of one team still in Redis (a retained transcript is left out: it outlives the team
/// by design).
async fn team_keys(ns: &str, team: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    for url in support::redis_url().split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let iter: redis::AsyncIter<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("team-operator:{{{ns}/{team}}}:*"))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter_async(&mut conn)
            .await?;
        let keys: Vec<String> = futures::TryStreamExt::try_collect(iter).await?;
        count += keys.iter().filter(|k| !k.contains("transcript")).count();
    }
    Ok(count)
}

async fn disband(client: &Client, d: usize) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p5-disband").await;
    let op = Operator::start(&ns.name, d + 1)?;
    let cpu0 = CpuSnapshot::take(&[("operator", op.pid)]);
    let result = async {
        let teams: Api<Team> = ns.api();
        teams.create(&PostParams::default(), &support::teams::team("big", d as i32)).await?;
        lead_name(client, &ns.name, "big").await;
        let pods = PodWatch::start(client, &ns.name, "agentteams.dev/team=big").await;
        let errors = create_members(&ns.api(), "big", d, None).await;
        // Every member's pod and the lead's.
        let all = until(&pods.state, Duration::from_secs(300), |p| p.running.len() > d).await;
        anyhow::ensure!(all, "only {} of {} pods ran", pods.state.lock().unwrap().running.len(), d + 1);
        let keys_before = team_keys(&ns.name, "big").await?;
        let pod_api: Api<Pod> = ns.api();
        let t0 = Instant::now();
        teams.delete("big", &DeleteParams::default()).await?;
        let (mut pods_gone, mut keys_gone, mut team_gone) = (None, None, None);
        let deadline = t0 + Duration::from_secs(300);
        while (pods_gone.is_none() || keys_gone.is_none() || team_gone.is_none()) && Instant::now() < deadline {
            if pods_gone.is_none()
                && pod_api.list_metadata(&ListParams::default().labels("agentteams.dev/team=big")).await?.items.is_empty()
            {
                pods_gone = Some(t0.elapsed());
            }
            if keys_gone.is_none() && team_keys(&ns.name, "big").await? == 0 {
                keys_gone = Some(t0.elapsed());
            }
            if team_gone.is_none() && teams.get_opt("big").await?.is_none() {
                team_gone = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64()));
        anyhow::Ok(json!({
            "members": d,
            "create_errors": errors,
            "redis_keys_before": keys_before,
            "every_pod_gone_s": s(pods_gone),
            "every_key_gone_s": s(keys_gone),
            "team_gone_s": s(team_gone),
            "cpu": CpuSnapshot::take(&[("operator", op.pid)]).since(&cpu0),
        }))
    }
    .await;
    teardown(client, ns, Some(op), Duration::from_secs(120)).await;
    result
}
