//! A team's roster in Redis, kept by differences: the Team reconciler remembers the roster it
//! last set per team and sends only what changed (a member new, or in another state; a member
//! gone reads finished), so a member's transition costs Redis work for that member alone, not
//! for the whole team. The whole roster is set the first time after a start, after any error,
//! and at least every [`FULL_SYNC`], so a Redis that lost its data is healed (level-driven
//! still, at a slower beat).

use std::collections::{HashMap, HashSet};
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
    members.iter().filter_map(|m| Some((m.agent_name()?.to_owned(), state_of(m)))).collect()
}

fn state_of(m: &Member) -> RosterState {
    match m.phase() {
        MemberPhase::Queued => RosterState::Queued,
        p if p.is_terminal() => RosterState::Finished,
        _ => RosterState::Active,
    }
}

/// What was last set, per team, and when the whole roster was.
#[derive(Default)]
pub struct Rosters(Mutex<HashMap<TeamKey, (Instant, Roster)>>);

impl Rosters {
    /// Sets the roster of `team` to the one `members` make, by its differences from the last one
    /// set (found without building the new roster: a pass of a 10,000-member team allocates
    /// only for what changed).
    pub async fn sync(&self, bus: &Bus, team: &TeamKey, members: &[Arc<Member>]) -> Result<(), BusError> {
        let last = self.lock().remove(team).filter(|(at, _)| at.elapsed() < FULL_SYNC);
        let (at, roster, outcome) = match last {
            Some((at, mut roster)) => {
                let changes = update(&mut roster, members);
                let outcome = if changes.is_empty() { Ok(()) } else { bus.update_roster(team, &changes).await };
                (at, roster, outcome)
            }
            None => {
                let roster = of(members);
                let whole: Vec<(String, RosterState)> = roster.iter().map(|(n, s)| (n.clone(), *s)).collect();
                (Instant::now(), roster, bus.sync_roster(team, &whole).await)
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

/// Brings `roster` (the last one set) to what `members` make and says what changed: members new
/// or in another state, and members gone, finished (never removed from Redis: their inboxes may
/// hold unread messages until the teardown; forgotten here once sent as finished).
pub fn update(roster: &mut Roster, members: &[Arc<Member>]) -> Vec<(String, RosterState)> {
    let mut changes = Vec::new();
    let mut listed = 0;
    for m in members {
        let Some(name) = m.agent_name() else { continue };
        listed += 1;
        let state = state_of(m);
        match roster.get_mut(name) {
            Some(last) if *last == state => {}
            Some(last) => {
                *last = state;
                changes.push((name.to_owned(), state));
            }
            None => {
                roster.insert(name.to_owned(), state);
                changes.push((name.to_owned(), state));
            }
        }
    }
    // Names are unique in a team: more entries than named members means some are gone.
    if roster.len() > listed {
        let now: HashSet<&str> = members.iter().filter_map(|m| m.agent_name()).collect();
        roster.retain(|name, state| {
            let here = now.contains(name.as_str());
            if !here && *state != RosterState::Finished {
                changes.push((name.clone(), RosterState::Finished));
            }
            here
        });
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberStatus;
    use crate::controller::fixtures;
    use RosterState::*;

    fn members(entries: &[(&str, MemberPhase)]) -> Vec<Arc<Member>> {
        entries
            .iter()
            .map(|(name, phase)| {
                let mut m = fixtures::member("t", "general", name);
                m.status = Some(MemberStatus { name: Some((*name).to_owned()), phase: Some(*phase), ..Default::default() });
                Arc::new(m)
            })
            .collect()
    }

    #[test]
    fn only_what_changed_is_sent_and_a_member_gone_reads_finished_once() {
        let mut last = of(&members(&[
            ("lead", MemberPhase::Active),
            ("a", MemberPhase::Queued),
            ("b", MemberPhase::Active),
            ("c", MemberPhase::Completed),
        ]));
        let now = members(&[("lead", MemberPhase::Active), ("a", MemberPhase::Starting), ("d", MemberPhase::Queued)]);
        assert_eq!(update(&mut last, &now), [("a".to_owned(), Active), ("b".to_owned(), Finished), ("d".to_owned(), Queued)]);
        assert_eq!(last, of(&now), "what is remembered is the roster the members make");
        assert!(update(&mut last, &now).is_empty());
        // An unnamed member is not on the roster.
        let mut unnamed = (*now[0]).clone();
        unnamed.status = None;
        assert!(update(&mut last, &[now[0].clone(), now[1].clone(), now[2].clone(), Arc::new(unnamed)]).is_empty());
    }
}
