//! Member pods on kwok run no containers, so this plays the kubelet's part for the agent
//! container of each Running pod of a namespace: it runs the container's command as a local
//! process with what the pod would give it (as hack/demo.sh does for its scripted agents):
//! - the container's `env` (values, and `secretKeyRef`s read from the Secret);
//! - its volume mounts as local directories: ConfigMaps written out, emptyDirs created, the
//!   projected ServiceAccount token minted with a TokenRequest bound to the pod (audience of the
//!   projection); env values and command words under a mount path are rewritten to the local
//!   directory, and `/opt/agentteams/bin/teamctl` is the teamctl under test;
//! - SIGTERM when the pod is deleted.
//!
//! When the process exits, its exit code goes onto the pod (`agentteams.dev/sim-exit-code`) and
//! kwok ends the pod the same way (0 → Succeeded, else Failed with that code).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

/// Where teamctl is in a member pod (the operator's init container puts it there).
const POD_TEAMCTL: &str = "/opt/agentteams/bin/teamctl";

/// One agent process, as it ran.
#[derive(Clone, Debug)]
pub struct AgentRun {
    pub pod: String,
    /// The pod's `agentteams.dev/member` label.
    pub member: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Exit code (None while it runs; -1 when it was killed by a signal).
    pub exit: Option<i32>,
}

/// Settings of [`LocalAgents`].
pub struct LocalAgentOptions {
    /// Added to every process's environment (proxy settings, PATH…), after the pod's.
    pub extra_env: Vec<(String, String)>,
    /// Most seconds one process may run before it is killed.
    pub max_seconds: u64,
}

/// The agents of one namespace's pods, run locally; stops them when dropped.
pub struct LocalAgents {
    runs: Arc<Mutex<BTreeMap<String, AgentRun>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalAgents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalAgents {
    /// Starts running the agents of the Running pods of `ns` (labelled `agentteams.dev/team`).
    pub fn start(client: Client, ns: &str, opts: LocalAgentOptions) -> Self {
        let runs: Arc<Mutex<BTreeMap<String, AgentRun>>> = Arc::default();
        let ns = ns.to_owned();
        let record = runs.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let mut started: HashSet<String> = HashSet::new();
            let mut pids: HashMap<String, Arc<Mutex<Option<u32>>>> = HashMap::new();
            let mut children = tokio::task::JoinSet::new();
            let cfg = watcher::Config::default().labels(team_operator::api::labels::TEAM);
            let mut events = std::pin::pin!(watcher::watcher(pods.clone(), cfg));
            let opts = Arc::new(opts);
            while let Some(event) = events.next().await {
                let (pod, gone) = match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        let gone = p.metadata.deletion_timestamp.is_some();
                        (p, gone)
                    }
                    Ok(Event::Delete(p)) => (p, true),
                    _ => continue,
                };
                let name = pod.name_any();
                if gone {
                    // The kubelet's part: SIGTERM to a container whose pod is being deleted.
                    if let Some(pid) = pids.get(&name).and_then(|p| p.lock().ok().and_then(|p| *p)) {
                        terminate(pid);
                    }
                    continue;
                }
                let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if !running || !started.insert(name.clone()) {
                    continue;
                }
                let pid = Arc::new(Mutex::new(None));
                pids.insert(name.clone(), pid.clone());
                children.spawn(run_pod(client.clone(), ns.clone(), pod, opts.clone(), record.clone(), pid));
            }
        });
        LocalAgents { runs, task }
    }

    /// Every process started so far, by pod name.
    pub fn runs(&self) -> BTreeMap<String, AgentRun> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The run of the member named `member`.
    pub fn run_of(&self, member: &str) -> Option<AgentRun> {
        self.runs().into_values().find(|r| r.member == member)
    }
}

fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with plain integers; a pid that already exited fails with ESRCH.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Mints the pod's projected token: its ServiceAccount's, bound to the pod, for `audience`, as
/// the kubelet projects it (at least 600 s).
pub async fn pod_token(client: &Client, ns: &str, pod: &Pod, audience: &str, seconds: i64) -> Result<String, String> {
    let sa = pod.spec.as_ref().and_then(|p| p.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(seconds.max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        }),
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let issued: TokenRequest = sas.create_subresource("token", &sa, &PostParams::default(), &request).await.map_err(|e| e.to_string())?;
    issued.status.and_then(|s| s.token).ok_or_else(|| "TokenRequest without a token".into())
}

/// Replaces a leading mount path in `word` by its local directory.
fn localize(word: &str, mounts: &[(String, PathBuf)]) -> String {
    if word == POD_TEAMCTL {
        return env!("CARGO_BIN_EXE_teamctl").to_owned();
    }
    for (mount, local) in mounts {
        if let Some(rest) = word.strip_prefix(mount.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", local.display());
        }
    }
    word.to_owned()
}

/// Builds the pod's volumes as local directories under `dir`; the (mount path, local dir) pairs.
async fn volumes(client: &Client, ns: &str, pod: &Pod, dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let spec = pod.spec.as_ref().ok_or("pod without spec")?;
    let container = spec.containers.first().ok_or("pod without containers")?;
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == m.name) else { continue };
        let local = dir.join("mounts").join(m.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local).map_err(|e| format!("{}: {e}", local.display()))?;
        if let Some(cm) = &v.config_map {
            let got =
                Api::<ConfigMap>::namespaced(client.clone(), ns).get(&cm.name).await.map_err(|e| format!("ConfigMap {}: {e}", cm.name))?;
            for (key, value) in got.data.unwrap_or_default() {
                std::fs::write(local.join(&key), value).map_err(|e| e.to_string())?;
            }
        }
        if let Some(projected) = &v.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(t) = &source.service_account_token {
                    let audience = t.audience.clone().unwrap_or_default();
                    let token = pod_token(client, ns, pod, &audience, t.expiration_seconds.unwrap_or(3600)).await?;
                    std::fs::write(local.join(&t.path), token).map_err(|e| e.to_string())?;
                }
            }
        }
        mounts.push((m.mount_path.trim_end_matches('/').to_owned(), local));
    }
    // Longest mount paths first, so /a/b wins over /a.
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    Ok(mounts)
}

/// The container's environment, secretKeyRefs resolved, paths localized.
async fn environment(client: &Client, ns: &str, pod: &Pod, mounts: &[(String, PathBuf)]) -> Result<Vec<(String, String)>, String> {
    let container = pod.spec.as_ref().and_then(|s| s.containers.first()).ok_or("pod without containers")?;
    let mut env = Vec::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref())) {
            (Some(v), _) => v.clone(),
            (None, Some(r)) => {
                let secret =
                    Api::<Secret>::namespaced(client.clone(), ns).get(&r.name).await.map_err(|e| format!("Secret {}: {e}", r.name))?;
                let bytes =
                    secret.data.unwrap_or_default().remove(&r.key).ok_or_else(|| format!("Secret {} has no key {}", r.name, r.key))?;
                String::from_utf8_lossy(&bytes.0).into_owned()
            }
            _ => continue,
        };
        env.push((e.name.clone(), localize(&value, mounts)));
    }
    Ok(env)
}

async fn run_pod(
    client: Client,
    ns: String,
    pod: Pod,
    opts: Arc<LocalAgentOptions>,
    record: Arc<Mutex<BTreeMap<String, AgentRun>>>,
    pid: Arc<Mutex<Option<u32>>>,
) {
    let name = pod.name_any();
    let member = pod.labels().get(team_operator::api::labels::MEMBER).cloned().unwrap_or_default();
    let dir = super::scratch_dir(&format!("agents/{ns}/{name}"));
    let log = dir.join("agent.log");
    let run = AgentRun { pod: name.clone(), member: member.clone(), log: log.clone(), exit: None };
    if let Ok(mut r) = record.lock() {
        r.insert(name.clone(), run);
    }
    let code = match start(&client, &ns, &pod, &dir, &log, &opts, &pid).await {
        Ok(code) => code,
        Err(e) => {
            let _ = std::fs::write(&log, format!("the local kubelet could not start the agent: {e}\n"));
            128
        }
    };
    if let Ok(mut r) = record.lock()
        && let Some(run) = r.get_mut(&name)
    {
        run.exit = Some(code);
    }
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let code = if code < 0 { 143 } else { code };
    let patch = serde_json::json!({ "metadata": { "annotations": { super::SIM_EXIT_CODE: code.to_string() } } });
    let _ = pods.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await;
}

async fn start(
    client: &Client,
    ns: &str,
    pod: &Pod,
    dir: &Path,
    log: &Path,
    opts: &LocalAgentOptions,
    pid: &Mutex<Option<u32>>,
) -> Result<i32, String> {
    let mounts = volumes(client, ns, pod, dir).await?;
    let env = environment(client, ns, pod, &mounts).await?;
    let container = pod.spec.as_ref().and_then(|s| s.containers.first()).ok_or("pod without containers")?;
    let words: Vec<String> =
        container.command.iter().flatten().chain(container.args.iter().flatten()).map(|w| localize(w, &mounts)).collect();
    let (program, args) = words.split_first().ok_or("the agent container has no command")?;
    let work = dir.join("work");
    let home = dir.join("home");
    std::fs::create_dir_all(&work).and_then(|_| std::fs::create_dir_all(&home)).map_err(|e| e.to_string())?;
    let file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("PWD", &work)
        .current_dir(&work)
        .envs(env)
        .envs(opts.extra_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("starting {program}: {e}"))?;
    if let Ok(mut p) = pid.lock() {
        *p = child.id();
    }
    match tokio::time::timeout(Duration::from_secs(opts.max_seconds), child.wait()).await {
        Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Ok(137)
        }
    }
}
