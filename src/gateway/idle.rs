//! The Idle phase: a member blocked in `wait_messages` for longer than [`IDLE_AFTER`] reads
//! `Idle` in its Member status, and `Active` again once the wait returns.
//!
//! Only a wait that actually blocks is marked, so an agent that loops send → wait → work costs no
//! API writes, and a slow one costs two per long wait. Each write is a JSON patch that first tests
//! the phase it replaces: `Active → Idle` and `Idle → Active` only, so the gateway never overwrites
//! a phase the controller has moved on (Completed, Failed, Cancelled); a failed test is the
//! expected outcome of that race and is not an error. The controller keeps `Idle` while the pod
//! runs (see `controller::member_status::from_pod`). The phase is all it writes: Active and Idle
//! have the same conditions (Ready: the pod runs; see `api::condition::for_member`).
//!
//! A gateway that dies while a member is marked leaves it `Idle` until that member's next wait
//! that blocks, which marks it again and then restores `Active`; a wait dropped because its
//! client went away restores `Active` from a background task.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::{Member, MemberPhase};

/// How long a wait blocks before its member reads Idle.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Runs `wait`; if it is still blocked after [`IDLE_AFTER`], marks Member `member` of namespace
/// `ns` Idle until it returns, and runs `on_idle` meanwhile (the lead's `[IDLE]` notice, see
/// `idle_notice`).
pub async fn while_waiting<F: Future>(client: &Client, ns: &str, member: &str, on_idle: impl Future<Output = ()>, wait: F) -> F::Output {
    let mut wait = std::pin::pin!(wait);
    tokio::select! {
        out = &mut wait => return out,
        () = tokio::time::sleep(IDLE_AFTER) => {}
    }
    let api: Api<Member> = Api::namespaced(client.clone(), ns);
    let (mark, ()) = tokio::join!(IdleMark::set(api, member), on_idle);
    let out = wait.await;
    if let Some(mark) = mark {
        mark.clear().await;
    }
    out
}

/// A Member this gateway marked Idle; dropping it without [`IdleMark::clear`] clears it in the
/// background.
struct IdleMark {
    api: Api<Member>,
    name: String,
    cleared: bool,
}

impl IdleMark {
    async fn set(api: Api<Member>, name: &str) -> Option<Self> {
        switch(&api, name, MemberPhase::Active, MemberPhase::Idle).await.then(|| IdleMark { api, name: name.to_owned(), cleared: false })
    }

    async fn clear(mut self) {
        self.cleared = true;
        switch(&self.api, &self.name, MemberPhase::Idle, MemberPhase::Active).await;
    }
}

impl Drop for IdleMark {
    fn drop(&mut self) {
        if !self.cleared {
            let (api, name) = (self.api.clone(), std::mem::take(&mut self.name));
            tokio::spawn(async move { switch(&api, &name, MemberPhase::Idle, MemberPhase::Active).await });
        }
    }
}

/// Sets the phase to `to` if it is `from`; whether it did. Anything else is logged: the phase is
/// a display, and a wait must never fail because it could not be shown.
async fn switch(api: &Api<Member>, name: &str, from: MemberPhase, to: MemberPhase) -> bool {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/status/phase", "value": from },
        { "op": "replace", "path": "/status/phase", "value": to },
    ]))
    .expect("a JSON patch of two constant operations");
    match api.patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => true,
        // 422: the test failed — the phase is no longer `from`; 404: the Member is gone.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 404 => false,
        Err(e) => {
            tracing::warn!(member = name, error = %e, from = from.as_str(), to = to.as_str(), "could not show the member's wait in its phase");
            false
        }
    }
}
