//! The operator's projection of a team into Redis: its state and roster, and its teardown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Bus;
use super::error::BusError;
use super::keys::{INBOX_GROUP, TeamKey};
use super::scripts::{MARK_DISBANDED, SYNC_ROSTER, TEARDOWN, UPDATE_ROSTER};
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
        self.roster_script(&SYNC_ROSTER, team, roster).await
    }

    /// Applies `changes` to the roster: each given member's state is set (a new one that is not
    /// finished gets its inbox), the others are left as they are; the team is marked active.
    /// What a reconciler that remembers the roster it set sends instead of the whole roster:
    /// Redis work in proportion to what changed. Refused like [`Bus::sync_roster`] once the team
    /// was disbanded.
    pub async fn update_roster(&self, team: &TeamKey, changes: &[(String, RosterState)]) -> Result<(), BusError> {
        self.roster_script(&UPDATE_ROSTER, team, changes).await
    }

    async fn roster_script(&self, script: &redis::Script, team: &TeamKey, roster: &[(String, RosterState)]) -> Result<(), BusError> {
        if let Some((name, _)) = roster.iter().find(|(name, _)| name.is_empty()) {
            return Err(BusError::InvalidArgument(format!("empty member name {name:?} in roster")));
        }
        let mut invocation = script.prepare_invoke();
        invocation.key(team.meta()).key(team.roster()).arg(team.inbox_prefix()).arg(INBOX_GROUP);
        for (name, state) in roster {
            invocation.arg(name).arg(state.as_str());
        }
        let outcome: String = self.run_script(&invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "team_disbanded" => Err(BusError::TeamDisbanded { team: team.to_string() }),
            other => Err(BusError::Protocol(format!("a roster script replied {other:?}"))),
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

    /// Removes every key of the team with one UNLINK, its transcript too. A wait on one of the
    /// inboxes, in any process, returns with [`BusError::TeamNotFound`]: a blocked read is unblocked
    /// by Redis 7, a parked one is woken. Idempotent.
    pub async fn teardown(&self, team: &TeamKey) -> Result<(), BusError> {
        self.teardown_retaining(team, "", Duration::ZERO).await
    }

    /// [`Bus::teardown`], keeping the transcript for `retention` under the Team's `uid` (what
    /// [`Bus::transcript`] reads once the team is gone). A zero retention or an empty uid keeps
    /// nothing. Idempotent: a second call finds no live transcript and leaves the kept one be.
    pub async fn teardown_retaining(&self, team: &TeamKey, uid: &str, retention: Duration) -> Result<(), BusError> {
        let mut invocation = TEARDOWN.prepare_invoke();
        for key in team.message_keys() {
            invocation.key(key);
        }
        invocation
            .key(team.transcripts())
            .key(team.retained_transcript(uid))
            .arg(team.inbox_prefix())
            .arg(uid)
            .arg(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
            .arg(WAKE_CHANNEL);
        self.run_script::<()>(&invocation).await
    }
}
