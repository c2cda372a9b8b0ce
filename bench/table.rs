//! The printed table: one row per figure, the goal beside it, and whether it meets it.

use serde_json::Value;

use crate::{p1, p5};

/// (part, metric, value, goal, verdict).
pub type Row = (String, String, String, String, String);

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let s = if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            };
            format!("{s}{unit}")
        }
        _ => "n/a".into(),
    }
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "met".into(),
        Some(false) => "MISSED".into(),
        None => String::new(),
    }
}

fn row(rows: &mut Vec<Row>, part: &str, metric: impl Into<String>, value: String, goal: &str, ok: Option<bool>) {
    // An error's text can hold a whole object (the JSON keeps it): one line of it here.
    let value = match value.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", value[..cut].replace('\n', " ")),
        None => value.replace('\n', " "),
    };
    rows.push((part.into(), metric.into(), value, goal.into(), verdict(ok)));
}

pub fn rows(r: &Value, s: &p1::Sizes, s5: &p5::Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(p1) = r.get("p1_fleet_launch") {
        p1_rows(&mut rows, p1, s);
    }
    if let Some(p2) = r.get("p2_failure_notice") {
        let part = "P2 failure notice";
        if let Some(e) = p2.get("error") {
            row(&mut rows, part, "error", e.as_str().unwrap_or("").into(), "", None);
        } else {
            let n = &p2["n"];
            row(
                &mut rows,
                part,
                format!("pod Failed → [AGENT FAILURE] in lead's inbox, p50 (n={n})"),
                fmt(num(&p2["p50_ms"]), " ms"),
                "",
                None,
            );
            let p99 = num(&p2["p99_ms"]);
            row(
                &mut rows,
                part,
                format!("pod Failed → [AGENT FAILURE] in lead's inbox, p99 (n={n})"),
                fmt(p99, " ms"),
                "≤ 50 ms",
                p99.map(|x| x <= 50.0),
            );
            row(
                &mut rows,
                part,
                "notices missing after 20 s",
                fmt(num(&p2["missing_notices"]), ""),
                "0",
                num(&p2["missing_notices"]).map(|x| x == 0.0),
            );
        }
    }
    if let Some(p3) = r.get("p3_messages") {
        p3_rows(&mut rows, p3);
    }
    if let Some(p4) = r.get("p4_footprint") {
        let part = "P4 footprint";
        if let Some(e) = p4.get("error") {
            row(&mut rows, part, "error", e.as_str().unwrap_or("").into(), "", None);
        } else {
            let what = format!("{} members over {} teams, --max-agents {}", p4["members"], p4["teams"], p4["max_agents"]);
            row(
                &mut rows,
                part,
                format!("settled ({what})"),
                format!("{} after {}", p4["settled"], fmt(num(&p4["settle_s"]), " s")),
                "",
                None,
            );
            let rss = num(&p4["rss_mib"]);
            row(&mut rows, part, "operator RSS once settled", fmt(rss, " MiB"), "≤ 128 MiB", rss.map(|x| x <= 128.0));
            row(&mut rows, part, "operator peak RSS", fmt(num(&p4["peak_rss_mib"]), " MiB"), "", None);
            let cpu = num(&p4["idle_cpu_percent_of_one_core"]);
            row(
                &mut rows,
                part,
                format!("operator idle CPU over {} s", p4["idle_seconds"]),
                fmt(cpu, "% of a core"),
                "near 0 (≤ 1%)",
                cpu.map(|x| x <= 1.0),
            );
            row(&mut rows, part, "operator CPU time until settled", fmt(num(&p4["cpu_s_until_settled"]), " s"), "", None);
            for op in ["read", "write_4KiB", "append_200B"] {
                let m = &p4["memory_ops"][op];
                row(
                    &mut rows,
                    part,
                    format!("memory {op}: p50 / p99"),
                    format!("{} / {}", fmt(num(&m["p50_ms"]), ""), fmt(num(&m["p99_ms"]), " ms")),
                    "",
                    None,
                );
            }
        }
    }
    if let Some(p5) = r.get("p5_scale") {
        p5_rows(&mut rows, p5, s5);
    }
    rows
}

fn p3_rows(rows: &mut Vec<Row>, p3: &Value) {
    let part = "P3 messages";
    if let Some(e) = p3.get("error") {
        row(rows, part, "error", e.as_str().unwrap_or("").into(), "", None);
        return;
    }
    for run in p3["runs"].as_array().into_iter().flatten() {
        let c = &run["pairs"];
        // The goals hold under load: at 16 and 64 pairs; one pair is shown for reference.
        let goals = c.as_u64().is_some_and(|c| c >= 16);
        for mode in ["raw_redis", "bus", "gateway_http"] {
            let m = &run["modes"][mode];
            let lat = format!("{} / {}", fmt(num(&m["p50_ms"]), ""), fmt(num(&m["p99_ms"]), " ms"));
            row(rows, part, format!("{c} pairs, {mode}: p50 / p99"), lat, "", None);
            let rate = fmt(num(&m["msgs_per_s"]), " msg/s");
            let each = &m["per_message"];
            if each.is_object() {
                let value = format!(
                    "{} / {} / {} / {}",
                    fmt(num(&each["redis_commands"]), ""),
                    fmt(num(&each["redis_cpu_us"]), ""),
                    fmt(num(&each["gateway_and_bench_cpu_us"]), ""),
                    fmt(num(&each["load_generator_cpu_us"]), " µs")
                );
                let metric = format!("{c} pairs, {mode}: per message, Redis commands / CPU of Redis, gateway, load generator");
                row(rows, part, metric, value, "", None);
            }
            if mode == "raw_redis" {
                row(rows, part, format!("{c} pairs, {mode}: throughput"), rate, "", None);
                continue;
            }
            let (limit, goal) = if mode == "bus" { (1.3, "≤ 1.3×") } else { (2.0, "≤ 2×") };
            let ratio = num(&m["p99_vs_raw"]);
            let ok = goals.then(|| ratio.map(|x| x <= limit)).flatten();
            row(rows, part, format!("{c} pairs, {mode}: p99 vs raw"), fmt(ratio, "×"), if goals { goal } else { "" }, ok);
            let tr = num(&m["throughput_vs_raw"]);
            let (goal, ok) = if mode == "gateway_http" && goals { ("≥ 0.5× raw", tr.map(|x| x >= 0.5)) } else { ("", None) };
            row(rows, part, format!("{c} pairs, {mode}: throughput (vs raw)"), format!("{rate} ({})", fmt(tr, "×")), goal, ok);
        }
        let cpu = &run["modes"]["gateway_http"]["cpu"]["per_component_s"];
        if cpu.is_object() {
            let text: Vec<String> = cpu.as_object().into_iter().flatten().map(|(k, v)| format!("{k} {}", fmt(num(v), ""))).collect();
            row(rows, part, format!("{c} pairs, gateway_http: CPU seconds"), text.join(", "), "", None);
        }
    }
    let w = &p3["idle_waiters"];
    if let Some(e) = w.get("error") {
        row(rows, part, "idle waiters: error", e.as_str().unwrap_or("").into(), "", None);
    } else if !w.is_null() {
        let n = &w["waiters"];
        // The gateway process's own connections (pooled, shared, subscription): Redis's total
        // counts every user of the shared stack.
        let held = num(&w["gateway_process_redis_connections"]);
        row(
            rows,
            part,
            format!(
                "{n} idle wait_messages waiters (in the gateway: {}, of them parked past the {} pooled seats: {}): the gateway process's Redis connections",
                w["blocked_in_gateway"], w["pooled_seats"], w["parked_in_gateway"]
            ),
            format!("{} (Redis total {} → {})", fmt(held, ""), w["redis_connections_before"], w["redis_connections_while_parked"]),
            "≤ 100",
            held.map(|x| x <= 100.0),
        );
        let wake = &w["wake"];
        let p99 = num(&wake["p99_ms"]);
        row(
            rows,
            part,
            format!("send → one of the {n} waiters (a parked one) returns it, p50 / p99 (n={}, missing {})", wake["n"], wake["missing"]),
            format!("{} / {}", fmt(num(&wake["p50_ms"]), ""), fmt(p99, " ms")),
            "p99 ≤ 20 ms",
            p99.map(|x| x <= 20.0).filter(|_| wake["missing"] == serde_json::json!(0)).or(p99.map(|_| false)),
        );
    }
}

fn p5_rows(rows: &mut Vec<Row>, p5: &Value, s: &p5::Sizes) {
    let part = "P5 scale";
    let l = &p5["launch"];
    if let Some(e) = l.get("error") {
        row(rows, part, "launch: error", e.as_str().unwrap_or("").into(), "", None);
    } else if !l.is_null() {
        let what = format!("launch: Team of {} members, maxAgents {}", s.n, s.p);
        row(rows, part, format!("{what}, until all Completed"), fmt(num(&l["wall_s"]), " s"), "", None);
        row(rows, part, format!("{what}: API writes per member"), fmt(num(&l["api_writes_per_member"]), ""), "", None);
        row(
            rows,
            part,
            format!("{what}: Redis commands per member (whoever sent them)"),
            fmt(num(&l["redis_commands_per_member"]), ""),
            "",
            None,
        );
        row(rows, part, format!("{what}: operator CPU seconds"), fmt(num(&l["cpu"]["per_component_s"]["operator"]), " s"), "", None);
        row(rows, part, format!("{what}: operator peak RSS"), fmt(num(&l["operator_peak_rss_mib"]), " MiB"), "", None);
        let su = num(&l["shape"]["slot_use"]);
        row(rows, part, format!("{what}: time-averaged slot use"), fmt(su, ""), "≥ 0.95", su.map(|x| x >= 0.95));
        let live = num(&l["shape"]["max_live"]);
        row(rows, part, format!("{what}: most live pods at once"), fmt(live, ""), "never above P", live.map(|x| x <= s.p as f64));
    }
    let k = &p5["kill"];
    if let Some(e) = k.get("error") {
        row(rows, part, "kill -9: error", e.as_str().unwrap_or("").into(), "", None);
    } else if !k.is_null() {
        let what = format!("kill -9 of the operator at {} members (after {} completed)", k["members"], k["killed_after_completed"]);
        row(rows, part, format!("{what}: restart → first admission"), fmt(num(&k["first_admission_after_restart_s"]), " s"), "", None);
        row(rows, part, format!("{what}: peak RSS after restart"), fmt(num(&k["peak_rss_mib_after_restart"]), " MiB"), "", None);
        let live = num(&k["max_live_pods"]);
        row(rows, part, format!("{what}: most live pods, whole run"), fmt(live, ""), "never above P", live.map(|x| x <= s.p as f64));
    }
    let d = &p5["disband"];
    if let Some(e) = d.get("error") {
        row(rows, part, "disband: error", e.as_str().unwrap_or("").into(), "", None);
    } else if !d.is_null() {
        let what = format!("disband of {} running members (Team delete →)", d["members"]);
        row(rows, part, format!("{what} every pod gone"), fmt(num(&d["every_pod_gone_s"]), " s"), "", None);
        row(
            rows,
            part,
            format!("{what} every Redis key gone ({} before)", d["redis_keys_before"]),
            fmt(num(&d["every_key_gone_s"]), " s"),
            "",
            None,
        );
        row(rows, part, format!("{what} Team gone"), fmt(num(&d["team_gone_s"]), " s"), "", None);
    }
}

/// "median (min–max)" of a spread, or n/a.
fn spread_text(v: &Value, unit: &str) -> String {
    match (num(&v["median"]), num(&v["min"]), num(&v["max"])) {
        (Some(m), Some(lo), Some(hi)) if v["n"].as_u64() > Some(1) => {
            format!("{} ({}–{})", fmt(Some(m), unit), fmt(Some(lo), ""), fmt(Some(hi), ""))
        }
        (Some(m), _, _) => fmt(Some(m), unit),
        _ => "n/a".into(),
    }
}

fn p1_rows(rows: &mut Vec<Row>, p1: &Value, s: &p1::Sizes) {
    let part = "P1 fleet launch";
    let sum = &p1["summary"];
    let reps = &p1["repetitions"];
    let sched = match &p1["scheduler_limits"] {
        Value::Null => "not set: the scheduler's own (upstream 50/100 unless its command line says otherwise)".to_owned(),
        limits => limits.to_string(),
    };
    row(rows, part, "kube-scheduler client QPS/burst (every variant)", sched, "", None);
    // The limits the "high" Job row really ran at, as recorded (0: unknown, the controller-manager
    // was not one this stack script started, so it could be neither read nor restarted).
    let job = &p1["runs"]["job_high_limits"][0];
    let high = (job["kcm_kube_api_qps"].as_u64().unwrap_or(0), job["kcm_kube_api_burst"].as_u64().unwrap_or(0));
    let equal_limits = high.0 >= 1000;
    let w = &p1["write_ceiling"];
    row(
        rows,
        part,
        format!("API write ceiling W (ConfigMap create+patch, concurrency {}, {} s)", w["concurrency"], w["seconds"]),
        fmt(num(&w["writes_per_s"]), " writes/s"),
        "",
        None,
    );
    let label = |k: &str| match k {
        "operator" => format!("operator: Team of {} members, maxAgents {}, until all Completed", s.n, s.p),
        "job_high_limits" if high.0 > 0 => format!("Indexed Job, controller-manager QPS/burst {}/{}, until Complete", high.0, high.1),
        "job_high_limits" => "Indexed Job, controller-manager at the limits it had (not restarted, unknown), until Complete".to_owned(),
        "job_default_limits" => "Indexed Job, controller-manager QPS/burst 20/30, until Complete (once)".to_owned(),
        _ => format!("bare loop, semaphore {}, until all pods Succeeded", s.p),
    };
    for k in ["operator", "job_high_limits", "bare_loop", "job_default_limits"] {
        let v = &sum[k];
        if v.is_null() {
            continue;
        }
        let n = v["wall_s"]["n"].as_u64().unwrap_or(0);
        let errors = p1["runs"][k].as_array().map(|a| a.iter().filter(|r| r.get("error").is_some()).count()).unwrap_or(0);
        let mut value = spread_text(&v["wall_s"], " s");
        if errors > 0 {
            value.push_str(&format!(" ({errors} runs failed: {})", p1["runs"][k][0]["error"].as_str().unwrap_or("see JSON")));
        }
        let what =
            if n > 1 || k != "job_default_limits" { format!("{} — wall, median (min–max) of {reps}", label(k)) } else { label(k) };
        row(rows, part, what, value, "", None);
    }
    for (k, goal, max) in [("job_high_limits", "≤ 1.0×", 1.0), ("bare_loop", "≤ 1.5×", 1.5), ("job_default_limits", "", f64::NAN)] {
        let r = &p1["operator_vs"][k];
        let ratio = num(&r["of_medians"]);
        if ratio.is_none() {
            continue;
        }
        let per = &r["per_repetition"];
        let value = match (num(&per["min"]), num(&per["max"])) {
            (Some(lo), Some(hi)) if per["n"].as_u64() > Some(1) => {
                format!("{} (per repetition {}–{})", fmt(ratio, "×"), fmt(Some(lo), ""), fmt(Some(hi), ""))
            }
            _ => fmt(ratio, "×"),
        };
        // The goal against the Job holds at equal (high) limits only.
        let (goal, max) = if k == "job_high_limits" && !equal_limits { ("", f64::NAN) } else { (goal, max) };
        let ok = (!max.is_nan()).then(|| ratio.map(|x| x <= max)).flatten();
        let what = if k == "job_high_limits" && !equal_limits {
            format!("operator / {k} (medians; not at equal limits)")
        } else {
            format!("operator / {k} (medians)")
        };
        row(rows, part, what, value, goal, ok);
    }
    for k in ["operator", "job_high_limits", "bare_loop", "job_default_limits"] {
        let v = &sum[k];
        if v.is_null() {
            continue;
        }
        row(rows, part, format!("{k}: API writes per member (every client)"), spread_text(&v["api_writes_per_member"], ""), "", None);
        let su = &v["slot_use"];
        let (goal, ok) = if k == "operator" { ("≥ 0.95", num(&su["min"]).map(|x| x >= 0.95)) } else { ("", None) };
        row(rows, part, format!("{k}: time-averaged slot use (live / P)"), spread_text(su, ""), goal, ok);
        let live = &v["max_live"];
        let (goal, ok) = if k == "operator" { ("never above P", num(&live["max"]).map(|x| x <= s.p as f64)) } else { ("", None) };
        row(rows, part, format!("{k}: most live pods at once (P = {})", s.p), spread_text(live, ""), goal, ok);
        let t = &v["turnover_p99_ms"];
        let (goal, ok) = if k == "operator" { ("≤ 50 ms", num(&t["max"]).map(|x| x <= 50.0)) } else { ("", None) };
        row(rows, part, format!("{k}: turnover p99 (pod terminal → next pod created)"), spread_text(t, " ms"), goal, ok);
        let cpu: Vec<String> =
            v["cpu_s"].as_object().into_iter().flatten().map(|(c, sp)| format!("{c} {}", fmt(num(&sp["median"]), ""))).collect();
        row(rows, part, format!("{k}: CPU seconds per component (median)"), cpu.join(", "), "", None);
    }
}

/// A Markdown table (readable in a terminal, pasted as is into the README).
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from("| part | metric | value | goal | |\n|---|---|---|---|---|\n");
    for (part, metric, value, goal, verdict) in rows {
        out.push_str(&format!("| {part} | {metric} | {value} | {goal} | {verdict} |\n"));
    }
    out
}
