//! Wake-ups for waits: one Pub/Sub subscription per process instead of a blocking Redis
//! connection per wait, for the waits past the first [`super::POOLED_WAITS`] of a process (those
//! block on pooled connections, see [`super::pool`]).
//!
//! Every script that adds to an inbox, or removes one, publishes the inbox's key on
//! [`WAKE_CHANNEL`] (send.lua, teardown.lua). A process subscribes once, on its first parked wait, and
//! hands each key to the waits of that inbox parked in this process. A wait registers before it
//! reads the inbox and parks only when the read found nothing, so a send that lands between the
//! read and the park still wakes it (see [`Watch`]).
//!
//! A wake-up published while the subscription is down is lost: every (re)subscription therefore
//! wakes every parked wait, which reads its inbox again. In a Redis Cluster, a `PUBLISH` reaches
//! the subscribers of every node, so one subscription to any node hears every team.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::conn::Connector;
use crate::metrics::InProgress;

/// The channel every inbox write is announced on; the message is the inbox's key.
pub(crate) const WAKE_CHANNEL: &str = "team-operator:wake";
/// Without traffic, a PING this often proves the subscription is still there.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Time for the subscription to connect, subscribe or answer a PING.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before subscribing again, doubling up to the second.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The parked waits of this process, by inbox key.
#[derive(Default)]
struct Registry {
    /// Inbox key → its notifier and how many [`Watch`]es hold it.
    inboxes: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Waits parked now (see [`Wakes::parked`]).
    parked: Gauge,
}

impl Registry {
    fn inboxes(&self) -> MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, inbox: &str) {
        if let Some((notify, _)) = self.inboxes().get(inbox) {
            notify.notify_waiters();
        }
    }

    /// Registers interest in `inbox` for as long as the returned [`Watch`] lives.
    fn watch(self: &Arc<Self>, inbox: String) -> Watch {
        let notify = {
            let mut inboxes = self.inboxes();
            let entry = inboxes.entry(inbox.clone()).or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        Watch { registry: self.clone(), inbox, notify }
    }

    fn wake_all(&self) {
        for (notify, _) in self.inboxes().values() {
            notify.notify_waiters();
        }
    }
}

/// The wake-ups of one [`super::Bus`] and its clones; the subscription starts with the first
/// [`Wakes::watch`] and ends when the last clone of the bus is dropped.
pub(crate) struct Wakes {
    registry: Arc<Registry>,
    connector: Connector,
    listener: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Wakes {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl Wakes {
    pub(crate) fn new(connector: Connector) -> Self {
        Wakes { registry: Arc::default(), connector, listener: OnceLock::new() }
    }

    /// Registers interest in `inbox` for as long as the returned [`Watch`] lives.
    pub(crate) fn watch(&self, inbox: String) -> Watch {
        self.listener.get_or_init(|| tokio::spawn(listen(self.connector.clone(), self.registry.clone())).abort_handle());
        self.registry.watch(inbox)
    }

    /// Counts a wait as parked for as long as the returned guard lives.
    pub(crate) fn park(&self) -> InProgress {
        InProgress::count(&self.registry.parked)
    }

    /// How many waits are parked now.
    pub(crate) fn parked(&self) -> usize {
        usize::try_from(self.registry.parked.get()).unwrap_or(0)
    }
}

/// One wait's interest in an inbox. Take [`Watch::armed`] before reading the inbox: a wake-up
/// published after that moment completes it, even if it comes before the wait starts awaiting.
pub(crate) struct Watch {
    registry: Arc<Registry>,
    inbox: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// A future that completes on the next wake-up of the inbox, already registered.
    pub(crate) fn armed(&self) -> std::pin::Pin<Box<Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inboxes = self.registry.inboxes();
        if let Some(entry) = inboxes.get_mut(&self.inbox) {
            entry.1 -= 1;
            if entry.1 == 0 {
                inboxes.remove(&self.inbox);
            }
        }
    }
}

/// Keeps the subscription: subscribes, wakes every parked wait (anything published while it was
/// down was missed), hands each wake-up on, and starts over when the connection goes.
async fn listen(connector: Connector, registry: Arc<Registry>) {
    let mut retry = FIRST_RETRY;
    loop {
        match subscribe(&connector).await {
            Ok(pubsub) => {
                retry = FIRST_RETRY;
                registry.wake_all();
                let reason = relay(pubsub, &registry).await;
                tracing::debug!(reason, "wake-up subscription lost, subscribing again");
            }
            Err(e) => tracing::debug!(error = %e, "wake-up subscription failed, retrying"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// A connection subscribed to [`WAKE_CHANNEL`]: to the server, or to the first cluster seed that
/// answers.
async fn subscribe(connector: &Connector) -> Result<redis::aio::PubSub, String> {
    let mut last = String::from("no seed");
    for client in connector.pubsub_clients() {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(WAKE_CHANNEL).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, attempt).await {
            Ok(Ok(pubsub)) => return Ok(pubsub),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer".into(),
        }
    }
    Err(last)
}

/// Hands wake-ups to the registry until the connection ends or stops answering PINGs; why.
async fn relay(pubsub: redis::aio::PubSub, registry: &Registry) -> &'static str {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    if let Ok(inbox) = std::str::from_utf8(msg.get_payload_bytes()) {
                        registry.wake(inbox);
                    }
                }
                None => return "connection closed",
            },
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(ANSWER_TIMEOUT, sink.ping::<String>()).await, Ok(Ok(_))) {
                    return "no answer to PING";
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_up_between_arming_and_awaiting_is_not_lost() {
        let registry = Arc::new(Registry::default());
        let watch = registry.watch("inbox:a".into());
        let armed = watch.armed();
        registry.wake("inbox:b");
        registry.wake("inbox:a");
        tokio::time::timeout(Duration::from_secs(1), armed).await.expect("woken although armed before the wake-up and awaited after");
        let again = watch.armed();
        registry.wake_all();
        tokio::time::timeout(Duration::from_secs(1), again).await.expect("a resubscription wakes every watch");
    }

    #[test]
    fn the_last_watch_of_an_inbox_removes_it() {
        let registry = Arc::new(Registry::default());
        let one = registry.watch("i".into());
        let two = registry.watch("i".into());
        drop(one);
        assert!(registry.inboxes().contains_key("i"));
        drop(two);
        assert!(registry.inboxes().is_empty());
    }
}
