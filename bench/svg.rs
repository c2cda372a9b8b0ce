//! The README's chart, drawn from the bench JSON (`cargo bench --bench fleet -- --svg`, and at
//! the end of every run): P1's live pods over time per variant (first repetition), and the API
//! writes per member by resource per variant (median over the repetitions).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

const VARIANTS: [(&str, &str, &str); 4] = [
    ("operator", "operator (Team)", "#1f77b4"),
    ("job_high_limits", "Indexed Job, kcm 1000/2000", "#ff7f0e"),
    ("bare_loop", "bare loop", "#2ca02c"),
    ("job_default_limits", "Indexed Job, kcm 20/30", "#9467bd"),
];

/// Resources in the bars, in this order; everything else is "other".
const RESOURCES: [(&str, &str); 9] = [
    ("pods", "#4c78a8"),
    ("pods/binding", "#72b7b2"),
    ("pods/status", "#54a24b"),
    ("events", "#eeca3b"),
    ("members", "#f58518"),
    ("members/status", "#e45756"),
    ("teams/status", "#b279a2"),
    ("jobs/status", "#9d755d"),
    ("other", "#bab0ac"),
];

const W: f64 = 900.0;
const PLOT_X: f64 = 70.0;
const PLOT_W: f64 = 600.0;

/// The SVG for a bench report.
pub fn render(report: &Value) -> String {
    let p1 = &report["results"]["p1_fleet_launch"];
    let mut out = String::new();
    let h = 720.0;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "P1: {} members, P = {}, pods of {} (commit {}, {})",
        p1["members"],
        p1["max_agents"],
        p1["pod_duration"].as_str().unwrap_or("?"),
        report["versions"]["git_commit"].as_str().unwrap_or("?"),
        report["started_at"].as_str().unwrap_or("?").get(..10).unwrap_or("?"),
    );
    let _ = write!(out, r#"<text x="{PLOT_X}" y="24" font-size="15" font-weight="bold">{}</text>"#, esc(&title));
    live_chart(&mut out, p1, 50.0, 330.0);
    writes_chart(&mut out, p1, 420.0);
    out.push_str("</svg>\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn series(run: &Value) -> Vec<(f64, f64)> {
    run["shape"]["live_series"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?))).collect())
        .unwrap_or_default()
}

/// (label, colour, points) of one variant.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Live pods over time, one line per variant, the cap dashed.
fn live_chart(out: &mut String, p1: &Value, top: f64, height: f64) {
    let cap = p1["max_agents"].as_f64().unwrap_or(0.0);
    let lines: Vec<Line> = VARIANTS
        .iter()
        .filter_map(|(k, label, color)| Some((*label, *color, series(p1["runs"][k].get(0)?))))
        .filter(|l| !l.2.is_empty())
        .collect();
    let t_max = lines.iter().flat_map(|(_, _, s)| s.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    let y_max = (cap * 1.1).max(lines.iter().flat_map(|(_, _, s)| s.iter().map(|p| p.1)).fold(1.0, f64::max));
    let x = |t: f64| PLOT_X + t / t_max * PLOT_W;
    let y = |v: f64| top + height - v / y_max * height;
    let _ = write!(out, r#"<text x="{PLOT_X}" y="{}" font-weight="bold">Live pods over time (first repetition)</text>"#, top - 6.0);
    let _ = write!(out, r##"<rect x="{PLOT_X}" y="{top}" width="{PLOT_W}" height="{height}" fill="none" stroke="#999"/>"##);
    for i in 0..=5 {
        let t = t_max * i as f64 / 5.0;
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#, x(t), top + height + 16.0);
        let v = y_max * i as f64 / 5.0;
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"#, PLOT_X - 6.0, y(v) + 4.0);
    }
    let _ = write!(
        out,
        r##"<line x1="{PLOT_X}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="5,4"/><text x="{}" y="{:.1}" fill="#d62728">P = {cap}</text>"##,
        PLOT_X + PLOT_W,
        y(cap),
        y(cap),
        PLOT_X + PLOT_W + 6.0,
        y(cap) + 4.0
    );
    for (i, (label, color, s)) in lines.iter().enumerate() {
        let points: Vec<String> = s.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, points.join(" "));
        let wall = s.last().map(|p| p.0).unwrap_or(0.0);
        let ly = top + 40.0 + 18.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{}" y="{:.1}">{} ({wall:.0} s)</text>"#,
            PLOT_X + PLOT_W + 10.0,
            ly - 3.0,
            PLOT_X + PLOT_W + 28.0,
            ly + 1.0,
            esc(label)
        );
    }
}

/// Writes per member by resource: one stacked bar per variant.
fn writes_chart(out: &mut String, p1: &Value, top: f64) {
    let _ = write!(
        out,
        r#"<text x="{PLOT_X}" y="{}" font-weight="bold">API writes per member, by resource (every client; median repetition)</text>"#,
        top - 6.0
    );
    let bars: Vec<(&str, BTreeMap<&str, f64>)> = VARIANTS
        .iter()
        .filter_map(|(k, label, _)| {
            let runs = p1["runs"][k].as_array()?;
            let n = p1["members"].as_f64()?;
            // The repetition with the median writes per member.
            let mut by: Vec<&Value> = runs.iter().filter(|r| r["api_writes_per_member"].is_number()).collect();
            by.sort_by(|a, b| a["api_writes_per_member"].as_f64().partial_cmp(&b["api_writes_per_member"].as_f64()).unwrap());
            let run = by.get(by.len() / 2)?;
            let mut parts: BTreeMap<&str, f64> = BTreeMap::new();
            for (res, count) in run["api_writes"].as_object()? {
                let key = RESOURCES.iter().map(|r| r.0).find(|r| *r == res).unwrap_or("other");
                *parts.entry(key).or_default() += count.as_f64().unwrap_or(0.0) / n;
            }
            Some((*label, parts))
        })
        .collect();
    let max = bars.iter().map(|(_, p)| p.values().sum::<f64>()).fold(1.0f64, f64::max).ceil();
    let (bar_h, gap, label_w) = (30.0, 14.0, 190.0);
    let x0 = PLOT_X + label_w - 60.0;
    let scale = (PLOT_W - label_w + 60.0) / max;
    for (i, (label, parts)) in bars.iter().enumerate() {
        let yb = top + 10.0 + i as f64 * (bar_h + gap);
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, x0 - 6.0, yb + bar_h / 2.0 + 4.0, esc(label));
        let mut xc = x0;
        for (res, color) in RESOURCES {
            let v = parts.get(res).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let w = v * scale;
            let _ = write!(
                out,
                r#"<rect x="{xc:.1}" y="{yb:.1}" width="{w:.1}" height="{bar_h}" fill="{color}"><title>{res}: {v:.2}</title></rect>"#
            );
            if w > 22.0 {
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.1}</text>"#,
                    xc + w / 2.0,
                    yb + bar_h / 2.0 + 4.0
                );
            }
            xc += w;
        }
        let total: f64 = parts.values().sum();
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{total:.2}</text>"#, xc + 6.0, yb + bar_h / 2.0 + 4.0);
    }
    let ly = top + 10.0 + bars.len() as f64 * (bar_h + gap) + 10.0;
    for (i, (res, color)) in RESOURCES.iter().enumerate() {
        let lx = x0 + (i % 5) as f64 * 140.0;
        let yy = ly + (i / 5) as f64 * 18.0;
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{yy:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{res}</text>"#,
            lx + 16.0,
            yy + 10.0
        );
    }
}
