//! Building a member's pod from its team's agent type: pure, so every rule here is unit-tested
//! without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec, ProjectedVolumeSource, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use kube::Resource;
use kube::api::ObjectMeta;

use crate::api::quality_check::{IDLE_CHECK_ENV, TASK_COMPLETED_CHECK_ENV};
use crate::api::{Member, MemberRole, Team, labels};

/// Audience of the projected ServiceAccount token a member presents to the gateway.
pub const GATEWAY_AUDIENCE: &str = "team-operator-gateway";
/// Where the token is mounted in every container of a member pod.
pub const TOKEN_DIR: &str = "/var/run/secrets/agentteams.dev";
/// Where the init container puts `teamctl` for the agent to call.
pub const TOOLS_DIR: &str = "/opt/agentteams/bin";
/// Value of `app.kubernetes.io/managed-by` on everything this operator creates.
pub const MANAGER: &str = "team-operator";
/// uid and gid of a member container that must run as non-root and whose template names no
/// user: distroless's `nonroot`, the user of the project's and the agent image.
pub const DEFAULT_UID: i64 = 65532;

/// Settings of the operator that end up in pods.
#[derive(Clone, Debug)]
pub struct PodSettings {
    /// URL agents reach the gateway at.
    pub gateway_url: String,
    /// Image holding `teamctl`, copied into the pod by an init container; none: no init container.
    pub teamctl_image: Option<String>,
    /// Lifetime of the projected token.
    pub token_expiration_seconds: i64,
}

/// Deterministic pod name of a member's `attempt` (0 for its first pod, one more per retry, see
/// `retry`): team, agent name and a piece of the Member's uid, so a member re-created under the
/// same agent name never collides with its predecessor's pod; from the second attempt on, its
/// number as `TEAM_ATTEMPT` counts it (`-2`, `-3`, …) after it, so each attempt is a new pod (and
/// a new bound token).
pub fn pod_name(team: &str, agent_name: &str, member_uid: &str, attempt: u32) -> String {
    let suffix: String = member_uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(5).collect();
    match attempt {
        0 => format!("{team}-{agent_name}-{suffix}"),
        n => format!("{team}-{agent_name}-{suffix}-{}", n + 1),
    }
}

/// The Member controlling `pod` (its controller reference, kind Member of this API group): what
/// makes a pod a member's (rule 7). Labels say nothing: any pod creator can set them.
pub fn controlling_member(pod: &Pod) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind == "Member" && o.api_version.split('/').next() == Some(crate::api::GROUP))
}

/// Whether `pod` is controlled by the Member of uid `member_uid`: the only pods the operator
/// deletes are these, the ones it created.
pub fn controlled_by(pod: &Pod, member_uid: &str) -> bool {
    controlling_member(pod).is_some_and(|o| o.uid == member_uid)
}

/// Inputs that are not in the Member or Team objects.
pub struct PodInputs<'a> {
    /// Team-unique agent name of the member.
    pub agent_name: &'a str,
    /// The member's prompt. Memory is not put in front of it here: `teamctl run` reads it through
    /// the gateway when turn 1 starts (fresh, and no env size limit to hit).
    pub prompt: String,
    /// Which attempt the pod is: 0 for the member's first pod, one more per retry
    /// (`TEAM_ATTEMPT` is one more than this, so the first pod reads 1).
    pub attempt: u32,
    /// Operator settings.
    pub settings: &'a PodSettings,
}

/// The pod for `member` of `team`, or None when its agent type is not in the team.
pub fn build(team: &Team, member: &Member, input: PodInputs<'_>) -> Option<Pod> {
    let agent = team.agent_type(&member.spec.agent)?;
    let team_name = team.metadata.name.as_deref()?;
    let uid = member.metadata.uid.as_deref()?;
    let owner = member.controller_owner_ref(&())?;

    let mut template = agent.template.clone();
    let mut meta = template.metadata.take().unwrap_or_default();
    let mut spec = template.spec.take().unwrap_or_default();

    let mut pod_labels = meta.labels.take().unwrap_or_default();
    let mut pod_annotations = meta.annotations.take().unwrap_or_default();
    if let Some(o) = &member.spec.pod {
        pod_labels.extend(o.labels.clone());
        pod_annotations.extend(o.annotations.clone());
    }
    pod_labels.extend(operator_labels(team_name, input.agent_name, &member.spec.agent, member.spec.role));

    let model = member.spec.model.clone().or_else(|| agent.model.clone()).unwrap_or_default();
    let memory_mode = serde_json::to_value(agent.memory).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let lead = lead_name(team, member, input.agent_name);
    // The agent type's quality gates, for teamctl in the pod to run (see api::quality_check).
    let checks = [(TASK_COMPLETED_CHECK_ENV, &agent.task_completed_check), (IDLE_CHECK_ENV, &agent.idle_check)];
    let gates: Vec<EnvVar> = checks.into_iter().filter_map(|(var, c)| c.as_ref().map(|c| env(var, &c.to_env_value()))).collect();
    let mut env = vec![
        env("TEAM", team_name),
        env("TEAM_NAMESPACE", member.metadata.namespace.as_deref().unwrap_or_default()),
        env("MEMBER", input.agent_name),
        env("AGENT", &member.spec.agent),
        env("TEAM_ROLE", member.spec.role.as_str()),
        env("TEAM_LEAD", &lead),
        env("TEAM_MODEL", &model),
        env("TEAM_MEMORY", &memory_mode),
        env("TEAM_MEMBER_TIMEOUT_SECONDS", &team.spec.member_timeout_seconds.to_string()),
        env("TEAM_GATEWAY_URL", &input.settings.gateway_url),
        env("TEAM_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        env("TEAM_PROMPT", &input.prompt),
        env("TEAM_ATTEMPT", &(input.attempt + 1).to_string()),
    ];
    env.extend(gates);
    if let Some(o) = &member.spec.pod {
        env.extend(o.env.iter().cloned());
    }

    let token_mount =
        VolumeMount { name: "agentteams-token".into(), mount_path: TOKEN_DIR.into(), read_only: Some(true), ..Default::default() };
    let tools_mount = VolumeMount { name: "agentteams-tools".into(), mount_path: TOOLS_DIR.into(), ..Default::default() };
    for (i, c) in spec.containers.iter_mut().enumerate() {
        c.volume_mounts.get_or_insert_with(Vec::new).push(token_mount.clone());
        if input.settings.teamctl_image.is_some() {
            c.volume_mounts.get_or_insert_with(Vec::new).push(tools_mount.clone());
        }
        c.security_context.get_or_insert_with(restricted_container);
        if i == 0 {
            // Our variables first so that a template's own definitions of the same name win:
            // Kubernetes resolves duplicates to the last entry.
            let mut all = env.clone();
            all.extend(c.env.take().unwrap_or_default());
            c.env = Some(all);
        }
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: "agentteams-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(GATEWAY_AUDIENCE.into()),
                    expiration_seconds: Some(input.settings.token_expiration_seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(image) = &input.settings.teamctl_image {
        volumes.push(Volume { name: "agentteams-tools".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() });
        spec.init_containers.get_or_insert_with(Vec::new).push(Container {
            name: "teamctl".into(),
            image: Some(image.clone()),
            command: Some(vec!["/teamctl".into(), "install".into(), TOOLS_DIR.into()]),
            volume_mounts: Some(vec![tools_mount]),
            security_context: Some(restricted_container()),
            ..Default::default()
        });
    }
    spec.restart_policy = Some("Never".into());
    let pod_security = spec.security_context.get_or_insert_with(|| PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    });
    for c in spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut()) {
        default_user(pod_security, c);
    }

    Some(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(team_name, input.agent_name, uid, input.attempt)),
            namespace: member.metadata.namespace.clone(),
            labels: Some(pod_labels),
            annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec { ..spec }),
        status: None,
    })
}

/// The member name of the team's lead: the member itself when it leads, else the Team's
/// `status.leadName`, else (not yet recorded) the lead's agent type, the name a lead gets first.
/// Prompts can also just say `lead`: the gateway resolves that recipient.
fn lead_name(team: &Team, member: &Member, agent_name: &str) -> String {
    if member.spec.role == MemberRole::Lead {
        return agent_name.to_owned();
    }
    team.status.as_ref().and_then(|s| s.lead_name.clone()).unwrap_or_else(|| team.spec.lead.agent.clone())
}

/// The labels the operator owns on a member pod.
pub fn operator_labels(team: &str, agent_name: &str, agent: &str, role: MemberRole) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::TEAM.to_owned(), team.to_owned()),
        (labels::MEMBER.to_owned(), agent_name.to_owned()),
        (labels::AGENT.to_owned(), agent.to_owned()),
        (labels::ROLE.to_owned(), role.as_str().to_owned()),
        (labels::MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// Gives container `c` uid and gid [`DEFAULT_UID`] when it must run as non-root and neither its
/// own nor the pod's security context names a user. The kubelet cannot tell from an image whose
/// config says root (busybox and most public images) or names its user by name that it would
/// run as non-root, and refuses to start it (CreateContainerConfigError) unless a uid is given.
/// A template that names a user keeps it; to run as the image's own non-root uid, name it.
fn default_user(pod: &PodSecurityContext, c: &mut Container) {
    let own = c.security_context.as_ref();
    let non_root = own.and_then(|s| s.run_as_non_root).or(pod.run_as_non_root).unwrap_or(false);
    if !non_root || own.and_then(|s| s.run_as_user).or(pod.run_as_user).is_some() {
        return;
    }
    let group = own.and_then(|s| s.run_as_group).or(pod.run_as_group);
    let sc = c.security_context.get_or_insert_with(SecurityContext::default);
    sc.run_as_user = Some(DEFAULT_UID);
    if group.is_none() {
        sc.run_as_group = Some(DEFAULT_UID);
    }
}

/// The "restricted" Pod Security profile for a container, used unless the template sets its own.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{member, team};

    fn settings() -> PodSettings {
        PodSettings { gateway_url: "http://gw:8080".into(), teamctl_image: Some("img:1".into()), token_expiration_seconds: 3600 }
    }

    #[test]
    fn pod_carries_identity_env_token_and_owner() {
        let t = team("review", 3);
        let m = member("review", "general", "uid-abcdef");
        let pod =
            build(&t, &m, PodInputs { agent_name: "general-2", prompt: "do it".into(), attempt: 0, settings: &settings() }).expect("pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("review-general-2-uidab"));
        let l = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(l[labels::TEAM], "review");
        assert_eq!(l[labels::MEMBER], "general-2");
        assert_eq!(l[labels::ROLE], "specialist");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let env = spec.containers[0].env.as_ref().expect("env");
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(get("MEMBER").as_deref(), Some("general-2"));
        assert_eq!(get("TEAM_PROMPT").as_deref(), Some("do it"));
        assert_eq!(get("TEAM_MEMBER_TIMEOUT_SECONDS").as_deref(), Some("300"));
        assert_eq!(get("TEAM_LEAD").as_deref(), Some("lead"), "a specialist learns the lead's name");
        assert_eq!(get("TEAM_ATTEMPT").as_deref(), Some("1"));
        let retry = PodInputs { agent_name: "general-2", prompt: String::new(), attempt: 1, settings: &settings() };
        let retry = build(&t, &m, retry).expect("pod");
        assert_eq!(retry.metadata.name.as_deref(), Some("review-general-2-uidab-2"), "the second attempt is a new pod");
        assert!(spec.volumes.as_ref().expect("volumes").iter().any(|v| v.projected.is_some()));
        assert_eq!(spec.init_containers.as_ref().map(Vec::len), Some(1));
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "Member");
        assert_eq!(owner.controller, Some(true));
        let sc = spec.containers[0].security_context.as_ref().expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn team_lead_is_the_recorded_lead_or_the_lead_itself() {
        let lead_env = |t: &Team, m: &Member, name: &str| {
            let pod = build(t, m, PodInputs { agent_name: name, prompt: String::new(), attempt: 0, settings: &settings() }).expect("pod");
            let env = pod.spec.expect("spec").containers[0].env.clone().expect("env");
            env.into_iter().find(|e| e.name == "TEAM_LEAD").and_then(|e| e.value)
        };
        let mut t = team("review", 3);
        t.status = Some(crate::api::TeamStatus { lead_name: Some("planner-2".into()), ..Default::default() });
        assert_eq!(lead_env(&t, &member("review", "general", "uid-1"), "general").as_deref(), Some("planner-2"));
        let mut lead = member("review", "general", "uid-2");
        lead.spec.role = MemberRole::Lead;
        assert_eq!(lead_env(&t, &lead, "general-3").as_deref(), Some("general-3"));
    }

    #[test]
    fn quality_gates_reach_the_agent_container_only_when_set() {
        let env_of = |t: &Team| {
            let m = member("review", "general", "uid-1");
            let pod =
                build(t, &m, PodInputs { agent_name: "general", prompt: String::new(), attempt: 0, settings: &settings() }).expect("pod");
            pod.spec.expect("spec").containers[0].env.clone().expect("env")
        };
        let mut t = team("review", 3);
        assert!(!env_of(&t).iter().any(|e| e.name == TASK_COMPLETED_CHECK_ENV || e.name == IDLE_CHECK_ENV));
        let check = crate::api::QualityCheck { command: vec!["make".into(), "test".into()], timeout_seconds: 60 };
        t.spec.agents.iter_mut().find(|a| a.name == "general").expect("general").task_completed_check = Some(check.clone());
        let env = env_of(&t);
        let value = env.iter().find(|e| e.name == TASK_COMPLETED_CHECK_ENV).and_then(|e| e.value.clone()).expect("the check");
        assert_eq!(crate::api::QualityCheck::from_env_value(TASK_COMPLETED_CHECK_ENV, &value), Ok(check));
        assert!(!env.iter().any(|e| e.name == IDLE_CHECK_ENV));
    }

    /// The pod of a `general` member of a team whose `general` template is changed by `edit`.
    fn pod_of(edit: impl FnOnce(&mut PodSpec)) -> PodSpec {
        let mut t = team("review", 3);
        let general = t.spec.agents.iter_mut().find(|a| a.name == "general").expect("general agent type");
        edit(general.template.spec.get_or_insert_with(Default::default));
        let m = member("review", "general", "uid-1");
        build(&t, &m, PodInputs { agent_name: "general", prompt: String::new(), attempt: 0, settings: &settings() })
            .and_then(|p| p.spec)
            .expect("pod")
    }

    fn users(spec: &PodSpec) -> Vec<(String, Option<i64>, Option<i64>)> {
        let all = spec.init_containers.iter().flatten().chain(&spec.containers);
        all.map(|c| {
            let sc = c.security_context.as_ref();
            (c.name.clone(), sc.and_then(|s| s.run_as_user), sc.and_then(|s| s.run_as_group))
        })
        .collect()
    }

    #[test]
    fn a_template_without_a_user_runs_as_65532() {
        let spec = pod_of(|_| {});
        let u = Some(DEFAULT_UID);
        assert_eq!(users(&spec), vec![("teamctl".into(), u, u), ("agent".into(), u, u)]);
        assert_eq!(spec.security_context.and_then(|s| s.run_as_non_root), Some(true));
    }

    #[test]
    fn a_user_the_template_names_is_kept() {
        let spec = pod_of(|s| {
            s.security_context = Some(PodSecurityContext { run_as_non_root: Some(true), run_as_user: Some(1000), ..Default::default() });
        });
        assert_eq!(users(&spec), vec![("teamctl".into(), None, None), ("agent".into(), None, None)], "the pod's 1000 applies");

        let spec = pod_of(|s| {
            s.containers[0].security_context = Some(SecurityContext { run_as_user: Some(1000), ..restricted_container() });
        });
        let u = Some(DEFAULT_UID);
        assert_eq!(users(&spec), vec![("teamctl".into(), u, u), ("agent".into(), Some(1000), None)]);
    }

    #[test]
    fn a_template_that_allows_root_is_left_alone() {
        let spec = pod_of(|s| {
            s.security_context = Some(PodSecurityContext { run_as_non_root: Some(false), ..Default::default() });
            s.containers[0].security_context = Some(SecurityContext { run_as_non_root: Some(false), ..Default::default() });
        });
        let u = Some(DEFAULT_UID);
        // The operator's own init container still demands non-root and gets the default.
        assert_eq!(users(&spec), vec![("teamctl".into(), u, u), ("agent".into(), None, None)]);
    }

    #[test]
    fn unknown_agent_type_builds_nothing() {
        let t = team("review", 3);
        let m = member("review", "nope", "uid-1");
        assert!(build(&t, &m, PodInputs { agent_name: "nope", prompt: String::new(), attempt: 0, settings: &settings() }).is_none());
    }
}
