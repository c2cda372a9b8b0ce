//! What every reconciler shares: the client, the bus, the stores, the recorder, the metrics.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;

use crate::api::{Member, Team, TeamTask};
use crate::bus::Bus;
use crate::config::ControllerConfig;
use crate::metrics::Metrics;

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub bus: Bus,
    pub config: ControllerConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub teams: Store<Team>,
    pub members: Store<Member>,
    pub pods: Store<Pod>,
    pub tasks: Store<TeamTask>,
    /// Consecutive failures per object, for the error policy's backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// When each Team's member counts were last written (see `team::COUNTS_INTERVAL`).
    pub counts_written: super::pace::Pace,
    /// When each Team's members were last gone over (see `team::PASS_INTERVAL`).
    pub team_passes: super::pace::Pace,
    /// The Member versions the Member reconciler wrote from, until the store moves past them.
    pub written_from: WrittenFrom,
    /// The roster last set in Redis per team, so that only changes are sent.
    pub rosters: super::roster::Rosters,
    /// Members and tasks by team (see `by_team`).
    pub members_by_team: super::by_team::ByTeam<Member>,
    pub tasks_by_team: super::by_team::ByTeam<TeamTask>,
}

/// The versions a reconciler judged and wrote from, per object: a reconcile of one of them is
/// stale (it runs on a cache that has not seen the write yet), and the write's own watch event
/// triggers the next one. An optimization only: a version forgotten (a restart) costs a
/// conditional write that fails with 409, never a wrong status.
#[derive(Default)]
pub struct WrittenFrom(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl WrittenFrom {
    /// Records that `obj`, at its version, was written from.
    pub fn record<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let Some(rv) = obj.meta().resource_version.clone() else { return };
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(object_key(obj), rv);
    }

    /// Whether `obj` is at a version written from already; a newer version forgets the record.
    pub fn is_stale<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = object_key(obj);
        match seen.get(&key) {
            Some(rv) if obj.meta().resource_version.as_ref() == Some(rv) => true,
            Some(_) => {
                seen.remove(&key);
                false
            }
            None => false,
        }
    }
}

impl Context {
    /// Delay before retrying `key` after another failure: 1 s doubling up to 5 min.
    pub fn backoff(&self, key: String) -> std::time::Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key).or_default();
        *n = n.saturating_add(1);
        std::time::Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(key);
    }

    /// Publishes an Event on `obj`; a failure to record is logged, never fails the reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "recording an event failed");
        }
    }
}

/// `Kind/namespace/name`: the key of an object in the context's per-object tables.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::team;

    #[test]
    fn a_version_written_from_is_stale_until_the_store_moves_on() {
        let w = WrittenFrom::default();
        let mut t = team("review", 3);
        t.metadata.resource_version = Some("10".into());
        assert!(!w.is_stale(&t));
        w.record(&t);
        assert!(w.is_stale(&t), "judged again from the version just written from");
        t.metadata.resource_version = Some("11".into());
        assert!(!w.is_stale(&t));
        t.metadata.resource_version = Some("10".into());
        assert!(!w.is_stale(&t), "forgotten once a newer version was seen");
    }
}
