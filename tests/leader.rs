//! Leader election between two controller replicas (real processes, the chart's RBAC): a leader
//! stopped with SIGTERM releases the Lease and the standby takes it at once; a leader cut off
//! from the API server stops reconciling within its renew deadline, before the lease expires and
//! the standby takes over.
#[path = "support/failover.rs"]
mod failover;
mod support;

use std::time::{Duration, Instant, SystemTime};

use failover::{Proxy, Replica};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use support::teams::team;
use support::*;
use team_operator::api::Team;

/// Both tests hold the one Lease the harness's identity may hold: one at a time.
static LEASE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Team has been reconciled: it carries the disband finalizer. (Not "Active": that needs
/// its lead Member, which the chart's admission policy lets only the `e2e` release's controller
/// create, and these replicas are another release's.)
fn reconciled(t: &Team) -> bool {
    t.finalizers().iter().any(|f| f == "agentteams.dev/disband")
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// The Lease API, with a previous run's Lease let go.
async fn fresh_lease(s: &Stack) -> (Api<Lease>, String) {
    let (lease_ns, lease) = failover::lease();
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), lease_ns);
    let _ = leases.delete(&lease, &Default::default()).await;
    (leases, lease)
}

#[tokio::test]
async fn on_sigterm_the_leader_releases_the_lease_and_the_standby_takes_it_at_once() {
    let _one = LEASE.lock().await;
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "lease-term").await;
    let (leases, lease) = fresh_lease(&s).await;
    let kubeconfig = failover::controller_kubeconfig(&format!("{}-direct", ns.name()), None);
    // A 15 s lease, as the chart's default: without the release, the standby would wait for it.
    let timings = (15, 10, 2);

    let mut a = Replica::start(ns.name(), "replica-a", &kubeconfig, timings);
    wait_for(&leases, &lease, TIMEOUT, "replica-a to hold the lease", |l| holder(l).as_deref() == Some("replica-a")).await;
    let b = Replica::start(ns.name(), "replica-b", &kubeconfig, timings);
    b.wait_log("waiting for the lease", TIMEOUT).await;
    // A running leader, as a rollout finds it (a SIGTERM during start-up is covered too, by a
    // grace of one retry period, but that is not what this measures).
    a.wait_log("caches synced; reconciling", TIMEOUT).await;

    let stopped = Instant::now();
    a.sigterm();
    wait_for(&leases, &lease, TIMEOUT, "replica-b to take the lease", |l| holder(l).as_deref() == Some("replica-b")).await;
    let takeover = stopped.elapsed();
    assert!(takeover < Duration::from_secs(6), "the standby took {takeover:?} to take a released 15 s lease");
    let status = a.exited(TIMEOUT).await;
    assert!(status.success(), "replica-a exited with {status} on SIGTERM:\n{}", a.log_text());
    assert!(a.log_text().contains("released the lease"), "{}", a.log_text());

    // The new leader reconciles.
    let teams: Api<Team> = ns.api();
    teams.create(&PostParams::default(), &team("after", 2)).await.expect("create a Team");
    wait_for(&teams, "after", TIMEOUT, "the new leader to reconcile the Team", reconciled).await;
    teams.delete("after", &Default::default()).await.expect("delete the Team");
    wait_deleted(&teams, "after", None, TIMEOUT, "the new leader to disband the Team").await;
    b.sigterm();
    ns.cleanup().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_stops_reconciling_within_its_renew_deadline() {
    let _one = LEASE.lock().await;
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "lease-cut").await;
    let (leases, lease) = fresh_lease(&s).await;
    let proxy = Proxy::start(failover::api_server_addr()).await;
    let through_proxy = failover::controller_kubeconfig(&format!("{}-proxy", ns.name()), Some(&proxy.url()));
    let direct = failover::controller_kubeconfig(&format!("{}-direct", ns.name()), None);
    // Lease 10 s, renew deadline 5 s, renewals every second.
    let (duration, deadline) = (Duration::from_secs(10), Duration::from_secs(5));
    let timings = (duration.as_secs(), deadline.as_secs(), 1);

    let mut a = Replica::start(ns.name(), "replica-a", &through_proxy, timings);
    wait_for(&leases, &lease, TIMEOUT, "replica-a to hold the lease", |l| holder(l).as_deref() == Some("replica-a")).await;
    let b = Replica::start(ns.name(), "replica-b", &direct, timings);
    b.wait_log("waiting for the lease", TIMEOUT).await;
    // replica-a reconciles through the proxy.
    let teams: Api<Team> = ns.api();
    teams.create(&PostParams::default(), &team("before", 2)).await.expect("create a Team");
    wait_for(&teams, "before", TIMEOUT, "replica-a to reconcile the Team", reconciled).await;

    let cut = Instant::now();
    proxy.cut();
    let status = a.exited(deadline + Duration::from_secs(3)).await;
    let stopped = cut.elapsed();
    let stopped_at = SystemTime::now();
    assert!(!status.success(), "replica-a exited with {status}");
    assert!(a.log_text().contains("renew deadline"), "replica-a did not stop for its renew deadline:\n{}", a.log_text());
    assert!(stopped <= deadline + Duration::from_secs(2), "replica-a stopped {stopped:?} after the cut, renew deadline {deadline:?}");
    assert!(b.log_text().matches("acquired the lease").count() == 0, "replica-b led before replica-a stopped:\n{}", b.log_text());

    // The standby takes over only once the lease expired: after replica-a had stopped.
    let taken =
        wait_for(&leases, &lease, duration * 2, "replica-b to take the expired lease", |l| holder(l).as_deref() == Some("replica-b")).await;
    let acquired: SystemTime = taken.spec.and_then(|s| s.acquire_time).map(|t| t.0.into()).expect("acquireTime");
    assert!(acquired > stopped_at, "replica-b acquired at {acquired:?}, replica-a stopped at {stopped_at:?}");
    teams.delete("before", &Default::default()).await.expect("delete the Team");
    wait_deleted(&teams, "before", None, TIMEOUT, "replica-b to disband the Team").await;
    b.sigterm();
    ns.cleanup().await;
}
