//! Who the operator and the gateway are in the suites: the Helm chart's ServiceAccounts, with the
//! chart's own RBAC, reached through impersonation — so every end-to-end test also proves the
//! chart grants enough (tests/chart.rs proves it grants no more).
//!
//! The chart's ServiceAccounts and RBAC (default values: cluster-wide roles, leader election on)
//! are rendered by `helm template` for release [`RELEASE`] in namespace [`RELEASE_NS`] and
//! server-side applied once per test process.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Once;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::kubeconfig_path;

/// The chart in this repository.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/team-operator");
/// Release name of the suites' chart identities.
pub const RELEASE: &str = "e2e";
/// Namespace of the suites' chart identities (their ServiceAccounts and the leader Lease).
pub const RELEASE_NS: &str = "team-operator-e2e";

/// The chart's base name for a release (see `team-operator.fullname` in _helpers.tpl).
pub fn fullname(release: &str) -> String {
    if release.contains("team-operator") { release.to_owned() } else { format!("{release}-team-operator") }
}

/// The user name of the suites' chart ServiceAccount `component` (controller, gateway).
pub fn chart_user(component: &str) -> String {
    chart_rbac();
    format!("system:serviceaccount:{RELEASE_NS}:{}-{component}", fullname(RELEASE))
}

/// The Lease the chart lets its controller hold (rbac-controller.yaml limits it by name).
pub fn chart_lease() -> (&'static str, String) {
    chart_rbac();
    (RELEASE_NS, format!("{}-controller", fullname(RELEASE)))
}

/// Label of the namespaces a release of the chart suite serves (its own and its teams'), which
/// the suites' lead-member policy does not cover.
pub const OWN_RELEASE_LABEL: &str = "agentteams.dev/test-release";

/// Applies the chart's ServiceAccounts and RBAC for [`RELEASE`] once per process.
fn chart_rbac() {
    static APPLIED: Once = Once::new();
    APPLIED.call_once(|| {
        let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {RELEASE_NS}\n---\n");
        // The suites' lead-member policy covers only the suites' own namespaces (never `demo` or
        // a user's, where another release's controller creates the leads), and leaves alone the
        // namespaces of the chart suite's own releases, whose controllers are other accounts.
        let selector = format!(
            r#"memberPolicy.namespaceSelector={{"matchExpressions":[{{"key":"{}","operator":"Exists"}},{{"key":"{OWN_RELEASE_LABEL}","operator":"DoesNotExist"}}]}}"#,
            super::TEST_LABEL
        );
        let mut args = vec!["template", RELEASE, CHART, "--namespace", RELEASE_NS, "--set-json", &selector];
        for template in [
            "templates/serviceaccounts.yaml",
            "templates/rbac-controller.yaml",
            "templates/rbac-gateway.yaml",
            "templates/member-policy.yaml",
        ] {
            args.extend(["--show-only", template]);
        }
        let rendered = ok("helm", &args, None);
        let manifest = format!("{ns}{rendered}");
        ok(
            "kubectl",
            &["apply", "--server-side", "--force-conflicts", "--field-manager", super::FIELD_MANAGER, "-f", "-"],
            Some(manifest.as_bytes()),
        );
    });
}

/// A client of the stack's API server acting as `user`.
pub async fn impersonating(user: &str) -> Client {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kube config");
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("impersonating client")
}

/// A kubeconfig file like the stack's admin one, impersonating `user` (the `as` field), for a
/// process under test; `tag` names the file.
pub fn impersonating_kubeconfig(user: &str, tag: &str) -> PathBuf {
    let path = kubeconfig_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for entry in kc["users"].as_sequence_mut().expect("kubeconfig users") {
        entry["user"]["as"] = serde_yaml::Value::from(user);
    }
    let dir = super::scratch_dir("kubeconfigs");
    let file = dir.join(format!("{tag}.kubeconfig"));
    std::fs::write(&file, serde_yaml::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    file
}

/// Runs `tool args…` (with `stdin` piped in if given) against the stack's kubeconfig.
pub fn run(tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` is not on PATH: run `eval \"$(hack/stack.sh env)\"` (it puts the stack's kubectl and helm there)")
        }
        Err(e) => panic!("cannot run {tool}: {e}"),
    };
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).unwrap_or_else(|e| panic!("writing to {tool}: {e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {tool}: {e}"))
}

/// Everything `tool` printed.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// [`run`] that must succeed; its stdout.
pub fn ok(tool: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(tool, args, stdin);
    assert!(out.status.success(), "`{tool} {}` failed:\n{}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
