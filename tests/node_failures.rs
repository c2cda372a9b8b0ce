//! How member pods fail on a real kubelet (issue 12, point 5), on the stack's real node: what the
//! Member says while its pod cannot start, when it gives up, and that the lead hears of it. The
//! operator runs as its real binary; member pods come from the Team's agent templates, as a
//! user's would. Like tests/node.rs these fail, never skip, when the node is missing.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, HostPathVolumeSource, Pod, SecretKeySelector, Volume, VolumeMount};
use kube::api::{Api, LogParams, PostParams};
use support::node::{AGENT_IMAGE, AGENT_ROOT_IMAGE, POD_TIMEOUT, agent_type, real_node, shell_container};
use support::operator::Operator;
use support::teams::{failure_notice, lead_name, member, team};
use support::*;
use team_operator::api::{AgentType, Member, MemberPhase, Team};

/// The operator's `--start-deadline-seconds` in these tests: long enough for the kubelet to
/// report why a pod waits (the sandbox comes first), short enough to wait for.
const START_DEADLINE: u64 = 20;
/// No registry is reachable (hack/node.sh sends every registry to 127.0.0.1:1, which refuses at
/// once), so this image can never be pulled and no pull leaves the machine.
const MISSING_IMAGE: &str = "127.0.0.1:1/missing:1";
/// From a pod's creation to its member's failure at the start deadline, with room for the
/// scheduler, the sandbox and a loaded machine.
const PAST_DEADLINE: Duration = Duration::from_secs(START_DEADLINE + 60);

/// A namespace, the operator with the short start deadline, and a Team `name` (cap
/// `max_agents`, lead on a kwok node) with the given agent types; returns the lead's name too.
async fn team_with(
    prefix: &str,
    labels: &[(&str, &str)],
    name: &str,
    max_agents: i32,
    agents: Vec<AgentType>,
) -> (TestNamespace, Operator, String) {
    let s = stack().await;
    real_node(&s.client).await;
    install_crds(&s.client).await;
    let ns = TestNamespace::labelled(&s.client, prefix, labels).await;
    let op = Operator::start_with(ns.name(), 10, &["--start-deadline-seconds", &START_DEADLINE.to_string()]);
    let mut t = team(name, max_agents);
    t.spec.agents.extend(agents);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let lead = lead_name(&ns, name).await;
    (ns, op, lead)
}

/// Creates Member `name` of agent type `agent` in `team`.
async fn create_member(ns: &TestNamespace, team: &str, name: &str, agent: &str) {
    let mut m = member(name, team, None);
    m.spec.agent = agent.into();
    ns.api::<Member>().create(&PostParams::default(), &m).await.unwrap_or_else(|e| panic!("creating Member {name}: {e}"));
}

fn status(m: &Member) -> (MemberPhase, &str, &str) {
    let s = m.status.as_ref();
    (m.phase(), s.and_then(|s| s.reason.as_deref()).unwrap_or(""), s.and_then(|s| s.message.as_deref()).unwrap_or(""))
}

/// Status and reason of the member's condition `type_`.
fn condition<'a>(m: &'a Member, type_: &str) -> Option<(&'a str, &'a str)> {
    let c = m.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.as_str(), c.reason.as_str()))
}

/// Asserts the Failed member's status records that `lead` was told.
fn assert_lead_notified(m: &Member) {
    let conditions = m.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let notified = conditions.iter().find(|c| c.type_ == "LeadNotified");
    assert_eq!(notified.map(|c| (c.status.as_str(), c.reason.as_str())), Some(("True", "NoticeSent")), "{}", describe(m));
}

/// Waits until the member's pod is gone (the member failed while it had not ended).
async fn wait_pod_removed(ns: &TestNamespace, m: &Member) {
    let pod = m.status.as_ref().and_then(|s| s.pod_name.clone()).unwrap_or_else(|| panic!("no podName: {}", describe(m)));
    wait_deleted(&ns.api::<Pod>(), &pod, None, TIMEOUT, "the pod of the failed member to be removed").await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_shows_while_starting_then_fails_frees_the_slot_and_tells_the_lead() {
    let broken = agent_type("broken", shell_container("agent", MISSING_IMAGE, "echo never"), |_| {});
    let worker = agent_type("worker", shell_container("agent", AGENT_IMAGE, "echo worked"), |_| {});
    let (ns, _op, lead) = team_with("fail-pull", &[], "pull", 1, vec![broken, worker]).await;
    let members: Api<Member> = ns.api();
    create_member(&ns, "pull", "unpullable", "broken").await;
    let pulling = |m: &Member| matches!(status(m).1, "ErrImagePull" | "ImagePullBackOff");
    let starting = wait_for(&members, "unpullable", POD_TIMEOUT, "Starting with the image pull's reason", |m| {
        m.phase() == MemberPhase::Starting && pulling(m)
    })
    .await;
    let (_, waiting, message) = status(&starting);
    assert!(message.contains("container agent is waiting") && message.contains(MISSING_IMAGE), "{}", describe(&starting));
    assert_eq!(condition(&starting, "Ready"), Some(("False", waiting)), "Ready says why it is not: {}", describe(&starting));

    // maxAgents 1: the next member waits for the slot the unpullable pod holds.
    create_member(&ns, "pull", "next", "worker").await;
    let failed =
        wait_for(&members, "unpullable", PAST_DEADLINE, "Failed at the start deadline", |m| m.phase() == MemberPhase::Failed).await;
    assert!(pulling(&failed), "{}", describe(&failed));
    let (_, reason, message) = status(&failed);
    assert!(message.contains(&format!("did not start within {START_DEADLINE}s")) && message.contains(MISSING_IMAGE), "{message}");
    assert_lead_notified(&failed);
    assert_eq!(condition(&failed, "Failed"), Some(("True", reason)), "{}", describe(&failed));
    let notice = failure_notice(ns.name(), "pull", &lead, "broken").await;
    assert!(notice.contains(reason), "{notice}");
    wait_pod_removed(&ns, &failed).await;

    let next = wait_for(&members, "next", POD_TIMEOUT, "the queued member to get the slot and complete", |m| m.phase().is_terminal()).await;
    assert_eq!(next.phase(), MemberPhase::Completed, "{}", describe(&next));
    let started = next.status.as_ref().and_then(|s| s.start_time.clone()).expect("startTime");
    let freed = failed.status.as_ref().and_then(|s| s.completion_time.clone()).expect("completionTime");
    assert!(started.0 >= freed.0, "next started at {started:?}, before the unpullable member failed at {freed:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn an_image_that_runs_as_root_gets_uid_65532_from_the_operator_and_runs() {
    // Neither the template nor the container names a user; the image's config says root.
    let rooted = agent_type("rooted", shell_container("agent", AGENT_ROOT_IMAGE, "id -u; id -g"), |_| {});
    let (ns, _op, _) = team_with("fail-root", &[], "root", 1, vec![rooted]).await;
    create_member(&ns, "root", "as-root", "rooted").await;
    let done = wait_for(&ns.api::<Member>(), "as-root", POD_TIMEOUT, "the member to finish", |m| m.phase().is_terminal()).await;
    assert_eq!((done.phase(), done.status.as_ref().and_then(|s| s.exit_code)), (MemberPhase::Completed, Some(0)), "{}", describe(&done));
    let pod = done.status.and_then(|s| s.pod_name).expect("podName");
    let log = ns.api::<Pod>().logs(&pod, &LogParams::default()).await.unwrap_or_else(|e| panic!("logs of {pod}: {e}"));
    assert_eq!(log.lines().collect::<Vec<_>>(), ["65532", "65532"], "uid and gid in the container");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_failing_init_container_fails_its_member_at_once_naming_the_container() {
    let checked = agent_type("checked", shell_container("agent", AGENT_IMAGE, "echo never"), |spec| {
        spec.init_containers = Some(vec![shell_container("check", AGENT_IMAGE, "echo checking; exit 1")]);
    });
    let (ns, _op, lead) = team_with("fail-init", &[], "init", 1, vec![checked]).await;
    create_member(&ns, "init", "checked", "checked").await;
    let failed = wait_for(&ns.api::<Member>(), "checked", POD_TIMEOUT, "Failed", |m| m.phase().is_terminal()).await;
    let (phase, reason, message) = status(&failed);
    assert_eq!((phase, reason), (MemberPhase::Failed, "InitContainerFailed"), "{}", describe(&failed));
    assert!(message.contains("init container check exited with code 1 (Error)"), "{message}");
    assert_lead_notified(&failed);
    let notice = failure_notice(ns.name(), "init", &lead, "checked").await;
    assert!(notice.contains("InitContainerFailed") && notice.contains("init container check"), "{notice}");
    ns.cleanup().await;
}

/// A missing Secret is a waiting reason the kubelet retries (the Secret may be created after the
/// Team), so it is shown while Starting and final only at the start deadline.
#[tokio::test]
async fn a_missing_secret_shows_while_starting_then_fails_its_member_at_the_start_deadline() {
    let mut agent = shell_container("agent", AGENT_IMAGE, "echo never");
    agent.env = Some(vec![EnvVar {
        name: "MODEL_API_KEY".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: "missing".into(), key: "api-key".into(), optional: None }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let keyless = agent_type("keyless", agent, |_| {});
    let (ns, _op, lead) = team_with("fail-secret", &[], "secret", 1, vec![keyless]).await;
    create_member(&ns, "secret", "keyless", "keyless").await;
    let members: Api<Member> = ns.api();
    let starting = wait_for(&members, "keyless", POD_TIMEOUT, "Starting with CreateContainerConfigError", |m| {
        status(m).0 == MemberPhase::Starting && status(m).1 == "CreateContainerConfigError"
    })
    .await;
    assert!(status(&starting).2.contains("secret \"missing\" not found"), "{}", describe(&starting));
    let failed = wait_for(&members, "keyless", PAST_DEADLINE, "Failed at the start deadline", |m| m.phase().is_terminal()).await;
    let (phase, reason, message) = status(&failed);
    assert_eq!((phase, reason), (MemberPhase::Failed, "CreateContainerConfigError"), "{}", describe(&failed));
    assert!(message.contains("container agent is waiting") && message.contains("secret \"missing\" not found"), "{message}");
    assert_lead_notified(&failed);
    failure_notice(ns.name(), "secret", &lead, "keyless").await;
    wait_pod_removed(&ns, &failed).await;
    ns.cleanup().await;
}

/// A namespace enforcing `restricted` refuses a template with a hostPath volume (the operator
/// overrides security contexts a template leaves out, never its volumes): PodRejected with the
/// API server's message after a few tries. A template that leaves everything to the operator
/// passes the same namespace and runs on the node.
#[tokio::test]
async fn a_pod_refused_by_restricted_pod_security_fails_its_member_with_the_api_servers_message() {
    let mount = VolumeMount { name: "host".into(), mount_path: "/host".into(), ..Default::default() };
    let mut agent = shell_container("agent", AGENT_IMAGE, "ls /host");
    agent.volume_mounts = Some(vec![mount]);
    let on_host = agent_type("on-host", agent, |spec| {
        spec.volumes = Some(vec![Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource { path: "/tmp".into(), type_: None }),
            ..Default::default()
        }]);
    });
    let plain = agent_type("plain", shell_container("agent", AGENT_IMAGE, "echo passed"), |_| {});
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let (ns, _op, lead) = team_with("fail-podsec", &restricted, "podsec", 2, vec![on_host, plain]).await;
    let members: Api<Member> = ns.api();
    let created = tokio::time::Instant::now();
    create_member(&ns, "podsec", "on-host", "on-host").await;
    create_member(&ns, "podsec", "plain", "plain").await;
    let failed = wait_for(&members, "on-host", TIMEOUT, "Failed as PodRejected", |m| m.phase().is_terminal()).await;
    let (phase, reason, message) = status(&failed);
    assert_eq!((phase, reason), (MemberPhase::Failed, "PodRejected"), "{}", describe(&failed));
    assert!(message.contains("violates PodSecurity \"restricted") && message.contains("hostPath"), "{message}");
    eprintln!("on-host refused for good {:?} after its creation", created.elapsed());
    let notice = failure_notice(ns.name(), "podsec", &lead, "on-host").await;
    assert!(notice.contains("PodRejected"), "{notice}");

    let plain = wait_for(&members, "plain", POD_TIMEOUT, "the compliant member to finish", |m| m.phase().is_terminal()).await;
    assert_eq!(plain.phase(), MemberPhase::Completed, "{}", describe(&plain));
    ns.cleanup().await;
}
