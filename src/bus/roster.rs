//! The operator's projection of a team into Redis: its state and roster, and its teardown.

use serde::{Deserialize, Serialize};

use super::Bus;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::scripts::{MARK_DISBANDED, SYNC_ROSTER, TEARDOWN};
use super::wake::WAKE_CHANNEL;

/// Where a member stands, as far as messaging cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RosterState {
    /// Waiting for a slot; can already receive messages it will read when it starts.
    Queued,
    /// Starting, Active or Idle.
    Active,
    /// Completed, Failed or Cancelled: nothing will ever read its inbox again.
    Finished,
}

impl RosterState {
    fn as_str(self) -> &'static str {
        match self {
            RosterState::Queued => "queued",
            RosterState::Active => "active",
            RosterState::Finished => "finished",
        }
    }
}

impl Bus {
    /// Sets the whole roster in one step, marks the team active and creates missing inboxes
    /// with their consumer groups; members no longer listed read as finished, their inboxes
    /// kept (with their unread messages) until [`Bus::teardown`].
    /// Level-driven: call it on every reconcile. Refused with [`BusError::TeamDisbanded`] once
    /// the team was disbanded, so a stale reconcile cannot revive it before teardown.
    pub async fn sync_roster(&self, team: &TeamKey, roster: &[(String, RosterState)]) -> Result<(), BusError> {
        if let Some((name, _)) = roster.iter().find(|(name, _)| name.is_empty()) {
            return Err(BusError::InvalidArgument(format!("empty member name {name:?} in roster")));
        }
        let mut invocation = SYNC_ROSTER.prepare_invoke();
        invocation.key(team.meta()).key(team.roster()).arg(team.inbox_prefix()).arg(INBOX_GROUP);
        for (name, state) in roster {
            invocation.arg(name).arg(state.as_str());
        }
        let outcome: String = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "team_disbanded" => Err(BusError::TeamDisbanded { team: team.to_string() }),
            other => Err(BusError::Protocol(format!("sync_roster replied {other:?}"))),
        }
    }

    /// Marks the team disbanded: from now on sends are refused, while system notices (the
    /// disband notice) and draining inboxes still work until [`Bus::teardown`].
    /// A team that does not exist (already torn down) is left alone.
    pub async fn mark_disbanded(&self, team: &TeamKey) -> Result<(), BusError> {
        let mut invocation = MARK_DISBANDED.prepare_invoke();
        invocation.key(team.meta());
        self.run_script::<()>(&invocation).await
    }

    /// Removes every key of the team with one UNLINK. A wait parked on one of the inboxes, in any
    /// process, is woken and returns [`BusError::TeamNotFound`]. Idempotent.
    pub async fn teardown(&self, team: &TeamKey) -> Result<(), BusError> {
        let mut invocation = TEARDOWN.prepare_invoke();
        invocation.key(team.meta()).key(team.roster()).key(team.sent()).key(team.sent_at()).arg(team.inbox_prefix()).arg(WAKE_CHANNEL);
        self.run_script::<()>(&invocation).await
    }
}
