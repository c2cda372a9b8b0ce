//! What admission plans from, kept incrementally: every watched change of a Team, Member or Pod
//! is applied as it comes (constant work per event), instead of a snapshot and a sort of every
//! Team, Member and Pod per round. Kept per team: the queue of its open members (not finished,
//! not admitted) in admission order, and the names taken; across teams, the member pods that
//! run, from which the live count of each team follows in time proportional to the pods that
//! run (bounded by the caps). A round reads only the heads of the queues.
//!
//! A cache of the stores, never a source of truth: it is rebuilt from them at every resync, so
//! an object deleted while a watch was down (whose deletion no event told) is forgotten then.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::admission::{TeamId, TeamView, unowned};
use super::{pod, retry};
use crate::api::{Member, MemberPhase, MemberRole, Team};

/// Admission order: leads first, then first come first served.
pub type Order = (bool, Timestamp, String);

/// What the index knows of a member.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: ObjectRef<Member>,
    pub team: TeamId,
    pub agent: String,
    pub role: MemberRole,
    pub order: Order,
    pub name: Option<String>,
    pub phase: MemberPhase,
    /// Its admission is written (`status.podName` names its current attempt's pod).
    pub admitted: bool,
    /// Its current attempt: how many of its pods failed (see `retry`).
    pub attempt: u32,
    /// When its last pod failed, while it waits for its next attempt's pod.
    pub retry_from: Option<Timestamp>,
}

impl Entry {
    /// Open: waiting for a name or a slot (not finished, not admitted).
    fn open(&self) -> bool {
        !self.phase.is_terminal() && !self.admitted
    }
}

/// A team's open members, in admission order (order, uid): those with a name (waiting for a
/// slot) and those without (waiting for a name too).
#[derive(Clone, Debug, Default)]
pub struct Queues {
    pub named: BTreeSet<(Order, String)>,
    pub unnamed: BTreeSet<(Order, String)>,
}

impl Queues {
    fn of(&mut self, named: bool) -> &mut BTreeSet<(Order, String)> {
        if named { &mut self.named } else { &mut self.unnamed }
    }

    fn is_empty(&self) -> bool {
        self.named.is_empty() && self.unnamed.is_empty()
    }
}

/// The index.
#[derive(Default)]
pub struct Index {
    pub teams: HashMap<TeamId, TeamView>,
    /// Team uid → id, for sub-teams' parents; and id → uid, to drop it.
    team_uids: HashMap<String, TeamId>,
    /// Members by uid.
    pub members: HashMap<String, Entry>,
    /// Open members per team, in admission order.
    pub queues: HashMap<TeamId, Queues>,
    /// Open members without a name, of every team, in admission order: the next names go to
    /// the oldest, whichever team they are of.
    pub unnamed: BTreeSet<(Order, String)>,
    /// Names taken per team, with how many members hold each (one, unless edited by hand).
    names: HashMap<TeamId, HashMap<String, usize>>,
    /// Member pods: pod (ns, name) → (controlling member uid, still running).
    pods: HashMap<(String, String), (String, bool)>,
    /// Per member uid: its pods, and how many of them run.
    pods_of: HashMap<String, (usize, usize)>,
    /// Per member uid: the name of a pod it controls.
    pod_name_of: HashMap<String, String>,
    /// Members per phase.
    pub per_phase: HashMap<MemberPhase, i64>,
}

impl Index {
    /// Built from whole lists (the stores at a resync).
    pub fn build(teams: &[std::sync::Arc<Team>], members: &[std::sync::Arc<Member>], pods: &[std::sync::Arc<Pod>]) -> Self {
        let mut index = Index::default();
        for t in teams {
            index.team(t, true);
        }
        for m in members {
            index.member(m, true);
        }
        for p in pods {
            index.pod(p, true);
        }
        index
    }

    /// Applies a Team as it is now (`present`), or its deletion.
    pub fn team(&mut self, t: &Team, present: bool) {
        let (Some(ns), Some(uid)) = (t.namespace(), t.metadata.uid.clone()) else { return };
        let id = (ns, t.name_any());
        if !present {
            self.teams.remove(&id);
            self.team_uids.remove(&uid);
            return;
        }
        self.team_uids.insert(uid, id.clone());
        let parent = t.parent_uid().and_then(|p| self.team_uids.get(p).cloned());
        let view = TeamView {
            max_agents: usize::try_from(t.spec.max_agents).unwrap_or(0),
            priority: t.spec.priority,
            disbanded: t.is_disbanded(),
            budget_spent: super::budget_phase::team_spent(t).is_some(),
            agents: t.spec.agents.iter().map(|a| a.name.clone()).collect(),
            external_lead: t.spec.lead.pod_name.is_some(),
            parent,
        };
        self.teams.insert(id, view);
    }

    /// Resolves the parents of sub-teams seen before their parent (once every team is in).
    pub fn link_parents(&mut self, teams: &[std::sync::Arc<Team>]) {
        for t in teams {
            let Some(ns) = t.namespace() else { continue };
            let parent = t.parent_uid().and_then(|p| self.team_uids.get(p).cloned());
            if let Some(v) = self.teams.get_mut(&(ns, t.name_any())) {
                v.parent = parent;
            }
        }
    }

    /// Applies a Member as it is now (`present`), or its deletion.
    pub fn member(&mut self, m: &Member, present: bool) {
        let (Some(ns), Some(uid)) = (m.namespace(), m.metadata.uid.clone()) else { return };
        if let Some(old) = self.members.remove(&uid) {
            self.unlink(&uid, &old);
        }
        if !present {
            return;
        }
        let created = m.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let entry = Entry {
            key: ObjectRef::from_obj(m),
            team: (ns, m.spec.team.clone()),
            agent: m.spec.agent.clone(),
            role: m.spec.role,
            order: (m.spec.role != MemberRole::Lead, created, uid.clone()),
            name: m.agent_name().map(str::to_owned),
            phase: m.phase(),
            admitted: m.status.as_ref().is_some_and(|s| s.pod_name.is_some()) && !retry::awaits_pod(m),
            attempt: retry::failed_attempts(m),
            retry_from: m.status.as_ref().and_then(|s| s.last_failure_time.as_ref()).map(|t| t.0).filter(|_| retry::awaits_pod(m)),
        };
        *self.per_phase.entry(entry.phase).or_default() += 1;
        if let Some(n) = &entry.name {
            *self.names.entry(entry.team.clone()).or_default().entry(n.clone()).or_default() += 1;
        }
        if entry.open() {
            self.queues.entry(entry.team.clone()).or_default().of(entry.name.is_some()).insert((entry.order.clone(), uid.clone()));
            if entry.name.is_none() {
                self.unnamed.insert((entry.order.clone(), uid.clone()));
            }
        }
        self.members.insert(uid, entry);
    }

    fn unlink(&mut self, uid: &str, old: &Entry) {
        if let Some(n) = self.per_phase.get_mut(&old.phase) {
            *n -= 1;
        }
        if let Some(n) = &old.name
            && let Some(names) = self.names.get_mut(&old.team)
        {
            if let Some(count) = names.get_mut(n) {
                *count -= 1;
                if *count == 0 {
                    names.remove(n);
                }
            }
            if names.is_empty() {
                self.names.remove(&old.team);
            }
        }
        if old.name.is_none() {
            self.unnamed.remove(&(old.order.clone(), uid.to_owned()));
        }
        if let Some(q) = self.queues.get_mut(&old.team) {
            q.of(old.name.is_some()).remove(&(old.order.clone(), uid.to_owned()));
            if q.is_empty() {
                self.queues.remove(&old.team);
            }
        }
    }

    /// Applies a Pod as it is now (`present`), or its deletion. Only pods a Member controls
    /// count (rule 7).
    pub fn pod(&mut self, p: &Pod, present: bool) {
        let Some(ns) = p.namespace() else { return };
        let at = (ns, p.name_any());
        if let Some((uid, running)) = self.pods.remove(&at)
            && let Some(c) = self.pods_of.get_mut(&uid)
        {
            c.0 -= 1;
            c.1 -= usize::from(running);
            if c.0 == 0 {
                self.pods_of.remove(&uid);
            }
            if self.pod_name_of.get(&uid) == Some(&at.1) {
                self.pod_name_of.remove(&uid);
            }
        }
        if !present {
            return;
        }
        let Some(owner) = pod::controlling_member(p) else { return };
        let running = !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let c = self.pods_of.entry(owner.uid.clone()).or_default();
        c.0 += 1;
        c.1 += usize::from(running);
        self.pod_name_of.insert(owner.uid.clone(), at.1.clone());
        self.pods.insert(at, (owner.uid.clone(), running));
    }

    /// Whether a pod the member of `uid` controls exists.
    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods_of.contains_key(uid)
    }

    /// Whether the pod `at` (ns, name) exists and the member of `uid` controls it: a retried
    /// member's earlier pods are its too, but not the one its current attempt needs.
    pub fn has_pod_at(&self, uid: &str, at: &(String, String)) -> bool {
        self.pods.get(at).is_some_and(|(owner, _)| owner == uid)
    }

    /// The agent name a pod of the member of `uid` was created under (its first pod's
    /// deterministic name is `<team>-<agent name>-<uid piece>`, see `pod::pod_name`): the name
    /// admission decided when it created the pod, should the write of that name have been lost
    /// (a restart between the two), so the member keeps the name its pod has. (A retry's pod is
    /// made only for a member whose name is written.)
    pub fn name_of_pod(&self, uid: &str) -> Option<String> {
        let m = self.members.get(uid)?;
        let pod = self.pod_name_of.get(uid)?;
        let suffix = pod::pod_name("", "", uid, 0);
        let name = pod.strip_prefix(&format!("{}-", m.team.1))?.strip_suffix(suffix.trim_start_matches('-'))?.strip_suffix('-')?;
        (pod::pod_name(&m.team.1, name, uid, 0) == *pod).then(|| name.to_owned())
    }

    /// Whether the pod (ns, name) is known.
    pub fn knows_pod(&self, at: &(String, String)) -> bool {
        self.pods.contains_key(at)
    }

    /// Specialist pods that run, per team; under [`unowned`] those whose Member is not known.
    pub fn live(&self) -> HashMap<TeamId, usize> {
        let mut live: HashMap<TeamId, usize> = HashMap::new();
        for (uid, _) in self.pods_of.iter().filter(|(_, (_, running))| *running > 0) {
            match self.members.get(uid) {
                Some(m) if m.role == MemberRole::Lead => {}
                Some(m) => *live.entry(m.team.clone()).or_default() += 1,
                None => *live.entry(unowned()).or_default() += 1,
            }
        }
        live
    }

    /// Whether `name` is taken in `team`.
    pub fn is_taken(&self, team: &TeamId, name: &str) -> bool {
        self.names.get(team).is_some_and(|n| n.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn member(name: &str, uid: &str, at: i64, status: Option<MemberStatus>) -> Member {
        let mut m = crate::controller::fixtures::member_created("a", name, uid, at);
        m.status = status;
        m
    }

    fn pod_of(name: &str, member_uid: &str, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "agentteams.dev/v1alpha1".into(),
            kind: "Member".into(),
            name: "m".into(),
            uid: member_uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    fn team_id() -> TeamId {
        ("ns".into(), "a".into())
    }

    #[test]
    fn the_queue_holds_open_members_in_order_and_follows_every_change() {
        let mut i = Index::default();
        i.member(&member("m2", "u2", 2, None), true);
        i.member(&member("m1", "u1", 1, None), true);
        let order: Vec<&str> = i.queues[&team_id()].unnamed.iter().map(|(_, uid)| uid.as_str()).collect();
        assert_eq!(order, ["u1", "u2"]);
        let named = MemberStatus { name: Some("general".into()), phase: Some(MemberPhase::Queued), ..Default::default() };
        i.member(&member("m1", "u1", 1, Some(named.clone())), true);
        assert!(i.is_taken(&team_id(), "general") && !i.is_taken(&team_id(), "general-2"));
        assert_eq!((i.queues[&team_id()].named.len(), i.queues[&team_id()].unnamed.len()), (1, 1));
        let admitted = MemberStatus { pod_name: Some("p1".into()), phase: Some(MemberPhase::Starting), ..named };
        i.member(&member("m1", "u1", 1, Some(admitted)), true);
        assert_eq!(i.queues[&team_id()].named.len(), 0, "an admitted member leaves the queue");
        assert_eq!(i.per_phase.get(&MemberPhase::Starting), Some(&1));
        i.member(&member("m2", "u2", 2, None), false);
        assert!(!i.queues.contains_key(&team_id()));
        assert!(i.is_taken(&team_id(), "general"), "the admitted member keeps its name");
    }

    #[test]
    fn live_counts_running_controlled_pods_per_team_and_unknown_members_apart() {
        let mut i = Index::default();
        i.member(&member("m1", "u1", 1, None), true);
        i.pod(&pod_of("p1", "u1", "Running"), true);
        i.pod(&pod_of("px", "ux", "Running"), true);
        assert_eq!(i.live(), HashMap::from([(team_id(), 1), (unowned(), 1)]));
        assert!(i.has_pod("u1"));
        assert_eq!(i.name_of_pod("u1"), None, "p1 is no name the operator would give");
        i.pod(&pod_of(&pod::pod_name("a", "general-7", "u1", 0), "u1", "Pending"), true);
        assert_eq!(i.name_of_pod("u1").as_deref(), Some("general-7"));
        i.pod(&pod_of(&pod::pod_name("a", "general-7", "u1", 0), "u1", "Pending"), false);
        i.pod(&pod_of("p1", "u1", "Succeeded"), true);
        assert_eq!(i.live(), HashMap::from([(unowned(), 1)]));
        assert!(i.has_pod("u1"), "a pod that ended is still the member's");
        i.pod(&pod_of("p1", "u1", "Succeeded"), false);
        assert!(!i.has_pod("u1"));
    }
}
