//! Message bus and agent memory on Redis.
//!
//! Members of a team talk through one inbox stream each (the lead included); the operator
//! projects each team's state and roster into Redis so that every send can be checked against
//! them atomically, inside one Lua script. Agents keep a capped memory per agent type.
//!
//! # Key layout
//!
//! Every key of a team carries the hash tag `{<namespace>/<team>}`, so the whole team lives in
//! one Redis Cluster slot and each script touches a single slot.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `team-operator:{<ns>/<team>}:meta` | hash | `state` = `active` \| `disbanded` (absent = no team); `bytes:<member>` = bytes held by that inbox; `bytes` = their sum (the team budget's running total); `rate:<sender>` = the sender's token bucket |
//! | `team-operator:{<ns>/<team>}:roster` | hash | member name → `queued` \| `active` \| `finished` |
//! | `team-operator:{<ns>/<team>}:inbox:<member>` | stream | messages to the member not acked yet (an ack deletes the entry); consumer group `inbox`, consumer = member name |
//! | `team-operator:{<ns>/<team>}:sent` | hash | `<sender>\n<message id>` → first send's reply (idempotency), for ids the sender gave and operator notices' keys |
//! | `team-operator:{<ns>/<team>}:sent-at` | zset | same fields scored by send time; entries older than an hour are pruned by later sends that keep a marker |
//! | `team-operator:{<ns>/<team>}:transcript` | stream | every message sent in the team, one entry per send (`to` = `*` for a broadcast), the newest up to `team_max_bytes`; its bytes are `transcript-bytes` in meta |
//! | `team-operator:{<ns>/<team>}:transcript:<uid>` | stream | the transcript of the disbanded Team with that uid, renamed at teardown, expiring after `spec.retention` |
//! | `team-operator:{<ns>/<team>}:transcripts` | zset | uids of retained transcripts scored by disband time (ms); expires with the last of them |
//! | `team-operator:memory:{<ns>/<project>}:<agent>` | string | an agent type's memory, ≤ 102,400 bytes of UTF-8 |
//!
//! The roster names every inbox, so the key set of a team is known without scanning and
//! teardown removes it with one `UNLINK`. Idempotency markers live in one hash (not a key per
//! id) for the same reason.
//!
//! Channel `team-operator:wake` (Pub/Sub, not a key) carries the key of every inbox a script
//! added to or removed: each process subscribes once and wakes its own parked waits (`wake`),
//! the waits past the first [`POOLED_WAITS`], which block on pooled connections (`pool`).
//!
//! # Lifecycle
//!
//! The controller calls [`Bus::sync_roster`] on every reconcile. To disband it calls
//! [`Bus::mark_disbanded`] (sends are refused from then on), [`Bus::system_notice`] to each
//! queued or active member (this wakes blocked waits), then [`Bus::teardown_retaining`], which
//! keeps the transcript under the Team's uid for its retention (acks delete inbox entries, so the
//! inboxes are no record; the transcript is its own append-only stream).

mod conn;
mod error;
mod inbox;
mod keys;
mod latest;
mod memory;
mod message;
mod peek;
mod pool;
mod roster;
mod scripts;
mod send;
mod transcript;
mod wake;

use std::sync::Arc;

pub use error::{BusError, InboxLimit};
pub use keys::TeamKey;
pub use memory::{MEMORY_CAP_BYTES, Memory, MemoryKey, WriteOutcome, keep_head, keep_tail, prompt_block};
pub use message::{Delivered, InboxCounts, Message, MessageKind, OutgoingMessage, Recipient};
pub use pool::POOLED_WAITS;
pub use roster::RosterState;
pub use send::{OPERATOR_SENDER, PERSON_SENDER_PREFIX};
pub use transcript::Transcript;

use conn::{Conn, Connector, retrying};
use pool::BlockingPool;
use wake::Wakes;

/// How to reach Redis and how big things may get.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. In cluster mode, a
    /// comma-separated list of seed node URLs.
    pub url: String,
    /// Talk Redis Cluster instead of a single server.
    pub cluster: bool,
    /// Largest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How much may wait unread, and how fast one member may send.
    pub limits: BusLimits,
}

impl BusConfig {
    /// A single-server config with the default limits (64 KiB bodies, [`BusLimits::default`]).
    pub fn from_url(url: impl Into<String>) -> Self {
        BusConfig { url: url.into(), cluster: false, max_body_bytes: 65_536, limits: BusLimits::default() }
    }
}

/// Bounds that keep one flooding member from filling Redis. Past any of them a send is refused
/// ([`BusError::InboxFull`], [`BusError::RateLimited`]); nothing stored is ever trimmed. Every
/// process that sends (gateway and controller) must be given the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusLimits {
    /// Entries an inbox may hold (unread or delivered and not acked yet).
    pub inbox_max_entries: u64,
    /// Bytes an inbox may hold: bodies plus a small overhead per entry.
    pub inbox_max_bytes: u64,
    /// Bytes all inboxes of one team may hold together; keep the sum over the teams you expect
    /// well below Redis `maxmemory`.
    pub team_max_bytes: u64,
    /// Sends one member may make in a burst; the bucket refills at `send_rate_per_second`.
    pub send_burst: u32,
    /// Sustained sends per second of one member (0: no rate limit).
    pub send_rate_per_second: u32,
}

/// Operator notices (`[AGENT FAILURE]`, the disband notice) may go this many entries past
/// [`BusLimits::inbox_max_entries`], and past the byte limits: they are short and a handful per
/// member, and a lead whose inbox is full must still learn that a member failed.
pub const NOTICE_RESERVE: u64 = 100;

impl Default for BusLimits {
    /// 10,000 entries and 16 MiB per inbox, 64 MiB per team, 100 sends in a burst then 20 a second
    /// per member.
    fn default() -> Self {
        BusLimits {
            inbox_max_entries: 10_000,
            inbox_max_bytes: 16 << 20,
            team_max_bytes: 64 << 20,
            send_burst: 100,
            send_rate_per_second: 20,
        }
    }
}

/// A handle on the bus; cheap to clone, all clones share one reconnecting connection, one pool
/// of connections for blocking waits and one wake-up subscription for the waits past the pool
/// (opened by the first of them).
#[derive(Clone)]
pub struct Bus {
    conn: Conn,
    blocking: Arc<BlockingPool>,
    wakes: Arc<Wakes>,
    cfg: Arc<BusConfig>,
}

impl Bus {
    /// Connects to Redis; fails with [`BusError::Unavailable`] when it cannot be reached and
    /// with [`BusError::InvalidArgument`] for a malformed URL.
    pub async fn connect(cfg: BusConfig) -> Result<Bus, BusError> {
        let connector = Connector::new(&cfg)?;
        let conn = connector.shared().await?;
        let blocking = Arc::new(BlockingPool::new(connector.clone(), POOLED_WAITS));
        Ok(Bus { conn, blocking, wakes: Arc::new(Wakes::new(connector)), cfg: Arc::new(cfg) })
    }

    /// Whether Redis answers a PING within a second (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn();
        match tokio::time::timeout(std::time::Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis: no answer to PING within 1 s".into()),
        }
    }

    /// Agent memory over the same connection.
    pub fn memory(&self) -> Memory {
        Memory::new(self.conn.clone())
    }

    /// Runs a script on the shared connection, again while Redis is briefly away. Every bus
    /// script is safe to repeat (send is deduplicated by message id).
    async fn run_script<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, BusError> {
        retrying(|| {
            let mut conn = self.conn();
            async move { Ok(invocation.invoke_async(&mut conn).await?) }
        })
        .await
    }

    /// A clone of the shared connection for one call (cloning is how a multiplexed connection is
    /// shared between concurrent calls).
    fn conn(&self) -> Conn {
        self.conn.clone()
    }
}
