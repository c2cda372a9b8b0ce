//! A round's decisions carried out (pod creates, then the admissions written) while the next
//! rounds plan: a round never waits for the writes of the one before it, so a slot freed while
//! they are in flight is refilled by the next round (20 ms later) rather than after them.
//!
//! What makes that safe is the admission task's memory of its own decisions ([`Pending`]): a pod
//! is counted as live from the moment its create is decided (an expectation, until the pod store
//! shows it or the create fails), a name is taken from the moment it is decided, and a member
//! with work in flight is no candidate of any round until that work is done, so no member is
//! decided twice and no cap is exceeded by creates that have not landed yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use super::admission_status::{self, Decision, Hold};
use super::context::Context;
use super::fair_share::TeamId;
use super::pod::{self, PodInputs};
use super::pod_refusal::{Backoff, NAME_TAKEN, POD_REJECTED, QUOTA_EXCEEDED, REJECTED_TRIES, Refusal};
use super::retry;
use crate::api::field_managers::{self, ADMISSION, PODS};
use crate::api::{Member, Team};

/// Pod creations in flight at once, and status writes in flight at once.
const WRITE_CONCURRENCY: usize = 32;

/// The admission task's memory of its own recent decisions and writes: a cache of what the
/// stores will show, never a source of truth. Shared by the rounds and the work in flight.
#[derive(Default)]
pub struct Pending {
    /// Pods created but not yet seen in the pod store: pod name (ns/name) → team, created at.
    pub pods: HashMap<(String, String), (TeamId, Instant)>,
    /// Names decided (and perhaps written) but not yet seen in the member store: member uid →
    /// what was decided and written.
    pub members: HashMap<String, Written>,
    /// Members whose pod create was refused, waiting out their backoff.
    pub refusals: Backoff,
    /// The earliest end of a retry's backoff the last round saw (see `retry`), if any waits.
    pub retry_wake: Option<Timestamp>,
    /// Members (uids) with work in flight: no round plans for them until it is done.
    pub in_flight: HashSet<String>,
    /// Queued writes of newly named members in flight: a window (`admission::NAME_BATCH`) that
    /// each write ending makes room in for the next name.
    pub naming: usize,
}

/// A member's decision as the admission task last made and wrote it.
#[derive(Clone, Debug)]
pub struct Written {
    /// The name decided: kept from the moment it is decided, so a write that fails is retried
    /// with the same name (its pod may exist under it).
    pub name: String,
    /// The member's team: a name decided is taken in it.
    pub team: TeamId,
    /// Its admission was written, for attempt `attempt`.
    pub admitted: bool,
    /// The attempt decided (see `retry`): an admission of an earlier one is not this one's.
    pub attempt: u32,
    /// The version the last write returned: the next write is conditional on it.
    pub resource_version: Option<String>,
}

/// What a round decided for one member, to be carried out.
pub enum Work {
    /// Create its pod (`pod_key`, counted as live already), then write its admission.
    Admit { member: Arc<Member>, team: Arc<Team>, name: String, pod_key: (String, String) },
    /// Write `decision`; `naming` when it is a newly named member's Queued.
    Write { member: Arc<Member>, name: String, decision: Decision, naming: bool },
}

impl Work {
    pub fn member(&self) -> &Member {
        match self {
            Work::Admit { member, .. } | Work::Write { member, .. } => member,
        }
    }

    fn naming(&self) -> bool {
        matches!(self, Work::Write { naming: true, .. })
    }
}

/// What the work in flight shares: the admission task's memory, the wake-up of its rounds, and
/// the bounds on API calls in flight.
#[derive(Clone)]
pub struct Flights {
    pub pending: Arc<Mutex<Pending>>,
    pub wake: Arc<Notify>,
    creates: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            pending: Default::default(),
            wake: Default::default(),
            creates: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
        }
    }
}

impl Flights {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the member of `work` as in flight (with the pending memory locked by the round).
    pub fn start(pending: &mut Pending, work: &Work) {
        if let Some(uid) = work.member().metadata.uid.clone() {
            pending.in_flight.insert(uid);
        }
        pending.naming += usize::from(work.naming());
    }

    /// Carries out `work`; whether every write succeeded (else a round retries it soon).
    pub async fn carry_out(self, ctx: Arc<Context>, work: Work) -> bool {
        let _done = Done { flights: self.clone(), uid: work.member().metadata.uid.clone().unwrap_or_default(), naming: work.naming() };
        match work {
            Work::Write { member, name, decision, .. } => self.write(&ctx, &member, name, decision).await,
            Work::Admit { member, team, name, pod_key } => {
                let created = {
                    let _permit = self.creates.acquire().await;
                    create_pod(&ctx, &team, &member, &name).await
                };
                let uid = member.metadata.uid.clone().unwrap_or_default();
                match created {
                    Ok(()) => {
                        self.lock().refusals.clear(&uid);
                        self.write(&ctx, &member, name, Decision::Admitted { pod_name: pod_key.1 }).await
                    }
                    Err(e) => {
                        let tries = {
                            let mut pending = self.lock();
                            pending.pods.remove(&pod_key);
                            pending.refusals.refused(&uid, Instant::now())
                        };
                        warn!(member = %member.name_any(), error = %e, tries, "creating the member's pod was refused; retried with backoff");
                        // Its slot is free again and its backoff is to be waited out: a round plans.
                        self.wake.notify_one();
                        let refusal = match &e {
                            super::Error::Kube(k) => Refusal::of(k),
                            other => Refusal::Transient(other.to_string()),
                        };
                        let decision = match refusal {
                            Refusal::Rejected(message) if tries >= REJECTED_TRIES => {
                                let note = format!("the API server refused the member's pod: {message}");
                                ctx.event(member.as_ref(), true, POD_REJECTED, note).await;
                                Decision::Rejected { message }
                            }
                            Refusal::Quota(msg) if member.status.as_ref().and_then(|s| s.reason.as_deref()) != Some(QUOTA_EXCEEDED) => {
                                Decision::Queued { hold: Some(Hold::Quota(msg)) }
                            }
                            _ => return true,
                        };
                        self.write(&ctx, &member, name, decision).await
                    }
                }
            }
        }
    }

    /// Applies `decision`, conditional on the version last written or seen; whether it was.
    async fn write(&self, ctx: &Context, member: &Member, name: String, decision: Decision) -> bool {
        let (Some(ns), Some(uid)) = (member.namespace(), member.metadata.uid.clone()) else { return true };
        let _permit = self.writes.acquire().await;
        let rv = self.lock().members.get(&uid).and_then(|w| w.resource_version.clone()).or_else(|| member.resource_version());
        let api: Api<Member> = Api::namespaced(ctx.client.clone(), &ns);
        let status = admission_status::status(member, &name, &decision, &Time(Timestamp::now()));
        let body = field_managers::status_apply::<Member>(&member.name_any(), rv.as_deref(), status);
        match api.patch_status(&member.name_any(), &PatchParams::apply(ADMISSION).force(), &Patch::Apply(&body)).await {
            Ok(m) => {
                info!(member = %member.name_any(), namespace = ns, name, decision = ?decision, "admission written");
                let admitted = matches!(decision, Decision::Admitted { .. });
                let team = (ns, member.spec.team.clone());
                let attempt = retry::failed_attempts(member);
                let written = Written { name, team, admitted, attempt, resource_version: m.resource_version() };
                self.lock().members.insert(uid, written);
                true
            }
            Err(e) => {
                warn!(member = %member.name_any(), error = %e, "writing the admission failed; a round retries");
                false
            }
        }
    }
}

/// Ends a member's flight however its work ended (a panic included): it is a candidate again,
/// and the end of a naming write lets the next member be named.
struct Done {
    flights: Flights,
    uid: String,
    naming: bool,
}

impl Drop for Done {
    fn drop(&mut self) {
        let mut pending = self.flights.lock();
        pending.in_flight.remove(&self.uid);
        if self.naming {
            pending.naming = pending.naming.saturating_sub(1);
            self.flights.wake.notify_one();
        }
    }
}

/// Creates the member's pod with a plain create, as the Job controller does: an apply would have
/// the API server parse the whole pod as YAML (twice) and merge it field by field, on the
/// busiest write of a launch. A pod of that name already controlled by this Member (a create
/// whose answer was lost, or a restart between the create and the admission write) is its pod;
/// one that is not (a pod made under its name by someone else) is refused as a name taken, never
/// adopted (rule 7).
async fn create_pod(ctx: &Context, team: &Team, member: &Member, agent_name: &str) -> Result<(), super::Error> {
    // Memory (`memory: local`) is not put into the prompt: `teamctl run` reads it when turn 1
    // starts, so it is fresh and TEAM_PROMPT stays within env limits.
    let prompt = member.spec.prompt.clone();
    let input = PodInputs { agent_name, prompt, attempt: retry::failed_attempts(member), settings: &ctx.config.pod };
    let Some(pod) = pod::build(team, member, input) else {
        return Err(super::Error::Invalid(format!("agent type {} is not in team {}", member.spec.agent, team.name_any())));
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = PostParams { field_manager: Some(PODS.into()), ..Default::default() };
    match api.create(&params, &pod).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&name).await?;
            let uid = member.metadata.uid.as_deref().unwrap_or_default();
            if !pod::controlled_by(&existing, uid) {
                let message =
                    format!("pod {name} exists and is not controlled by Member {} (uid {uid}): its name is taken", member.name_any());
                return Err(kube::Error::Api(Box::new(kube::core::Status::failure(&message, NAME_TAKEN).with_code(409))).into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    ctx.metrics.pods_created.inc();
    info!(pod = name, member = %member.name_any(), "admitted member");
    Ok(())
}
