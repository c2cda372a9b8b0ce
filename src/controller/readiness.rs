//! What the controller's /readyz says. Ready when Redis answers and, on the leader, every watch
//! cache has listed: a leader still loading its stores reconciles nothing yet. A standby, which
//! reconciles nothing by design, is ready as soon as Redis answers, so a rollout waits only for
//! what a standby needs to take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OnceCell;

use crate::bus::{Bus, BusConfig};
use crate::health::ReadyCheck;
use crate::metrics::Metrics;

pub struct Readiness {
    config: BusConfig,
    /// Connected on the first check that reaches Redis: a controller started while Redis is down
    /// is not ready, rather than crashing.
    bus: OnceCell<Bus>,
    leading: AtomicBool,
    synced: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Readiness {
    pub fn new(config: BusConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Readiness { config, bus: OnceCell::new(), leading: AtomicBool::new(false), synced: AtomicBool::new(false), metrics })
    }

    /// This process reconciles from now on (it holds the Lease, or runs without election) until
    /// the guard is dropped; its caches are not synced yet.
    pub fn lead(self: &Arc<Self>) -> Leading {
        self.synced.store(false, Ordering::SeqCst);
        self.leading.store(true, Ordering::SeqCst);
        self.metrics.leader.set(1);
        Leading(self.clone())
    }

    /// Every watch cache has listed.
    pub fn synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// The /readyz check.
    pub fn check(self: &Arc<Self>) -> ReadyCheck {
        let me = self.clone();
        Arc::new(move || {
            let me = me.clone();
            Box::pin(async move {
                let bus = me.bus.get_or_try_init(|| Bus::connect(me.config.clone())).await.map_err(|e| format!("redis: {e}"))?;
                bus.ping().await?;
                if me.leading.load(Ordering::SeqCst) && !me.synced.load(Ordering::SeqCst) {
                    return Err("leading, and the watch caches have not synced yet".into());
                }
                Ok(())
            })
        })
    }
}

/// Held while this process leads; dropping it makes it a standby again.
pub struct Leading(Arc<Readiness>);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.leading.store(false, Ordering::SeqCst);
        self.0.metrics.leader.set(0);
    }
}
