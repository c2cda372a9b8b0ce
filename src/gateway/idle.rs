//! The Waiting condition: a member blocked in `wait_messages` for longer than [`IDLE_AFTER`]
//! gets condition `Waiting=True` on its Member, and `Waiting=False` once the wait returns. The
//! Member reconciler shows a running member that waits as phase `Idle` (see
//! `controller::member_status::from_pod`): the gateway owns this one condition, under its own
//! field manager ([`GATEWAY_WAIT`]), and never writes the phase, so no write of the gateway can
//! overwrite a phase the controller moved on (Completed, Failed, Cancelled).
//!
//! Only a wait that actually blocks is marked, so an agent that loops send → wait → work costs no
//! API writes, and a slow one costs two per long wait (and the reconciler's two of the phase).
//!
//! A gateway that dies while a member is marked leaves it Waiting until that member's next wait
//! that blocks, which marks it again and then clears it; a wait dropped because its client went
//! away clears it from a background task.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::Member;
use crate::api::condition::{self, WAITING};
use crate::api::field_managers::{self, GATEWAY_WAIT};

/// How long a wait blocks before its member reads Idle.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Runs `wait`; if it is still blocked after [`IDLE_AFTER`], marks Member `member` of namespace
/// `ns` Waiting until it returns, and runs `on_idle` meanwhile (the lead's `[IDLE]` notice, see
/// `idle_notice`).
pub async fn while_waiting<F: Future>(client: &Client, ns: &str, member: &str, on_idle: impl Future<Output = ()>, wait: F) -> F::Output {
    let mut wait = std::pin::pin!(wait);
    tokio::select! {
        out = &mut wait => return out,
        () = tokio::time::sleep(IDLE_AFTER) => {}
    }
    let api: Api<Member> = Api::namespaced(client.clone(), ns);
    let (mark, ()) = tokio::join!(WaitMark::set(api, member), on_idle);
    let out = wait.await;
    if let Some(mark) = mark {
        mark.clear().await;
    }
    out
}

/// A Member this gateway marked Waiting; dropping it without [`WaitMark::clear`] clears it in
/// the background.
struct WaitMark {
    api: Api<Member>,
    name: String,
    cleared: bool,
}

impl WaitMark {
    async fn set(api: Api<Member>, name: &str) -> Option<Self> {
        mark(&api, name, true).await.then(|| WaitMark { api, name: name.to_owned(), cleared: false })
    }

    async fn clear(mut self) {
        self.cleared = true;
        mark(&self.api, &self.name, false).await;
    }
}

impl Drop for WaitMark {
    fn drop(&mut self) {
        if !self.cleared {
            let (api, name) = (self.api.clone(), std::mem::take(&mut self.name));
            tokio::spawn(async move { mark(&api, &name, false).await });
        }
    }
}

/// Applies `Waiting=<waiting>`; whether it did. A failure is logged: the condition is a display,
/// and a wait must never fail because it could not be shown.
async fn mark(api: &Api<Member>, name: &str, waiting: bool) -> bool {
    let (reason, message) = match waiting {
        true => ("WaitingForMessages", "the agent waits for messages"),
        false => ("Working", "the agent is not waiting for messages"),
    };
    let cond = condition::new(WAITING, waiting, reason, message, None, Time(Timestamp::now()));
    let body = field_managers::status_apply::<Member>(name, None, json!({ "conditions": [cond] }));
    match api.patch_status(name, &PatchParams::apply(GATEWAY_WAIT).force(), &Patch::Apply(&body)).await {
        Ok(_) => true,
        // The Member is gone.
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(e) => {
            tracing::warn!(member = name, error = %e, waiting, "could not show the member's wait in its conditions");
            false
        }
    }
}
