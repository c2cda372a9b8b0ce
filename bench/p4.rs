//! P4 footprint: the operator's RSS and CPU once settled with many members over many teams, and
//! agent memory read / write / append latency.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use team_operator::api::{Member, Team};
use team_operator::bus::{Bus, BusConfig, MemoryKey};

use crate::support::{self, TestNamespace};
use crate::util::*;

pub struct Sizes {
    pub teams: usize,
    pub per_team: usize,
    pub max_agents: usize,
    pub idle_seconds: u64,
}

pub async fn run(client: &Client, s: &Sizes) -> anyhow::Result<Value> {
    let ns = TestNamespace::new(client, "bench-p4").await;
    let op = Operator::start(&ns.name, s.max_agents)?;
    let result = measure(client, &ns, s, op.pid).await;
    teardown(client, ns, Some(op), Duration::from_secs(120)).await;
    let memory = memory_ops().await;
    result.map(|mut r| {
        r["memory_ops"] = memory.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        r
    })
}

async fn measure(client: &Client, ns: &TestNamespace, s: &Sizes, pid: u32) -> anyhow::Result<Value> {
    let ticks = clock_ticks() as f64;
    let cpu0 = cpu_ticks(pid).unwrap_or(0);
    let members = MemberWatch::start(client, &ns.name).await;
    let teams: Api<Team> = ns.api();
    let t0 = Instant::now();
    let team_errors = futures::stream::iter(0..s.teams)
        .map(|i| {
            let api = teams.clone();
            let t = support::teams::team(&format!("t{i:04}"), s.per_team as i32);
            async move { api.create(&PostParams::default(), &t).await.is_err() }
        })
        .buffer_unordered(48)
        .filter(|e| std::future::ready(*e))
        .count()
        .await;
    let member_api: Api<Member> = ns.api();
    let total = s.teams * s.per_team;
    let member_errors = futures::stream::iter(0..total)
        .map(|i| {
            let api = member_api.clone();
            let m =
                support::teams::member(&format!("t{:04}-m{:02}", i / s.per_team, i % s.per_team), &format!("t{:04}", i / s.per_team), None);
            async move { api.create(&PostParams::default(), &m).await.is_err() }
        })
        .buffer_unordered(48)
        .filter(|e| std::future::ready(*e))
        .count()
        .await;
    let created_in = t0.elapsed();
    eprintln!("P4: created {} teams and {total} members in {:.1} s; waiting to settle", s.teams, created_in.as_secs_f64());

    // Settled: every member and lead named, the slots filled, and no member changed for 5 s.
    let want_active = s.max_agents.min(total);
    // Bounded so a run that never settles (see the README) still fits the 15-minute budget.
    let settle_timeout = Duration::from_secs(120 + total as u64 / 100);
    let settled = until(&members.state, settle_timeout, |m| {
        m.named() >= total
            && m.leads_named >= s.teams
            && m.in_phase(|p| !matches!(p, team_operator::api::MemberPhase::Queued)) >= want_active
            && m.last_change.is_some_and(|t| t.elapsed() > Duration::from_secs(5))
    })
    .await;
    let settle_s = t0.elapsed().as_secs_f64();
    let cpu_settle = cpu_ticks(pid).unwrap_or(0).saturating_sub(cpu0) as f64 / ticks;
    let (named, leads, started) = {
        let m = members.state.lock().unwrap();
        (m.named(), m.leads_named, m.in_phase(|p| !matches!(p, team_operator::api::MemberPhase::Queued)))
    };
    eprintln!("P4: settled={settled} after {settle_s:.1} s; measuring {} s idle", s.idle_seconds);

    let c1 = cpu_ticks(pid).unwrap_or(0);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(s.idle_seconds)).await;
    let c2 = cpu_ticks(pid).unwrap_or(0);
    let idle_cpu = (c2.saturating_sub(c1)) as f64 / ticks / w0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    Ok(json!({
        "teams": s.teams,
        "members": total,
        "max_agents": s.max_agents,
        "create_errors": team_errors + member_errors,
        "create_s": round3(created_in.as_secs_f64()),
        "settled": settled,
        "settle_s": round3(settle_s),
        "named_members": named,
        "named_leads": leads,
        "started_members": started,
        "cpu_s_until_settled": round3(cpu_settle),
        "rss_mib": round3(rss as f64 / 1024.0),
        "peak_rss_mib": round3(hwm as f64 / 1024.0),
        "idle_seconds": s.idle_seconds,
        "idle_cpu_cores": round3(idle_cpu),
        "idle_cpu_percent_of_one_core": round3(idle_cpu * 100.0),
    }))
}

/// Agent memory through the bus: read, write (4 KiB) and append (200 B), 1000 each.
async fn memory_ops() -> anyhow::Result<Value> {
    let bus = Bus::connect(BusConfig::from_url(support::redis_url())).await?;
    let mem = bus.memory();
    let ns = format!("bench-mem-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = MemoryKey::new(ns.clone(), "bench", "general");
    let text = "m".repeat(4096);
    let line = "a".repeat(200);
    let (mut r, mut w, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..1000 {
        let t = Instant::now();
        mem.write(&key, &text).await?;
        w.push(ms(t.elapsed()));
        let t = Instant::now();
        mem.append(&key, &line).await?;
        a.push(ms(t.elapsed()));
        let t = Instant::now();
        let got = mem.read(&key).await?;
        r.push(ms(t.elapsed()));
        if i == 0 {
            anyhow::ensure!(got.map(|g| g.len()) == Some(4296), "memory read back a different length");
        }
    }
    let _ = redis_cleanup(&ns).await;
    Ok(json!({ "read": summary(&mut r), "write_4KiB": summary(&mut w), "append_200B": summary(&mut a) }))
}
