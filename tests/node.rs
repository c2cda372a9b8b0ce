//! The local stack's real node (hack/node.sh: kubelet, containerd, runc, CNI bridge, kube-proxy,
//! CoreDNS) beside the kwok nodes. These tests fail, never skip, when the node is missing: the
//! stack runs it by default (`NODE=1`), and `make test` starts it.
//!
//! Images come from hack/images.sh (no registry): the agent image is busybox-static with the
//! scripted agents, imported when the kubelet starts.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Node, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, LogParams, PostParams};
use support::*;

/// hack/node.sh's NODE_NAME (override with TEAM_OPERATOR_NODE_NAME when the stack overrides it).
fn node_name() -> String {
    std::env::var("TEAM_OPERATOR_NODE_NAME").unwrap_or_else(|_| "team-operator-node".to_string())
}

/// The taint that keeps kwok-era workloads off the real node.
const NODE_TAINT: &str = "team-operator.local/real-node";
/// Written by hack/images.sh (`agent`), imported by `hack/stack.sh up`.
const AGENT_IMAGE: &str = "localhost/team-operator/agent:dev";
/// hack/node.sh's NODE_POD_CIDR (10.244.7.0/24).
const POD_PREFIX: &str = "10.244.7.";
/// A container's first start includes the sandbox and the CNI set-up.
const POD_TIMEOUT: Duration = Duration::from_secs(90);

async fn real_node(client: &kube::Client) -> Node {
    let name = node_name();
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get_opt(&name).await {
        Ok(Some(node)) => node,
        Ok(None) => panic!(
            "no Node {name}: the stack runs without its real node; start it with `hack/stack.sh up` (NODE=1, the default) and see `hack/stack.sh status`"
        ),
        Err(e) => panic!("cannot read Node {name}: {e}"),
    }
}

/// A pod for the real node with the restricted security context the operator gives members:
/// uid 65532, non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
fn restricted_pod(name: &str, script: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            node_selector: Some([("kubernetes.io/hostname".to_string(), node_name())].into()),
            tolerations: Some(vec![Toleration {
                key: Some(NODE_TAINT.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(AGENT_IMAGE.into()),
                image_pull_policy: Some("Never".into()),
                command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                security_context: Some(SecurityContext {
                    read_only_root_filesystem: Some(true),
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn real_node_is_ready_with_an_address_and_its_taint() {
    let s = stack().await;
    let node = real_node(&s.client).await;
    let status = node.status.as_ref().expect("node status");
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "Node {} not Ready: {}", node_name(), describe(&node));
    let internal_ip = status.addresses.iter().flatten().find(|a| a.type_ == "InternalIP");
    assert!(internal_ip.is_some(), "Node {} has no InternalIP (kubectl logs/exec need it): {}", node_name(), describe(&node));
    let runtime = status.node_info.as_ref().map(|i| i.container_runtime_version.as_str()).unwrap_or_default();
    assert!(runtime.starts_with("containerd://"), "container runtime {runtime:?}");
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref()).cloned().unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == NODE_TAINT && t.effect == "NoSchedule"),
        "Node {} lacks the taint {NODE_TAINT}: {taints:?}",
        node_name()
    );
}

#[tokio::test]
async fn pod_runs_as_non_root_and_its_exit_code_reaches_status() {
    let s = stack().await;
    real_node(&s.client).await;
    let ns = TestNamespace::new(&s.client, "node-exit").await;
    let pods: Api<Pod> = ns.api();

    // uid, the Service IP of `kubernetes` through CoreDNS, a read-only root, then exit 3.
    let script = "id -u; nslookup kubernetes.default.svc.cluster.local; \
                  touch /x 2>/dev/null && echo root-writable || echo root-read-only; exit 3";
    pods.create(&PostParams::default(), &restricted_pod("probe", script)).await.unwrap();
    let done = wait_for(&pods, "probe", POD_TIMEOUT, "pod probe to fail with its exit code", |p| {
        pod_phase(p) == Some("Failed") && terminated(p).is_some()
    })
    .await;
    let t = terminated(&done).expect("terminated state");
    assert_eq!(t.exit_code, 3, "{}", describe(&done));
    let status = done.status.as_ref().unwrap();
    assert!(status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with(POD_PREFIX)), "pod IP not on the node's bridge: {status:?}");
    assert_eq!(done.spec.as_ref().unwrap().node_name.as_deref(), Some(node_name().as_str()));

    // The log comes from the kubelet through the API server (the node's InternalIP).
    let log = pods.logs("probe", &LogParams::default()).await.unwrap_or_else(|e| panic!("kubectl logs equivalent failed: {e}"));
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("65532"), "log:\n{log}");
    assert!(log.contains("10.96.0.1"), "kubernetes.default.svc.cluster.local did not resolve to the Service IP; log:\n{log}");
    assert!(log.contains("root-read-only"), "log:\n{log}");
    ns.cleanup().await;
}

#[tokio::test]
async fn pod_that_exits_zero_succeeds() {
    let s = stack().await;
    real_node(&s.client).await;
    let ns = TestNamespace::new(&s.client, "node-ok").await;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &restricted_pod("ok", "echo done")).await.unwrap();
    let done = wait_for(&pods, "ok", POD_TIMEOUT, "pod ok to succeed", |p| pod_phase(p) == Some("Succeeded")).await;
    assert_eq!(terminated(&done).map(|t| t.exit_code), Some(0), "{}", describe(&done));
    ns.cleanup().await;
}
