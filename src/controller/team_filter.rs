//! Which Team changes concern a team's Members and TeamTasks: its spec (generation), its phase,
//! its lead's name, its deletion, its budget being spent. Not the member counts (nor the usage),
//! which change up to once a second in a fleet: without this filter every count write would wake
//! every member and every task.

use std::collections::HashMap;
use std::future::ready;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{Team, TeamPhase};

/// What of a Team its members and tasks act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    generation: Option<i64>,
    phase: Option<TeamPhase>,
    lead_name: Option<String>,
    deleting: bool,
    /// The BudgetExceeded condition holds: its working members are to stop.
    budget_spent: bool,
}

/// The [`Key`] of `team`.
pub fn key(team: &Team) -> Key {
    let status = team.status.as_ref();
    Key {
        generation: team.metadata.generation,
        phase: status.and_then(|s| s.phase),
        lead_name: status.and_then(|s| s.lead_name.clone()),
        deleting: team.metadata.deletion_timestamp.is_some(),
        budget_spent: super::budget_phase::team_spent(team).is_some(),
    }
}

/// `teams` (a shared watch's triggers, applied to `store` before they come) with only the
/// changes of a [`Key`], and the deletions.
pub fn changes(teams: impl Stream<Item = Arc<Team>>, store: Store<Team>) -> impl Stream<Item = Arc<Team>> {
    let mut seen: HashMap<ObjectRef<Team>, Key> = HashMap::new();
    teams.filter(move |t| {
        let at = ObjectRef::from_obj(t.as_ref());
        let pass = match store.get(&at) {
            // Gone from the store: deleted.
            None => {
                seen.remove(&at);
                true
            }
            Some(_) => seen.insert(at, key(t)) != Some(key(t)),
        };
        ready(pass)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TeamStatus;
    use crate::controller::fixtures::team;

    #[test]
    fn counts_do_not_change_the_key_and_phase_spec_and_deletion_do() {
        let t = team("review", 3);
        let mut counted = t.clone();
        counted.status = Some(TeamStatus { active: 7, queued: 3, ..Default::default() });
        assert_eq!(key(&t), key(&counted));
        let mut disbanded = counted.clone();
        if let Some(s) = disbanded.status.as_mut() {
            s.phase = Some(TeamPhase::Disbanded);
        }
        assert_ne!(key(&counted), key(&disbanded));
        let mut edited = t.clone();
        edited.metadata.generation = Some(2);
        assert_ne!(key(&t), key(&edited));
        let mut deleted = t.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_ne!(key(&t), key(&deleted));
    }
}
