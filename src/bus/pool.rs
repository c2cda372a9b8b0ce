//! Connections for blocking waits, and how many waits of this process may block on one.
//!
//! A blocking `XREADGROUP` is the fastest way for a wait to get its message: the send's `XADD`
//! answers it on the server, no round trip after. It holds its whole connection while blocked, so
//! waits must not share the multiplexed connection every other call goes through (one wait would
//! stall every send), and opening a connection per wait costs a TCP (and TLS) and RESP handshake,
//! more than the read itself: a wait borrows one from [`BlockingPool`] and gives it back when its
//! read completed.
//!
//! A connection per wait does not scale to thousands of idle agents, so only [`POOLED_WAITS`]
//! waits of a process block at once; a wait that finds every seat taken parks on the process's
//! wake-up subscription instead ([`super::wake`]), which costs it one more read when woken.

use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::conn::{Conn, Connector};
use super::error::BusError;
use crate::metrics::InProgress;

/// How many waits of one process block on a pooled connection at once, and so the most
/// connections the pool holds. Waits past it park on the wake-up subscription, so a process holds
/// at most this + 2 connections (the shared one, the subscription) however many agents wait: 64
/// keeps that under the 100 a gateway replica may use, and covers the members of a busy team that
/// wait on one replica at the same moment (the bench's 64 pairs), which get the fast path.
pub const POOLED_WAITS: usize = 64;

/// Connections for blocking reads, reused across waits. A connection goes back only after its
/// read completed: one whose wait was cancelled, timed out client-side or failed may still be
/// blocked on the server (or broken), so it is dropped, which closes it.
///
/// Cluster connections are pooled the same way: each [`super::conn::Conn::Cluster`] from
/// [`Connector::blocking`] owns its node connections, so a borrowed one is not shared with any
/// other wait, and dropping it closes them.
pub(crate) struct BlockingPool {
    connector: Connector,
    idle: Mutex<Vec<Conn>>,
    /// One permit per wait that may block now (see [`BlockingPool::seat`]).
    seats: Semaphore,
    /// Waits in their blocking read now (see [`BlockingPool::reading`]).
    reading: Gauge,
}

/// The right of one wait to block on a pooled connection; the seat is free again when dropped.
pub(crate) struct Seat<'a> {
    _permit: SemaphorePermit<'a>,
}

impl BlockingPool {
    /// A pool for `seats` concurrent blocking waits ([`POOLED_WAITS`] outside tests).
    pub(crate) fn new(connector: Connector, seats: usize) -> Self {
        BlockingPool { connector, idle: Mutex::new(Vec::new()), seats: Semaphore::new(seats), reading: Gauge::default() }
    }

    /// A seat for one blocking wait, or None when [`POOLED_WAITS`] waits hold one (park instead).
    pub(crate) fn seat(&self) -> Option<Seat<'_>> {
        self.seats.try_acquire().ok().map(|permit| Seat { _permit: permit })
    }

    /// Counts a wait as blocked in its read for as long as the returned guard lives.
    pub(crate) fn reading(&self) -> InProgress {
        InProgress::count(&self.reading)
    }

    /// How many waits are in their blocking read now.
    pub(crate) fn readers(&self) -> usize {
        usize::try_from(self.reading.get()).unwrap_or(0)
    }

    /// An idle connection, or a new one when none is idle; only for the holder of a seat, so no
    /// more than [`POOLED_WAITS`] are ever open.
    pub(crate) async fn take(&self, _seat: &Seat<'_>) -> Result<Conn, BusError> {
        // Bound to a local so the lock is released before connecting.
        let idle = self.idle().pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connector.blocking().await,
        }
    }

    /// Returns a connection whose last read completed.
    pub(crate) fn give_back(&self, conn: Conn) {
        self.idle().push(conn);
    }

    /// Drops every idle connection: after Redis went away they are all broken, and each would
    /// otherwise fail one wait.
    pub(crate) fn clear(&self) {
        self.idle().clear();
    }

    /// The idle list; a panic elsewhere while it was locked leaves a list that is still valid.
    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusConfig;

    #[test]
    fn seats_run_out_and_come_back() {
        let connector = Connector::new(&BusConfig::from_url("redis://127.0.0.1:1")).expect("a url is enough");
        let pool = BlockingPool::new(connector, 2);
        let (one, two) = (pool.seat().expect("first seat"), pool.seat().expect("second seat"));
        assert!(pool.seat().is_none(), "a third wait parks");
        drop(one);
        let three = pool.seat().expect("a freed seat is taken again");
        assert!(pool.seat().is_none());
        drop((two, three));
        assert_eq!(pool.seats.available_permits(), 2);
    }
}
