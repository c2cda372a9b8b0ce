//! What admission plans from, kept incrementally: every watched change of a Team, Member or Pod
//! is applied as it comes (constant work per event), instead of a snapshot and a sort of every
//! Team, Member and Pod per round. Kept per team: the queue of its open members (not finished,
//! not admitted) in admission order, and the names taken; across teams, the member pods that
//! run, and the slots each team holds, counted as pods and members change. A round reads only
//! the heads of the queues and the counts.
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
    /// Slots held per team (see [`Index::live`]), kept as pods and members change.
    live: HashMap<TeamId, usize>,
    /// How many times a slot was given back: the admission loop plans at once when it moves.
    pub freed: u64,
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
        let Some(uid) = m.metadata.uid.clone() else { return };
        self.with_slots(&[&uid], |index| index.member_entry(m, present));
    }

    fn member_entry(&mut self, m: &Member, present: bool) {
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

    /// Which team's slot the member of `uid` holds: one while a pod it controls runs, under its
    /// team; none for a lead (leads skip the caps); under [`unowned`] while the index does not
    /// hold the Member (deleted while its pod runs).
    fn slot_of(&self, uid: &str) -> Option<TeamId> {
        if self.pods_of.get(uid).is_none_or(|(_, running)| *running == 0) {
            return None;
        }
        match self.members.get(uid) {
            Some(m) if m.role == MemberRole::Lead => None,
            Some(m) => Some(m.team.clone()),
            None => Some(unowned()),
        }
    }

    /// Applies `change` to the members of `uids` or their pods, and moves the slot each holds
    /// to where the index puts it after the change (a pod that ended gives it back; a Member
    /// deleted while its pod runs moves it from its team to [`unowned`]).
    fn with_slots(&mut self, uids: &[&str], change: impl FnOnce(&mut Self)) {
        let before: Vec<Option<TeamId>> = uids.iter().map(|uid| self.slot_of(uid)).collect();
        change(self);
        for (uid, before) in uids.iter().zip(before) {
            let after = self.slot_of(uid);
            if before == after {
                continue;
            }
            if let Some(team) = before
                && let Some(n) = self.live.get_mut(&team)
            {
                *n -= 1;
                if *n == 0 {
                    self.live.remove(&team);
                }
                self.freed += 1;
            }
            if let Some(team) = after {
                *self.live.entry(team).or_default() += 1;
            }
        }
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
        let old = self.pods.get(&at).map(|(uid, _)| uid.clone());
        let new = if present { pod::controlling_member(p).map(|o| o.uid.clone()) } else { None };
        let uids: Vec<&str> = old.iter().chain(new.iter().filter(|n| old.as_ref() != Some(*n))).map(String::as_str).collect();
        self.with_slots(&uids, |index| index.pod_entry(at, old.as_deref(), new.as_deref(), p));
    }

    fn pod_entry(&mut self, at: (String, String), old: Option<&str>, new: Option<&str>, p: &Pod) {
        if let Some(uid) = old
            && let Some((_, running)) = self.pods.remove(&at)
        {
            if let Some(c) = self.pods_of.get_mut(uid) {
                c.0 -= 1;
                c.1 -= usize::from(running);
                if c.0 == 0 {
                    self.pods_of.remove(uid);
                }
            }
            if self.pod_name_of.get(uid) == Some(&at.1) {
                self.pod_name_of.remove(uid);
            }
        }
        let Some(uid) = new else { return };
        let running = !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let c = self.pods_of.entry(uid.to_owned()).or_default();
        c.0 += 1;
        c.1 += usize::from(running);
        self.pod_name_of.insert(uid.to_owned(), at.1.clone());
        self.pods.insert(at, (uid.to_owned(), running));
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
    /// A member counts once however many of its pods run; leads not at all.
    pub fn live(&self) -> HashMap<TeamId, usize> {
        self.live.clone()
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

    /// The slots held per team, counted from scratch: what the kept counts must always equal.
    fn recount(i: &Index) -> HashMap<TeamId, usize> {
        let mut live = HashMap::new();
        for uid in i.pods_of.iter().filter(|(_, (_, running))| *running > 0).map(|(uid, _)| uid) {
            match i.members.get(uid) {
                Some(m) if m.role == MemberRole::Lead => {}
                Some(m) => *live.entry(m.team.clone()).or_default() += 1,
                None => *live.entry(unowned()).or_default() += 1,
            }
        }
        live
    }

    /// A change to the index, and whether it gives a slot back.
    type Step = (Box<dyn Fn(&mut Index)>, bool);

    #[test]
    fn the_slot_counts_follow_every_change_and_a_slot_given_back_is_told() {
        let mut i = Index::default();
        let mut lead = member("lead", "ul", 0, None);
        lead.spec.role = MemberRole::Lead;
        let steps: Vec<Step> = vec![
            (Box::new(|i| i.pod(&pod_of("px", "u1", "Running"), true)), false),
            (Box::new(|i| i.member(&member("m1", "u1", 1, None), true)), true),
            (Box::new(|i| i.pod(&pod_of("px", "u1", "Running"), true)), false),
            (Box::new(|i| i.pod(&pod_of("p1b", "u1", "Pending"), true)), false),
            (Box::new(|i| i.pod(&pod_of("px", "u1", "Succeeded"), true)), false),
            (Box::new(|i| i.member(&member("m2", "u2", 2, None), true)), false),
            (Box::new(|i| i.pod(&pod_of("p2", "u2", "Running"), true)), false),
            (Box::new(move |i| i.member(&lead, true)), false),
            (Box::new(|i| i.pod(&pod_of("pl", "ul", "Running"), true)), false),
            (Box::new(|i| i.pod(&pod_of("p1b", "u1", "Failed"), true)), true),
            (Box::new(|i| i.member(&member("m2", "u2", 2, None), false)), true),
            (Box::new(|i| i.pod(&pod_of("p2", "u2", "Running"), false)), true),
            (Box::new(|i| i.pod(&pod_of("pl", "ul", "Succeeded"), true)), false),
        ];
        for (n, (step, gives_back)) in steps.iter().enumerate() {
            let before = i.freed;
            step(&mut i);
            assert_eq!(i.live(), recount(&i), "after step {n}");
            assert_eq!(i.freed != before, *gives_back, "step {n} gives a slot back: {gives_back}");
        }
        assert!(i.live().is_empty());
    }
}
