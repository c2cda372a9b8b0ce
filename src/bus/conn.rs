//! Connections to Redis: one shared, reconnecting connection for ordinary commands, connections
//! for blocking waits (pooled, at most [`super::POOLED_WAITS`]: see [`super::pool`]), and one
//! Pub/Sub subscription per process that wakes the waits past those ([`super::wake`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::BusConfig;
use super::error::BusError;

/// Time to establish a TCP (and TLS) connection before calling Redis unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for one non-blocking command; generous because teardown may unlink large streams.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocking connection never times out by itself: the wait bounds it with its own deadline.
const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Attempts for an idempotent call while Redis restarts, with the delay doubling from the first.
const ATTEMPTS: u32 = 6;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// A connection of any of the kinds the bus uses; all of them speak [`ConnectionLike`], so
/// scripts and commands are written once.
#[derive(Clone)]
pub(crate) enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What opens connections: a single server (`redis://`, `rediss://`, with user and password in
/// the URL) or a cluster given by comma-separated seed URLs.
#[derive(Clone)]
pub(crate) enum Connector {
    Single(Box<redis::Client>),
    /// Two cluster clients because the response timeout is per client: short for ordinary
    /// commands, effectively none for blocking reads; and a plain client per seed for the
    /// wake-up subscription.
    Cluster {
        shared: Box<ClusterClient>,
        blocking: Box<ClusterClient>,
        seeds: Vec<redis::Client>,
    },
}

impl Connector {
    pub(crate) fn new(cfg: &BusConfig) -> Result<Self, BusError> {
        // Errors name the seed by position, not by text: the URL may carry a password.
        if cfg.cluster {
            let seeds = cluster_seeds(&cfg.url)?;
            let build = |timeout| {
                ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(timeout)
                    .build()
                    .map_err(|e| BusError::InvalidArgument(format!("redis cluster url: {e}")))
            };
            let (shared, blocking) = (build(RESPONSE_TIMEOUT)?, build(BLOCKING_RESPONSE_TIMEOUT)?);
            let seeds = seeds
                .into_iter()
                .enumerate()
                .map(|(i, seed)| {
                    redis::Client::open(seed).map_err(|e| BusError::InvalidArgument(format!("redis cluster url: seed {}: {e}", i + 1)))
                })
                .collect::<Result<_, _>>()?;
            Ok(Connector::Cluster { shared: Box::new(shared), blocking: Box::new(blocking), seeds })
        } else {
            let client = redis::Client::open(cfg.url.as_str()).map_err(|e| {
                let hint =
                    if cfg.url.contains(',') { "; a comma-separated list of seeds needs cluster mode (--redis-cluster)" } else { "" };
                BusError::InvalidArgument(format!("redis url: {e}{hint}"))
            })?;
            Ok(Connector::Single(Box::new(client)))
        }
    }

    /// The shared connection. A single server gets a [`ConnectionManager`], which reconnects in
    /// the background after Redis restarts; the cluster connection re-discovers nodes itself.
    pub(crate) async fn shared(&self) -> Result<Conn, BusError> {
        match self {
            Connector::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Conn::Manager(client.get_connection_manager_with_config(cfg).await?))
            }
            Connector::Cluster { shared, .. } => Ok(Conn::Cluster(shared.get_async_connection().await?)),
        }
    }

    /// A new connection for blocking reads; [`super::pool::BlockingPool`] reuses it.
    pub(crate) async fn blocking(&self) -> Result<Conn, BusError> {
        match self {
            Connector::Single(client) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(BLOCKING_RESPONSE_TIMEOUT));
                Ok(Conn::Multiplexed(client.get_multiplexed_async_connection_with_config(&cfg).await?))
            }
            Connector::Cluster { blocking, .. } => Ok(Conn::Cluster(blocking.get_async_connection().await?)),
        }
    }

    /// The clients the wake-up subscription may use, in order of preference: the server, or
    /// every cluster seed (a `PUBLISH` on one node of a cluster reaches the subscribers of all).
    pub(crate) fn pubsub_clients(&self) -> Vec<&redis::Client> {
        match self {
            Connector::Single(client) => vec![client],
            Connector::Cluster { seeds, .. } => seeds.iter().collect(),
        }
    }
}

/// The seed nodes of a cluster URL: comma-separated `redis://` or `rediss://` URLs, at least one.
fn cluster_seeds(url: &str) -> Result<Vec<ConnectionInfo>, BusError> {
    let seeds = url.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate().map(|(i, seed)| {
        seed.into_connection_info().map_err(|e| {
            BusError::InvalidArgument(format!("redis cluster url: seed {} (comma-separated redis:// or rediss:// URLs): {e}", i + 1))
        })
    });
    let seeds = seeds.collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        return Err(BusError::InvalidArgument("redis cluster url: no seed (comma-separated redis:// or rediss:// URLs)".into()));
    }
    Ok(seeds)
}

/// Runs an idempotent call again while Redis is briefly unavailable (a restart, a failover), so
/// one dropped connection does not fail the caller. Only for calls that are safe to repeat.
/// (A plain closure returning a future rather than an async closure, so the future stays `Send`.)
pub(crate) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BusError>>,
{
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(BusError::Unavailable(err)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %err, "redis unavailable, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(url: &str, cluster: bool) -> String {
        match Connector::new(&BusConfig { cluster, ..BusConfig::from_url(url) }) {
            Err(BusError::InvalidArgument(msg)) => msg,
            Err(e) => panic!("{url}: not InvalidArgument: {e}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    #[test]
    fn cluster_seeds_are_comma_separated_urls() {
        let seeds = cluster_seeds(" redis://127.0.0.1:17000, redis://127.0.0.1:17001,").expect("two seeds");
        assert_eq!(seeds.len(), 2);
        assert!(Connector::new(&BusConfig { cluster: true, ..BusConfig::from_url("rediss://u:p@h1:6380,rediss://u:p@h2:6380") }).is_ok());
    }

    #[test]
    fn a_bad_seed_is_named_by_position_without_its_text() {
        let msg = refusal("redis://127.0.0.1:17000,http://secret@h:1", true);
        assert!(msg.contains("seed 2") && !msg.contains("secret"), "{msg}");
        assert!(refusal(" , ", true).contains("no seed"));
    }

    #[test]
    fn a_seed_list_without_cluster_mode_says_so() {
        let msg = refusal("redis://127.0.0.1:17000,redis://127.0.0.1:17001", false);
        assert!(msg.contains("needs cluster mode"), "{msg}");
    }
}
