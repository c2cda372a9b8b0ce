//! What a member's status should say, derived from its pod alone: pure, so every mapping of
//! rule 3 (Succeeded → Completed; Failed, evicted, deleted, unschedulable or not started in time →
//! Failed) is a unit test.
//!
//! A pod that cannot start stays Pending: the kubelet keeps retrying an image pull
//! (ErrImagePull / ImagePullBackOff) or a missing Secret or ConfigMap
//! (CreateContainerConfigError), because either may be fixed from outside (a registry back, the
//! Secret created after the Team). So these are shown while the member is Starting, and only the
//! start deadline makes them final; that frees the slot the pod holds. A failed init container
//! fails the pod itself (`restartPolicy: Never`), so its member fails at once.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, PodCondition, PodStatus};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::MemberPhase;

/// Reason of a member whose pod failed in an init container (the agent never ran).
pub const INIT_CONTAINER_FAILED: &str = "InitContainerFailed";
/// Reason of a member whose pod did not start in time while no container said why (the
/// kubelet's reasons, such as ErrImagePull, are used when there is one).
pub const START_DEADLINE_EXCEEDED: &str = "StartDeadlineExceeded";
/// Waiting reasons of a container on its normal way to start. Not shown on the member: each
/// would cost a status write per member and say no more than Starting does.
const STARTING_NORMALLY: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// The pod-derived part of a member's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Phase the member should be in.
    pub phase: MemberPhase,
    /// Machine-readable cause: of a terminal phase, or of a Starting member's wait.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Exit code of the agent container.
    pub exit_code: Option<i32>,
}

impl Observed {
    fn phase(phase: MemberPhase) -> Self {
        Self { phase, reason: None, message: None, exit_code: None }
    }

    /// A Failed status with `reason`.
    pub fn failed(reason: &str, message: String, exit_code: Option<i32>) -> Self {
        Self { phase: MemberPhase::Failed, reason: Some(reason.into()), message: Some(message), exit_code }
    }

    fn starting(reason: &str, message: String) -> Self {
        Self { phase: MemberPhase::Starting, reason: Some(reason.into()), message: Some(message), exit_code: None }
    }
}

/// How long a member's pod may take to get going before the member fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Unschedulable this long, since the scheduler said so.
    pub unschedulable: SignedDuration,
    /// Scheduled and not running this long (an image that cannot be pulled, a missing Secret),
    /// counted from scheduling or from the end of the last init container; a running init
    /// container stops the clock.
    pub start: SignedDuration,
}

/// Derives the member's phase from its pod. `idle`: the member's Waiting condition holds (the
/// gateway sets it while the agent waits for messages), so a running member reads Idle. `deadlines` bound how long a pod may stay
/// unschedulable or not started; the second value is when to look again if one has not passed.
pub fn from_pod(pod: &Pod, idle: bool, now: Timestamp, deadlines: Deadlines) -> (Observed, Option<SignedDuration>) {
    let status = pod.status.clone().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    match status.phase.as_deref() {
        Some("Succeeded") => (Observed { exit_code: Some(0), ..Observed::phase(MemberPhase::Completed) }, None),
        Some("Failed") => (pod_failed(&status, name), None),
        _ if pod.metadata.deletion_timestamp.is_some() => {
            (Observed::failed("PodDeleted", format!("pod {name} was deleted before it finished"), None), None)
        }
        Some("Running") => (Observed::phase(if idle { MemberPhase::Idle } else { MemberPhase::Active }), None),
        _ => match unschedulable(&status) {
            Some(cond) => not_scheduled(pod, cond, name, now, deadlines.unschedulable),
            None => not_started(pod, &status, name, now, deadlines.start),
        },
    }
}

/// A Failed pod: why, from the pod (an eviction), else from a failed init container, else from
/// the agent container's termination.
fn pod_failed(status: &PodStatus, name: &str) -> Observed {
    if status.reason.is_none()
        && let Some((container, t)) = failed_init_container(status)
    {
        let why = t.reason.as_deref().unwrap_or("Error");
        let mut message = format!("pod {name} failed: init container {container} exited with code {} ({why})", t.exit_code);
        if let Some(detail) = t.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(&format!(": {detail}"));
        }
        // The agent never ran: there is no exit code of its to report.
        return Observed::failed(INIT_CONTAINER_FAILED, message, None);
    }
    let terminated = status.container_statuses.iter().flatten().next().and_then(|c| {
        c.state.as_ref().and_then(|s| s.terminated.clone()).or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()))
    });
    let exit_code = terminated.as_ref().map(|t| t.exit_code);
    let reason = status.reason.clone().or_else(|| terminated.as_ref().and_then(|t| t.reason.clone())).unwrap_or_else(|| "PodFailed".into());
    // The kubelet ends its own sentences ("… limit of containers 4Mi. "); the messages built on
    // this one (the retry's, the lead's notice) add their own punctuation.
    let detail = status
        .message
        .clone()
        .or_else(|| terminated.as_ref().and_then(|t| t.message.clone()))
        .map(|d| d.trim().trim_end_matches('.').to_owned())
        .filter(|d| !d.is_empty());
    let message = match (exit_code, detail) {
        (Some(code), Some(d)) => format!("pod {name} failed ({reason}, exit code {code}): {d}"),
        (Some(code), None) => format!("pod {name} failed ({reason}, exit code {code})"),
        (None, Some(d)) => format!("pod {name} failed ({reason}): {d}"),
        (None, None) => format!("pod {name} failed ({reason})"),
    };
    Observed::failed(&reason, message, exit_code)
}

/// The first init container that exited non-zero, with its termination.
fn failed_init_container(status: &PodStatus) -> Option<(&str, &ContainerStateTerminated)> {
    status.init_container_statuses.iter().flatten().find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref().filter(|t| t.exit_code != 0)?;
        Some((c.name.as_str(), t))
    })
}

fn unschedulable(status: &PodStatus) -> Option<&PodCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
}

/// An unschedulable pod: Starting, saying so, until the deadline fails it.
fn not_scheduled(
    pod: &Pod,
    cond: &PodCondition,
    name: &str,
    now: Timestamp,
    deadline: SignedDuration,
) -> (Observed, Option<SignedDuration>) {
    let since =
        cond.last_transition_time.as_ref().map(|t| t.0).or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0)).unwrap_or(now);
    let waited = now.duration_since(since);
    let detail = cond.message.clone().unwrap_or_default();
    if waited >= deadline {
        let message = format!("pod {name} could not be scheduled for {}s: {detail}", deadline.as_secs());
        (Observed::failed("Unschedulable", message, None), None)
    } else {
        (Observed::starting("Unschedulable", format!("pod {name} cannot be scheduled yet: {detail}")), Some(deadline - waited))
    }
}

/// A container that waits, as the kubelet reports it.
struct Waiting<'a> {
    container: &'a str,
    init: bool,
    reason: &'a str,
    message: Option<&'a str>,
}

impl Waiting<'_> {
    /// Whether this is a reason to show: not the normal course of a start.
    fn telling(&self) -> bool {
        !STARTING_NORMALLY.contains(&self.reason)
    }
}

impl std::fmt::Display for Waiting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.init { "init container" } else { "container" };
        write!(f, "{kind} {} is waiting ({})", self.container, self.reason)?;
        match self.message.filter(|m| !m.is_empty()) {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

/// The waiting container that says most about why the pod has not started: the first with a
/// telling reason, init containers first (they run first), else the first waiting at all.
fn waiting(status: &PodStatus) -> Option<Waiting<'_>> {
    let init = status.init_container_statuses.iter().flatten().map(|c| (c, true));
    let main = status.container_statuses.iter().flatten().map(|c| (c, false));
    let all: Vec<Waiting<'_>> = init
        .chain(main)
        .filter_map(|(c, init)| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(Waiting { container: &c.name, init, reason: w.reason.as_deref().unwrap_or("Waiting"), message: w.message.as_deref() })
        })
        .collect();
    let telling = all.iter().position(Waiting::telling).unwrap_or(0);
    all.into_iter().nth(telling)
}

/// When the start clock started: at scheduling, or when the last init container ended. None
/// while it does not run: the pod is not scheduled yet, or an init container is running (the
/// pod is getting on; a restartable sidecar, which runs on, does not count).
fn start_clock(pod: &Pod, status: &PodStatus) -> Option<Timestamp> {
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let init = status.init_container_statuses.iter().flatten();
    if init.clone().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()) && !sidecars.contains(&c.name.as_str())) {
        return None;
    }
    let scheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "True")?;
    let scheduled = scheduled.last_transition_time.as_ref().or(pod.metadata.creation_timestamp.as_ref()).map(|t| t.0)?;
    let init_ended = init.filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)).max();
    Some(init_ended.map_or(scheduled, |ended| ended.max(scheduled)))
}

/// A scheduled pod whose containers have not all started: Starting, with the kubelet's reason
/// when it tells something (ErrImagePull, CreateContainerConfigError, …), until the start
/// deadline fails it with that reason.
fn not_started(pod: &Pod, status: &PodStatus, name: &str, now: Timestamp, deadline: SignedDuration) -> (Observed, Option<SignedDuration>) {
    let waiting = waiting(status);
    let telling = waiting.as_ref().filter(|w| w.telling());
    let starting = match telling {
        Some(w) => Observed::starting(w.reason, format!("pod {name}: {w}")),
        None => Observed::phase(MemberPhase::Starting),
    };
    let Some(since) = start_clock(pod, status) else { return (starting, None) };
    let waited = now.duration_since(since);
    if waited < deadline {
        return (starting, Some(deadline - waited));
    }
    let reason = telling.map_or(START_DEADLINE_EXCEEDED, |w| w.reason);
    let detail = waiting.map(|w| format!(": {w}")).unwrap_or_default();
    (Observed::failed(reason, format!("pod {name} did not start within {}s{detail}", deadline.as_secs()), None), None)
}

/// The status of a member whose pod vanished while it ran.
pub fn pod_gone(pod_name: &str) -> Observed {
    Observed::failed("PodDeleted", format!("pod {pod_name} was deleted before it finished"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition,
        PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    fn terminated(p: &mut Pod, code: i32, reason: &str) {
        p.status.get_or_insert_with(Default::default).container_statuses = Some(vec![ContainerStatus {
            name: "agent".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: code, reason: Some(reason.into()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }

    fn status(p: &mut Pod) -> &mut PodStatus {
        p.status.get_or_insert_with(Default::default)
    }

    fn state(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus { name: name.into(), state: Some(state), ..Default::default() }
    }

    fn waiting_state(reason: &str, message: Option<&str>) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: message.map(Into::into) }),
            ..Default::default()
        }
    }

    /// A Pending pod scheduled at `at`.
    fn scheduled(at: Timestamp) -> Pod {
        let mut p = pod("Pending");
        status(&mut p).conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(Time(at)),
            ..Default::default()
        }]);
        p
    }

    const DEADLINES: Deadlines = Deadlines { unschedulable: SignedDuration::from_secs(300), start: SignedDuration::from_secs(300) };
    const PULL_ERROR: &str = "failed to pull and unpack image \"127.0.0.1:1/missing:1\": connect: connection refused";

    #[test]
    fn succeeded_completes() {
        let (o, _) = from_pod(&pod("Succeeded"), false, Timestamp::now(), DEADLINES);
        assert_eq!(o.phase, MemberPhase::Completed);
        assert_eq!(o.exit_code, Some(0));
    }

    #[test]
    fn oom_killed_fails_with_exit_code() {
        let mut p = pod("Failed");
        terminated(&mut p, 137, "OOMKilled");
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINES);
        assert_eq!(o.phase, MemberPhase::Failed);
        assert_eq!(o.exit_code, Some(137));
        assert_eq!(o.reason.as_deref(), Some("OOMKilled"));
        assert!(o.message.unwrap_or_default().contains("exit code 137"));
    }

    #[test]
    fn evicted_fails_with_pod_reason() {
        let mut p = pod("Failed");
        status(&mut p).reason = Some("Evicted".into());
        status(&mut p).message = Some("node low on memory".into());
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINES);
        assert_eq!(o.reason.as_deref(), Some("Evicted"));
    }

    #[test]
    fn an_eviction_for_ephemeral_storage_reads_evicted_with_the_kubelets_message_and_the_killed_containers_code() {
        // As the kubelet's eviction manager leaves such a pod (tests/retries.rs evicts one).
        let mut p = pod("Failed");
        terminated(&mut p, 137, "Error");
        status(&mut p).reason = Some("Evicted".into());
        status(&mut p).message = Some("Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ".into());
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref(), o.exit_code), (MemberPhase::Failed, Some("Evicted"), Some(137)));
        let message = "pod p failed (Evicted, exit code 137): Pod ephemeral local storage usage exceeds the total limit of containers 4Mi";
        assert_eq!(o.message.as_deref(), Some(message), "no dangling period or space for the texts built on it");
        status(&mut p).message = Some(" . ".into());
        assert_eq!(from_pod(&p, false, Timestamp::now(), DEADLINES).0.message.as_deref(), Some("pod p failed (Evicted, exit code 137)"));
    }

    #[test]
    fn running_is_active_or_idle() {
        assert_eq!(from_pod(&pod("Running"), false, Timestamp::now(), DEADLINES).0.phase, MemberPhase::Active);
        assert_eq!(from_pod(&pod("Running"), true, Timestamp::now(), DEADLINES).0.phase, MemberPhase::Idle);
    }

    #[test]
    fn deleting_a_running_pod_fails_the_member() {
        let mut p = pod("Running");
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(from_pod(&p, false, Timestamp::now(), DEADLINES).0.reason.as_deref(), Some("PodDeleted"));
    }

    #[test]
    fn unschedulable_says_so_while_starting_and_fails_past_the_deadline() {
        let now = Timestamp::now();
        let mut p = pod("Pending");
        status(&mut p).conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/5 nodes are available".into()),
            last_transition_time: Some(Time(now - SignedDuration::from_secs(100))),
            ..Default::default()
        }]);
        let (o, again) = from_pod(&p, false, now, DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Starting, Some("Unschedulable")));
        assert!(o.message.unwrap_or_default().contains("0/5 nodes are available"));
        assert_eq!(again, Some(SignedDuration::from_secs(200)));
        let (o, _) = from_pod(&p, false, now + SignedDuration::from_secs(250), DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Failed, Some("Unschedulable")));
    }

    #[test]
    fn an_image_that_cannot_be_pulled_shows_while_starting_then_fails_with_its_reason() {
        let now = Timestamp::now();
        let mut p = scheduled(now - SignedDuration::from_secs(100));
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("ErrImagePull", Some(PULL_ERROR)))]);
        let (o, again) = from_pod(&p, false, now, DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Starting, Some("ErrImagePull")));
        let message = o.message.unwrap_or_default();
        assert!(message.contains("container agent is waiting (ErrImagePull)") && message.contains(PULL_ERROR), "{message}");
        assert_eq!(again, Some(SignedDuration::from_secs(200)));

        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("ImagePullBackOff", Some("Back-off pulling image")))]);
        let (o, again) = from_pod(&p, false, now + SignedDuration::from_secs(300), DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Failed, Some("ImagePullBackOff")));
        let message = o.message.unwrap_or_default();
        assert!(message.contains("did not start within 300s") && message.contains("container agent"), "{message}");
        assert_eq!(again, None);
    }

    #[test]
    fn a_missing_secret_shows_while_starting_then_fails_past_the_deadline() {
        let now = Timestamp::now();
        let mut p = scheduled(now - SignedDuration::from_secs(301));
        status(&mut p).container_statuses =
            Some(vec![state("agent", waiting_state("CreateContainerConfigError", Some("secret \"missing\" not found")))]);
        let (o, _) = from_pod(&p, false, now, DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Failed, Some("CreateContainerConfigError")));
        assert!(o.message.unwrap_or_default().contains("secret \"missing\" not found"));
    }

    #[test]
    fn a_normal_start_shows_no_reason_and_a_stuck_one_fails_as_start_deadline_exceeded() {
        let now = Timestamp::now();
        let mut p = scheduled(now - SignedDuration::from_secs(10));
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("ContainerCreating", None))]);
        let (o, again) = from_pod(&p, false, now, DEADLINES);
        assert_eq!(o, Observed::phase(MemberPhase::Starting), "no status write for the normal course of a start");
        assert_eq!(again, Some(SignedDuration::from_secs(290)));
        let (o, _) = from_pod(&p, false, now + SignedDuration::from_secs(290), DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref()), (MemberPhase::Failed, Some(START_DEADLINE_EXCEEDED)));
        assert!(o.message.unwrap_or_default().contains("container agent is waiting (ContainerCreating)"));
    }

    #[test]
    fn an_init_containers_wait_is_named_before_the_agents() {
        let now = Timestamp::now();
        let mut p = scheduled(now);
        status(&mut p).init_container_statuses = Some(vec![state("teamctl", waiting_state("ErrImagePull", Some(PULL_ERROR)))]);
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("PodInitializing", None))]);
        let (o, _) = from_pod(&p, false, now, DEADLINES);
        assert_eq!(o.reason.as_deref(), Some("ErrImagePull"));
        assert!(o.message.unwrap_or_default().contains("init container teamctl is waiting"));
    }

    #[test]
    fn a_running_init_container_stops_the_start_clock_and_its_end_restarts_it() {
        let now = Timestamp::now();
        let mut p = scheduled(now - SignedDuration::from_secs(1000));
        let running = ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() };
        status(&mut p).init_container_statuses = Some(vec![state("clone", running.clone())]);
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("PodInitializing", None))]);
        assert_eq!(from_pod(&p, false, now, DEADLINES), (Observed::phase(MemberPhase::Starting), None));

        // A restartable sidecar runs on: it does not stop the clock.
        p.spec = Some(PodSpec {
            init_containers: Some(vec![Container { name: "clone".into(), restart_policy: Some("Always".into()), ..Default::default() }]),
            ..Default::default()
        });
        assert_eq!(from_pod(&p, false, now, DEADLINES).0.reason.as_deref(), Some(START_DEADLINE_EXCEEDED));

        p.spec = None;
        let ended = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                finished_at: Some(Time(now - SignedDuration::from_secs(100))),
                ..Default::default()
            }),
            ..Default::default()
        };
        status(&mut p).init_container_statuses = Some(vec![state("clone", ended)]);
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("ErrImagePull", Some(PULL_ERROR)))]);
        let (o, again) = from_pod(&p, false, now, DEADLINES);
        assert_eq!((o.phase, again), (MemberPhase::Starting, Some(SignedDuration::from_secs(200))));
    }

    #[test]
    fn a_pod_not_scheduled_yet_has_no_start_deadline() {
        let mut p = pod("Pending");
        p.metadata.creation_timestamp = Some(Time(Timestamp::now() - SignedDuration::from_secs(1000)));
        assert_eq!(from_pod(&p, false, Timestamp::now(), DEADLINES), (Observed::phase(MemberPhase::Starting), None));
    }

    #[test]
    fn a_failed_init_container_fails_the_member_naming_it() {
        let mut p = pod("Failed");
        let failed = ContainerState {
            terminated: Some(ContainerStateTerminated { exit_code: 1, reason: Some("Error".into()), ..Default::default() }),
            ..Default::default()
        };
        status(&mut p).init_container_statuses = Some(vec![state("check", failed)]);
        status(&mut p).container_statuses = Some(vec![state("agent", waiting_state("PodInitializing", None))]);
        let (o, _) = from_pod(&p, false, Timestamp::now(), DEADLINES);
        assert_eq!((o.phase, o.reason.as_deref(), o.exit_code), (MemberPhase::Failed, Some(INIT_CONTAINER_FAILED), None));
        assert_eq!(o.message.as_deref(), Some("pod p failed: init container check exited with code 1 (Error)"));

        // An eviction during init says more than the init container killed by it.
        status(&mut p).reason = Some("Evicted".into());
        assert_eq!(from_pod(&p, false, Timestamp::now(), DEADLINES).0.reason.as_deref(), Some("Evicted"));
    }
}
