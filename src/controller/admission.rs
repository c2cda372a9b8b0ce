//! The single writer of member names and slots (rules 1 and 2).
//!
//! Names and slots are decisions that many reconciles could race on, so one task makes them all:
//! it applies every Team, Member and Pod change to its index as it comes (`admission_index`:
//! a queue of open members per team, the names taken, the member pods that run; constant work
//! per event), and after each burst of changes plans a round from the heads of the queues
//! (pure [`plan`]; a finished pod frees its slot as soon as the pod store shows it ended,
//! without waiting for its Member's reconcile or write, and the round that refills it starts at
//! once instead of after a batch), and hands what it decided to work in
//! flight (`admission_flight`): it creates the pods of the members it admits and writes its
//! decisions (see `admission_status`: a member named and admitted in one round gets name,
//! Starting, podName and startTime in one write, after its pod was created), while the next
//! rounds plan. Like the Job controller, it records an *expectation* for every pod it decides
//! to create and counts it as live until the pod store shows it, so neither a lagging store nor
//! creates in flight can let a cap be exceeded. The index is a cache of the stores, rebuilt from them at
//! every resync; after a restart the stores' initial lists are the whole truth, so the caps hold
//! across restarts too.
//!
//! The slots of the operator-wide cap go by the turns of `fair_share` (priority, then
//! round-robin across namespaces and teams by the slots they hold), not first come first served
//! across the cluster; a member left waiting is written Queued once, with the cap that holds it.
//!
//! For what comes next (budgets, retries): a new reason to hold a member back belongs in
//! [`plan`] (pure, with the [`MemberView`] it needs), a new decision written on the Member in
//! `admission_status::Decision`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, warn};

use super::admission_flight::{Flights, Pending, Work, Written};
use super::admission_index::Index;
use super::admission_status::{Decision, Hold};
use super::context::Context;
use super::fair_share::{Turns, Waiting};
use super::{pod, retry};
use crate::api::{Member, MemberPhase, MemberRole, Team};

pub use super::fair_share::TeamId;

/// How long an unobserved pod creation is trusted before it stops counting (the Job controller
/// uses the same five minutes): covers a create whose watch event was lost.
const EXPECTATION_TTL: Duration = Duration::from_secs(300);
/// Backstop period: plan even when nothing changed (every change already triggers a round), and
/// rebuild the index from the stores.
const RESYNC: Duration = Duration::from_secs(60);
/// Next round after a write that failed.
const RETRY: Duration = Duration::from_secs(1);
/// Rounds start at most this often: a change after a quiet spell is planned at once, and the
/// changes arriving within this time of a round's start join the next one (the Job controller
/// batches its syncs the same way, for a second), so a fleet's burst of watch events makes a
/// few rounds instead of one per event.
const BATCH: Duration = Duration::from_millis(20);
/// Except for a slot given back (a member pod ended or went): the next round is planned at once,
/// so that the slot is refilled without waiting out a batch, but rounds start at most this often,
/// so a fleet's pods ending in a burst still share rounds.
const REFILL_GAP: Duration = Duration::from_millis(2);
/// Queued writes of newly named members in flight at most: a window, not a batch. A backlog of
/// a thousand new members is named this many at a time, oldest first, and each write that ends
/// lets the next round name one more, so a slow write (an API server answering in seconds under
/// load) holds up its own member only, and the rounds in between refill the slots freed
/// meanwhile.
const NAME_BATCH: usize = 64;

/// What the planner needs to know of a team.
#[derive(Clone, Debug)]
pub struct TeamView {
    /// Effective cap: min(spec.maxAgents, operator-wide cap) is applied by the planner.
    pub max_agents: usize,
    /// `spec.priority`: its turn for the operator-wide cap's slots (see `fair_share`).
    pub priority: i32,
    /// Disbanded or being deleted: nothing is named or admitted.
    pub disbanded: bool,
    /// Its budget is spent (condition BudgetExceeded): members are named, none admitted (the
    /// Member reconciler refuses them).
    pub budget_spent: bool,
    /// Agent types of the team.
    pub agents: BTreeSet<String>,
    /// The lead is an existing pod (`spec.lead.podName`): the operator starts no lead pod.
    pub external_lead: bool,
    /// The team this one is a sub-team of: its members count against that team's cap too.
    pub parent: Option<TeamId>,
}

/// Where the live pods controlled by a Member the store does not hold (a Member deleted while
/// its pod still runs) are counted: against the operator-wide cap, in no team.
pub fn unowned() -> TeamId {
    (String::new(), String::new())
}

/// `team` and the teams it is a sub-team of, nearest first (at most 8 deep, which also ends a
/// cycle of owner references).
fn lineage<'a>(teams: &'a HashMap<TeamId, TeamView>, team: &'a TeamId) -> Vec<&'a TeamId> {
    let mut out = vec![team];
    let mut at = team;
    while let Some(parent) = teams.get(at).and_then(|t| t.parent.as_ref()) {
        if out.len() >= 8 || out.contains(&parent) {
            break;
        }
        out.push(parent);
        at = parent;
    }
    out
}

/// What the planner needs to know of a member.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub key: ObjectRef<Member>,
    pub team: TeamId,
    pub agent: String,
    pub role: MemberRole,
    pub uid: String,
    pub created: Timestamp,
    pub name: Option<String>,
    pub phase: MemberPhase,
    /// Its pod exists (in the store) or was created and not yet observed.
    pub has_pod: bool,
    /// Its admission is written (it has a `podName`), or was and the store does not show it yet.
    pub admitted: bool,
    /// Its last pod create was refused and its backoff has not passed (see `pod_refusal`), or
    /// its last pod failed and its retry's backoff has not passed (see `retry`).
    pub backing_off: bool,
    /// When its retry's backoff ends, while it waits for its next attempt's pod.
    pub retry_at: Option<Timestamp>,
}

/// Decisions of one planning round.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Names to give, in creation order.
    pub names: Vec<(ObjectRef<Member>, String)>,
    /// Members to start: leads first, then the others in the turns of `fair_share`; their pod
    /// is created (an external lead's exists), then their admission written.
    pub admit: Vec<ObjectRef<Member>>,
    /// Members that wanted a slot and did not get one, with the cap that holds them: written
    /// with their Queued (once, when they queue).
    pub held: HashMap<ObjectRef<Member>, Hold>,
    /// Members whose pod exists but whose admission is not written (the write after its create
    /// failed, or a restart came between): their admission is written.
    pub record: Vec<ObjectRef<Member>>,
}

/// Names unnamed members and admits queued ones under both caps. `members` are the candidates
/// (every open member, or the heads of the teams' queues), `taken` the names already held per
/// team beyond theirs; `live` counts specialist pods that hold a slot, per team (and under
/// [`unowned`] those of no known Member). A sub-team's members count against its own cap and
/// every ancestor's. Leads skip the caps; the other slots go by the turns of `fair_share`
/// (priority, then round-robin across namespaces and teams by slots held, creation order within
/// a team), never first come first served across teams.
pub fn plan(
    teams: &HashMap<TeamId, TeamView>,
    members: &[MemberView],
    taken: &dyn Fn(&TeamId, &str) -> bool,
    live: &HashMap<TeamId, usize>,
    global_cap: usize,
) -> Plan {
    let mut order: Vec<&MemberView> = members.iter().collect();
    // Leads first so the lead gets its agent type's bare name; then first come, first served.
    order.sort_by(|a, b| (a.role != MemberRole::Lead, a.created, &a.uid).cmp(&(b.role != MemberRole::Lead, b.created, &b.uid)));

    let mut named: HashMap<&TeamId, BTreeSet<String>> = HashMap::new();
    for m in members {
        if let Some(n) = &m.name {
            named.entry(&m.team).or_default().insert(n.clone());
        }
    }

    let mut out = Plan::default();
    // Slots in use per team, its sub-teams' included.
    let mut team_live: HashMap<&TeamId, usize> = HashMap::new();
    for (team, n) in live {
        for t in lineage(teams, team) {
            *team_live.entry(t).or_default() += n;
        }
    }
    let mut global_live: usize = live.values().sum();
    let mut waiting: HashMap<&TeamId, Vec<Waiting<&MemberView>>> = HashMap::new();
    for m in order {
        let Some(team) = teams.get(&m.team) else { continue };
        if team.disbanded || !team.agents.contains(&m.agent) || m.phase.is_terminal() {
            continue;
        }
        if m.name.is_none() {
            let used = named.entry(&m.team).or_default();
            let name = first_free_name(&m.agent, |n| used.contains(n) || taken(&m.team, n));
            used.insert(name.clone());
            out.names.push((m.key.clone(), name));
        }
        if m.phase != MemberPhase::Queued || m.backing_off {
            continue;
        }
        if m.has_pod {
            if !m.admitted {
                out.record.push(m.key.clone());
            }
            continue;
        }
        if team.budget_spent {
            continue;
        }
        if m.role == MemberRole::Lead {
            out.admit.push(m.key.clone());
            continue;
        }
        waiting.entry(&m.team).or_default().push(Waiting { created: m.created, uid: m.uid.clone(), member: m });
    }
    let mut turns = Turns::new(live);
    for (team, list) in waiting {
        turns.team(team.clone(), teams.get(team).map_or(0, |v| v.priority), list);
    }
    let cap = |t: &TeamId| teams.get(t).map_or(0, |v| v.max_agents);
    while global_live < global_cap {
        let room =
            |team: &TeamId, _: usize| lineage(teams, team).iter().all(|t| team_live.get(t).copied().unwrap_or(0) < cap(t).min(global_cap));
        let Some((team, m)) = turns.next(room) else { break };
        let Some((team, _)) = teams.get_key_value(&team) else { break };
        for t in lineage(teams, team) {
            *team_live.entry(t).or_default() += 1;
        }
        global_live += 1;
        out.admit.push(m.key.clone());
    }
    // The rest wait, held by the first cap of their line that is full, else the operator's.
    for (team, m) in turns.left() {
        let full = lineage(teams, &team).into_iter().find(|t| team_live.get(t).copied().unwrap_or(0) >= cap(t));
        let hold = match full {
            Some(t) => Hold::Team { team: t.1.clone(), max_agents: cap(t) },
            None => Hold::Operator { cap: global_cap },
        };
        out.held.insert(m.key.clone(), hold);
    }
    out
}

/// `agent`, `agent-2`, `agent-3`, ...: the first not in `used`.
pub fn first_free_name(agent: &str, used: impl Fn(&str) -> bool) -> String {
    if !used(agent) {
        return agent.to_owned();
    }
    (2..).map(|i| format!("{agent}-{i}")).find(|n| !used(n)).unwrap_or_else(|| agent.to_owned())
}

/// A watched change, as admission applies it to its index.
pub enum Change {
    Team(Arc<Team>),
    Member(Arc<Member>),
    Pod(Arc<Pod>),
}

/// The stores admission reads.
pub struct Stores {
    pub teams: Store<Team>,
    pub members: Store<Member>,
    pub pods: Store<Pod>,
}

impl Stores {
    /// Applies `change` to `index` as the store holds it now: its current version, or its
    /// deletion (gone, or replaced by an object of another uid).
    fn apply(&self, index: &mut Index, change: Change) {
        fn current<K: kube::Resource<DynamicType = ()> + Clone>(store: &Store<K>, k: &K) -> Option<Arc<K>> {
            store.get(&ObjectRef::from_obj(k)).filter(|now| now.meta().uid == k.meta().uid)
        }
        match change {
            Change::Team(t) => match current(&self.teams, t.as_ref()) {
                Some(now) => index.team(&now, true),
                None => index.team(&t, false),
            },
            Change::Member(m) => match current(&self.members, m.as_ref()) {
                Some(now) => index.member(&now, true),
                None => index.member(&m, false),
            },
            Change::Pod(p) => match current(&self.pods, p.as_ref()) {
                Some(now) => index.pod(&now, true),
                None => index.pod(&p, false),
            },
        }
    }

    /// The index of everything the stores hold.
    fn index(&self) -> Index {
        let teams = self.teams.state();
        let mut index = Index::build(&teams, &self.members.state(), &self.pods.state());
        index.link_parents(&teams);
        index
    }
}

/// Runs the admission loop until the process ends: a round after every burst of `changes`, and
/// at least every [`RESYNC`], which also rebuilds the index from the stores. A round only plans;
/// what it decided is carried out in flight (see `admission_flight`), so the next round does not
/// wait for it. Dropping this future (a lost lease) aborts the work in flight.
pub async fn run(ctx: Arc<Context>, stores: Stores, changes: impl Stream<Item = Change>) {
    // Started once every store has listed (see `controller::reconcile_all`).
    let index = std::sync::Mutex::new(stores.index());
    let lock = || index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let flights = Flights::default();
    let refill = tokio::sync::Notify::new();
    // The watches must never wait for a round to finish, so changes are applied as they come
    // (constant work each) and coalesce into one wake-up.
    let drain = async {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            let freed = {
                let mut index = lock();
                let before = index.freed;
                stores.apply(&mut index, change);
                index.freed != before
            };
            if freed { refill.notify_one() } else { flights.wake.notify_one() }
        }
    };
    let rounds = async {
        let mut in_flight = tokio::task::JoinSet::new();
        let mut resynced = Instant::now();
        loop {
            if resynced.elapsed() >= RESYNC {
                *lock() = stores.index();
                resynced = Instant::now();
            }
            let started = tokio::time::Instant::now();
            for work in round(&ctx, &stores, &index, &flights) {
                in_flight.spawn(flights.clone().carry_out(ctx.clone(), work));
            }
            // A member backing off from a refused create or a failed pod is planned again when
            // its wait ends.
            let next = {
                let pending = flights.lock();
                let retry = pending.retry_wake.and_then(|at| Duration::try_from(at.duration_since(Timestamp::now())).ok());
                pending.refusals.next(Instant::now()).into_iter().chain(retry).fold(RESYNC, Duration::min)
            };
            let mut deadline = started + next;
            loop {
                tokio::select! {
                    () = flights.wake.notified() => {
                        // Changes within BATCH of the last round's start join the next one,
                        // unless a slot is given back meanwhile.
                        tokio::select! {
                            () = tokio::time::sleep_until(started + BATCH) => {}
                            () = refill.notified() => tokio::time::sleep_until(started + REFILL_GAP).await,
                        }
                        break;
                    }
                    () = refill.notified() => {
                        tokio::time::sleep_until(started + REFILL_GAP).await;
                        break;
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                    Some(done) = in_flight.join_next() => {
                        if !matches!(done, Ok(true)) {
                            deadline = deadline.min(tokio::time::Instant::now() + RETRY);
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = drain => warn!("the watches feeding admission ended"),
        () = rounds => {}
    }
}

/// One planning round: the candidates from the index (the heads of the queues), the plan, and
/// the work it makes (pod creates and decisions to write), marked in flight.
fn round(ctx: &Context, stores: &Stores, index: &std::sync::Mutex<Index>, flights: &Flights) -> Vec<Work> {
    let (members, teams) = (&stores.members, &stores.teams);
    let now = Instant::now();
    let mut pending = flights.lock();
    let pending = &mut *pending;
    let decided = {
        let index = index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expectations the store has caught up with (or that expired) are forgotten; the others
        // count as live.
        pending.pods.retain(|k, (_, at)| !index.knows_pod(k) && at.elapsed() < EXPECTATION_TTL);
        let mut live = index.live();
        for (team, _) in pending.pods.values() {
            *live.entry(team.clone()).or_default() += 1;
        }
        // Forget decisions the store now shows in full, and those of members that are gone.
        pending.members.retain(|uid, w| {
            index
                .members
                .get(uid)
                .is_some_and(|m| w.attempt >= m.attempt && !(m.name.as_deref() == Some(w.name.as_str()) && (!w.admitted || m.admitted)))
        });
        record_gauges(ctx, &index.per_phase, &live);
        let views = candidates(&index, &live, ctx.config.max_agents, pending, now, ctx.config.retry_backoff);
        let wall = Timestamp::now();
        pending.retry_wake = views.iter().filter_map(|v| v.retry_at).filter(|at| *at > wall).min();
        // Names decided and not yet in the store are taken as well as the store's.
        let decided: HashMap<&TeamId, BTreeSet<&str>> = pending.members.values().fold(HashMap::new(), |mut by_team, w| {
            by_team.entry(&w.team).or_default().insert(w.name.as_str());
            by_team
        });
        let taken = |team: &TeamId, name: &str| index.is_taken(team, name) || decided.get(team).is_some_and(|n| n.contains(name));
        let decided = plan(&index.teams, &views, &taken, &live, ctx.config.max_agents);
        // A member whose pod exists under a name its status does not show yet keeps that name.
        for key in &decided.record {
            if let Some(uid) = key.extra.uid.as_deref().or_else(|| views.iter().find(|v| &v.key == key).map(|v| v.uid.as_str()))
                && !pending.members.contains_key(uid)
                && let (Some(name), Some(m)) = (index.name_of_pod(uid), index.members.get(uid))
                && m.name.is_none()
            {
                let attempt = m.attempt;
                pending
                    .members
                    .insert(uid.to_owned(), Written { name, team: m.team.clone(), admitted: false, attempt, resource_version: None });
            }
        }
        decided
    };
    if decided.names.is_empty() && decided.admit.is_empty() && decided.record.is_empty() {
        return Vec::new();
    }
    debug!(names = decided.names.len(), admit = decided.admit.len(), record = decided.record.len(), "admission round");

    // Names are decided now, written with the member's admission or, for members that wait,
    // as the window of naming writes has room. Only the names written this round are kept: a
    // member past the window is named again in a later round (a name kept but not written would
    // never be written as Queued, with the cap that holds it).
    let deciding: std::collections::HashSet<&ObjectRef<Member>> = decided.admit.iter().chain(&decided.record).collect();
    let room = NAME_BATCH.saturating_sub(pending.naming);
    let waiting: Vec<&ObjectRef<Member>> = decided.names.iter().map(|(k, _)| k).filter(|k| !deciding.contains(k)).take(room).collect();
    let written_now: std::collections::HashSet<&ObjectRef<Member>> = deciding.iter().copied().chain(waiting.iter().copied()).collect();
    for (key, name) in decided.names.iter().filter(|(k, _)| written_now.contains(k)) {
        if let Some(m) = members.get(key)
            && let (Some(uid), Some(ns)) = (m.metadata.uid.clone(), m.namespace())
        {
            let team = (ns, m.spec.team.clone());
            let attempt = retry::failed_attempts(&m);
            pending.members.insert(uid, Written { name: name.clone(), team, admitted: false, attempt, resource_version: None });
        }
    }

    // An admitted member's pod first, then its admission: it reads Starting only once its pod
    // exists. The pod counts as live from now on (an expectation).
    let mut work = Vec::new();
    for key in &decided.admit {
        let Some(member) = members.get(key) else { continue };
        let Some(uid) = member.metadata.uid.clone() else { continue };
        let Some(name) = name_of(&member, pending) else { continue };
        let Some(ns) = member.namespace() else { continue };
        let Some(team) = teams.get(&ObjectRef::new(&member.spec.team).within(&ns)) else { continue };
        if let (Some(external), true) = (&team.spec.lead.pod_name, member.is_lead()) {
            let decision = Decision::Admitted { pod_name: external.clone() };
            work.push(Work::Write { member: member.clone(), name, decision, naming: false });
            continue;
        }
        let pod_key = (ns.clone(), pod::pod_name(&member.spec.team, &name, &uid, retry::failed_attempts(&member)));
        pending.pods.insert(pod_key.clone(), ((ns.clone(), member.spec.team.clone()), Instant::now()));
        work.push(Work::Admit { member, team, name, pod_key });
    }
    for key in &decided.record {
        let Some(member) = members.get(key) else { continue };
        let (Some(name), Some(uid)) = (name_of(&member, pending), member.metadata.uid.clone()) else { continue };
        let decision = Decision::Admitted { pod_name: pod::pod_name(&member.spec.team, &name, &uid, retry::failed_attempts(&member)) };
        work.push(Work::Write { member, name, decision, naming: false });
    }
    for key in waiting {
        let Some(member) = members.get(key) else { continue };
        let Some(name) = name_of(&member, pending) else { continue };
        // Which cap holds it is written now, with its Queued, and not again while it waits.
        let decision = Decision::Queued { hold: decided.held.get(key).cloned() };
        work.push(Work::Write { member, name, decision, naming: true });
    }
    for w in &work {
        Flights::start(pending, w);
    }
    work
}

/// The member's name: as the store shows it, or as decided.
fn name_of(member: &Member, pending: &Pending) -> Option<String> {
    member.agent_name().map(str::to_owned).or_else(|| pending.members.get(member.metadata.uid.as_deref()?).map(|w| w.name.clone()))
}

/// Members per phase and slots in use, as of this round.
fn record_gauges(ctx: &Context, per_phase: &HashMap<MemberPhase, i64>, live: &HashMap<TeamId, usize>) {
    use crate::metrics::PhaseLabel;
    for phase in MemberPhase::ALL {
        let label = PhaseLabel { phase: phase.as_str() };
        ctx.metrics.members.get_or_create(&label).set(per_phase.get(&phase).copied().unwrap_or(0));
    }
    ctx.metrics.slots_in_use.set(i64::try_from(live.values().sum::<usize>()).unwrap_or(i64::MAX));
}

/// The members a round plans for, from the heads of the queues: per team, its open members
/// with a name up to its free slots (and those that hold no slot: backing off, or with a pod
/// whose admission is to be recorded); across teams, the oldest without one, as many as the
/// window of naming writes has room for ([`NAME_BATCH`]). Members with work in flight are none
/// (their pods count as live already). Time in proportion to the teams, the slots and the
/// window, not to the queues.
fn candidates(
    index: &Index,
    live: &HashMap<TeamId, usize>,
    global_cap: usize,
    pending: &Pending,
    now: Instant,
    first_backoff: Duration,
) -> Vec<MemberView> {
    let mut out = Vec::new();
    let wall = Timestamp::now();
    let view = |uid: &str| -> Option<MemberView> {
        if pending.in_flight.contains(uid) {
            return None;
        }
        let m = index.members.get(uid)?;
        let written = pending.members.get(uid).filter(|w| w.attempt == m.attempt);
        let name = m.name.clone().or_else(|| written.map(|w| w.name.clone())).or_else(|| index.name_of_pod(uid));
        let (ns, team) = &m.team;
        // The pod of its current attempt (a retried member's earlier pods do not count).
        let has_pod = match &name {
            Some(n) => {
                let at = (ns.clone(), pod::pod_name(team, n, uid, m.attempt));
                index.has_pod_at(uid, &at) || pending.pods.contains_key(&at)
            }
            None => index.has_pod(uid),
        };
        let admitted = m.admitted || written.is_some_and(|w| w.admitted);
        let retry_at = m.retry_from.map(|failed| {
            let wait = SignedDuration::try_from(retry::backoff(first_backoff, m.attempt)).unwrap_or(SignedDuration::MAX);
            failed.checked_add(wait).unwrap_or(failed)
        });
        Some(MemberView {
            key: m.key.clone(),
            team: m.team.clone(),
            agent: m.agent.clone(),
            role: m.role,
            uid: uid.to_owned(),
            created: m.order.1,
            name,
            phase: if admitted && m.phase == MemberPhase::Queued { MemberPhase::Starting } else { m.phase },
            has_pod,
            admitted,
            backing_off: pending.refusals.waiting(uid, now) || retry_at.is_some_and(|at| at > wall),
            retry_at,
        })
    };
    // Slots in use per team, its sub-teams' included (as `plan` counts them).
    let mut team_live: HashMap<&TeamId, usize> = HashMap::new();
    for (team, n) in live {
        for t in lineage(&index.teams, team) {
            *team_live.entry(t).or_default() += n;
        }
    }
    let global_free = global_cap.saturating_sub(live.values().sum());
    for (team, queues) in &index.queues {
        // Slots this team could fill now: its cap and its ancestors', and the operator's.
        let free = lineage(&index.teams, team).into_iter().fold(global_free, |free, t| {
            let cap = index.teams.get(t).map_or(0, |v| v.max_agents).min(global_cap);
            free.min(cap.saturating_sub(team_live.get(t).copied().unwrap_or(0)))
        });
        let mut wants_slot = 0;
        for (_, uid) in &queues.named {
            // Past the free slots only members that hold none are candidates: the others are
            // passed over without building their view (a fleet's queues hold thousands).
            if wants_slot >= free
                && index.members.get(uid).is_some_and(|m| m.role != MemberRole::Lead && m.retry_from.is_none())
                && !index.has_pod(uid)
                && !pending.refusals.waiting(uid, now)
            {
                continue;
            }
            let Some(v) = view(uid) else { continue };
            let takes_slot = v.role != MemberRole::Lead && !v.has_pod && !v.backing_off;
            if takes_slot && wants_slot >= free {
                continue;
            }
            wants_slot += usize::from(takes_slot);
            out.push(v);
        }
        for (_, uid) in &queues.unnamed {
            let Some(v) = view(uid) else { continue };
            // Named already (the store has not shown the write yet): a candidate for a slot.
            // The first without a name ends the team's part: names go by age across teams, below.
            if v.name.is_none() {
                break;
            }
            let takes_slot = v.role != MemberRole::Lead && !v.has_pod && !v.backing_off;
            if !takes_slot || wants_slot < free {
                wants_slot += usize::from(takes_slot);
                out.push(v);
            }
        }
    }
    // Those to name: the oldest that can be named, up to the window's room. A member of a team
    // that is gone, disbanded or without its agent type gets no name (the Member reconciler
    // refuses it), so it does not take the room of one that does.
    let room = NAME_BATCH.saturating_sub(pending.naming);
    let nameable = |v: &MemberView| index.teams.get(&v.team).is_some_and(|t| !t.disbanded && t.agents.contains(&v.agent));
    out.extend(index.unnamed.iter().filter_map(|(_, uid)| view(uid)).filter(|v| v.name.is_none() && nameable(v)).take(room));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn team(cap: usize) -> TeamView {
        TeamView {
            max_agents: cap,
            priority: 0,
            disbanded: false,
            budget_spent: false,
            agents: ["general".to_owned(), "lead".to_owned()].into(),
            external_lead: false,
            parent: None,
        }
    }

    fn mv(team: &str, i: i64, name: Option<&str>, phase: MemberPhase) -> MemberView {
        MemberView {
            key: ObjectRef::new(&format!("m{i}")).within("ns"),
            team: ("ns".into(), team.into()),
            agent: "general".into(),
            role: MemberRole::Specialist,
            uid: format!("u{i}"),
            created: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(i),
            name: name.map(str::to_owned),
            phase,
            has_pod: false,
            admitted: false,
            backing_off: false,
            retry_at: None,
        }
    }

    fn teams(list: &[(&str, usize)]) -> HashMap<TeamId, TeamView> {
        list.iter().map(|(n, c)| (("ns".to_owned(), (*n).to_owned()), team(*c))).collect()
    }

    #[test]
    fn names_are_first_free_in_creation_order_with_the_lead_counted() {
        let mut lead = mv("a", 9, None, MemberPhase::Queued);
        lead.role = MemberRole::Lead;
        lead.agent = "general".into();
        let members = vec![
            mv("a", 1, None, MemberPhase::Queued),
            mv("a", 2, Some("general-3"), MemberPhase::Completed),
            lead,
            mv("a", 3, None, MemberPhase::Queued),
        ];
        let p = plan(&teams(&[("a", 10)]), &members, &|_, _| false, &HashMap::new(), 10);
        let names: Vec<&str> = p.names.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["general", "general-2", "general-4"]);
        assert_eq!(p.names[0].0.name, "m9", "the lead is named first");
    }

    #[test]
    fn fifty_at_once_get_fifty_distinct_names() {
        let members: Vec<MemberView> = (0..50)
            .map(|_| mv("a", 0, None, MemberPhase::Queued))
            .enumerate()
            .map(|(i, mut m)| {
                m.uid = format!("u{i:02}");
                m.key = ObjectRef::new(&format!("m{i}")).within("ns");
                m
            })
            .collect();
        let p = plan(&teams(&[("a", 5)]), &members, &|_, _| false, &HashMap::new(), 10);
        let distinct: BTreeSet<&String> = p.names.iter().map(|(_, n)| n).collect();
        assert_eq!(distinct.len(), 50);
        assert_eq!(p.admit.len(), 5);
    }

    #[test]
    fn team_cap_counts_live_pods() {
        let members: Vec<MemberView> = (0..6).map(|i| mv("a", i, Some(&format!("g{i}")), MemberPhase::Queued)).collect();
        let live = HashMap::from([(("ns".to_owned(), "a".to_owned()), 2)]);
        let p = plan(&teams(&[("a", 3)]), &members, &|_, _| false, &live, 10);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m0"]);
    }

    #[test]
    fn global_cap_holds_across_teams_taking_turns() {
        let mut members: Vec<MemberView> = (0..4).map(|i| mv("a", i * 2, Some(&format!("a{i}")), MemberPhase::Queued)).collect();
        members.extend((0..4).map(|i| mv("b", i * 2 + 1, Some(&format!("b{i}")), MemberPhase::Queued)));
        let p = plan(&teams(&[("a", 10), ("b", 10)]), &members, &|_, _| false, &HashMap::new(), 3);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2"]);
    }

    #[test]
    fn a_team_queued_first_does_not_starve_one_created_after_it() {
        // Team a holds 3 of the 4 slots and 50 more of its members wait, all older than b's.
        let mut members: Vec<MemberView> = (0..50).map(|i| mv("a", i, Some(&format!("a{i}")), MemberPhase::Queued)).collect();
        members.extend((100..105).map(|i| mv("b", i, Some(&format!("b{i}")), MemberPhase::Queued)));
        let live = HashMap::from([(("ns".to_owned(), "a".to_owned()), 3)]);
        let p = plan(&teams(&[("a", 100), ("b", 5)]), &members, &|_, _| false, &live, 4);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m100"], "first come first served would take a's");
        // With two slots free, b holds 0 and takes both.
        let live = HashMap::from([(("ns".to_owned(), "a".to_owned()), 2)]);
        let p = plan(&teams(&[("a", 100), ("b", 5)]), &members, &|_, _| false, &live, 4);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m100", "m101"]);
        assert_eq!(p.held.get(&members[0].key), Some(&Hold::Operator { cap: 4 }));
    }

    #[test]
    fn a_higher_priority_team_goes_first_and_the_held_say_which_cap_holds_them() {
        let mut ts = teams(&[("low", 10), ("high", 1)]);
        ts.get_mut(&("ns".to_owned(), "high".to_owned())).expect("high").priority = 5;
        let members = vec![
            mv("low", 0, Some("l0"), MemberPhase::Queued),
            mv("high", 10, Some("h0"), MemberPhase::Queued),
            mv("high", 11, Some("h1"), MemberPhase::Queued),
        ];
        let p = plan(&ts, &members, &|_, _| false, &HashMap::new(), 1);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m10"]);
        assert_eq!(p.held.get(&members[2].key), Some(&Hold::Team { team: "high".into(), max_agents: 1 }), "{p:?}");
        assert_eq!(p.held.get(&members[0].key), Some(&Hold::Operator { cap: 1 }));
    }

    #[test]
    fn members_past_a_full_global_cap_are_still_named() {
        let members: Vec<MemberView> = (0..5).map(|i| mv("a", i, None, MemberPhase::Queued)).collect();
        let p = plan(&teams(&[("a", 10)]), &members, &|_, _| false, &HashMap::new(), 2);
        assert_eq!(p.names.len(), 5);
        assert_eq!(p.admit.len(), 2);
    }

    #[test]
    fn members_with_pods_or_of_disbanded_teams_are_not_admitted() {
        let mut with_pod = mv("a", 1, Some("g1"), MemberPhase::Queued);
        with_pod.has_pod = true;
        let other = mv("gone", 2, Some("g2"), MemberPhase::Queued);
        let mut ts = teams(&[("a", 5), ("gone", 5)]);
        if let Some(t) = ts.get_mut(&("ns".to_owned(), "gone".to_owned())) {
            t.disbanded = true;
        }
        let p = plan(&ts, &[with_pod, other], &|_, _| false, &HashMap::new(), 10);
        assert!(p.admit.is_empty());
    }

    #[test]
    fn a_team_that_spent_its_budget_names_its_queued_members_and_admits_none() {
        let mut ts = teams(&[("a", 5)]);
        ts.values_mut().for_each(|t| t.budget_spent = true);
        let mut lead = mv("a", 1, None, MemberPhase::Queued);
        lead.role = MemberRole::Lead;
        let p = plan(&ts, &[lead, mv("a", 2, None, MemberPhase::Queued)], &|_, _| false, &HashMap::new(), 10);
        assert_eq!((p.names.len(), p.admit.len()), (2, 0));
    }

    #[test]
    fn leads_skip_the_caps() {
        let mut lead = mv("a", 1, Some("lead"), MemberPhase::Queued);
        lead.role = MemberRole::Lead;
        let live = HashMap::from([(("ns".to_owned(), "a".to_owned()), 1)]);
        let p = plan(&teams(&[("a", 1)]), &[lead], &|_, _| false, &live, 1);
        assert_eq!(p.admit.len(), 1);
    }

    #[test]
    fn a_sub_teams_members_count_against_its_parents_cap() {
        let mut ts = teams(&[("parent", 2), ("child", 5)]);
        ts.get_mut(&("ns".to_owned(), "child".to_owned())).expect("child").parent = Some(("ns".into(), "parent".into()));
        // The parent runs one; the child may start only one more, though its own cap is 5.
        let live = HashMap::from([(("ns".to_owned(), "parent".to_owned()), 1)]);
        let members: Vec<MemberView> = (0..3).map(|i| mv("child", i, Some(&format!("c{i}")), MemberPhase::Queued)).collect();
        let p = plan(&ts, &members, &|_, _| false, &live, 10);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m0"]);
        // A full child does not hold the parent back.
        let live = HashMap::from([(("ns".to_owned(), "child".to_owned()), 1)]);
        let parents: Vec<MemberView> = (5..8).map(|i| mv("parent", i, Some(&format!("p{i}")), MemberPhase::Queued)).collect();
        assert_eq!(plan(&ts, &parents, &|_, _| false, &live, 10).admit.len(), 1, "parent cap 2 with one child pod live");
    }

    #[test]
    fn an_external_lead_is_admitted_beyond_the_caps_and_a_backing_off_member_waits() {
        let mut ts = teams(&[("a", 5)]);
        ts.get_mut(&("ns".to_owned(), "a".to_owned())).expect("a").external_lead = true;
        let mut lead = mv("a", 1, Some("lead"), MemberPhase::Queued);
        lead.role = MemberRole::Lead;
        let mut refused = mv("a", 2, Some("g"), MemberPhase::Queued);
        refused.backing_off = true;
        let next = mv("a", 3, Some("g2"), MemberPhase::Queued);
        let p = plan(&ts, &[lead, refused, next], &|_, _| false, &HashMap::new(), 10);
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m1", "m3"]);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn a_queued_member_with_a_pod_but_no_admission_written_is_recorded_not_admitted_again() {
        let team = TeamView {
            max_agents: 1,
            priority: 0,
            disbanded: false,
            budget_spent: false,
            agents: ["general".to_owned()].into(),
            external_lead: false,
            parent: None,
        };
        let teams = HashMap::from([(("ns".to_owned(), "a".to_owned()), team)]);
        let m = |i: i64, has_pod: bool, admitted: bool| MemberView {
            key: ObjectRef::new(&format!("m{i}")).within("ns"),
            team: ("ns".into(), "a".into()),
            agent: "general".into(),
            role: MemberRole::Specialist,
            uid: format!("u{i}"),
            created: Timestamp::UNIX_EPOCH,
            name: Some(format!("g{i}")),
            phase: MemberPhase::Queued,
            has_pod,
            admitted,
            backing_off: false,
            retry_at: None,
        };
        let live = HashMap::from([(("ns".to_owned(), "a".to_owned()), 1)]);
        let p = plan(&teams, &[m(1, true, false), m(2, true, true), m(3, false, false)], &|_, _| false, &live, 10);
        assert_eq!(p.record.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m1"]);
        assert!(p.admit.is_empty(), "the one slot is held: {p:?}");
    }
}

#[cfg(test)]
mod candidate_tests {
    use super::*;
    use crate::api::MemberStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn member(i: usize, named: bool) -> Member {
        let mut m = crate::controller::fixtures::member_created("review", &format!("m{i:03}"), &format!("u{i:03}"), i as i64);
        m.metadata.namespace = Some("default".into());
        if named {
            m.status = Some(MemberStatus { name: Some(format!("general-{i}")), phase: Some(MemberPhase::Queued), ..Default::default() });
        }
        m
    }

    #[test]
    fn a_round_reads_the_heads_of_the_queues_not_every_member() {
        let mut t = crate::controller::fixtures::team("review", 2);
        t.metadata.namespace = Some("default".into());
        t.metadata.uid = Some("team-uid".into());
        let mut index = Index::default();
        index.team(&t, true);
        for i in 0..500 {
            index.member(&member(i, true), true);
        }
        for i in 500..700 {
            index.member(&member(i, false), true);
        }
        let views = candidates(&index, &HashMap::new(), 10, &Pending::default(), Instant::now(), retry::DEFAULT_FIRST_BACKOFF);
        let named: Vec<&str> = views.iter().filter(|v| v.name.is_some()).map(|v| v.key.name.as_str()).collect();
        assert_eq!(named, ["m000", "m001"], "the first two of 500 waiting for two slots");
        assert_eq!(views.iter().filter(|v| v.name.is_none()).count(), NAME_BATCH);
        let p = plan(&index.teams, &views, &|team, name| index.is_taken(team, name), &HashMap::new(), 10);
        assert_eq!(p.admit.len(), 2);
        assert_eq!(p.names.len(), NAME_BATCH);
        let team = ("default".to_owned(), "review".to_owned());
        let fresh: BTreeSet<&String> = p.names.iter().map(|(_, n)| n).filter(|n| !index.is_taken(&team, n)).collect();
        assert_eq!(fresh.len(), NAME_BATCH, "distinct names none of the 500 named members holds: {:?}", p.names);
    }

    #[test]
    fn names_go_to_the_oldest_across_teams_as_the_window_has_room() {
        let team = |name: &str| {
            let mut t = crate::controller::fixtures::team(name, 2);
            t.metadata.namespace = Some("default".into());
            t.metadata.uid = Some(format!("uid-{name}"));
            t
        };
        let mut gone = team("gone");
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let mut index = Index::default();
        for t in [team("late"), team("early"), gone] {
            index.team(&t, true);
        }
        let of = |team: &str, i: usize| {
            let mut m = member(i, false);
            m.spec.team = team.into();
            m
        };
        // The disbanded team's are the oldest: they get no name, and take no room.
        for i in 0..10 {
            index.member(&of("gone", i), true);
        }
        for i in 100..200 {
            index.member(&of("late", i + 100), true);
            index.member(&of("early", i), true);
        }
        let unnamed = |pending: &Pending| {
            let views = candidates(&index, &HashMap::new(), 10, pending, Instant::now(), retry::DEFAULT_FIRST_BACKOFF);
            views.into_iter().filter(|v| v.name.is_none()).map(|v| v.team.1).collect::<Vec<_>>()
        };
        let all = unnamed(&Pending::default());
        assert_eq!(all.len(), NAME_BATCH);
        assert!(all.iter().all(|t| t == "early"), "the oldest first, whichever team: {all:?}");
        let busy = Pending { naming: NAME_BATCH - 4, ..Default::default() };
        assert_eq!(unnamed(&busy).len(), 4, "only the room the writes in flight leave");
        let full = Pending { naming: NAME_BATCH, ..Default::default() };
        assert!(unnamed(&full).is_empty());
    }

    #[test]
    fn a_retry_holds_no_slot_while_it_backs_off_then_queues_for_a_new_pod() {
        use k8s_openapi::api::core::v1::{Pod, PodStatus};
        let mut t = crate::controller::fixtures::team("review", 1);
        t.metadata.namespace = Some("default".into());
        t.metadata.uid = Some("team-uid".into());
        let failed_at = |secs_ago: i64| Time(Timestamp::now() - SignedDuration::from_secs(secs_ago));
        let retried = |secs_ago: i64| {
            let mut m = member(0, true);
            if let Some(s) = m.status.as_mut() {
                s.pod_name = Some(pod::pod_name("review", "general-0", "u000", 0));
                s.failed_attempts = Some(1);
                s.last_failure_time = Some(failed_at(secs_ago));
            }
            m
        };
        let mut old_pod = Pod::default();
        old_pod.metadata.name = Some(pod::pod_name("review", "general-0", "u000", 0));
        old_pod.metadata.namespace = Some("default".into());
        old_pod.metadata.owner_references = kube::Resource::controller_owner_ref(&member(0, true), &()).map(|o| vec![o]);
        old_pod.status = Some(PodStatus { phase: Some("Failed".into()), ..Default::default() });
        let plan_for = |m: &Member| {
            let mut index = Index::default();
            index.team(&t, true);
            index.member(m, true);
            index.member(&member(1, true), true);
            index.pod(&old_pod, true);
            let views = candidates(&index, &index.live(), 10, &Pending::default(), Instant::now(), retry::DEFAULT_FIRST_BACKOFF);
            let retry = views.iter().find(|v| v.uid == "u000").cloned().expect("the retried member is a candidate");
            (retry, plan(&index.teams, &views, &|_, _| false, &index.live(), 10))
        };
        let (view, p) = plan_for(&retried(2));
        assert!(view.backing_off && !view.has_pod && !view.admitted, "{view:?}");
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m001"], "the next member takes the slot meanwhile");
        let (view, p) = plan_for(&retried(11));
        assert!(!view.backing_off && !view.has_pod, "{view:?}");
        assert_eq!(p.admit.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["m000"], "it comes first again: created first");
    }
}
