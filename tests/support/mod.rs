//! Shared harness for the integration suites (`mod support;` in each `tests/*.rs`).
//!
//! Every suite runs against the real local stack (`make stack-up`, or `make test` which starts
//! it): a kube-apiserver with etcd, the controller-manager (garbage collector, namespace,
//! service-account, job controllers), kube-scheduler, kwok nodes and a redis-server.
//!
//! - [`stack`] connects (kube client from `$KUBECONFIG`, else the stack's admin kubeconfig).
//! - [`TestNamespace`] gives each test its own namespace and deletes it afterwards.
//! - [`install_crds`] server-side-applies `crds/*.yaml` and waits until they are Established.
//! - [`wait_for`] / [`wait_deleted`] wait on a watch with a timeout; they never poll with sleeps
//!   and fail naming what was awaited and the last state seen.
//! - [`kwok_pod`] builds Pods that kwok runs, ending as chosen by the `agentteams.dev/sim-*`
//!   annotations (see hack/kwok/stages.yaml).
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::OnceLock;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, Namespace, Pod, PodSpec, ServiceAccount, Toleration};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Annotation read by the kwok stages: the simulated agent's exit code ("0" → Succeeded,
/// anything else → Failed with that exit code; 137 → reason OOMKilled).
pub const SIM_EXIT_CODE: &str = "agentteams.dev/sim-exit-code";
/// Annotation read by the kwok stages: how long the pod keeps running once the exit code is
/// set (Go duration such as "1s"; absent → ends at once).
pub const SIM_DURATION: &str = "agentteams.dev/sim-duration";
/// Label on every namespace made by [`TestNamespace`].
pub const TEST_LABEL: &str = "agentteams.dev/test";
/// Field manager used by the harness for server-side apply.
pub const FIELD_MANAGER: &str = "team-operator-tests";
/// Default timeout for waits in tests.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The running local stack.
pub struct Stack {
    pub client: Client,
    pub redis_url: String,
    /// `redis_url` lists a Redis Cluster's seeds (see [`redis_cluster`]).
    pub redis_cluster: bool,
    pub kubeconfig: PathBuf,
}

impl Stack {
    /// Bus settings for this stack's Redis (a test's private redis-server, or the suites' Redis:
    /// see [`bus_config`]).
    pub fn bus_config(&self) -> team_operator::bus::BusConfig {
        team_operator::bus::BusConfig { cluster: self.redis_cluster, ..team_operator::bus::BusConfig::from_url(self.redis_url.clone()) }
    }

    /// A multiplexed Redis connection to the stack's single redis-server (never the cluster:
    /// suites that also run on one use [`raw_redis`]).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap_or_else(|e| panic!("bad Redis URL {}: {e}", self.redis_url));
        tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to Redis at {}; run `make stack-up`", self.redis_url))
            .unwrap_or_else(|e| panic!("cannot reach Redis at {}: {e}; run `make stack-up`", self.redis_url))
    }
}

/// Directory of the stack's state, as in hack/lib.sh.
pub fn stack_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEAM_OPERATOR_STACK") {
        return dir.into();
    }
    let cache = std::env::var_os("TEAM_OPERATOR_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
            .join("team-operator")
    });
    cache.join("stack")
}

/// A directory for a test's files (logs, kubeconfigs, tokens) under cargo's per-target scratch
/// space, created if missing: on a fresh checkout nothing under it exists yet.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Kubeconfig used by the tests: `$KUBECONFIG`, else the stack's admin kubeconfig.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => stack_dir().join("admin.kubeconfig"),
    }
}

/// Redis URL used by the tests: `$TEAM_OPERATOR_REDIS_URL`, else the stack's default port.
pub fn redis_url() -> String {
    std::env::var("TEAM_OPERATOR_REDIS_URL").unwrap_or_else(|_| {
        let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "16379".into());
        format!("redis://127.0.0.1:{port}")
    })
}

/// Whether the suites run against a Redis Cluster: `TEAM_OPERATOR_REDIS_CLUSTER` read with the
/// binary's own parser (true/false, 1/0, yes/no, on/off; unset or empty: no), so the harness and
/// the processes it starts agree. `TEAM_OPERATOR_REDIS_URL` then lists seed nodes, comma-separated
/// (`eval "$(REDIS_CLUSTER=1 hack/stack.sh env)"` sets both).
pub fn redis_cluster() -> bool {
    use clap::builder::TypedValueParser;
    let value = std::env::var_os("TEAM_OPERATOR_REDIS_CLUSTER").unwrap_or_default();
    if value.is_empty() {
        return false;
    }
    clap::builder::BoolishValueParser::new()
        .parse_ref(&clap::Command::new("tests"), None, &value)
        .unwrap_or_else(|e| panic!("TEAM_OPERATOR_REDIS_CLUSTER={}: {e}", value.to_string_lossy()))
}

/// Bus settings of the suites: the stack's Redis, or the cluster (see [`redis_cluster`]).
pub fn bus_config() -> team_operator::bus::BusConfig {
    team_operator::bus::BusConfig { cluster: redis_cluster(), ..team_operator::bus::BusConfig::from_url(redis_url()) }
}

/// The environment that points a `team-operator` process the harness starts at the suites' Redis.
pub fn redis_env() -> [(&'static str, String); 2] {
    [("TEAM_OPERATOR_REDIS_URL", redis_url()), ("TEAM_OPERATOR_REDIS_CLUSTER", redis_cluster().to_string())]
}

/// Runs one command on Redis directly, outside the bus (against the cluster when
/// [`bus_config`] says so): how the suites look at what the bus really stored.
pub async fn raw_redis<T: redis::FromRedisValue>(cmd: &redis::Cmd) -> T {
    let url = redis_url();
    if redis_cluster() {
        let client = redis::cluster::ClusterClient::new(url.split(',').collect::<Vec<_>>()).expect("cluster urls");
        let mut conn = client.get_async_connection().await.expect("raw cluster connection");
        cmd.query_async(&mut conn).await.unwrap_or_else(|e| panic!("raw Redis command: {e}"))
    } else {
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("raw connection");
        cmd.query_async(&mut conn).await.unwrap_or_else(|e| panic!("raw Redis command: {e}"))
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

async fn kube_config() -> Config {
    if let Some(c) = CONFIG.get() {
        return c.clone();
    }
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}; run `make stack-up`", path.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", path.display()));
    CONFIG.get_or_init(|| config).clone()
}

/// Connects to the local stack; panics (telling to run `make stack-up`) if it is unreachable.
/// Call it once per test: the client belongs to the test's tokio runtime.
pub async fn stack() -> Stack {
    let config = kube_config().await;
    let kubeconfig = kubeconfig_path();
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a kube client from {}: {e}", kubeconfig.display()));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("cannot reach the API server {server} (kubeconfig {}): {e}; run `make stack-up`", kubeconfig.display()),
        Err(_) => panic!("API server {server} (kubeconfig {}) did not answer in 10s; run `make stack-up`", kubeconfig.display()),
    }
    Stack { client, redis_url: redis_url(), redis_cluster: redis_cluster(), kubeconfig }
}

/// A namespace of its own for one test, labelled `agentteams.dev/test=true`. Call
/// [`TestNamespace::cleanup`] at the end of the test; if the test panics first, `Drop` deletes
/// the namespace on a best-effort basis. Set `TEAM_OPERATOR_KEEP_NAMESPACES=1` to keep them.
pub struct TestNamespace {
    pub name: String,
    client: Client,
    cleaned: bool,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` and waits until its `default` ServiceAccount exists (pods
    /// cannot be created before that).
    pub async fn new(client: &Client, prefix: &str) -> Self {
        Self::labelled(client, prefix, &[]).await
    }

    /// Like [`TestNamespace::new`], with extra labels on the namespace from its creation on.
    pub async fn labelled(client: &Client, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let mut prefix: String = prefix.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        prefix.truncate(50);
        let prefix = prefix.trim_matches('-');
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = if prefix.is_empty() { format!("t-{suffix}") } else { format!("{prefix}-{suffix}") };
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    std::iter::once((TEST_LABEL.to_string(), "true".to_string()))
                        .chain(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&sa, "default", TIMEOUT, "the default ServiceAccount of a new test namespace", |_| true).await;
        Self { name, client: client.clone(), cleaned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (without waiting for it to be gone).
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if keep_namespaces() {
            return;
        }
        if let Err(e) = delete_namespace(&self.client, &self.name).await {
            panic!("cannot delete test namespace {}: {e}", self.name);
        }
    }
}

/// Deletes a test namespace. The test's operator is gone by then, so nothing would release the
/// Teams' disband finalizers and the namespace would hang in Terminating: drop them first.
async fn delete_namespace(client: &Client, name: &str) -> kube::Result<()> {
    let teams: Api<team_operator::api::Team> = Api::namespaced(client.clone(), name);
    // Delete the Teams first, then strip their finalizers: the API server adds no finalizer to an
    // object being deleted, so a test's operator still running cannot put its disband finalizer
    // back (stripped from a live Team it did, and the namespace hung in Terminating).
    let _ = teams.delete_collection(&DeleteParams::background(), &Default::default()).await;
    if let Ok(list) = teams.list(&Default::default()).await {
        let patch = Patch::Merge(serde_json::json!({ "metadata": { "finalizers": null } }));
        for t in list.items.iter().filter(|t| !t.finalizers().is_empty()) {
            let _ = teams.patch(&t.name_any(), &PatchParams::default(), &patch).await;
        }
    }
    match Api::<Namespace>::all(client.clone()).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn keep_namespaces() -> bool {
    std::env::var("TEAM_OPERATOR_KEEP_NAMESPACES").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned || keep_namespaces() {
            return;
        }
        // The test's runtime may be shutting down (a panic unwinds through it), so delete from a
        // thread with its own runtime and client.
        let Some(config) = CONFIG.get().cloned() else { return };
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = Client::try_from(config) else { return };
                let _ = tokio::time::timeout(Duration::from_secs(5), delete_namespace(&client, &name)).await;
            });
        });
        let _ = handle.join();
    }
}

/// Server-side-applies every `crds/*.yaml` (all documents of kind CustomResourceDefinition) and
/// waits until each is Established. Returns the names of the CRDs applied.
pub async fn install_crds(client: &Client) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => {
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml")).collect()
        }
        Err(_) => Vec::new(),
    };
    files.sort();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
            if value.is_null() || value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{} holds an invalid CRD: {e}", file.display()));
            let name = crd.name_any();
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("cannot apply CRD {name} from {}: {e}", file.display()));
            names.push(name);
        }
    }
    for name in &names {
        wait_for(&api, name, TIMEOUT, &format!("CRD {name} to be Established"), |crd| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await;
    }
    names
}

/// The object's watch as a stream of its states (`None`: absent), restarting with backoff on
/// errors, which are passed through so a wait can report them.
fn object_states<K>(api: &Api<K>, name: &str) -> impl futures::Stream<Item = Result<Option<K>, watcher::Error>> + Send + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let fields = format!("metadata.name={name}");
    watcher::watcher(api.clone(), watcher::Config::default().fields(&fields))
        .default_backoff()
        .scan(false, |seen, event| {
            if matches!(event, Ok(Event::Init)) {
                *seen = false;
            } else if matches!(event, Ok(Event::InitApply(_))) {
                *seen = true;
            }
            future::ready(Some((*seen, event)))
        })
        .filter_map(|(seen, event)| async move {
            match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => Some(Ok(Some(o))),
                Ok(Event::Delete(_)) => Some(Ok(None)),
                Ok(Event::InitDone) if !seen => Some(Ok(None)),
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            }
        })
}

/// Renders an object for a failure message (without managedFields).
pub fn describe<K: Serialize>(obj: &K) -> String {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn scope<K: Resource>(api: &Api<K>, name: &str) -> String
where
    <K as Resource>::DynamicType: Default,
{
    let ns = api.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    format!("{} {ns}{name}", K::kind(&Default::default()))
}

/// Waits on a watch until the object `name` exists and `cond` holds, and returns it. Fails
/// after `timeout` with a message naming `what` was awaited and the last state seen.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, what: &str, cond: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
    F: Fn(&K) -> bool,
{
    let mut states = pin!(object_states(api, name));
    let mut last: Option<Option<K>> = None;
    let mut last_err: Option<String> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, states.next()).await {
            Ok(Some(Ok(Some(obj)))) => {
                if cond(&obj) {
                    return obj;
                }
                last = Some(Some(obj));
            }
            Ok(Some(Ok(None))) => last = Some(None),
            Ok(Some(Err(e))) => last_err = Some(e.to_string()),
            Ok(None) => panic!("watch of {} ended while waiting for {what}", scope(api, name)),
            Err(_) => {
                let seen = match &last {
                    None => "nothing (no watch event)".to_string(),
                    Some(None) => "the object does not exist".to_string(),
                    Some(Some(o)) => describe(o),
                };
                let err = last_err.map(|e| format!("\nlast watch error: {e}")).unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what} ({}); last seen: {seen}{err}", scope(api, name));
            }
        }
    }
}

/// Waits until the async condition `cond` holds, checking every 100 ms, for state that has no
/// watch (a process's /metrics, a Redis key); fails after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits on a watch of every object of `api` until one satisfies `cond`, and returns it. Fails
/// after `timeout` naming `what` and how many objects were seen.
pub async fn wait_for_any<K, F>(api: &Api<K>, timeout: Duration, what: &str, cond: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
    F: Fn(&K) -> bool,
{
    let mut objects = pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff().touched_objects());
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, objects.next()).await {
            Ok(Some(Ok(obj))) if cond(&obj) => return obj,
            Ok(Some(Ok(_))) => seen += 1,
            Ok(Some(Err(_))) => {}
            Ok(None) => panic!("watch of {} ended while waiting for {what}", K::kind(&Default::default())),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}; {seen} other {} seen", K::plural(&Default::default())),
        }
    }
}

/// Waits on a watch until the object `name` is gone (absent, or replaced by one with a new uid
/// if `uid` is given). Fails after `timeout` naming `what` and the last state seen.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: Option<&str>, timeout: Duration, what: &str)
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
{
    let mut states = pin!(object_states(api, name));
    let mut last: Option<K> = None;
    let mut last_err: Option<String> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, states.next()).await {
            Ok(Some(Ok(None))) => return,
            Ok(Some(Ok(Some(obj)))) => {
                if uid.is_some_and(|u| obj.meta().uid.as_deref() != Some(u)) {
                    return;
                }
                last = Some(obj);
            }
            Ok(Some(Err(e))) => last_err = Some(e.to_string()),
            Ok(None) => panic!("watch of {} ended while waiting for {what}", scope(api, name)),
            Err(_) => {
                let seen = last.as_ref().map(describe).unwrap_or_else(|| "nothing".into());
                let err = last_err.map(|e| format!("\nlast watch error: {e}")).unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what} ({} to be deleted); last seen: {seen}{err}", scope(api, name));
            }
        }
    }
}

// --- Pods on kwok nodes ------------------------------------------------------------------------

/// Builder for a Pod that kube-scheduler places on a kwok node and kwok then runs.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

/// A Pod for kwok nodes: one container `agent`, `restartPolicy: Never`, no token mount, a
/// nodeSelector `type=kwok` and a toleration for the kwok taint. Without [`PodBuilder::exit_code`]
/// it stays Running until someone sets the `agentteams.dev/sim-exit-code` annotation.
pub fn kwok_pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some("agentteams.dev/sim-agent:latest".into()),
                    ..Default::default()
                }],
                restart_policy: Some("Never".into()),
                automount_service_account_token: Some(false),
                node_selector: Some([("type".to_string(), "kwok".to_string())].into()),
                tolerations: Some(vec![Toleration {
                    key: Some("kwok.x-k8s.io/node".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

impl PodBuilder {
    /// The simulated agent exits with `code` (0 → Succeeded, else Failed; 137 → OOMKilled).
    pub fn exit_code(self, code: i32) -> Self {
        self.annotation(SIM_EXIT_CODE, &code.to_string())
    }
    /// How long the pod runs once the exit code is set (Go duration, e.g. "2s").
    pub fn duration(self, duration: &str) -> Self {
        self.annotation(SIM_DURATION, duration)
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod.metadata.labels.get_or_insert_default().insert(key.into(), value.into());
        self
    }
    pub fn owner(mut self, owner: OwnerReference) -> Self {
        self.pod.metadata.owner_references.get_or_insert_default().push(owner);
        self
    }
    pub fn service_account(mut self, name: &str) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.service_account_name = Some(name.into());
        }
        self
    }
    pub fn build(self) -> Pod {
        self.pod
    }
}

/// Sets the simulated exit code (and optionally duration) on an existing pod, as the demo does
/// when its local agent process exits.
pub async fn set_sim_exit(api: &Api<Pod>, name: &str, code: i32, duration: Option<&str>) -> Pod {
    let mut annotations = serde_json::Map::new();
    annotations.insert(SIM_EXIT_CODE.into(), code.to_string().into());
    if let Some(d) = duration {
        annotations.insert(SIM_DURATION.into(), d.into());
    }
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_or_else(|e| panic!("cannot annotate pod {name}: {e}"))
}

/// The pod's phase ("Pending", "Running", "Succeeded", "Failed"), if any.
pub fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The terminated state of the pod's first container, if it has terminated.
pub fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.as_ref()
}

/// Owner reference to `owner` (controller, blocking deletion in foreground mode).
pub fn owner_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    owner.controller_owner_ref(&()).unwrap_or_else(|| panic!("owner {} has no name or uid", owner.name_any()))
}

pub mod aggregated;
pub mod identity;
pub mod member_loop;
pub mod model_server;
pub mod node;
pub mod operator;
pub mod proxy;
pub mod teams;
pub mod tokens;
