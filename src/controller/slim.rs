//! What the controller's stores keep of each watched object: what some reader of the store reads,
//! not what the API server sends. Applied to every object before it reaches a store (the shared
//! watches, see `shared`), so a fleet's stores hold fields of use only.
//!
//! Dropped from every kind: `metadata.managedFields` (nothing reads them; a server-side apply
//! sends its own fields and the API server keeps the record) and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of the whole object as
//! the user last applied it, read by `kubectl apply` alone). Kept whole otherwise: a Team's spec
//! builds the pods, a Member's spec is its pod's prompt and overrides, statuses are judged.
//!
//! Dropped from a Pod as well: its spec but for what `member_status` reads (the init
//! containers' names and restart policies, which tell a sidecar), and its annotations. The
//! controller builds a member's pod from the Team and the Member, never from a stored pod; of a
//! stored pod it reads the metadata (name, uid, owner references, creation and deletion times)
//! and the status. The gateway's own stores are not these (another process).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{Member, Team, TeamTask};

/// The annotation `kubectl apply` keeps the last applied object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as a store keeps it.
pub trait Slim {
    /// Drops what no reader of the store reads.
    fn slim(&mut self);
}

fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

impl Slim for Team {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

impl Slim for Member {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

impl Slim for TeamTask {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

impl Slim for Pod {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.metadata.annotations = None;
        let Some(spec) = self.spec.take() else { return };
        let name_only = |c: Container| Container { name: c.name, restart_policy: c.restart_policy, ..Default::default() };
        self.spec = Some(PodSpec {
            init_containers: spec.init_containers.map(|cs| cs.into_iter().map(name_only).collect()),
            containers: spec.containers.into_iter().map(name_only).collect(),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::api::{MemberStatus, PodOverrides};
    use crate::controller::fixtures;
    use crate::controller::member_status::{Deadlines, from_pod};
    use crate::controller::pod::{self, PodInputs, PodSettings};

    /// What the API server adds that no reader reads: managedFields, kubectl's copy.
    fn as_served(meta: &mut ObjectMeta) {
        meta.managed_fields = Some(vec![ManagedFieldsEntry { manager: Some("kubectl".into()), ..Default::default() }]);
        let mut a = meta.annotations.take().unwrap_or_default();
        a.insert(LAST_APPLIED.into(), "{\"kind\":\"…the whole object…\"}".into());
        meta.annotations = Some(a);
    }

    fn settings() -> PodSettings {
        PodSettings { gateway_url: "http://gw:8080".into(), teamctl_image: Some("img:1".into()), token_expiration_seconds: 3600 }
    }

    /// A Team and a Member as served, and the pod admission builds from them, as served too: with
    /// a restartable sidecar beside the teamctl init container, running, scheduled long ago.
    fn served() -> (Team, Member, Pod) {
        let mut team = fixtures::team("review", 3);
        as_served(&mut team.metadata);
        let mut member = fixtures::member("review", "general", "uid-abcdef");
        member.spec.prompt = "review the change".into();
        member.spec.pod = Some(PodOverrides { annotations: BTreeMap::from([("a".into(), "b".into())]), ..Default::default() });
        member.metadata.annotations = Some(BTreeMap::from([("note".into(), "kept".into())]));
        member.status = Some(MemberStatus { name: Some("general".into()), ..Default::default() });
        as_served(&mut member.metadata);
        let input = PodInputs { agent_name: "general", prompt: member.spec.prompt.clone(), attempt: 0, settings: &settings() };
        let mut p = pod::build(&team, &member, input).expect("pod");
        let spec = p.spec.as_mut().expect("spec");
        let sidecar =
            Container { name: "proxy".into(), restart_policy: Some("Always".into()), image: Some("proxy:1".into()), ..Default::default() };
        spec.init_containers.get_or_insert_with(Vec::new).push(sidecar);
        let long_ago = Time(Timestamp::now() - SignedDuration::from_secs(1000));
        p.metadata.uid = Some("pod-uid".into());
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(long_ago),
                ..Default::default()
            }]),
            init_container_statuses: Some(vec![ContainerStatus {
                name: "proxy".into(),
                state: Some(ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        as_served(&mut p.metadata);
        (team, member, p)
    }

    fn slimmed<K: Slim + Clone>(k: &K) -> K {
        let mut k = k.clone();
        k.slim();
        k
    }

    #[test]
    fn a_slim_team_and_member_build_the_same_pod_and_keep_their_status() {
        let (team, member, _) = served();
        let (t, m) = (slimmed(&team), slimmed(&member));
        for meta in [&t.metadata, &m.metadata] {
            assert!(meta.managed_fields.is_none());
            assert!(meta.annotations.iter().flatten().all(|(k, _)| k != LAST_APPLIED));
        }
        assert_eq!(m.metadata.annotations.as_ref().map(|a| a["note"].as_str()), Some("kept"), "other annotations stay");
        let build = |t: &Team, m: &Member| {
            pod::build(t, m, PodInputs { agent_name: "general", prompt: m.spec.prompt.clone(), attempt: 0, settings: &settings() })
        };
        assert_eq!(build(&t, &m), build(&team, &member), "admission builds the member's pod from the stored Team and Member");
        assert_eq!((m.spec, m.status), (member.spec, member.status));
        assert_eq!((t.spec, t.status), (team.spec, team.status));
    }

    #[test]
    fn a_slim_pod_keeps_what_the_member_reconciler_and_admission_read() {
        let (_, _, served) = served();
        let p = slimmed(&served);
        let deadlines = Deadlines { unschedulable: SignedDuration::from_secs(300), start: SignedDuration::from_secs(300) };
        let now = Timestamp::now();
        // The running sidecar does not stop the start clock: only the spec tells it is one.
        assert_eq!(from_pod(&p, false, now, deadlines), from_pod(&served, false, now, deadlines));
        assert_eq!(
            from_pod(&p, false, now, deadlines).0.reason.as_deref(),
            Some(crate::controller::member_status::START_DEADLINE_EXCEEDED)
        );
        assert_eq!(pod::controlling_member(&p), pod::controlling_member(&served));
        assert!(pod::controlled_by(&p, "uid-abcdef"));
        assert_eq!(
            (&p.metadata.name, &p.metadata.uid, &p.metadata.labels),
            (&served.metadata.name, &served.metadata.uid, &served.metadata.labels)
        );
        assert_eq!(p.status, served.status);
        // What nobody reads is gone: the containers' env (the prompt), volumes, annotations.
        let spec = p.spec.as_ref().expect("spec");
        assert!(spec.containers.iter().all(|c| c.env.is_none() && c.image.is_none()));
        assert!(spec.volumes.is_none() && p.metadata.annotations.is_none() && p.metadata.managed_fields.is_none());
        let size = |p: &Pod| serde_json::to_string(p).map(|s| s.len()).unwrap_or(0);
        assert!(size(&p) * 2 < size(&served), "{} of {} bytes kept", size(&p), size(&served));
    }
}
