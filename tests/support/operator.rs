//! The operator under test, run as its real binary (`team-operator controller`) scoped to the
//! test's namespace, so suites run side by side and a test can kill -9 it. It authenticates as
//! the Helm chart's controller ServiceAccount (see [`super::identity`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::process::{Child, Command};

/// A running `team-operator controller` process; killed when dropped.
pub struct Operator {
    child: Child,
    /// Where its log goes (kept after the test for post-mortems).
    pub log: PathBuf,
    /// Port of its /metrics, /livez and /readyz on 127.0.0.1.
    pub metrics_port: u16,
}

impl Operator {
    /// Starts the controller for namespace `ns` with the operator-wide cap `max_agents`.
    pub fn start(ns: &str, max_agents: u32) -> Self {
        Self::start_with(ns, max_agents, &[])
    }

    /// Like [`Operator::start`], with extra flags.
    pub fn start_with(ns: &str, max_agents: u32, extra: &[&str]) -> Self {
        Self::start_with_env(ns, max_agents, extra, &[])
    }

    /// Like [`Operator::start_with`], with extra environment variables.
    pub fn start_with_env(ns: &str, max_agents: u32, extra: &[&str], env: &[(&str, String)]) -> Self {
        let dir = super::scratch_dir("operator-logs");
        let log = dir.join(format!(
            "{ns}-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
        ));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        // A free port, released just before the operator binds it.
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_team-operator"))
            .args([
                "controller",
                "--namespace",
                ns,
                "--max-agents",
                &max_agents.to_string(),
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(["--unschedulable-deadline-seconds", "20"])
            .args(extra)
            .env("KUBECONFIG", controller_kubeconfig())
            .envs(super::redis_env())
            .env("RUST_LOG", "info,team_operator=debug,kube_runtime=warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap_or_else(|e| panic!("log file: {e}")))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting team-operator: {e}"));
        Self { child, log, metrics_port }
    }

    /// Held by a test while its replicas use the chart's one Lease: two tests of a suite that
    /// failed over at once would take the Lease from each other's replicas.
    pub async fn lease_guard() -> tokio::sync::MutexGuard<'static, ()> {
        static LEASE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        LEASE.lock().await
    }

    /// A replica with leader election on the chart's one Lease (lease 6 s), for failover tests.
    pub fn replica(ns: &str, identity: &str) -> Self {
        Self::replica_with(ns, identity, &[])
    }

    /// Like [`Operator::replica`], with extra flags.
    pub fn replica_with(ns: &str, identity: &str, extra: &[&str]) -> Self {
        let (lease_ns, lease) = super::identity::chart_lease();
        let flags = ["--leader-election", "--lease-namespace", lease_ns, "--lease-name", &lease, "--identity", identity];
        Self::start_with(ns, 10, &[&flags[..], &["--lease-duration-seconds", "6"], extra].concat())
    }

    /// The Prometheus text of its /metrics.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let resp = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.text().await.unwrap_or_else(|e| panic!("reading {url}: {e}"))
    }

    /// Status and body of its /readyz; None while it does not answer yet.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.metrics_port)).await.ok()?;
        Some((resp.status().as_u16(), resp.text().await.unwrap_or_default()))
    }

    /// The value of one series of its /metrics (`name{labels}` exactly as exposed), if present;
    /// None also while the process is not serving yet (just started).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until series `series` of its /metrics is `want`. Gauges follow the cluster a moment
    /// behind it, so this re-reads the endpoint (every 100 ms) until they agree or `timeout`.
    pub async fn wait_metric(&self, series: &str, want: f64, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.metric(series).await;
            if got == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series}: wanted {want}, still {got:?} after {timeout:?}\n{}",
                self.metrics().await
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// kill -9, as a crash or a node loss would.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The stack's kubeconfig acting as the chart's controller ServiceAccount, written once per
/// process.
pub fn controller_kubeconfig() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        super::identity::impersonating_kubeconfig(&super::identity::chart_user("controller"), &format!("controller-{}", std::process::id()))
    })
}
