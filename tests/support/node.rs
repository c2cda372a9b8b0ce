//! The local stack's real node (hack/node.sh): its name and taint, the images hack/images.sh
//! imports into its containerd, and builders that put pods and agent types on it. Suites that
//! need the node fail, never skip, when it is missing ([`real_node`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec, PodTemplateSpec, Toleration};
use kube::api::Api;
use team_operator::api::AgentType;

/// The taint that keeps kwok-era workloads off the real node.
pub const NODE_TAINT: &str = "team-operator.local/real-node";
/// Written by hack/images.sh (`agent`), imported by `hack/stack.sh up`: busybox-static and the
/// scripted agents, uid 65532.
pub const AGENT_IMAGE: &str = "localhost/team-operator/agent:dev";
/// hack/images.sh's `agent-root`: the agent image whose config says root (User 0:0).
pub const AGENT_ROOT_IMAGE: &str = "localhost/team-operator/agent-root:dev";
/// Written by hack/images.sh (`project`) from the static debug build (hack/lib.sh).
pub const PROJECT_IMAGE: &str = "localhost/team-operator/team-operator:dev";
/// The project image a suite's member pods run: [`PROJECT_IMAGE`], or the one
/// `TEAM_OPERATOR_PROJECT_IMAGE` names, where worktrees that share one node import their own
/// builds under their own tags (`IMAGE_TAG=<tag> hack/images.sh project`).
pub fn project_image() -> String {
    std::env::var("TEAM_OPERATOR_PROJECT_IMAGE").unwrap_or_else(|_| PROJECT_IMAGE.to_string())
}
/// A container's first start includes the sandbox and the CNI set-up.
pub const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// hack/node.sh's NODE_IP: the node's own address, on the stack's dummy interface. Member pods
/// reach servers the tests run on it (gateway, model server, proxy); nothing else.
pub fn node_ip() -> String {
    std::env::var("TEAM_OPERATOR_NODE_IP").unwrap_or_else(|_| "10.244.0.1".to_string())
}

/// hack/node.sh's NODE_NAME (override with TEAM_OPERATOR_NODE_NAME when the stack overrides it).
pub fn node_name() -> String {
    std::env::var("TEAM_OPERATOR_NODE_NAME").unwrap_or_else(|_| "team-operator-node".to_string())
}

/// The real node's Node; panics, telling how to start it, when the stack runs without it.
pub async fn real_node(client: &kube::Client) -> Node {
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

/// Puts the pods of `spec` on the real node: its hostname as nodeSelector, its taint tolerated.
pub fn place_on_real_node(spec: &mut PodSpec) {
    spec.node_selector = Some([("kubernetes.io/hostname".to_string(), node_name())].into());
    spec.tolerations = Some(vec![Toleration {
        key: Some(NODE_TAINT.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
}

/// A container `name` of `image` running `script` with /bin/sh; images that hack/images.sh
/// imported are never pulled, any other is (and fails: no registry is reachable).
pub fn shell_container(name: &str, image: &str, script: &str) -> Container {
    let imported = image.starts_with("localhost/team-operator/");
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some(if imported { "Never" } else { "IfNotPresent" }.into()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// An agent type whose member pods run `agent` (the template's only container) on the real node,
/// with a termination grace of 1 s; `edit` changes the rest of the template's pod spec.
pub fn agent_type(name: &str, agent: Container, edit: impl FnOnce(&mut PodSpec)) -> AgentType {
    let mut spec = PodSpec { containers: vec![agent], termination_grace_period_seconds: Some(1), ..Default::default() };
    place_on_real_node(&mut spec);
    edit(&mut spec);
    AgentType { name: name.into(), template: PodTemplateSpec { metadata: None, spec: Some(spec) }, ..Default::default() }
}
