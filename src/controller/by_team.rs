//! Members and tasks found by their team instead of by a scan of the whole store: a Team
//! reconcile (in a fleet, one per burst of member changes), a disband and the watches that map a
//! Team to its members or tasks read their own team's objects only, in time proportional to the
//! team, not to every team of the cluster.
//!
//! Filled from the synced store before any reconciler runs ([`ByTeam::fill`]), then kept from
//! the watch: [`ByTeam::observe`] is called with every object the shared stream hands out (each
//! apply, and every object after each relist), before that event triggers anything.
//! Deletions are not handed out (the shared reflector dispatches applies only), so every read
//! checks its objects against the store and drops those gone. `spec.team` is immutable (CEL), so
//! an object never moves between teams.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{Member, Team, TeamTask};

/// An object that belongs to one team of its namespace.
pub trait OfTeam: kube::Resource<DynamicType = ()> + Clone + 'static {
    /// The name of its team.
    fn team(&self) -> &str;
}

impl OfTeam for Member {
    fn team(&self) -> &str {
        &self.spec.team
    }
}

impl OfTeam for TeamTask {
    fn team(&self) -> &str {
        &self.spec.team
    }
}

/// The objects of each team, by reference, over a store.
pub struct ByTeam<K: OfTeam> {
    store: Store<K>,
    index: Mutex<HashMap<ObjectRef<Team>, HashSet<ObjectRef<K>>>>,
}

impl<K: OfTeam> ByTeam<K> {
    pub fn new(store: Store<K>) -> Self {
        Self { store, index: Mutex::default() }
    }

    /// Notes every object of the store: once it has synced, before anything reads.
    pub fn fill(&self) {
        for obj in self.store.state() {
            self.observe(&obj);
        }
    }

    /// Notes `obj` under its team.
    pub fn observe(&self, obj: &K) {
        let Some(ns) = obj.namespace() else { return };
        let team = ObjectRef::new(obj.team()).within(&ns);
        self.lock().entry(team).or_default().insert(ObjectRef::from_obj(obj));
    }

    /// The objects of team `name` in `ns`, from the store; those deleted are forgotten.
    pub fn of(&self, ns: &str, name: &str) -> Vec<Arc<K>> {
        let team = ObjectRef::new(name).within(ns);
        let mut index = self.lock();
        let Some(refs) = index.get_mut(&team) else { return Vec::new() };
        let mut found = Vec::with_capacity(refs.len());
        refs.retain(|r| match self.store.get(r) {
            Some(obj) => {
                found.push(obj);
                true
            }
            None => false,
        });
        if refs.is_empty() {
            index.remove(&team);
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Team>, HashSet<ObjectRef<K>>>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::controller::fixtures;

    fn member(ns: &str, name: &str, team: &str) -> Member {
        let mut m = fixtures::member(team, "general", name);
        m.metadata.namespace = Some(ns.into());
        m
    }

    #[test]
    fn a_team_reads_its_own_members_and_forgets_the_deleted() {
        let (reader, mut writer) = store::<Member>();
        let by_team = ByTeam::new(reader);
        let (a1, a2, b1, other_ns) = (member("ns", "a1", "a"), member("ns", "a2", "a"), member("ns", "b1", "b"), member("ns2", "a3", "a"));
        // Two listed before the fill, two observed after it.
        for m in [&a1, &b1] {
            writer.apply_watcher_event(&Event::Apply(m.clone()));
        }
        by_team.fill();
        for m in [&a2, &other_ns] {
            writer.apply_watcher_event(&Event::Apply(m.clone()));
            by_team.observe(m);
        }
        let names = |ns: &str, team: &str| {
            let mut n: Vec<String> = by_team.of(ns, team).iter().map(|m| m.uid().unwrap_or_default()).collect();
            n.sort();
            n
        };
        assert_eq!(names("ns", "a"), ["a1", "a2"]);
        assert_eq!(names("ns", "b"), ["b1"]);
        assert_eq!(names("ns2", "a"), ["a3"]);
        writer.apply_watcher_event(&Event::Delete(a1));
        assert_eq!(names("ns", "a"), ["a2"]);
        assert!(names("ns", "none").is_empty());
    }
}
