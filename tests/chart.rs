//! The Helm chart (charts/team-operator) against the real stack: it lints clean, renders to
//! objects the API server accepts (under the restricted Pod Security level), installs, refuses bad
//! values naming the key, and its RBAC is enough for the controller and the gateway — proven by
//! impersonating the chart's ServiceAccounts, including a real controller run — and no more.
//!
//! Needs `helm` and `kubectl` on PATH: `eval "$(hack/stack.sh env)"`.
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::identity::{CHART, OWN_RELEASE_LABEL, fullname, impersonating, impersonating_kubeconfig, ok, run, text};
use support::*;
use team_operator::api::{Member, Team, TeamPhase};

/// A Helm release in its own test namespace, uninstalled by [`Release::uninstall`], or on drop if
/// the test fails first (the chart makes cluster-scoped objects, which deleting the namespace
/// would leave behind).
struct Release {
    ns: Option<TestNamespace>,
    name: String,
}

impl Release {
    async fn install(client: &Client, prefix: &str, set: &[&str]) -> Self {
        let ns = TestNamespace::labelled(client, prefix, &[(OWN_RELEASE_LABEL, "true")]).await;
        let name = ns.name().to_owned();
        // The release's lead-member policy covers its own namespace only, so it cannot refuse the
        // other suites' operator its lead Members (each release admits its own controller alone).
        let selector = format!(r#"memberPolicy.namespaceSelector={{"matchLabels":{{"kubernetes.io/metadata.name":"{name}"}}}}"#);
        // No APIService: these releases' gateways run on kwok nodes (no process answers), and an
        // unavailable aggregated API stalls every namespace deletion of the stack; tests/kubectl.rs
        // runs the chart's APIService against a real gateway, tests/demo.rs the whole release.
        let mut args =
            vec!["install", &name, CHART, "--namespace", ns.name(), "--set-json", &selector, "--set", "gateway.apiService.enabled=false"];
        for s in set {
            args.extend(["--set", s]);
        }
        let out = ok("helm", &args, None);
        assert!(out.contains("STATUS: deployed"), "helm install did not deploy:\n{out}");
        Release { ns: Some(ns), name }
    }

    fn ns(&self) -> &str {
        self.ns.as_ref().map(|n| n.name()).unwrap_or_default()
    }

    fn fullname(&self) -> String {
        fullname(&self.name)
    }

    fn service_account(&self, component: &str) -> String {
        format!("system:serviceaccount:{}:{}-{component}", self.ns(), self.fullname())
    }

    async fn uninstall(mut self) {
        ok("helm", &["uninstall", &self.name, "--namespace", self.ns()], None);
        if let Some(ns) = self.ns.take() {
            ns.cleanup().await;
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.ns.is_some() {
            let _ = run("helm", &["uninstall", &self.name, "--namespace", self.ns()], None);
        }
    }
}

/// One access check: verb, API group, resource (`pods`, `members/status`), namespace, name.
type Access<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>);

/// Whether the impersonated user of `client` may do `access` (a SelfSubjectAccessReview).
async fn allowed(client: &Client, access: &Access<'_>) -> bool {
    let (verb, group, resource, namespace, name) = access;
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (*resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let done = api.create(&PostParams::default(), &review).await.unwrap_or_else(|e| panic!("SelfSubjectAccessReview: {e}"));
    done.status.is_some_and(|s| s.allowed)
}

/// Asks the API server (SelfSubjectAccessReview, as the impersonated user) whether each access is
/// allowed; fails listing every answer that is not `expect`.
async fn assert_access(client: &Client, who: &str, expect: bool, checks: &[Access<'_>]) {
    let mut wrong = Vec::new();
    for access in checks {
        let got = allowed(client, access).await;
        if got != expect {
            let (verb, group, resource, namespace, name) = access;
            wrong.push(format!("{verb} {resource}.{group} in {namespace:?} name {name:?}: allowed={got}"));
        }
    }
    assert!(wrong.is_empty(), "{who}: expected allowed={expect}, but:\n  {}", wrong.join("\n  "));
}

/// Deletes Team `name` and drops its finalizer (no operator is left to disband it), so the test
/// namespace can go. Deleting first means no controller can add the finalizer back.
async fn remove_team(client: &Client, ns: &str, name: &str) {
    let teams: Api<Team> = Api::namespaced(client.clone(), ns);
    match teams.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => panic!("deleting Team {ns}/{name}: {e}"),
    }
    match teams.patch(name, &PatchParams::default(), &Patch::Merge(&json!({ "metadata": { "finalizers": null } }))).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("dropping the finalizer of Team {ns}/{name}: {e}"),
    }
}

fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn agentteams(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("agentteams.dev", "v1alpha1", kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn team(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "agentteams.dev/v1alpha1",
        "kind": "Team",
        "metadata": { "name": name },
        "spec": {
            "maxAgents": 2,
            "lead": { "agent": "lead" },
            "agents": [{ "name": "lead", "template": { "spec": {
                "nodeSelector": { "type": "kwok" },
                "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
                "containers": [{ "name": "agent", "image": "agentteams.dev/sim-agent:latest" }],
            } } }],
        },
    }))
    .expect("team")
}

// --- tests without the stack --------------------------------------------------------------------

#[test]
fn chart_crds_are_the_generated_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = |dir: PathBuf| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), std::fs::read(&p).unwrap_or_default()))
            .collect();
        files.sort();
        files
    };
    let top = list(root.join("crds"));
    let chart = list(root.join("charts/team-operator/crds"));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&top),
        "charts/team-operator/crds/ must hold the same files as crds/: run `cp crds/*.yaml charts/team-operator/crds/`"
    );
    for ((name, a), (_, b)) in top.iter().zip(&chart) {
        assert!(a == b, "charts/team-operator/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/team-operator/crds/`");
    }
}

#[test]
fn helm_lint_is_clean() {
    for set in [
        vec![],
        vec!["redis.bundled=false", "redis.url=redis://:pw@redis.example:6379"],
        vec!["redis.bundled=false", "redis.existingSecret=my-redis", "redis.cluster=true", "watchNamespace=teams"],
        vec![
            "controller.leaderElection.enabled=false",
            "controller.replicas=1",
            "gateway.podDisruptionBudget.enabled=false",
            "networkPolicy.enabled=false",
            "userRoles.aggregate=false",
        ],
        vec!["redis.server=valkey", "nameOverride=agents", "controller.priorityClassName=system-cluster-critical"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for s in &set {
            args.extend(["--set", s]);
        }
        let out = ok("helm", &args, None);
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "helm lint {set:?}:\n{out}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (set, key) in [
        ("controller.maxAgents=0", "/controller/maxAgents"),
        ("unknownKey=1", "unknownKey"),
        ("controller.maxAgent=3", "maxAgent"),
        ("gateway.service.typ=NodePort", "typ"),
        ("redis.persistence.sise=2Gi", "sise"),
        ("gateway.port=0", "/gateway/port"),
        ("logFormat=yaml", "/logFormat"),
        ("redis.bundled=false", "/redis/url"),
        ("redis.url=http://redis:6379", "/redis/url"),
        ("redis.maxmemory=lots", "/redis/maxmemory"),
        ("messages.sendBurst=0", "/messages/sendBurst"),
        ("messages.inboxMaxByte=1", "inboxMaxByte"),
        ("controller.startDeadlineSeconds=0", "/controller/startDeadlineSeconds"),
        ("redis.server=keydb", "/redis/server"),
        ("image.digest=latest", "/image/digest"),
        ("gateway.podLabel.a=b", "podLabel"),
        ("gateway.apiService.group=gateway", "/gateway/apiService/group"),
        ("gateway.apiService.callers[0].kind=Team", "/gateway/apiService/callers/0"),
        ("tracing.otlpEndpoint=https://collector:4318", "/tracing/otlpEndpoint"),
        ("tracing.sampler=sometimes", "/tracing/sampler"),
    ] {
        let out = run("helm", &["template", "t", CHART, "--set", set], None);
        let msg = text(&out);
        assert!(!out.status.success(), "helm template --set {set} was accepted");
        assert!(msg.contains("values don't meet the specifications of the schema"), "--set {set}: not refused by the schema:\n{msg}");
        assert!(msg.contains(key), "--set {set}: the refusal does not name {key}:\n{msg}");
    }
}

#[test]
fn kubernetes_before_1_30_is_refused() {
    let out = run("helm", &["template", "t", CHART, "--kube-version", "1.29.9"], None);
    assert!(!out.status.success(), "rendered for Kubernetes 1.29");
    assert!(text(&out).contains("chart requires kubeVersion: >=1.30.0-0"), "{}", text(&out));
    run("helm", &["template", "t", CHART, "--kube-version", "1.30.4-eks-1234"], None)
        .status
        .success()
        .then_some(())
        .expect("1.30 vendor build refused");
}

/// The workload `kind`/`name` in `docs`.
fn workload<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn names_pod_labels_placement_and_images_follow_the_values() {
    // Defaults: <release>-team-operator, the pinned Redis, replicas spread over nodes.
    let docs = rendered(&[]);
    let gw = workload(&docs, "Deployment", "t-team-operator-gateway");
    let spread = &gw["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(
        (spread["topologyKey"].as_str(), spread["whenUnsatisfiable"].as_str()),
        (Some("kubernetes.io/hostname"), Some("ScheduleAnyway"))
    );
    assert_eq!(spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "gateway");
    assert_eq!(container(&docs, "StatefulSet", "t-team-operator-redis")["image"], "docker.io/library/redis:7.4.6");
    assert_eq!(container(&docs, "StatefulSet", "t-team-operator-redis")["command"][0], "redis-server");

    let digest = format!("sha256:{}", "a".repeat(64));
    let docs = rendered(&[
        "fullnameOverride=agents",
        "controller.podLabels.cost-center=ml",
        "controller.priorityClassName=system-cluster-critical",
        &format!("image.digest={digest}"),
        "redis.server=valkey",
    ]);
    let controller = workload(&docs, "Deployment", "agents-controller");
    let pod = &controller["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["cost-center"], "ml");
    assert!(controller["spec"]["selector"]["matchLabels"].get("cost-center").is_none(), "pod labels must stay out of the selector");
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    let image = format!("ghcr.io/agentteams/team-operator@{digest}");
    assert_eq!(pod["spec"]["containers"][0]["image"], image.as_str());
    let redis = container(&docs, "StatefulSet", "agents-redis");
    assert_eq!(redis["image"], "docker.io/valkey/valkey:8.1.4");
    assert_eq!(redis["command"][0], "valkey-server");
    assert_eq!(redis["readinessProbe"]["exec"]["command"][0], "valkey-cli");

    let docs = rendered(&["nameOverride=agents"]);
    let gw = workload(&docs, "Deployment", "t-agents-gateway");
    assert_eq!(gw["metadata"]["labels"]["app.kubernetes.io/name"], "agents");
}

#[test]
fn monitors_and_the_dashboard_render_when_enabled() {
    let kinds = |docs: &[serde_json::Value]| -> Vec<String> {
        docs.iter().map(|d| format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?"))).collect()
    };
    // By default: the controller's metrics Service, no monitor (their CRDs may not exist).
    let docs = rendered(&[]);
    let names = kinds(&docs);
    assert!(names.contains(&"Service/t-team-operator-controller-metrics".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("ServiceMonitor/") || n.starts_with("PodMonitor/")), "{names:?}");
    let svc = workload(&docs, "Service", "t-team-operator-controller-metrics");
    assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/component"], "controller");

    let docs = rendered(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prom",
        "metrics.podMonitor.enabled=true",
        "metrics.dashboard.enabled=true",
    ]);
    for component in ["controller", "gateway"] {
        let name = format!("t-team-operator-{component}");
        let sm = workload(&docs, "ServiceMonitor", &name);
        assert_eq!(sm["metadata"]["labels"]["release"], "prom");
        assert_eq!(sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], component);
        assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
        let pm = workload(&docs, "PodMonitor", &name);
        assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], if component == "controller" { "metrics" } else { "http" });
    }
    let cm = workload(&docs, "ConfigMap", "t-team-operator-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value =
        serde_json::from_str(cm["data"]["team-operator.json"].as_str().expect("dashboard")).expect("dashboard JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 5), "{json}");
}

/// The documents of `helm template` with `set`, as JSON values.
#[test]
fn traces_are_exported_only_when_an_endpoint_is_set() {
    let deployments = ["t-team-operator-controller", "t-team-operator-gateway"];
    let docs = rendered(&[]);
    for name in deployments {
        let env = env_of(container(&docs, "Deployment", name));
        assert!(!env.keys().any(|k| k.starts_with("OTEL_")), "{name}: {env:?}");
    }
    let docs = rendered(&[
        "tracing.otlpEndpoint=http://otel.observability.svc:4318",
        "tracing.sampler=parentbased_traceidratio",
        "tracing.samplerArg=0.1",
    ]);
    for name in deployments {
        let env = env_of(container(&docs, "Deployment", name));
        let otel: Vec<(&str, &str)> = env.iter().filter(|(k, _)| k.starts_with("OTEL_")).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            otel,
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel.observability.svc:4318"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1")
            ],
            "{name}"
        );
    }
}

fn rendered(set: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["template", "t", CHART, "--namespace", "t"];
    for s in set {
        args.extend(["--set", s]);
    }
    let manifest = ok("helm", &args, None);
    serde_yaml::Deserializer::from_str(&manifest)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &serde_json::Value| v.is_object())
        .collect()
}

/// The document of `kind` named `name`.
fn doc<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The first container of the workload `kind`/`name` in `docs`.
fn container<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|d| &d["spec"]["template"]["spec"]["containers"][0])
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Literal env values of a container.
fn env_of(container: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// Bytes of a Kubernetes quantity (`512Mi`, `1Gi`) or a Redis size (`384mb`, `1gb`).
fn bytes_of(size: &str) -> u64 {
    let split = size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len());
    let (n, unit) = size.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("size {size:?}"));
    n * match unit {
        "" | "b" => 1,
        "Ki" | "kb" => 1 << 10,
        "Mi" | "mb" => 1 << 20,
        "Gi" | "gb" => 1 << 30,
        "k" => 1_000,
        "M" | "m" => 1_000_000,
        "G" | "g" => 1_000_000_000,
        other => panic!("unit {other:?} of {size:?}"),
    }
}

#[test]
fn bundled_redis_refuses_writes_at_maxmemory_below_its_memory_limit() {
    for (set, want) in [(vec![], "384mb"), (vec!["redis.maxmemory=1gb", "redis.resources.limits.memory=2Gi"], "1gb")] {
        let docs = rendered(&set);
        let redis = container(&docs, "StatefulSet", "t-team-operator-redis");
        let args: Vec<&str> = redis["args"].as_array().expect("redis args").iter().filter_map(|a| a.as_str()).collect();
        let flag = |name: &str| args.iter().position(|a| *a == name).and_then(|i| args.get(i + 1).copied());
        assert_eq!(flag("--maxmemory"), Some(want), "{set:?}: {args:?}");
        assert_eq!(flag("--maxmemory-policy"), Some("noeviction"), "{set:?}: {args:?}");
        let limit = redis["resources"]["limits"]["memory"].as_str().expect("a memory limit on redis");
        assert!(bytes_of(want) < bytes_of(limit), "{set:?}: maxmemory {want} is not below the container's limit {limit}");
    }
}

#[test]
fn the_apiservice_trusts_the_certificate_the_gateway_serves() {
    let b64 = |v: &serde_json::Value| serde_json::from_value::<k8s_openapi::ByteString>(v.clone()).expect("base64").0;
    let docs = rendered(&[]);
    let api = doc(&docs, "APIService", "v1alpha1.gateway.agentteams.dev");
    assert_eq!(api["spec"]["service"], json!({ "name": "t-team-operator-gateway", "namespace": "t", "port": 443 }));
    let secret = doc(&docs, "Secret", "t-team-operator-gateway-tls");
    assert_eq!(b64(&api["spec"]["caBundle"]), b64(&secret["data"]["ca.crt"]), "caBundle is the Secret's CA");
    // The certificate is for the name the API server checks, and signed by that CA.
    let pem = String::from_utf8(b64(&secret["data"]["tls.crt"])).expect("PEM");
    let ca_pem = String::from_utf8(b64(&secret["data"]["ca.crt"])).expect("PEM");
    let der = |p: &str| x509_parser::pem::parse_x509_pem(p.as_bytes()).expect("PEM certificate").1.contents;
    let (cert_der, ca_der) = (der(&pem), der(&ca_pem));
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).expect("certificate");
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("CA");
    let sans = cert
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SANs")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>();
    assert!(sans.iter().any(|n| n.contains("t-team-operator-gateway.t.svc")), "{sans:?}");
    cert.verify_signature(Some(ca.public_key())).expect("signed by the caBundle's CA");

    let gw = container(&docs, "Deployment", "t-team-operator-gateway");
    let env = env_of(gw);
    assert_eq!(env.get("TEAM_GATEWAY_AGGREGATED_LISTEN").map(String::as_str), Some("0.0.0.0:8443"));
    assert_eq!(env.get("TEAM_GATEWAY_API_GROUP").map(String::as_str), Some("gateway.agentteams.dev"));
    let svc = doc(&docs, "Service", "t-team-operator-gateway");
    assert!(svc["spec"]["ports"].as_array().expect("ports").iter().any(|p| p["name"] == "https" && p["port"] == 443), "{svc}");
    let reader = doc(&docs, "RoleBinding", "t-team-operator-gateway-authentication-reader");
    assert_eq!(
        (reader["metadata"]["namespace"].as_str(), reader["roleRef"]["name"].as_str()),
        (Some("kube-system"), Some("extension-apiserver-authentication-reader"))
    );
    let callers = doc(&docs, "ClusterRoleBinding", "t-team-operator-gateway-caller");
    assert_eq!(callers["subjects"][0]["name"], "system:authenticated");
    let role = doc(&docs, "ClusterRole", "t-team-operator-gateway-caller");
    assert_eq!(role["rules"], json!([{ "apiGroups": ["gateway.agentteams.dev"], "resources": ["tools"], "verbs": ["create"] }]));

    // Off: none of it, and the gateway serves no TLS.
    let off = rendered(&["gateway.apiService.enabled=false"]);
    assert!(!off.iter().any(|d| d["kind"] == "APIService" || d["metadata"]["name"] == "t-team-operator-gateway-tls"));
    assert!(!env_of(container(&off, "Deployment", "t-team-operator-gateway")).contains_key("TEAM_GATEWAY_AGGREGATED_LISTEN"));
    // A Secret of one's own needs its CA.
    let out = run("helm", &["template", "t", CHART, "--set", "gateway.apiService.tls.existingSecret=mine"], None);
    assert!(!out.status.success() && text(&out).contains("gateway.apiService.tls.caBundle"), "{}", text(&out));
}

#[test]
fn controller_and_gateway_get_the_same_bus_limits_the_binary_defaults_to() {
    let defaults = team_operator::bus::BusLimits::default();
    let want = |l: team_operator::bus::BusLimits| {
        [
            ("TEAM_OPERATOR_INBOX_MAX_ENTRIES", l.inbox_max_entries.to_string()),
            ("TEAM_OPERATOR_INBOX_MAX_BYTES", l.inbox_max_bytes.to_string()),
            ("TEAM_OPERATOR_TEAM_MAX_BYTES", l.team_max_bytes.to_string()),
            ("TEAM_OPERATOR_SEND_BURST", l.send_burst.to_string()),
            ("TEAM_OPERATOR_SEND_RATE_PER_SECOND", l.send_rate_per_second.to_string()),
        ]
    };
    let changed = team_operator::bus::BusLimits { team_max_bytes: 1 << 30, send_rate_per_second: 0, ..defaults };
    for (set, limits) in [(vec![], defaults), (vec!["messages.teamMaxBytes=1073741824", "messages.sendRatePerSecond=0"], changed)] {
        let docs = rendered(&set);
        for workload in ["t-team-operator-controller", "t-team-operator-gateway"] {
            let env = env_of(container(&docs, "Deployment", workload));
            for (var, value) in want(limits) {
                assert_eq!(env.get(var), Some(&value), "{workload} ({set:?}): {var}");
            }
        }
    }
}

#[test]
fn leader_election_timings_reach_the_controller_and_must_nest() {
    let env = env_of(container(&rendered(&[]), "Deployment", "t-team-operator-controller"));
    for (var, value) in [
        ("TEAM_OPERATOR_LEASE_DURATION_SECONDS", "15"),
        ("TEAM_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS", "10"),
        ("TEAM_OPERATOR_LEASE_RETRY_PERIOD_SECONDS", "2"),
    ] {
        assert_eq!(env.get(var).map(String::as_str), Some(value), "{var}");
    }
    for set in ["controller.leaderElection.renewDeadlineSeconds=15", "controller.leaderElection.retryPeriodSeconds=10"] {
        let out = run("helm", &["template", "t", CHART, "--set", set], None);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(text(&out).contains("retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"), "--set {set}:\n{}", text(&out));
    }
}

#[test]
fn member_pod_deadlines_reach_the_controller() {
    for (set, unschedulable, start) in [(vec![], "300", "300"), (vec!["controller.startDeadlineSeconds=900"], "300", "900")] {
        let env = env_of(container(&rendered(&set), "Deployment", "t-team-operator-controller"));
        assert_eq!(env.get("TEAM_OPERATOR_UNSCHEDULABLE_DEADLINE_SECONDS").map(String::as_str), Some(unschedulable), "{set:?}");
        assert_eq!(env.get("TEAM_OPERATOR_START_DEADLINE_SECONDS").map(String::as_str), Some(start), "{set:?}");
    }
}

#[test]
fn the_retry_backoff_reaches_the_controller_and_out_of_range_is_refused() {
    for (set, want) in [(vec![], "10"), (vec!["controller.retryBackoffSeconds=1"], "1")] {
        let env = env_of(container(&rendered(&set), "Deployment", "t-team-operator-controller"));
        assert_eq!(env.get("TEAM_OPERATOR_RETRY_BACKOFF_SECONDS").map(String::as_str), Some(want), "{set:?}");
    }
    let out = run("helm", &["template", "t", CHART, "--set", "controller.retryBackoffSeconds=361"], None);
    assert!(!out.status.success() && text(&out).contains("retryBackoffSeconds"), "{}", text(&out));
}

// --- tests on the stack -------------------------------------------------------------------------

#[tokio::test]
async fn rendered_chart_passes_server_dry_run_under_restricted_pod_security() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "chart-dry-run").await;
    let labels = json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    } } });
    Api::<Namespace>::all(s.client.clone())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label namespace");

    for set in [
        vec![],
        vec!["redis.bundled=false", "redis.url=redis://redis.example:6379"],
        vec!["watchNamespace=NS", "redis.bundled=false", "redis.existingSecret=r", "gateway.service.type=NodePort"],
    ] {
        let set: Vec<String> = set.iter().map(|s| s.replace("NS", ns.name())).collect();
        // Without the `helm test` hook: its pod names a ServiceAccount the dry run never creates
        // (it runs for real in tests/demo.rs).
        let mut args = vec!["template", "dry", CHART, "--namespace", ns.name(), "--skip-tests"];
        for s in &set {
            args.extend(["--set", s]);
        }
        let manifest = ok("helm", &args, None);
        // Every namespaced object names its namespace (the gateway's RoleBinding is kube-system's,
        // which `--namespace` would refuse).
        let out = run("kubectl", &["apply", "--dry-run=server", "-f", "-"], Some(manifest.as_bytes()));
        let msg = text(&out);
        assert!(out.status.success(), "kubectl apply --dry-run=server of the chart ({set:?}) failed:\n{msg}");
        assert!(!msg.contains("Warning"), "the chart ({set:?}) draws warnings (Pod Security restricted?):\n{msg}");
        for kind in [
            "deployment.apps/dry-team-operator-controller",
            "deployment.apps/dry-team-operator-gateway",
            "service/dry-team-operator-gateway",
        ] {
            assert!(msg.contains(&format!("{kind} created (server dry run)")), "{kind} missing ({set:?}):\n{msg}");
        }
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn helm_install_deploys_the_release() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-install", &[]).await;
    let (ns, full) = (r.ns().to_owned(), r.fullname());
    let c = &s.client;

    let controller = Api::<Deployment>::namespaced(c.clone(), &ns).get(&format!("{full}-controller")).await.expect("controller Deployment");
    assert_eq!(controller.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let pod = controller.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("controller pod spec");
    let env: Vec<&str> = pod.containers[0].env.iter().flatten().map(|e| e.name.as_str()).collect();
    for var in [
        "POD_NAME",
        "POD_NAMESPACE",
        "TEAM_OPERATOR_LEADER_ELECTION",
        "TEAM_OPERATOR_LEASE_NAMESPACE",
        "TEAM_OPERATOR_REDIS_URL",
        "TEAM_OPERATOR_MAX_AGENTS",
        "TEAM_OPERATOR_GATEWAY_URL",
        "TEAM_OPERATOR_TEAMCTL_IMAGE",
    ] {
        assert!(env.contains(&var), "controller env lacks {var}: {env:?}");
    }
    assert_eq!(pod.service_account_name.as_deref(), Some(format!("{full}-controller").as_str()));
    let sc = pod.containers[0].security_context.as_ref().expect("container securityContext");
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation, sc.run_as_non_root), (Some(true), Some(false), Some(true)));

    Api::<Deployment>::namespaced(c.clone(), &ns).get(&format!("{full}-gateway")).await.expect("gateway Deployment");
    let svc = Api::<Service>::namespaced(c.clone(), &ns).get(&format!("{full}-gateway")).await.expect("gateway Service");
    assert_eq!(svc.spec.and_then(|s| s.ports).map(|p| p[0].port), Some(8080));
    Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns).get(&format!("{full}-gateway")).await.expect("gateway PDB");
    Api::<StatefulSet>::namespaced(c.clone(), &ns).get(&format!("{full}-redis")).await.expect("redis StatefulSet");
    for sa in [format!("{full}-controller"), format!("{full}-gateway"), "team-operator-agent".into()] {
        Api::<ServiceAccount>::namespaced(c.clone(), &ns).get(&sa).await.unwrap_or_else(|e| panic!("ServiceAccount {sa}: {e}"));
    }
    for name in [format!("{full}-controller"), format!("{full}-gateway"), format!("{full}-gateway-auth")] {
        Api::<ClusterRole>::all(c.clone()).get(&name).await.unwrap_or_else(|e| panic!("ClusterRole {name}: {e}"));
        Api::<ClusterRoleBinding>::all(c.clone()).get(&name).await.unwrap_or_else(|e| panic!("ClusterRoleBinding {name}: {e}"));
    }
    Api::<Role>::namespaced(c.clone(), &ns).get(&format!("{full}-controller-lease")).await.expect("lease Role");
    Api::<RoleBinding>::namespaced(c.clone(), &ns).get(&format!("{full}-controller-lease")).await.expect("lease RoleBinding");

    // The generated Redis password survives an upgrade (the pods' URL depends on it).
    let secrets = Api::<Secret>::namespaced(c.clone(), &ns);
    let password = |s: Secret| s.data.and_then(|d| d.get("redis-password").cloned()).map(|b| b.0).unwrap_or_default();
    let before = password(secrets.get(&format!("{full}-redis")).await.expect("redis Secret"));
    assert_eq!(before.len(), 32, "generated password");
    ok("helm", &["upgrade", &r.name, CHART, "--namespace", &ns, "--reuse-values", "--set", "controller.maxAgents=5"], None);
    let after = password(secrets.get(&format!("{full}-redis")).await.expect("redis Secret"));
    assert_eq!(before, after, "helm upgrade changed the Redis password");

    r.uninstall().await;
}

/// Whether the impersonated user of `client` may do every one of `checks`.
async fn allowed_all(client: &Client, checks: &[Access<'_>]) -> bool {
    for access in checks {
        if !allowed(client, access).await {
            return false;
        }
    }
    true
}

/// People get teams through Kubernetes' own roles: the chart's editor and viewer ClusterRoles
/// are aggregated (by kube-controller-manager's clusterrole-aggregation controller) into `edit`
/// and `view`, so a RoleBinding to those is all a namespace admin writes.
#[tokio::test]
async fn people_with_edit_run_teams_and_people_with_view_watch_them() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-users", &[]).await;
    let teams_ns = TestNamespace::labelled(&s.client, "chart-users-teams", &[(OWN_RELEASE_LABEL, "true")]).await;
    let ns = teams_ns.name().to_owned();
    let user = |u: &str| format!("user-{u}-{}", &ns[ns.len() - 8..]);
    for (who, role) in [("alice", "edit"), ("bob", "view")] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": format!("{who}-{role}") },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user(who) }],
        }))
        .expect("RoleBinding");
        teams_ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("create RoleBinding");
    }
    let write: Vec<Access> = ["create", "patch", "delete"]
        .iter()
        .flat_map(|verb| ["teams", "members", "teamtasks"].map(|res| (*verb, "agentteams.dev", res, ns.as_str(), None)))
        .collect();
    let read: Vec<Access> = ["get", "list", "watch"]
        .iter()
        .flat_map(|verb| ["teams", "members", "teamtasks"].map(|res| (*verb, "agentteams.dev", res, ns.as_str(), None)))
        .collect();
    // The gateway's own subresources (the SubjectAccessReviews of send_message, wait_messages,
    // agent_memory, shutdown_request, plan_review): an editor drives a team through the gateway.
    let gateway_write: Vec<Access> = [
        ("create", "teams/messages"),
        ("get", "teams/messages"),
        ("get", "teams/memory"),
        ("update", "teams/memory"),
        ("update", "members/shutdown"),
        ("update", "members/plan"),
    ]
    .map(|(verb, res)| (verb, "agentteams.dev", res, ns.as_str(), None))
    .to_vec();
    let alice = impersonating(&user("alice")).await;
    let bob = impersonating(&user("bob")).await;
    wait_until(Duration::from_secs(30), "the editor role aggregated into edit", || async { allowed_all(&alice, &write).await }).await;
    assert_access(&alice, "alice (edit)", true, &read).await;
    wait_until(Duration::from_secs(30), "the viewer role aggregated into view", || async { allowed_all(&bob, &read).await }).await;
    assert_access(&bob, "bob (view)", false, &write).await;
    assert_access(&alice, "alice (edit)", true, &gateway_write).await;
    let (watch, drive) = gateway_write.split_at(2);
    assert_access(&bob, "bob (view)", true, &watch[1..]).await;
    assert_access(&bob, "bob (view)", false, &[watch[0]]).await;
    assert_access(&bob, "bob (view)", false, drive).await;
    // Status stays the operator's, even for an editor.
    assert_access(&alice, "alice (edit)", false, &[("patch", "agentteams.dev", "members/status", &ns, None)]).await;
    teams_ns.cleanup().await;
    r.uninstall().await;
}

#[tokio::test]
async fn chart_rbac_grants_the_controller_what_it_uses_and_nothing_more() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-rbac-ctl", &[]).await;
    let teams_ns = TestNamespace::labelled(&s.client, "chart-rbac-teams", &[(OWN_RELEASE_LABEL, "true")]).await;
    let (rel, tns, full) = (r.ns().to_owned(), teams_ns.name().to_owned(), r.fullname());
    let lease = format!("{full}-controller");
    let who = r.service_account("controller");
    let ctl = impersonating(&who).await;

    let g = "agentteams.dev";
    assert_access(
        &ctl,
        &who,
        true,
        &[
            ("list", g, "teams", "", None),
            ("watch", g, "teams", "", None),
            ("get", g, "teams", &tns, None),
            ("patch", g, "teams", &tns, None),
            ("patch", g, "teams/status", &tns, None),
            ("list", g, "members", "", None),
            ("watch", g, "members", "", None),
            ("create", g, "members", &tns, None),
            ("patch", g, "members", &tns, None),
            ("deletecollection", g, "members", &tns, None),
            ("patch", g, "members/status", &tns, None),
            ("list", g, "teamtasks", "", None),
            ("watch", g, "teamtasks", "", None),
            ("patch", g, "teamtasks", &tns, None),
            ("patch", g, "teamtasks/status", &tns, None),
            ("list", "", "pods", "", None),
            ("watch", "", "pods", "", None),
            ("get", "", "pods", &tns, None),
            ("create", "", "pods", &tns, None),
            ("delete", "", "pods", &tns, None),
            ("create", "events.k8s.io", "events", &tns, None),
            ("patch", "events.k8s.io", "events", &tns, None),
            ("create", "coordination.k8s.io", "leases", &rel, None),
            ("get", "coordination.k8s.io", "leases", &rel, Some(&lease)),
            ("patch", "coordination.k8s.io", "leases", &rel, Some(&lease)),
        ],
    )
    .await;
    assert_access(
        &ctl,
        &who,
        false,
        &[
            ("create", g, "teams", &tns, None),
            ("delete", g, "teams", &tns, None),
            ("update", g, "teams", &tns, None),
            ("delete", g, "members", &tns, None),
            ("create", g, "teamtasks", &tns, None),
            ("update", g, "teamtasks", &tns, None),
            ("update", "", "pods", &tns, None),
            ("patch", "", "pods", &tns, None),
            ("create", "", "pods/exec", &tns, None),
            ("get", "", "secrets", &tns, None),
            ("list", "", "secrets", "", None),
            ("create", "apps", "deployments", &tns, None),
            ("create", "", "serviceaccounts/token", &tns, None),
            ("create", "", "events", &tns, None),
            ("get", "coordination.k8s.io", "leases", &rel, Some("kube-scheduler")),
            ("patch", "coordination.k8s.io", "leases", &tns, Some(&lease)),
            ("create", "coordination.k8s.io", "leases", &tns, None),
            ("create", "authentication.k8s.io", "tokenreviews", "", None),
        ],
    )
    .await;

    // The calls themselves, as the controller makes them.
    let teams_admin = agentteams(&s.client, &tns, "Team");
    teams_admin.create(&PostParams::default(), &team("t")).await.expect("create Team as admin");
    let teams = agentteams(&ctl, &tns, "Team");
    let all_teams = Api::<Team>::all(ctl.clone()).list(&ListParams::default()).await.expect("list Teams cluster-wide");
    assert!(all_teams.items.iter().any(|t| t.namespace().as_deref() == Some(tns.as_str())), "the Team is not in the cluster-wide list");
    teams
        .patch("t", &PatchParams::default(), &Patch::Merge(&json!({ "metadata": { "finalizers": ["agentteams.dev/disband"] } })))
        .await
        .expect("add the finalizer");
    teams
        .patch_status("t", &PatchParams::default(), &Patch::Merge(&json!({ "status": { "phase": "Active" } })))
        .await
        .expect("patch Team status");
    let members = agentteams(&ctl, &tns, "Member");
    let lead = json!({ "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member", "metadata": { "name": "t-lead" }, "spec": { "team": "t", "agent": "lead", "role": "Lead" } });
    members
        .patch("t-lead", &PatchParams::apply("team-operator").force(), &Patch::Apply(&lead))
        .await
        .expect("server-side apply the lead Member");
    members
        .patch_status("t-lead", &PatchParams::default(), &Patch::Merge(&json!({ "status": { "phase": "Queued" } })))
        .await
        .expect("patch Member status");
    let pods: Api<Pod> = Api::namespaced(ctl.clone(), &tns);
    let pod = kwok_pod("t-lead-x").label("app.kubernetes.io/managed-by", "team-operator").build();
    pods.create(&PostParams { field_manager: Some("team-operator".into()), ..Default::default() }, &pod)
        .await
        .expect("create a member pod");
    pods.get("t-lead-x").await.expect("get the pod");
    pods.delete("t-lead-x", &DeleteParams::background()).await.expect("delete the pod");
    let event: EventV1 = serde_json::from_value(json!({
        "metadata": { "name": "t.rbac-check" },
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "team-operator", "reportingInstance": "test",
        "action": "Check", "reason": "Check", "type": "Normal", "note": "rbac check",
        "regarding": { "apiVersion": "agentteams.dev/v1alpha1", "kind": "Team", "namespace": tns, "name": "t" },
    }))
    .expect("event");
    Api::<EventV1>::namespaced(ctl.clone(), &tns).create(&PostParams::default(), &event).await.expect("create an Event");
    let leases: Api<Lease> = Api::namespaced(ctl.clone(), &rel);
    let l: Lease = serde_json::from_value(json!({ "metadata": { "name": lease }, "spec": { "holderIdentity": "test" } })).expect("lease");
    leases.create(&PostParams::default(), &l).await.expect("create the Lease");
    leases
        .patch(&lease, &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "holderIdentity": "other" } })))
        .await
        .expect("patch the Lease");

    // What the chart does not grant is refused.
    let admin_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &tns);
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "keep" }, "stringData": { "k": "v" } })).expect("secret");
    admin_secrets.create(&PostParams::default(), &secret).await.expect("create a Secret as admin");
    forbidden(Api::<Secret>::namespaced(ctl.clone(), &tns).delete("keep", &DeleteParams::default()).await, "controller deletes a Secret");
    forbidden(Api::<Secret>::namespaced(ctl.clone(), &tns).get("keep").await, "controller reads a Secret");
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "d" },
        "spec": { "selector": { "matchLabels": { "a": "b" } }, "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [{ "name": "c", "image": "x" }] } } },
    }))
    .expect("deployment");
    forbidden(
        Api::<Deployment>::namespaced(ctl.clone(), &tns).create(&PostParams::default(), &deploy).await,
        "controller creates a Deployment",
    );
    forbidden(teams.delete("t", &DeleteParams::default()).await, "controller deletes a Team");

    remove_team(&s.client, &tns, "t").await;
    teams_ns.cleanup().await;
    r.uninstall().await;
}

#[tokio::test]
async fn chart_rbac_grants_the_gateway_what_it_uses_and_nothing_more() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-rbac-gw", &[]).await;
    let teams_ns = TestNamespace::labelled(&s.client, "chart-rbac-gw-teams", &[(OWN_RELEASE_LABEL, "true")]).await;
    let (rel, tns) = (r.ns().to_owned(), teams_ns.name().to_owned());
    let who = r.service_account("gateway");
    let gw = impersonating(&who).await;

    let g = "agentteams.dev";
    assert_access(
        &gw,
        &who,
        true,
        &[
            ("create", "authentication.k8s.io", "tokenreviews", "", None),
            ("create", "authorization.k8s.io", "subjectaccessreviews", "", None),
            ("get", g, "teams", &tns, None),
            ("list", g, "teams", &tns, None),
            ("watch", g, "teams", &tns, None),
            // The gateway's watch cache of Teams spans all namespaces.
            ("list", g, "teams", "", None),
            ("watch", g, "teams", "", None),
            ("create", g, "teams", &tns, None),
            ("delete", g, "teams", &tns, None),
            ("create", g, "members", &tns, None),
            ("list", g, "members", &tns, None),
            ("watch", g, "members", &tns, None),
            ("get", g, "teamtasks", &tns, None),
            ("list", g, "teamtasks", &tns, None),
            ("create", g, "teamtasks", &tns, None),
            ("patch", g, "teamtasks", &tns, None),
            ("patch", g, "teamtasks/status", &tns, None),
            ("patch", g, "members/status", &tns, None),
            ("get", "", "pods", &tns, None),
        ],
    )
    .await;
    assert_access(
        &gw,
        &who,
        false,
        &[
            ("patch", g, "teams", &tns, None),
            ("patch", g, "teams/status", &tns, None),
            ("patch", g, "members", &tns, None),
            ("update", g, "members/status", &tns, None),
            ("delete", g, "members", &tns, None),
            ("delete", g, "teamtasks", &tns, None),
            ("list", "", "pods", &tns, None),
            ("create", "", "pods", &tns, None),
            ("delete", "", "pods", &tns, None),
            ("get", "", "secrets", &tns, None),
            ("create", "events.k8s.io", "events", &tns, None),
            ("create", "coordination.k8s.io", "leases", &rel, None),
            ("create", "", "serviceaccounts/token", &tns, None),
        ],
    )
    .await;

    // Calls as the gateway makes them: a TokenReview, a team_create, a spawn_member.
    let review: k8s_openapi::api::authentication::v1::TokenReview =
        serde_json::from_value(json!({ "spec": { "token": "not-a-token", "audiences": ["team-operator-gateway"] } })).expect("review");
    let done = Api::all(gw.clone()).create(&PostParams::default(), &review).await.expect("create a TokenReview");
    assert!(done.status.is_none_or(|s| s.authenticated != Some(true)), "a junk token authenticated");
    agentteams(&gw, &tns, "Team").create(&PostParams::default(), &team("t")).await.expect("create a Team");
    let member: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member",
        "metadata": { "generateName": "t-lead-" }, "spec": { "team": "t", "agent": "lead" },
    }))
    .expect("member");
    agentteams(&gw, &tns, "Member").create(&PostParams::default(), &member).await.expect("create a Member");
    forbidden(
        Api::<Pod>::namespaced(gw.clone(), &tns).create(&PostParams::default(), &kwok_pod("p").build()).await,
        "gateway creates a pod",
    );
    forbidden(Api::<Secret>::namespaced(gw.clone(), &tns).list(&ListParams::default()).await, "gateway lists Secrets");

    // The member pods' ServiceAccount has no API access at all.
    let agent = format!("system:serviceaccount:{rel}:team-operator-agent");
    let ag = impersonating(&agent).await;
    assert_access(
        &ag,
        &agent,
        false,
        &[
            ("get", g, "teams", &rel, None),
            ("list", g, "members", &rel, None),
            ("get", "", "pods", &rel, None),
            ("create", "authentication.k8s.io", "tokenreviews", "", None),
        ],
    )
    .await;

    teams_ns.cleanup().await;
    r.uninstall().await;
}

/// The aggregated API's trust (tls.rs `watch_trust`): the chart's gateway may read the one
/// ConfigMap the API server publishes it in, and nothing else of kube-system.
#[tokio::test]
async fn chart_rbac_lets_the_gateway_read_the_front_proxy_trust_and_no_more() {
    let who = support::identity::chart_user("gateway");
    let gw = impersonating(&who).await;
    let cm = Some("extension-apiserver-authentication");
    assert_access(
        &gw,
        &who,
        true,
        &[
            ("get", "", "configmaps", "kube-system", cm),
            ("list", "", "configmaps", "kube-system", cm),
            ("watch", "", "configmaps", "kube-system", cm),
        ],
    )
    .await;
    assert_access(
        &gw,
        &who,
        false,
        &[
            ("get", "", "configmaps", "kube-system", Some("kube-root-ca.crt")),
            ("list", "", "configmaps", "kube-system", None),
            ("update", "", "configmaps", "kube-system", cm),
            ("get", "", "secrets", "kube-system", None),
        ],
    )
    .await;
}

/// The real controller, authenticating as the chart's controller ServiceAccount, with leader
/// election in the release namespace: it takes the Lease, finalizes the Team, applies the lead's
/// Member and pod, and writes status — all within the chart's RBAC.
#[tokio::test]
async fn the_controller_runs_on_the_chart_rbac() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-run", &[]).await;
    let teams_ns = TestNamespace::labelled(&s.client, "chart-run-teams", &[(OWN_RELEASE_LABEL, "true")]).await;
    let (rel, tns, full) = (r.ns().to_owned(), teams_ns.name().to_owned(), r.fullname());

    let kubeconfig = impersonating_kubeconfig(&r.service_account("controller"), &rel);
    let log = scratch_dir("chart").join(format!("{rel}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    // The process gets the chart's own settings: the Deployment's literal env, plus what the
    // kubelet would fill in (downward API) and what differs off-cluster (Redis, metrics port);
    // it manages the team namespace only, so it leaves other tests' teams alone.
    let deployment =
        Api::<Deployment>::namespaced(s.client.clone(), &rel).get(&format!("{full}-controller")).await.expect("controller Deployment");
    let container = deployment.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].clone()).expect("controller container");
    assert_eq!(container.args.as_deref(), Some(&["controller".to_string()][..]));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_team-operator"));
    cmd.arg("controller").env_clear();
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            cmd.env(&e.name, v);
        }
    }
    let mut child = cmd
        .env("POD_NAME", "chart-run-0")
        .env("POD_NAMESPACE", &rel)
        .envs(redis_env())
        .env("TEAM_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
        .env("TEAM_OPERATOR_WATCH_NAMESPACE", &tns)
        .env("TEAM_OPERATOR_LOG_FORMAT", "text")
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start team-operator controller");

    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &rel);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let lease = tokio::time::timeout(
        TIMEOUT,
        wait_for(&leases, &format!("{full}-controller"), TIMEOUT, "the controller to take the Lease", |l: &Lease| {
            l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("chart-run-0")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("no lease; controller log:\n{}", show_log()));
    assert_eq!(lease.name_any(), format!("{full}-controller"));

    agentteams(&s.client, &tns, "Team").create(&PostParams::default(), &team("t")).await.expect("create Team");
    let teams: Api<Team> = Api::namespaced(s.client.clone(), &tns);
    let members: Api<Member> = Api::namespaced(s.client.clone(), &tns);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &tns);
    let long = Duration::from_secs(60);
    wait_for(&teams, "t", long, "the Team to be finalized and Active", |t: &Team| {
        t.finalizers().iter().any(|f| f == "agentteams.dev/disband") && t.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Active)
    })
    .await;
    let lead = wait_for(&members, "t-lead", long, "the lead Member to get a pod", |m: &Member| {
        m.status.as_ref().is_some_and(|s| s.pod_name.is_some())
    })
    .await;
    let pod_name = lead.status.and_then(|s| s.pod_name).unwrap_or_default();
    wait_for(&pods, &pod_name, long, "the lead's pod", |_| true).await;
    // The lead finishes: the Team's disband (Member status, Team status, its summary Event),
    // then the Team's deletion (its finalizer deletes its Members), all under the chart's RBAC.
    set_sim_exit(&pods, &pod_name, 0, None).await;
    wait_for(&teams, "t", long, "the Team to disband when its lead finished", |t: &Team| {
        t.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded)
    })
    .await;
    let events = Api::<EventV1>::namespaced(s.client.clone(), &tns);
    wait_for_any(&events, long, "the Team's Disbanded Event", |e: &EventV1| {
        e.reporting_controller.as_deref() == Some("team-operator") && e.reason.as_deref() == Some("Disbanded")
    })
    .await;
    let team_uid = teams.get("t").await.expect("team").metadata.uid;
    teams.delete("t", &DeleteParams::background()).await.expect("delete the Team");
    wait_deleted(&teams, "t", team_uid.as_deref(), long, "the deleted Team to be released by its finalizer").await;
    wait_deleted(&members, "t-lead", None, long, "the finalizer to delete the team's Members").await;
    let log_text = show_log();
    assert!(!log_text.contains("forbidden") && !log_text.contains("Forbidden"), "the controller was refused something:\n{log_text}");

    child.kill().await.expect("kill the controller");
    remove_team(&s.client, &tns, "t").await;
    teams_ns.cleanup().await;
    r.uninstall().await;
}

/// The real gateway, authenticating as the chart's gateway ServiceAccount: a kube user's call is
/// reviewed (TokenReview, SubjectAccessReview) and carried out (team_create, get) within the
/// chart's RBAC, and refused where the user's own RBAC says no.
#[tokio::test]
async fn the_gateway_runs_on_the_chart_rbac() {
    let s = stack().await;
    install_crds(&s.client).await;
    let r = Release::install(&s.client, "chart-gw-run", &[]).await;
    let teams_ns = TestNamespace::labelled(&s.client, "chart-gw-run-teams", &[(OWN_RELEASE_LABEL, "true")]).await;
    let (rel, tns) = (r.ns().to_owned(), teams_ns.name().to_owned());

    // alice may create and read Teams in the team namespace, nothing else.
    ok("kubectl", &["-n", &tns, "create", "serviceaccount", "alice"], None);
    ok("kubectl", &["-n", &tns, "create", "role", "alice", "--verb=create,get,list", "--resource=teams.agentteams.dev"], None);
    ok("kubectl", &["-n", &tns, "create", "rolebinding", "alice", "--role=alice", &format!("--serviceaccount={tns}:alice")], None);
    let token = ok("kubectl", &["-n", &tns, "create", "token", "alice"], None).trim().to_owned();

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let kubeconfig = impersonating_kubeconfig(&r.service_account("gateway"), &format!("{rel}-gateway"));
    let log = scratch_dir("chart").join(format!("{rel}-gateway.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_team-operator"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .envs(redis_env())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start team-operator gateway");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < deadline, "the gateway did not get ready; log:\n{}", show_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = |tool: &str, args: serde_json::Value| http.post(format!("{base}/v1/tools/{tool}")).bearer_auth(&token).json(&args).send();

    let created = call(
        "team_create",
        json!({
            "name": "t", "namespace": tns, "agents": [{ "name": "lead", "image": "agentteams.dev/sim-agent:latest" }],
        }),
    )
    .await
    .expect("team_create");
    let status = created.status();
    let body = created.text().await.unwrap_or_default();
    assert!(status.is_success(), "team_create as alice through the gateway: {status} {body}\ngateway log:\n{}", show_log());
    Api::<Team>::namespaced(s.client.clone(), &tns).get("t").await.expect("the Team the gateway created");

    let listed = http.get(format!("{base}/v1/teams?namespace={tns}")).bearer_auth(&token).send().await.expect("get teams");
    let body = listed.text().await.unwrap_or_default();
    assert!(body.contains("\"t\""), "alice's team list lacks t: {body}");

    // alice may not delete teams: the gateway's SubjectAccessReview refuses, naming the verb.
    let refused = call("team_delete", json!({ "team": "t", "namespace": tns })).await.expect("team_delete");
    let status = refused.status();
    let body = refused.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 403, "team_delete as alice: {body}");
    assert!(body.contains("delete"), "{body}");
    let log_text = show_log();
    assert!(!log_text.contains("is forbidden: User \"system:serviceaccount"), "the gateway itself was refused:\n{log_text}");

    child.kill().await.expect("kill the gateway");
    remove_team(&s.client, &tns, "t").await;
    teams_ns.cleanup().await;
    r.uninstall().await;
}
