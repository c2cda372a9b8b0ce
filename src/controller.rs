//! The controller process: shared reflectors for Teams, Members, TeamTasks and member Pods, one
//! kube-runtime `Controller` per kind on top of them, the admission task, and the metrics and
//! health endpoints.

pub mod admission;
pub mod admission_flight;
pub mod admission_index;
pub mod admission_status;
pub mod budget_phase;
pub mod by_team;
pub mod context;
pub mod disband;
pub mod disbanded;
pub mod error;
pub mod fair_share;
#[cfg(test)]
pub mod fixtures;
pub mod in_flight;
pub mod lead_notice;
pub mod leader;
pub mod member;
pub mod member_status;
pub mod pace;
pub mod plan_phase;
pub mod pod;
pub mod pod_refusal;
pub mod readiness;
pub mod retry;
pub mod roster;
pub mod shared;
pub mod shutdown_grace;
pub mod slim;
pub mod team;
pub mod team_filter;
pub mod team_status;
pub mod team_task;

use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

pub use error::{Error, Result};

use crate::api::{Member, Team, TeamTask};
use crate::bus::Bus;
use crate::config::{ControllerArgs, ControllerConfig};
use crate::metrics::{ErrorLabel, KindLabel, Metrics};
use context::Context;
use readiness::Readiness;
use shared::shared;

/// The kind labels of the reconcilers' metrics (Team, Member, TeamTask), created at zero.
const KINDS: [&str; 3] = ["Team", "Member", "TeamTask"];

/// The `app.kubernetes.io/managed-by` value and the Event reporter; each writer's field manager
/// is in `api::field_managers`.
pub const MANAGER: &str = "team-operator";

/// Runs the controller until the process gets SIGTERM or a component fails; with leader election,
/// only while this process holds the Lease.
pub async fn run(args: ControllerArgs, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> anyhow::Result<()> {
    let config = kube::Config::infer().await?;
    // The reconcilers and the admission share a bounded client (see `in_flight`); the Lease's
    // renewals have their own, so a queue of work never delays them.
    let client = kube::client::ClientBuilder::try_from(config.clone())?.with_layer(&in_flight::layer(in_flight::API_IN_FLIGHT)).build();
    match args.lease() {
        Some(lease) => leader::run_as_leader(Client::try_from(config)?, lease, reconcile_all(client, args, metrics, readiness)).await,
        None => reconcile_all(client, args, metrics, readiness).await,
    }
}

/// Starts the watches, the reconcilers and the admission task.
async fn reconcile_all(client: Client, args: ControllerArgs, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> anyhow::Result<()> {
    let _leading = readiness.lead();
    wait_for_crds(&client, args.namespace.as_deref()).await?;
    let bus = Bus::connect(args.bus.bus_config()).await?;
    metrics.slots_cap.set(i64::from(args.max_agents));
    let categories: Vec<&'static str> = error::Category::ALL.iter().map(|c| c.as_str()).collect();
    metrics.zero_controller_series(&KINDS, &categories);

    let ns = args.namespace.as_deref().filter(|n| !n.is_empty());
    let (mut teams, team_events) = shared::<Team>(scoped(&client, ns), watcher::Config::default(), 4);
    let (mut members, member_events) = shared::<Member>(scoped(&client, ns), watcher::Config::default(), 4);
    let (mut tasks, task_events) = shared::<TeamTask>(scoped(&client, ns), watcher::Config::default(), 2);
    // Every pod of the scope, not only labelled ones: a member pod is known by its controller
    // reference (labels can be removed or forged, rule 7), and an external lead is any pod.
    let (mut pods, pod_events) = shared::<Pod>(scoped(&client, ns), watcher::Config::default(), 3);

    let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        client: client.clone(),
        bus,
        config: ControllerConfig::from(&args),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        teams: teams.store.clone(),
        members: members.store.clone(),
        pods: pods.store.clone(),
        tasks: tasks.store.clone(),
        failures: Default::default(),
        counts_written: Default::default(),
        team_passes: Default::default(),
        written_from: Default::default(),
        rosters: Default::default(),
        members_by_team: by_team::ByTeam::new(members.store.clone()),
        tasks_by_team: by_team::ByTeam::new(tasks.store.clone()),
    });

    // A Team reconcile wakes on every change of one of its members: in a fleet, hundreds a
    // second. It goes over the members at most once per `team::PASS_INTERVAL` (`pace`), not
    // behind a debounce: the runtime's debounce pushes a run back on every trigger, so a team
    // that changes without pause would never be reconciled (no roster, no counts) until it stops.
    let team_ctl = Controller::for_shared_stream(teams.subscribe()?, teams.store.clone())
        .watches_shared_stream(members.subscribe()?, {
            // Every member the watch hands out passes here first: the team index learns it
            // before the change triggers anything.
            let ctx = ctx.clone();
            move |m: Arc<Member>| {
                ctx.members_by_team.observe(&m);
                Some(ObjectRef::new(&m.spec.team).within(&m.namespace()?))
            }
        })
        .shutdown_on_signal()
        .run(timed(team::reconcile, KINDS[0]), error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let teams_for_leads = teams.store.clone();
    let ctx_for_team = ctx.clone();
    let member_ctl = Controller::for_shared_stream(members.subscribe()?, members.store.clone())
        .owns_shared_stream(pods.subscribe()?)
        .watches_shared_stream(team_filter::changes(teams.subscribe()?, teams.store.clone()), move |t: Arc<Team>| {
            // A team that disbanded, changed its spec or named its lead concerns all its members.
            let ns = t.namespace().unwrap_or_default();
            ctx_for_team.members_by_team.of(&ns, &t.name_any()).into_iter().map(|m| ObjectRef::from_obj(m.as_ref()))
        })
        .watches_shared_stream(pods.subscribe()?, move |p: Arc<Pod>| {
            // An external lead's pod (`spec.lead.podName`) wakes its team's lead Member.
            let (ns, name) = (p.namespace(), p.name_any());
            teams_for_leads
                .state_filter(|t| t.namespace() == ns && t.spec.lead.pod_name.as_deref() == Some(name.as_str()))
                .into_iter()
                .filter_map(|t| Some(ObjectRef::new(&team::lead_member_name(&t.name_any())).within(&t.namespace()?)))
        })
        .shutdown_on_signal()
        .run(timed(member::reconcile, KINDS[1]), error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let (ctx_for_team, ctx_for_owner, ctx_for_deps) = (ctx.clone(), ctx.clone(), ctx.clone());
    let task_ctl = Controller::for_shared_stream(tasks.subscribe()?, tasks.store.clone())
        .watches_shared_stream(team_filter::changes(teams.subscribe()?, teams.store.clone()), move |t: Arc<Team>| {
            // A team that disbanded (or changed its settings) concerns all its tasks.
            let ns = t.namespace().unwrap_or_default();
            ctx_for_team.tasks_by_team.of(&ns, &t.name_any()).into_iter().map(|k| ObjectRef::from_obj(k.as_ref()))
        })
        .watches_shared_stream(members.subscribe()?, move |m: Arc<Member>| {
            // A member that ended wakes the tasks it owns.
            let (ns, name) = (m.namespace().unwrap_or_default(), m.agent_name().map(str::to_owned));
            ctx_for_owner
                .tasks_by_team
                .of(&ns, &m.spec.team)
                .into_iter()
                .filter(move |t| t.spec.owner.is_some() && t.spec.owner == name)
                .map(|t| ObjectRef::from_obj(t.as_ref()))
        })
        .watches_shared_stream(tasks.subscribe()?, move |t: Arc<TeamTask>| {
            // A task that moved wakes the tasks that depend on it (dependencies are within a
            // team). Every task the watch hands out passes here first: the team index learns it.
            ctx_for_deps.tasks_by_team.observe(&t);
            let (ns, name) = (t.namespace().unwrap_or_default(), t.name_any());
            ctx_for_deps
                .tasks_by_team
                .of(&ns, &t.spec.team)
                .into_iter()
                .filter(move |d| d.spec.depends_on.contains(&name))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
        })
        .shutdown_on_signal()
        .run(timed(team_task::reconcile, KINDS[2]), error_policy, ctx.clone())
        .for_each(|_| ready(()));

    // Admission applies every change of what it plans from to its index, and plans again.
    let changes = futures::stream::select_all([
        teams.subscribe()?.map(admission::Change::Team).boxed(),
        members.subscribe()?.map(admission::Change::Member).boxed(),
        pods.subscribe()?.map(admission::Change::Pod).boxed(),
    ]);
    let stores = admission::Stores { teams: teams.store.clone(), members: members.store.clone(), pods: pods.store.clone() };
    let admit = admission::run(ctx.clone(), stores, changes);
    // Nothing acts before every store has listed (rule 6): a Team reconcile that ran on a member
    // store still loading would sync a roster without most of its members, and admission would
    // count slots from half the pods. The watches run meanwhile and fill the stores.
    let stores = (teams.store.clone(), members.store.clone(), tasks.store.clone(), pods.store.clone());
    let work = async move {
        let (t, m, k, p) = &stores;
        let synced = futures::try_join!(t.wait_until_ready(), m.wait_until_ready(), k.wait_until_ready(), p.wait_until_ready());
        if synced.is_err() {
            return warn!("a watch ended before its store listed; nothing was reconciled");
        }
        ctx.members_by_team.fill();
        ctx.tasks_by_team.fill();
        info!(max_agents = args.max_agents, "caches synced; reconciling");
        readiness.synced();
        tokio::select! {
            () = admit => warn!("admission ended"),
            () = async { tokio::join!(team_ctl, member_ctl, task_ctl); } => info!("controllers shut down"),
        }
    };
    tokio::select! {
        () = team_events => warn!("team watch ended"),
        () = member_events => warn!("member watch ended"),
        () = task_events => warn!("task watch ended"),
        () = pod_events => warn!("pod watch ended"),
        () = work => {}
    }
    Ok(())
}

/// The API of `K` in the watched namespace, or across the cluster.
fn scoped<K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>>(client: &Client, ns: Option<&str>) -> Api<K> {
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A boxed reconcile future, as `Controller::run` takes it from [`timed`].
type ReconcileFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Action>> + Send>>;

/// Wraps a reconciler with its run count and duration metrics.
fn timed<K, F, Fut>(f: F, kind: &'static str) -> impl Fn(Arc<K>, Arc<Context>) -> ReconcileFuture
where
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    move |obj, ctx| {
        let f = f.clone();
        Box::pin(async move {
            let start = Instant::now();
            let metrics = ctx.metrics.clone();
            let key = context::object_key(obj.as_ref());
            let out = f(obj, ctx.clone()).await;
            if out.is_ok() {
                ctx.reset_backoff(&key);
            }
            metrics.reconciles.get_or_create(&KindLabel { kind }).inc();
            metrics.reconcile_duration.get_or_create(&KindLabel { kind }).observe(start.elapsed().as_secs_f64());
            if let Err(e) = &out {
                metrics.reconcile_errors.get_or_create(&ErrorLabel { kind, category: e.category() }).inc();
            }
            out
        })
    }
}

/// Retries a failed reconcile with a per-object exponential backoff (1 s doubling to 5 min);
/// a change to the object retries it sooner, and a success resets the backoff.
fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(context::object_key(obj.as_ref()));
    warn!(error = %err, category = err.category(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Waits until the CRDs are installed and served (the chart or `kubectl apply -f crds/` installs
/// them; the operator never does).
async fn wait_for_crds(client: &Client, ns: Option<&str>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let one = kube::api::ListParams::default().limit(1);
    loop {
        let team = scoped::<Team>(client, ns).list(&one).await;
        let member = scoped::<Member>(client, ns).list(&one).await;
        let task = scoped::<TeamTask>(client, ns).list(&one).await;
        match (team, member, task) {
            (Ok(_), Ok(_), Ok(_)) => return Ok(()),
            (a, b, c) if Instant::now() > deadline => {
                let e = a.err().or(b.err()).or(c.err()).map(|e| e.to_string()).unwrap_or_default();
                anyhow::bail!("the agentteams.dev CRDs are not served ({e}); install them with `kubectl apply -f crds/` or the Helm chart");
            }
            _ => {
                info!("waiting for the agentteams.dev CRDs");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
