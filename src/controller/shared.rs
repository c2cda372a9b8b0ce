//! One watch per kind, shared by every consumer: a reflector store plus one trigger stream per
//! consumer.
//!
//! kube-runtime's own `reflect_shared` does not pass deletions on (it hands out references that
//! the subscriber looks up in the store, where a deleted object is gone), and a separate watch per
//! relation races the store: its event can arrive before the shared store has the change, and a
//! reconcile that reads the store then computes from the past with nothing left to trigger it
//! again. Here every event is fanned out only after the store has applied it, deletions included,
//! so a reconcile never reads a store older than its trigger.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use super::slim::Slim;

/// Events buffered per consumer before the watch waits for it.
const BUFFER: usize = 1024;

/// A reflector store and the trigger streams not yet handed out.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> {
    pub store: Store<K>,
    subscriptions: Vec<mpsc::Receiver<Arc<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Shared<K> {
    /// Takes one consumer's trigger stream. Every stream must be consumed, or the watch stalls
    /// on backpressure.
    pub fn subscribe(&mut self) -> anyhow::Result<impl Stream<Item = Arc<K>> + Send + 'static> {
        let rx = self.subscriptions.pop().ok_or_else(|| anyhow::anyhow!("no subscription of {} left", K::kind(&())))?;
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) }))
    }
}

/// Starts a watch feeding a store and `consumers` trigger streams; the returned future drives the
/// watch and must be polled.
pub fn shared<K>(api: Api<K>, cfg: watcher::Config, consumers: usize) -> (Shared<K>, impl Future<Output = ()>)
where
    K: Resource<DynamicType = ()> + Slim + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let (senders, subscriptions): (Vec<_>, Vec<_>) = (0..consumers).map(|_| mpsc::channel(BUFFER)).unzip();
    let events = watcher::watcher(api, cfg.any_semantic())
        .default_backoff()
        // Only what a reader of the store reads is kept (see `slim`): at fleet sizes the rest is
        // most of the stores' memory.
        .modify(Slim::slim)
        .reflect(writer);
    let reader = store.clone();
    let drive = async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let touched: Vec<Arc<K>> = match event {
                Ok(Event::Apply(k) | Event::Delete(k)) => vec![Arc::new(k)],
                // After a (re)list the store holds the complete new state: everything is touched.
                Ok(Event::InitDone) => reader.state(),
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Err(e) => {
                    warn!(kind = %K::kind(&()), error = %e, "watch error; retrying with backoff");
                    continue;
                }
            };
            for k in touched {
                for tx in &senders {
                    // A consumer that went away (shutdown) no longer needs triggers.
                    let _ = tx.send(k.clone()).await;
                }
            }
        }
    };
    (Shared { store, subscriptions }, drive)
}
