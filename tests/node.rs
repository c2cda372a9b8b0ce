//! The local stack's real node (hack/node.sh: kubelet, containerd, runc, CNI bridge, kube-proxy,
//! CoreDNS) beside the kwok nodes. These tests fail, never skip, when the node is missing: the
//! stack runs it by default (`NODE=1`), and `make test` starts it.
//!
//! Images come from hack/images.sh (no registry): the agent image is busybox-static with the
//! scripted agents, imported when the kubelet starts; the project image (the Dockerfile's layout)
//! is written and imported by `make test` after the crate is built.
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Capabilities, Container, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, LogParams, PostParams};
use support::node::{AGENT_IMAGE, NODE_TAINT, POD_TIMEOUT, node_name, place_on_real_node, project_image, real_node};
use support::*;

/// hack/node.sh's NODE_POD_CIDR (10.244.7.0/24).
const POD_PREFIX: &str = "10.244.7.";

/// A pod for the real node with the restricted security context the operator gives members:
/// uid 65532, non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
fn restricted_pod(name: &str, script: &str) -> Pod {
    let container = restricted_container("probe", AGENT_IMAGE, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    let mut pod = Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(1),
            containers: vec![container],
            ..Default::default()
        }),
        ..Default::default()
    };
    place_on_real_node(pod.spec.get_or_insert_default());
    pod
}

fn restricted_container(name: &str, image: &str, command: Vec<String>) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("Never".into()),
        command: Some(command),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
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

#[tokio::test]
async fn teamctl_from_the_project_image_runs_in_the_agent_image() {
    let s = stack().await;
    real_node(&s.client).await;
    let ns = TestNamespace::new(&s.client, "node-teamctl").await;
    let pods: Api<Pod> = ns.api();

    // As the operator's init container does: /teamctl install DIR, then the agent image runs it.
    let tools = "/opt/agentteams/bin";
    let mount = k8s_openapi::api::core::v1::VolumeMount { name: "tools".into(), mount_path: tools.into(), ..Default::default() };
    let mut init = restricted_container("teamctl", &project_image(), vec!["/teamctl".into(), "install".into(), tools.into()]);
    init.volume_mounts = Some(vec![mount.clone()]);
    let mut pod = restricted_pod("tools", "teamctl --version && echo teamctl-ran");
    let spec = pod.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![init]);
    spec.containers[0].volume_mounts = Some(vec![mount]);
    spec.volumes =
        Some(vec![k8s_openapi::api::core::v1::Volume { name: "tools".into(), empty_dir: Some(Default::default()), ..Default::default() }]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = wait_for(&pods, "tools", POD_TIMEOUT, "pod tools to succeed (is the project image imported? `make images`)", |p| {
        matches!(pod_phase(p), Some("Succeeded" | "Failed"))
    })
    .await;
    let log = pods.logs("tools", &LogParams::default()).await.unwrap_or_default();
    assert_eq!(pod_phase(&done), Some("Succeeded"), "log:\n{log}\n{}", describe(&done));
    assert!(log.contains("teamctl-ran"), "log:\n{log}");
    ns.cleanup().await;
}

/// hack/lib.sh's CACHE_DIR.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEAM_OPERATOR_CACHE") {
        return dir.into();
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
        .join("team-operator")
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The runtime stage of the Dockerfile: its USER, ENTRYPOINT, CMD, EXPOSE and the paths the build
/// stage installs under /out (which the runtime stage copies to /).
struct DockerfileImage {
    user: String,
    entrypoint: serde_json::Value,
    cmd: serde_json::Value,
    ports: BTreeSet<String>,
    paths: BTreeSet<String>,
}

fn dockerfile_image() -> DockerfileImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut image = DockerfileImage {
        user: String::new(),
        entrypoint: serde_json::Value::Null,
        cmd: serde_json::Value::Null,
        ports: BTreeSet::new(),
        paths: BTreeSet::new(),
    };
    for line in text.lines().map(str::trim) {
        let line = line.trim_start_matches("&& ").trim_end_matches(" \\");
        if let Some(v) = line.strip_prefix("USER ") {
            image.user = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("ENTRYPOINT ") {
            image.entrypoint = serde_json::from_str(v).expect("ENTRYPOINT in exec form");
        } else if let Some(v) = line.strip_prefix("CMD ") {
            image.cmd = serde_json::from_str(v).expect("CMD in exec form");
        } else if let Some(v) = line.strip_prefix("EXPOSE ") {
            image.ports.extend(v.split_whitespace().map(|p| format!("{p}/tcp")));
        } else if line.starts_with("install ")
            && let Some(out) = line.split_whitespace().last().and_then(|p| p.strip_prefix("/out"))
        {
            image.paths.insert(out.to_string());
        }
    }
    assert!(!image.user.is_empty() && !image.paths.is_empty(), "could not read the runtime stage of {}", path.display());
    image
}

#[test]
fn project_image_agrees_with_the_dockerfile() {
    let want = dockerfile_image();
    let layout = cache_dir().join("images/project");
    assert!(
        layout.join("index.json").exists(),
        "no project image layout in {} — run `make images` (hack/images.sh project)",
        layout.display()
    );
    let index = json_file(&layout.join("index.json"));
    let manifest = json_file(&blob(&layout, index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json_file(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    let c = &config["config"];
    assert_eq!(c["User"].as_str(), Some(want.user.as_str()), "user");
    assert_eq!(c["Entrypoint"], want.entrypoint, "entrypoint");
    assert_eq!(c["Cmd"], want.cmd, "cmd");
    let ports: BTreeSet<String> = c["ExposedPorts"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    assert_eq!(ports, want.ports, "exposed ports");

    let mut files = BTreeSet::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(blob(&layout, layer["digest"].as_str().unwrap()))
            .output()
            .expect("tar on PATH");
        assert!(out.status.success(), "tar -tf failed: {}", String::from_utf8_lossy(&out.stderr));
        files.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_start_matches('.').to_string()));
    }
    for path in &want.paths {
        assert!(files.contains(path), "{path} (installed by the Dockerfile) is missing from the project image");
    }
}
