//! The writer of Member `status.usage`: what `usage_report` accepted, written under the
//! gateway's own field manager ([`GATEWAY_USAGE`]), at most once per member every
//! [`FLUSH_INTERVAL`] (a report replaces the one still waiting: reports are running totals), at
//! once for a report that goes over a budget, so the operator stops the member without waiting.
//!
//! Several gateway replicas may hold reports of one member. Every write is conditional on the
//! version it read, and one that would lower a count is not made (see [`Usage::max`]), so the
//! status only ever grows whichever replica writes last. A replica that stops writes what it
//! holds first; one that dies loses it: the member's next report, a running total (over all its
//! attempts), brings it back, unless the member's pod ended within the flush interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::api::field_managers::{self, GATEWAY_USAGE};
use crate::api::{Member, Usage};

/// Most often one member's usage is written by one gateway.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How often a write that lost to another write of the Member is tried again.
const TRIES: usize = 3;

/// A Member by namespace and object name.
type Key = (String, String);

/// The newest report of one member this gateway took, and whether it waits to be written.
#[derive(Clone, Copy, Debug)]
struct Entry {
    usage: Usage,
    unwritten: bool,
}

/// The usage reports this gateway took: each is kept (written or not) until the cached Member
/// shows it, so what is known of a member never goes back between a write and its watch event.
pub struct UsageWriter {
    client: Client,
    members: Store<Member>,
    reports: Mutex<HashMap<Key, Entry>>,
}

impl UsageWriter {
    pub fn new(client: Client, members: Store<Member>) -> Arc<Self> {
        Arc::new(UsageWriter { client, members, reports: Mutex::new(HashMap::new()) })
    }

    /// The task that writes what waits, every [`FLUSH_INTERVAL`].
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.flush().await;
            }
        })
    }

    /// What is known of the member's usage: its status and the reports taken here.
    pub fn known(&self, member: &Member) -> Usage {
        let recorded = recorded(member);
        let key = (member.namespace().unwrap_or_default(), member.name_any());
        self.lock().get(&key).map_or(recorded, |e| recorded.max(e.usage))
    }

    /// Takes `usage` of Member `object` in `ns`, to be written at the next flush.
    pub fn queue(&self, ns: &str, object: &str, usage: Usage) {
        let mut reports = self.lock();
        let e = reports.entry((ns.to_owned(), object.to_owned())).or_insert(Entry { usage, unwritten: true });
        *e = Entry { usage: e.usage.max(usage), unwritten: true };
    }

    /// Takes `usage` of Member `object` in `ns` and writes it now (what could not be written
    /// waits for the next flush).
    pub async fn write_now(&self, ns: &str, object: &str, usage: Usage) -> Result<(), kube::Error> {
        let merged = {
            let mut reports = self.lock();
            let e = reports.entry((ns.to_owned(), object.to_owned())).or_insert(Entry { usage, unwritten: false });
            *e = Entry { usage: e.usage.max(usage), unwritten: false };
            e.usage
        };
        let written = self.write(ns, object, merged).await;
        if !matches!(written, Ok(true)) {
            self.queue(ns, object, merged);
        }
        written.map(|_| ())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the map leaves counts that are still counts.
        self.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every report that waits. The gateway also calls it as it stops: a report of a
    /// member whose pod ended since (a failed attempt) would come back with no later report.
    pub async fn flush(&self) {
        let due: Vec<(Key, Usage)> = {
            let mut reports = self.lock();
            // Forget what was written and the cache shows (or whose Member is gone from it).
            reports.retain(|(ns, object), e| {
                e.unwritten || self.members.get(&ObjectRef::new(object).within(ns)).is_some_and(|m| !recorded(&m).covers(&e.usage))
            });
            reports
                .iter_mut()
                .filter(|(_, e)| e.unwritten)
                .map(|(k, e)| {
                    e.unwritten = false;
                    (k.clone(), e.usage)
                })
                .collect()
        };
        for ((ns, object), usage) in due {
            match self.write(&ns, &object, usage).await {
                Ok(true) => {}
                // Lost to other writes of the Member each time: the next flush tries again.
                Ok(false) => self.queue(&ns, &object, usage),
                Err(e) => {
                    tracing::warn!(namespace = ns, member = object, error = %e, "could not record the member's usage; retrying at the next flush");
                    self.queue(&ns, &object, usage);
                }
            }
        }
    }

    /// Applies `usage` (merged with what the Member says) unless the Member says as much; false
    /// when it lost to other writes of the Member every time.
    async fn write(&self, ns: &str, object: &str, usage: Usage) -> Result<bool, kube::Error> {
        let api: Api<Member> = Api::namespaced(self.client.clone(), ns);
        let mut member = match self.members.get(&ObjectRef::new(object).within(ns)) {
            Some(m) => Some(m.as_ref().clone()),
            None => api.get_opt(object).await?,
        };
        for _ in 0..TRIES {
            // Gone: nothing to record on it.
            let Some(m) = member.take() else { return Ok(true) };
            let recorded = recorded(&m);
            if recorded.covers(&usage) {
                return Ok(true);
            }
            let status = json!({ "usage": recorded.max(usage) });
            let body = field_managers::status_apply::<Member>(object, m.resource_version().as_deref(), status);
            match api.patch_status(object, &PatchParams::apply(GATEWAY_USAGE).force(), &Patch::Apply(&body)).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => member = api.get_opt(object).await?,
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(namespace = ns, member = object, "the member kept changing; its usage is written at the next flush");
        Ok(false)
    }
}

fn recorded(m: &Member) -> Usage {
    m.status.as_ref().and_then(|s| s.usage).unwrap_or_default()
}
