//! What monitoring sees: the chart's Grafana dashboard asks only for metrics the controller and
//! the gateway serve (in the OpenMetrics format they declare), and /readyz follows what each
//! process needs — Redis, and on the leader the synced caches (a standby is ready).
#[path = "fixtures/gateway.rs"]
mod fixture;
#[path = "support/redis.rs"]
mod private_redis;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use private_redis::PrivateRedis;
use support::operator::Operator;
use support::*;
use team_operator::metrics::CONTENT_TYPE;

/// The metric names a PromQL expression reads: `team_operator_*` without the sample suffixes
/// OpenMetrics adds to a family's name (`_total`, `_bucket`, `_sum`, `_count`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("team_operator_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The families an exposition declares (`# TYPE <name> <type>`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned)).collect()
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(ct, CONTENT_TYPE, "{url}: content type");
    let text = resp.text().await.expect("body");
    assert!(text.trim_end().ends_with("# EOF"), "{url}: not OpenMetrics text (no # EOF)");
    text
}

#[tokio::test]
async fn the_dashboards_queries_name_only_metrics_the_processes_serve() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "obs-dashboard").await;
    let operator = Operator::start(&ns.name, 5);
    let gw = fixture::start_gateway(&s).await;
    wait_until(TIMEOUT, "the controller to be ready", || async { operator.readyz().await.is_some_and(|(c, _)| c == 200) }).await;
    let served: BTreeSet<String> = families(&scrape(&format!("http://127.0.0.1:{}/metrics", operator.metrics_port)).await)
        .into_iter()
        .chain(families(&scrape(&format!("{}/metrics", gw.url)).await))
        .collect();

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/team-operator/dashboards/team-operator.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let mut asked = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let names = metric_names(t["expr"].as_str().expect("expr"));
            assert!(!names.is_empty(), "panel {}: a query without a team_operator metric: {}", panel["title"], t["expr"]);
            asked.extend(names);
        }
    }
    let missing: Vec<_> = asked.difference(&served).collect();
    assert!(missing.is_empty(), "the dashboard asks for metrics nobody serves: {missing:?}\nserved: {served:?}");
    // The panels the chart promises.
    for needed in [
        "team_operator_slots_in_use",
        "team_operator_members",
        "team_operator_reconcile_errors",
        "team_operator_gateway_request_duration_seconds",
        "team_operator_gateway_waits",
    ] {
        assert!(asked.contains(needed), "no panel reads {needed}");
    }
    assert_eq!(operator.metric("team_operator_leader").await, Some(1.0), "a controller without election leads");
    ns.cleanup().await;
}

#[tokio::test]
async fn readyz_follows_redis_and_a_standby_is_ready() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "obs-readyz").await;

    // The gateway: ready while its Redis answers, 503 naming Redis once it is gone.
    let redis = PrivateRedis::start(&[]).await;
    let private = Stack { client: s.client.clone(), redis_url: redis.url(), redis_cluster: false, kubeconfig: s.kubeconfig.clone() };
    let gw = fixture::start_gateway(&private).await;
    let readyz = format!("{}/readyz", gw.url);
    let status = |url: String| async move {
        let r = reqwest::get(&url).await.expect("GET /readyz");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(status(readyz.clone()).await, (200, "ok".to_owned()));

    // Two controller replicas on that Redis: the Lease holder is ready once its caches synced,
    // the standby at once; both report who leads.
    let _lease = Operator::lease_guard().await;
    let redis_flag = ["--redis-url", &redis.url(), "--redis-cluster=false"];
    let first = Operator::replica_with(&ns.name, "obs-a", &redis_flag);
    let second = Operator::replica_with(&ns.name, "obs-b", &redis_flag);
    wait_until(Duration::from_secs(30), "one replica to lead and both to be ready", || async {
        let leaders = [first.metric("team_operator_leader").await, second.metric("team_operator_leader").await];
        let ready = [first.readyz().await, second.readyz().await];
        leaders.iter().filter(|l| **l == Some(1.0)).count() == 1
            && leaders.iter().filter(|l| **l == Some(0.0)).count() == 1
            && ready.iter().all(|r| r.as_ref().is_some_and(|(c, _)| *c == 200))
    })
    .await;

    drop(redis);
    wait_until(Duration::from_secs(10), "the gateway to stop being ready without Redis", || async {
        let (code, body) = status(readyz.clone()).await;
        code == 503 && body.contains("redis")
    })
    .await;
    for (who, op) in [("first", &first), ("second", &second)] {
        wait_until(Duration::from_secs(10), &format!("the {who} controller to stop being ready without Redis"), || async {
            op.readyz().await.is_some_and(|(c, body)| c == 503 && body.contains("redis"))
        })
        .await;
    }
    drop((first, second));
    ns.cleanup().await;
}
