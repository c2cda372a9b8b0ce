//! `make demo`, the README's first command, as a test: hack/demo.sh installs the Helm chart on
//! the stack's real node and runs the spec-review team in real containers; it exits 0 only when
//! the team disbanded with its lead and four specialists Completed and `performance` OOM-killed by
//! the kernel, and `teamctl watch` reads it through the API server (the chart's APIService). Then
//! `hack/demo.sh down` removes the release and namespace `demo` (a demo a developer left running
//! is replaced).
mod support;

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/demo.sh"))
        .args(args)
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("run hack/demo.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn make_demo_runs_the_spec_review_team_in_real_containers() {
    let (ok, out) = demo(&[]);
    assert!(ok, "hack/demo.sh failed:\n{out}");
    assert!(out.contains("demo done: team spec-review Disbanded"), "{out}");
    // The kernel's OOM kill, as the kubelet reported it, and the lead's notice of it.
    assert!(out.contains("member performance: Failed (exit 137, OOMKilled)"), "{out}");
    assert!(out.contains("[AGENT FAILURE] @performance failed: OOMKilled (exit code 137)"), "the lead's log lacks the notice:\n{out}");
    // `helm test`: the chart's test pod reached the gateway through its Service on the node.
    assert!(out.contains("TEST SUITE:     team-operator-test") && out.contains("Phase:          Succeeded"), "helm test:\n{out}");
    // Every member ran on the real node, and the controller ran with leader election.
    assert!(out.contains("team-operator-node"), "{out}");
    assert!(out.contains("controller leader (Lease team-operator/team-operator-controller): team-operator-controller-"), "{out}");
    // `teamctl watch` reached the gateway through the API server (the chart's APIService) with
    // the admin kubeconfig's client certificate: the snapshot and its messages panel.
    assert!(out.contains("TEAM spec-review  Disbanded") && out.contains(" MESSAGES (newest last, UTC)"), "{out}");
    assert!(!out.contains("messages not shown"), "{out}");
    let (ok, out) = demo(&["down"]);
    assert!(ok, "hack/demo.sh down failed:\n{out}");
}
