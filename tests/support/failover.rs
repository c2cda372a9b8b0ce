//! Leader-election harness (tests/leader.rs): controller replicas as real processes that a test
//! can SIGTERM, a loopback TCP proxy between a replica and the API server that the test can stop
//! forwarding, and a chart identity of its own (release [`RELEASE`]) so that its Lease is not the
//! one tests/controller.rs's failover test uses. Include with
//! `#[path = "support/failover.rs"] mod failover;` next to `mod support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::support::identity::{CHART, fullname, impersonating_kubeconfig, ok};

/// Release name of this harness's chart identity.
pub const RELEASE: &str = "e2e-leader";
/// Its namespace: the ServiceAccount and the Lease.
pub const RELEASE_NS: &str = "team-operator-e2e-leader";

/// The chart's ServiceAccounts and RBAC for [`RELEASE`], applied once per process.
fn chart_rbac() {
    static APPLIED: Once = Once::new();
    APPLIED.call_once(|| {
        let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {RELEASE_NS}\n---\n");
        let mut args = vec!["template", RELEASE, CHART, "--namespace", RELEASE_NS];
        for template in ["templates/serviceaccounts.yaml", "templates/rbac-controller.yaml"] {
            args.extend(["--show-only", template]);
        }
        let manifest = format!("{ns}{}", ok("helm", &args, None));
        ok(
            "kubectl",
            &["apply", "--server-side", "--force-conflicts", "--field-manager", crate::support::FIELD_MANAGER, "-f", "-"],
            Some(manifest.as_bytes()),
        );
    });
}

/// The Lease this identity may hold: (namespace, name).
pub fn lease() -> (&'static str, String) {
    chart_rbac();
    (RELEASE_NS, format!("{}-controller", fullname(RELEASE)))
}

/// A kubeconfig acting as this release's controller ServiceAccount; with `server`, pointed at it
/// (a [`Proxy`]) instead of the API server.
pub fn controller_kubeconfig(tag: &str, server: Option<&str>) -> PathBuf {
    chart_rbac();
    let user = format!("system:serviceaccount:{RELEASE_NS}:{}-controller", fullname(RELEASE));
    let path = impersonating_kubeconfig(&user, tag);
    if let Some(server) = server {
        let text = std::fs::read_to_string(&path).expect("kubeconfig");
        let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
        for entry in kc["clusters"].as_sequence_mut().expect("kubeconfig clusters") {
            entry["cluster"]["server"] = serde_yaml::Value::from(server);
        }
        std::fs::write(&path, serde_yaml::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    }
    path
}

/// `host:port` of the API server in the stack's kubeconfig.
pub fn api_server_addr() -> String {
    let text = std::fs::read_to_string(crate::support::kubeconfig_path()).expect("kubeconfig");
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let server = kc["clusters"][0]["cluster"]["server"].as_str().expect("server URL").to_owned();
    server.trim_start_matches("https://").trim_end_matches('/').to_owned()
}

/// A TCP proxy on 127.0.0.1 to `upstream`. [`Proxy::cut`] stops it forwarding anything, in
/// either direction, on open and new connections alike, while keeping them open: the far end
/// sees a partition (requests hang), not a refusal.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let flag = cut.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                let (flag, upstream) = (flag.clone(), upstream.clone());
                conns.spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        let _held = down;
                        return std::future::pending().await;
                    }
                    let Ok(up) = TcpStream::connect(&upstream).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, flag.clone()), pump(ur, dw, flag));
                });
            }
        });
        Proxy { port, cut, tasks }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding, for good.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; once `cut`, holds both open and moves nothing.
async fn pump(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            let _held = (from, to);
            return std::future::pending().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A `team-operator controller --leader-election` process for namespace `ns`; killed on drop.
pub struct Replica {
    child: Child,
    pub log: PathBuf,
}

impl Replica {
    /// Starts a replica with `identity` on the harness's Lease, with lease `timings`
    /// (duration, renew deadline, retry period in seconds), through `kubeconfig`.
    pub fn start(ns: &str, identity: &str, kubeconfig: &Path, timings: (u64, u64, u64)) -> Self {
        let (lease_ns, lease) = lease();
        let log = crate::support::scratch_dir("leader-logs").join(format!("{ns}-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let (duration, deadline, retry) = timings;
        let child = Command::new(env!("CARGO_BIN_EXE_team-operator"))
            .args(["controller", "--namespace", ns, "--metrics-addr", "127.0.0.1:0", "--leader-election"])
            .args(["--lease-namespace", lease_ns, "--lease-name", &lease, "--identity", identity])
            .args(["--lease-duration-seconds", &duration.to_string()])
            .args(["--lease-renew-deadline-seconds", &deadline.to_string()])
            .args(["--lease-retry-period-seconds", &retry.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .envs(crate::support::redis_env())
            .env("RUST_LOG", "info,team_operator=debug,kube_runtime=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap_or_else(|e| panic!("log file: {e}")))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting team-operator: {e}"));
        Replica { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `line`, or panics after `timeout` showing the log.
    pub async fn wait_log(&self, line: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.log_text().contains(line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {line:?} in {} after {timeout:?}:\n{}",
                self.log.display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM, as the kubelet does to a pod being deleted.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the replica is running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Its exit status, or panics after `timeout` showing the log.
    pub async fn exited(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for the replica"),
            Err(_) => panic!("the replica did not exit within {timeout:?}:\n{}", self.log_text()),
        }
    }
}
