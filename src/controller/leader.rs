//! Leader election over a coordination.k8s.io Lease: with several controller replicas, only the
//! holder reconciles.
//!
//! kube-lease-manager (its manual API, [`LeaseManager::changed`] and [`LeaseManager::release`])
//! takes and renews the Lease; it has no renew deadline, so the timing around it is ours, as in
//! client-go's leader election:
//! - The holder renews every `retry_period` (the crate renews `grace` before expiry, so grace is
//!   `duration - retry_period`).
//! - Every `retry_period` the holder reads the Lease back. When no renewal has been confirmed
//!   for `renew_deadline` (shorter than the lease duration), it stops reconciling and exits,
//!   before the lease expires and a standby may take it: two replicas never reconcile at once,
//!   even when the leader's renewals fail silently (a partition, a hung API connection).
//! - A standby lets the crate take the lease when the holder's expires, and reads the Lease every
//!   `retry_period` besides: the crate alone would not look again before that expiry, so a Lease
//!   released on SIGTERM is taken at once, not a lease duration later.
//! - On SIGTERM the leader lets its controllers finish (`shutdown_on_signal`, at most one retry
//!   period), then releases the Lease; a standby gets SIGTERM and simply leaves.
//!
//! A replica that loses the lease, passes its renew deadline or whose controllers end exits, so
//! that its pod restarts as a standby.

use std::future::Future;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tracing::{debug, info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
    /// How long the holder goes without a confirmed renewal before it stops reconciling.
    pub renew_deadline: Duration,
    /// How often the holder renews and checks, and a standby tries to acquire.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Refuses timings that cannot work, naming the flags: whole seconds with
    /// `0 < retry period < renew deadline < lease duration`.
    pub fn validate(&self) -> anyhow::Result<()> {
        let whole = |d: Duration| d.subsec_nanos() == 0 && d > Duration::ZERO;
        if !(whole(self.duration) && whole(self.renew_deadline) && whole(self.retry_period)) {
            anyhow::bail!("lease timings must be whole seconds above zero");
        }
        if self.retry_period >= self.renew_deadline || self.renew_deadline >= self.duration {
            anyhow::bail!(
                "--lease-retry-period-seconds ({}) < --lease-renew-deadline-seconds ({}) < --lease-duration-seconds ({}) does not hold",
                self.retry_period.as_secs(),
                self.renew_deadline.as_secs(),
                self.duration.as_secs()
            );
        }
        Ok(())
    }

    /// The crate's parameters: renewals `grace` before expiry, i.e. every retry period.
    fn params(&self) -> LeaseParams {
        let duration = self.duration.as_secs();
        LeaseParams::new(&self.identity, duration, duration - self.retry_period.as_secs())
    }
}

/// Runs `work` once this process holds the lease. Returns when `work` ends or SIGTERM comes
/// (releasing the lease either way), with an error when the lease is lost or its renew deadline
/// passes (`work` is dropped first: nothing reconciles any more), and `Ok` on SIGTERM while
/// standing by.
pub async fn run_as_leader<F>(client: Client, lease: LeaseSettings, work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    lease.validate()?;
    // Listening from the start: a SIGTERM that came between two listeners would be lost (once a
    // handler is installed, the signal no longer ends the process by itself).
    let mut term = Terminate::listen()?;
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    info!(lease = lease.name, namespace = lease.namespace, identity = lease.identity, "waiting for the lease");
    let (manager, since) = tokio::select! {
        acquired = acquire(&client, &api, &lease) => acquired,
        () = term.recv() => {
            info!("SIGTERM while standing by; exiting");
            return Ok(());
        }
    };
    info!(identity = lease.identity, "acquired the lease; reconciling");
    tokio::pin!(work);
    let ended = tokio::select! {
        ended = &mut work => ended,
        // The controllers finish what they are doing and stop on SIGTERM by themselves
        // (`shutdown_on_signal`); after a grace `work` is dropped, in case the signal came before
        // they listened. Dropping it mid-reconcile is what a crash does, and every reconcile is
        // safe to repeat.
        () = term.recv() => {
            info!("SIGTERM; stopping the controllers");
            let grace = lease.retry_period;
            tokio::time::timeout(grace, &mut work).await.unwrap_or(Ok(()))
        }
        stop = hold(&manager, &api, &lease, since) => return Err(stop),
    };
    // Nothing reconciles any more: hand over now rather than make the standby wait for the lease
    // to expire.
    match tokio::time::timeout(lease.retry_period * 2, manager.release()).await {
        Ok(Ok(())) => info!(identity = lease.identity, "released the lease"),
        Ok(Err(e)) => warn!(error = %e, "could not release the lease; a standby takes it when it expires"),
        Err(_) => warn!("releasing the lease timed out; a standby takes it when it expires"),
    }
    ended
}

/// Takes the lease. The manager's `changed()` waits for the holder's lease to expire and takes
/// it then; meanwhile the Lease is read every retry period, and once it is released (no holder)
/// a fresh manager tries at once: the crate's state would only be read again at the old expiry.
/// Returns the manager and the moment it got the lease (the first read-back in [`hold`] replaces
/// it with the Lease's own renew time).
async fn acquire(client: &Client, api: &Api<Lease>, lease: &LeaseSettings) -> (LeaseManager, SystemTime) {
    loop {
        let manager =
            match LeaseManager::new(client.clone(), &lease.name, &lease.namespace, lease.params(), LeaseCreateMode::AutoCreate).await {
                Ok(manager) => manager,
                Err(e) => {
                    warn!(error = %e, "cannot read the lease; retrying");
                    tokio::time::sleep(lease.retry_period).await;
                    continue;
                }
            };
        let released = async {
            loop {
                tokio::time::sleep(lease.retry_period).await;
                match tokio::time::timeout(lease.retry_period, api.get_opt(&lease.name)).await {
                    Ok(Ok(Some(l))) if l.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_none() => return,
                    Ok(Ok(Some(_))) => debug!("the lease is held by another replica"),
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => debug!(error = %e, "reading the lease failed"),
                    Err(_) => debug!("reading the lease timed out"),
                }
            }
        };
        tokio::select! {
            taken = manager.changed() => match taken {
                Ok(true) => return (manager, SystemTime::now()),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "trying for the lease failed; retrying");
                    tokio::time::sleep(lease.retry_period).await;
                }
            },
            () = released => debug!("the lease was released; trying for it now"),
        }
    }
}

/// Keeps the lease while leading: the manager renews it; every retry period the Lease is read
/// back to confirm the renewal. Returns why leading must stop: the lease went to another
/// holder, or no renewal was confirmed within the renew deadline.
async fn hold(manager: &LeaseManager, api: &Api<Lease>, lease: &LeaseSettings, since: SystemTime) -> anyhow::Error {
    let renewing = async {
        loop {
            match manager.changed().await {
                Ok(false) => return anyhow::anyhow!("lost the lease; exiting so a new leader takes over"),
                Ok(true) => {}
                Err(e) => {
                    warn!(error = %e, "renewing the lease failed; retrying");
                    tokio::time::sleep(lease.retry_period / 2).await;
                }
            }
        }
    };
    tokio::pin!(renewing);
    let mut renewed = since;
    let mut check = tokio::time::interval(lease.retry_period);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Checked here, not only by the sleep below: a zero sleep need not be ready at its first
        // poll, and a ready tick would then win the select every time.
        let left = (renewed + lease.renew_deadline).duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return anyhow::anyhow!(
                "no renewal of the lease confirmed for {}s (the renew deadline); stopped reconciling before a standby may take over",
                lease.renew_deadline.as_secs()
            );
        }
        tokio::select! {
            lost = &mut renewing => return lost,
            () = tokio::time::sleep(left) => {}
            _ = check.tick() => match tokio::time::timeout(lease.retry_period.min(left), api.get_opt(&lease.name)).await {
                Ok(Ok(Some(current))) => {
                    let spec = current.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(lease.identity.as_str()) {
                        return anyhow::anyhow!("the lease is held by {:?} now; exiting so the new leader takes over", spec.holder_identity);
                    }
                    // The Lease's own renew time, written by this process's clock; it replaces the
                    // moment of acquisition, which is later than the acquiring renewal.
                    if let Some(renew) = spec.renew_time {
                        renewed = renew.0.into();
                    }
                }
                Ok(Ok(None)) => return anyhow::anyhow!("the lease was deleted; exiting"),
                Ok(Err(e)) => debug!(error = %e, "reading the lease back failed"),
                Err(_) => debug!("reading the lease back timed out"),
            },
        }
    }
}

/// SIGTERM (or Ctrl-C), listened for from the moment it is made.
struct Terminate {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Terminate {
    fn listen() -> anyhow::Result<Self> {
        Ok(Terminate {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, renew: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_must_nest() {
        assert!(settings(15, 10, 2).validate().is_ok());
        assert!(settings(3, 2, 1).validate().is_ok());
        for (d, r, p) in [(10, 10, 2), (10, 12, 2), (10, 5, 5), (10, 5, 0), (0, 0, 0)] {
            let err = settings(d, r, p).validate().expect_err("invalid timings");
            assert!(err.to_string().contains("lease"), "{err}");
        }
        let err = settings(10, 10, 2).validate().expect_err("deadline not below the duration");
        assert!(err.to_string().contains("--lease-renew-deadline-seconds (10)"), "{err}");
    }
}
