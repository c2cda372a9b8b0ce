//! A team's roster in Redis, kept by differences: the Team reconciler remembers the roster it
//! last set per team and sends only what changed (a member new, or in another state; a member
//! gone reads finished), so a member's transition costs Redis work for that member alone, not
//! for the whole team. The whole roster is set the first time after a start, after any error,
//! and at least every [`FULL_SYNC`], so a Redis that lost its data is healed (level-driven
//! still, at a slower beat).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{Member, MemberPhase};
use crate::bus::{Bus, BusError, RosterState, TeamKey};

/// Longest time between two syncs of a team's whole roster.
pub const FULL_SYNC: Duration = Duration::from_secs(60);

/// A roster: member name → state.
pub type Roster = HashMap<String, RosterState>;

/// The roster that `members` (a team's, from the store) make: queued, finished, or active.
pub fn of(members: &[Arc<Member>]) -> Roster {
    members
        .iter()
        .filter_map(|m| {
            let state = match m.phase() {
                MemberPhase::Queued => RosterState::Queued,
                p if p.is_terminal() => RosterState::Finished,
                _ => RosterState::Active,
            };
            Some((m.agent_name()?.to_owned(), state))
        })
        .collect()
}

/// What was last set, per team, and when the whole roster was.
#[derive(Default)]
pub struct Rosters(Mutex<HashMap<TeamKey, (Instant, Roster)>>);

impl Rosters {
    /// Sets the roster of `team` to `roster`, by its differences from the last one set.
    pub async fn sync(&self, bus: &Bus, team: &TeamKey, roster: Roster) -> Result<(), BusError> {
        let last = self.lock().remove(team).filter(|(at, _)| at.elapsed() < FULL_SYNC);
        let (at, outcome) = match &last {
            Some((at, last)) => {
                let changes = changes(last, &roster);
                (*at, if changes.is_empty() { Ok(()) } else { bus.update_roster(team, &changes).await })
            }
            None => {
                let whole: Vec<(String, RosterState)> = roster.iter().map(|(n, s)| (n.clone(), *s)).collect();
                (Instant::now(), bus.sync_roster(team, &whole).await)
            }
        };
        // After an error nothing is remembered: the next sync sets the whole roster.
        if outcome.is_ok() {
            self.lock().insert(team.clone(), (at, roster));
        }
        outcome
    }

    /// Forgets `team` (torn down, or gone).
    pub fn forget(&self, team: &TeamKey) {
        self.lock().remove(team);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TeamKey, (Instant, Roster)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What turns roster `last` into `now`: members new or in another state, and members gone,
/// finished (never removed: their inboxes may hold unread messages until the teardown).
pub fn changes(last: &Roster, now: &Roster) -> Vec<(String, RosterState)> {
    let mut out: Vec<(String, RosterState)> =
        now.iter().filter(|(name, state)| last.get(*name) != Some(state)).map(|(n, s)| (n.clone(), *s)).collect();
    out.extend(
        last.iter()
            .filter(|(name, s)| !now.contains_key(*name) && **s != RosterState::Finished)
            .map(|(n, _)| (n.clone(), RosterState::Finished)),
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use RosterState::*;

    fn roster(entries: &[(&str, RosterState)]) -> HashMap<String, RosterState> {
        entries.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    #[test]
    fn only_what_changed_is_sent_and_a_member_gone_reads_finished() {
        let last = roster(&[("lead", Active), ("a", Queued), ("b", Active), ("c", Finished)]);
        let now = roster(&[("lead", Active), ("a", Active), ("d", Queued)]);
        assert_eq!(changes(&last, &now), [("a".to_owned(), Active), ("b".to_owned(), Finished), ("d".to_owned(), Queued)]);
        assert!(changes(&now, &now).is_empty());
    }
}
