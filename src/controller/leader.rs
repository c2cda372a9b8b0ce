//! Leader election over a coordination.k8s.io Lease (kube-lease-manager): with several
//! controller replicas, only the holder reconciles. A replica that loses the lease, or whose lease
//! task dies, exits so that its pod restarts as a follower; two processes never act at once for
//! longer than the lease's grace period.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::info;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

/// Runs `work` once this process holds the lease, and stops (with an error) if it loses it.
pub async fn run_as_leader<F>(client: Client, lease: LeaseSettings, work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = lease.name, namespace = lease.namespace, identity = lease.identity, "waiting for the lease");
    while !*leading.borrow_and_update() {
        leading.changed().await.map_err(|_| anyhow::anyhow!("the lease task ended before this process led"))?;
    }
    info!(identity = lease.identity, "acquired the lease; reconciling");
    let lost = async {
        loop {
            if leading.changed().await.is_err() || !*leading.borrow() {
                return;
            }
        }
    };
    let out = tokio::select! {
        r = work => r,
        () = lost => Err(anyhow::anyhow!("lost the lease; exiting so a new leader takes over")),
    };
    task.abort();
    out
}
