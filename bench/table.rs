//! The printed table: one row per figure, the goal beside it, and whether it meets it.

use serde_json::Value;

use crate::p1;

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
        Some(true) => "meets".into(),
        Some(false) => "MISSES".into(),
        None => String::new(),
    }
}

fn row(rows: &mut Vec<Row>, part: &str, metric: impl Into<String>, value: String, goal: &str, ok: Option<bool>) {
    rows.push((part.into(), metric.into(), value, goal.into(), verdict(ok)));
}

pub fn rows(r: &Value, s: &p1::Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(p1) = r.get("p1_fleet_launch") {
        let runs = &p1["runs"];
        let part = "P1 fleet launch";
        let op = num(&runs["operator"]["wall_s"]);
        let label = |k: &str| match k {
            "operator" => format!("operator: Team of {} members, maxAgents {} (all Members Completed)", s.n, s.p),
            "job_default_limits" => format!(
                "Indexed Job, controller-manager QPS/burst {}/{} (Complete)",
                runs[k]["kcm_kube_api_qps"], runs[k]["kcm_kube_api_burst"]
            ),
            "job_high_limits" => format!(
                "Indexed Job, controller-manager QPS/burst {}/{} (Complete)",
                runs[k]["kcm_kube_api_qps"], runs[k]["kcm_kube_api_burst"]
            ),
            _ => format!("bare loop, semaphore {} (all pods Succeeded)", s.p),
        };
        for k in ["operator", "job_default_limits", "job_high_limits", "bare_loop"] {
            let run = &runs[k];
            if run.is_null() {
                continue;
            }
            if let Some(e) = run.get("error") {
                row(&mut rows, part, label(k), format!("error: {}", e.as_str().unwrap_or("")), "", None);
                continue;
            }
            row(&mut rows, part, format!("{} wall", label(k)), fmt(num(&run["wall_s"]), " s"), "", None);
        }
        for (k, goal, max) in [("job_default_limits", "≤ 0.5×", 0.5), ("job_high_limits", "≤ 1.0×", 1.0), ("bare_loop", "≤ 1.2×", 1.2)]
        {
            let other = num(&runs[k]["wall_s"]);
            if runs[k].is_null() {
                continue;
            }
            let ratio = op.zip(other).map(|(a, b)| a / b);
            row(&mut rows, part, format!("operator / {k}"), fmt(ratio, "×"), goal, ratio.map(|x| x <= max));
        }
        for k in ["operator", "job_default_limits", "job_high_limits", "bare_loop"] {
            if let Some(v) = num(&runs[k]["api_writes_per_member"]) {
                row(
                    &mut rows,
                    part,
                    format!("{k}: API writes per member (every client's creates, updates, patches)"),
                    fmt(Some(v), ""),
                    "",
                    None,
                );
            }
        }
        let live = num(&runs["operator"]["max_live_pods"]);
        row(
            &mut rows,
            part,
            "operator: most live member pods seen at once",
            fmt(live, ""),
            &format!("= {} (never above)", s.p),
            live.map(|x| x as usize == s.p),
        );
        for k in ["job_default_limits", "job_high_limits", "bare_loop"] {
            if let Some(v) = num(&runs[k]["max_live_pods"]) {
                row(&mut rows, part, format!("{k}: most live pods seen at once"), fmt(Some(v), ""), "", None);
            }
        }
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
        let part = "P3 messages";
        if let Some(e) = p3.get("error") {
            row(&mut rows, part, "error", e.as_str().unwrap_or("").into(), "", None);
        }
        for run in p3["runs"].as_array().into_iter().flatten() {
            let c = &run["pairs"];
            for mode in ["raw_redis", "bus", "gateway_http"] {
                let m = &run["modes"][mode];
                let lat = format!("{} / {}", fmt(num(&m["p50_ms"]), ""), fmt(num(&m["p99_ms"]), " ms"));
                row(&mut rows, part, format!("{c} pairs, {mode}: p50 / p99"), lat, "", None);
                let rate = num(&m["msgs_per_s"]);
                if mode == "raw_redis" {
                    row(&mut rows, part, format!("{c} pairs, {mode}: throughput"), fmt(rate, " msg/s"), "", None);
                } else {
                    let ratio = num(&m["p99_vs_raw"]);
                    row(&mut rows, part, format!("{c} pairs, {mode}: p99 vs raw"), fmt(ratio, "×"), "≤ 1.5×", ratio.map(|x| x <= 1.5));
                    row(
                        &mut rows,
                        part,
                        format!("{c} pairs, {mode}: throughput"),
                        fmt(rate, " msg/s"),
                        "≥ 20000 msg/s",
                        rate.map(|x| x >= 20_000.0),
                    );
                }
            }
        }
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
    rows
}

/// A Markdown table (readable in a terminal, pasted as is into the README).
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from("| part | metric | value | goal | |\n|---|---|---|---|---|\n");
    for (part, metric, value, goal, verdict) in rows {
        out.push_str(&format!("| {part} | {metric} | {value} | {goal} | {verdict} |\n"));
    }
    out
}
