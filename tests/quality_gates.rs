//! Quality gates (issue 16, point 5) in a real container on the stack's real node: an agent type's
//! `taskCompletedCheck` refuses a member's completion of its task until the check passes, with
//! the check's output as what the agent reads, and its `idleCheck` turns the member's going idle
//! into another turn carrying the check's output. The member runs `teamctl run --runtime exec`
//! (teamctl from the operator's init container, the gateway on the node's address); a shell
//! script is its agent, which is all a gate needs: the gates are teamctl's, whatever the runtime.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, Volume, VolumeMount};
use kube::api::{Api, ListParams, LogParams, PostParams};
use support::node::{AGENT_IMAGE, POD_TIMEOUT, agent_type, node_ip, project_image, real_node, shell_container};
use support::operator::Operator;
use support::teams::{lead_name, member, team};
use support::*;
use team_operator::api::{Member, MemberPhase, QualityCheck, TaskState, Team, TeamTask};

/// What the task gate prints while /work/built is missing.
const BUILD_FIRST: &str = "2 tests failed: build first";
/// What the idle gate prints while /work/reported is missing.
const REPORT_MISSING: &str = "no report in /work/reported";

/// The member's agent: turn 1 creates its task, tries to complete it before the build (which the
/// gate must refuse), builds, completes it; turn 2 must carry the idle check's output and writes
/// the report. Any other path exits non-zero, which fails the member.
const AGENT: &str = r#"
case "$TEAM_TURN" in
1)
  task=$(teamctl task create build --owner "$MEMBER" -o name) || exit 5
  task=${task#*/}
  teamctl task update "$task" --state in_progress || exit 5
  if teamctl task update "$task" --state completed --result built; then echo "UNEXPECTED: completed before the build"; exit 9; fi
  touch /work/built
  teamctl task update "$task" --state completed --result built || exit 6
  ;;
2)
  turn=$(cat)
  case "$turn" in
  *"no report in /work/reported"*) echo "turn 2 read the idle check"; touch /work/reported ;;
  *) echo "turn 2 without the idle check's output: $turn"; exit 8 ;;
  esac
  ;;
*) echo "unexpected turn $TEAM_TURN"; exit 7 ;;
esac
"#;

fn sh(script: &str) -> QualityCheck {
    QualityCheck { command: vec!["sh".into(), "-c".into(), script.into()], timeout_seconds: 30 }
}

#[tokio::test]
async fn a_task_gate_refuses_an_early_completion_and_an_idle_gate_keeps_the_member_working() {
    let s = stack().await;
    real_node(&s.client).await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gates").await;
    let gw = fixture::start_gateway_on(&s, Default::default(), &node_ip()).await;
    let _op = Operator::start_with(ns.name(), 10, &["--gateway-url", &gw.url, "--teamctl-image", &project_image()]);

    let command = format!("exec teamctl run --runtime exec -- sh -c '{}'", AGENT.replace('\'', r"'\''"));
    let mut builder = agent_type("builder", shell_container("agent", AGENT_IMAGE, &command), |spec| {
        spec.volumes = Some(vec![Volume { name: "work".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }]);
        spec.containers[0].volume_mounts =
            Some(vec![VolumeMount { name: "work".into(), mount_path: "/work".into(), ..Default::default() }]);
    });
    builder.task_completed_check = Some(sh(&format!("test -f /work/built || {{ echo '{BUILD_FIRST}'; exit 1; }}")));
    builder.idle_check = Some(sh(&format!("test -f /work/reported || {{ echo '{REPORT_MISSING}' >&2; exit 4; }}")));
    let mut t = team("gates", 2);
    t.spec.member_timeout_seconds = 3;
    t.spec.agents.push(builder);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_name(&ns, "gates").await;
    let mut m = member("builder", "gates", None);
    m.spec.agent = "builder".into();
    ns.api::<Member>().create(&PostParams::default(), &m).await.expect("member");

    let members: Api<Member> = ns.api();
    let done =
        wait_for(&members, "builder", POD_TIMEOUT + Duration::from_secs(60), "the gated member to finish", |m| m.phase().is_terminal())
            .await;
    let pod = done.status.as_ref().and_then(|s| s.pod_name.clone()).unwrap_or_else(|| panic!("no podName: {}", describe(&done)));
    let params = LogParams { container: Some("agent".into()), ..Default::default() };
    let log = ns.api::<Pod>().logs(&pod, &params).await.unwrap_or_else(|e| format!("(no log of pod {pod}: {e})"));
    assert_eq!(done.phase(), MemberPhase::Completed, "{}\nlog:\n{log}", describe(&done));

    // The early completion was refused with the gate's output, which is what the agent read.
    assert!(log.contains("check_failed: task ") && log.contains("was not completed"), "the refusal the agent saw:\n{log}");
    assert!(log.contains("taskCompletedCheck `sh -c test -f /work/built") && log.contains(BUILD_FIRST), "{log}");
    assert!(log.contains("the idle check refused after turn 1"), "{log}");
    assert!(log.contains("turn 2 read the idle check"), "{log}");

    // The second completion passed the gate: the board shows the task completed by its owner.
    let tasks = ns.api::<TeamTask>().list(&ListParams::default()).await.expect("tasks").items;
    let build = tasks.iter().find(|t| t.spec.subject == "build").unwrap_or_else(|| panic!("no task build: {tasks:?}"));
    let status = build.status.as_ref();
    assert_eq!(status.and_then(|s| s.state), Some(TaskState::Completed), "{}", describe(build));
    assert_eq!(status.and_then(|s| s.result.as_deref()), Some("built"), "{}", describe(build));
    ns.cleanup().await;
}
