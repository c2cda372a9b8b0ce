//! Fair share of the operator-wide cap: which waiting member takes the next free slot. One rule,
//! used by admission to fill slots and by the gateway to show each Queued member its place in
//! the queue (`teamctl get members`), so the two never disagree.
//!
//! The rule, one turn per free slot:
//! 1. Teams take part while they have a member waiting and room under their own `maxAgents`
//!    (and their parents', for a sub-team).
//! 2. The highest `spec.priority` among them goes first.
//! 3. Among equal priority, the namespace that holds the fewest slots now goes next, and within
//!    it (or among the namespaces that tie) the team that holds the fewest; a tie goes to the
//!    team whose next member was created first (then the lower uid).
//! 4. That team's oldest waiting member (creation order) takes the slot, which counts as held
//!    for the next turn.
//!
//! So teams of equal priority take turns, round-robin by the slots they hold: a team of 1,000
//! members queued first holds more slots than a team of 5 created after it, and the 5 go next
//! until the two hold as many. First come, first served across teams would make the 5 wait for
//! the 1,000. The turn follows from the slots held, not from a pointer kept between rounds, so a
//! restarted operator and a reader of the queue reach the same answer.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{Member, MemberPhase, MemberRole, Team};

/// (namespace, team name).
pub type TeamId = (String, String);

/// A member waiting for a slot: its creation time and uid (its order in its team), and what the
/// caller carries along with it.
#[derive(Clone, Debug)]
pub struct Waiting<M> {
    pub created: Timestamp,
    pub uid: String,
    pub member: M,
}

/// A team's waiting members, oldest first.
struct Contender<M> {
    team: TeamId,
    priority: i32,
    waiting: VecDeque<Waiting<M>>,
}

/// The turns of one round (or of a reading of the queue).
pub struct Turns<M> {
    teams: Vec<Contender<M>>,
    team_held: HashMap<TeamId, usize>,
    ns_held: HashMap<String, usize>,
}

impl<M> Turns<M> {
    /// Turns starting from the slots each team `held` (specialist pods that run).
    pub fn new(held: &HashMap<TeamId, usize>) -> Self {
        let mut ns_held: HashMap<String, usize> = HashMap::new();
        for ((ns, _), n) in held {
            *ns_held.entry(ns.clone()).or_default() += n;
        }
        Turns { teams: Vec::new(), team_held: held.clone(), ns_held }
    }

    /// Adds `team`, of `priority`, with its members waiting for a slot (any order).
    pub fn team(&mut self, team: TeamId, priority: i32, waiting: impl IntoIterator<Item = Waiting<M>>) {
        let mut waiting: Vec<Waiting<M>> = waiting.into_iter().collect();
        waiting.sort_by(|a, b| (a.created, &a.uid).cmp(&(b.created, &b.uid)));
        self.teams.push(Contender { team, priority, waiting: waiting.into() });
    }

    /// Slots `team` holds, the turns given so far included.
    pub fn held(&self, team: &TeamId) -> usize {
        self.team_held.get(team).copied().unwrap_or(0)
    }

    /// The next turn: of the teams with a member waiting that `room(team, slots it holds)` lets
    /// take one more slot, the one the rule picks, and its oldest waiting member, whose slot is
    /// counted as held from now on. None when no team can take a slot.
    pub fn next(&mut self, mut room: impl FnMut(&TeamId, usize) -> bool) -> Option<(TeamId, M)> {
        let pick = {
            let held = |t: &TeamId| self.team_held.get(t).copied().unwrap_or(0);
            self.teams
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.waiting.front().map(|head| (i, c, head)))
                .filter(|(_, c, _)| room(&c.team, held(&c.team)))
                .min_by_key(|(_, c, head)| {
                    let ns = self.ns_held.get(&c.team.0).copied().unwrap_or(0);
                    (Reverse(c.priority), ns, held(&c.team), head.created, head.uid.clone())
                })
                .map(|(i, _, _)| i)
        }?;
        let c = &mut self.teams[pick];
        let head = c.waiting.pop_front()?;
        *self.team_held.entry(c.team.clone()).or_default() += 1;
        *self.ns_held.entry(c.team.0.clone()).or_default() += 1;
        Some((c.team.clone(), head.member))
    }

    /// The members no turn took, with their teams.
    pub fn left(self) -> impl Iterator<Item = (TeamId, M)> {
        self.teams.into_iter().flat_map(|c| {
            let team = c.team;
            c.waiting.into_iter().map(move |w| (team.clone(), w.member))
        })
    }
}

/// Each Queued member's place in the queue for the operator-wide cap, as read from the Teams and
/// Members (the gateway's watch caches): member uid → 1 for the next slot that frees, 2 for the
/// one after, and so on, if nothing else changes. Slots held are those of specialists admitted
/// and not finished; a team takes part up to its `maxAgents`. A member its team's cap holds back
/// has no place (it waits for its own team's members to end, whatever frees elsewhere).
pub fn positions(teams: &[std::sync::Arc<Team>], members: &[std::sync::Arc<Member>]) -> HashMap<String, usize> {
    let open: HashMap<TeamId, &Team> =
        teams.iter().filter(|t| !t.is_disbanded()).filter_map(|t| Some(((t.namespace()?, t.name_any()), t.as_ref()))).collect();
    let mut held: HashMap<TeamId, usize> = HashMap::new();
    let mut waiting: HashMap<TeamId, Vec<Waiting<String>>> = HashMap::new();
    for m in members.iter().filter(|m| m.spec.role == MemberRole::Specialist) {
        let (Some(ns), Some(uid)) = (m.namespace(), m.uid()) else { continue };
        let team = (ns, m.spec.team.clone());
        let admitted = m.status.as_ref().is_some_and(|s| s.pod_name.is_some());
        if admitted && !m.phase().is_terminal() {
            *held.entry(team).or_default() += 1;
        } else if !admitted && m.phase() == MemberPhase::Queued && open.get(&team).is_some_and(|t| t.agent_type(&m.spec.agent).is_some()) {
            let created = m.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            waiting.entry(team).or_default().push(Waiting { created, uid: uid.clone(), member: uid });
        }
    }
    let mut turns = Turns::new(&held);
    for (team, list) in waiting {
        let priority = open.get(&team).map_or(0, |t| t.spec.priority);
        turns.team(team, priority, list);
    }
    let cap = |team: &TeamId| open.get(team).map_or(0, |t| usize::try_from(t.spec.max_agents).unwrap_or(0));
    let mut out = HashMap::new();
    while let Some((_, uid)) = turns.next(|team, held| held < cap(team)) {
        out.insert(uid, out.len() + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn id(ns: &str, team: &str) -> TeamId {
        (ns.to_owned(), team.to_owned())
    }

    /// `n` members of `team` created at seconds `from`, `from + 1`, ...
    fn queue(team: &str, from: i64, n: i64) -> Vec<Waiting<String>> {
        (0..n)
            .map(|i| Waiting {
                created: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(from + i),
                uid: format!("{team}-{i}"),
                member: format!("{team}{i}"),
            })
            .collect()
    }

    fn order(turns: &mut Turns<String>, slots: usize) -> Vec<String> {
        (0..slots).map_while(|_| turns.next(|_, _| true).map(|(_, m)| m)).collect()
    }

    #[test]
    fn a_small_team_created_after_a_big_one_is_not_starved() {
        // The big team holds all four slots and 196 wait; the small team's five came later.
        let mut turns = Turns::new(&HashMap::from([(id("ns", "big"), 4)]));
        turns.team(id("ns", "big"), 0, queue("big", 0, 196));
        turns.team(id("ns", "small"), 0, queue("small", 1000, 5));
        // The small team goes until it holds as many as the big one; a tie goes to the older head.
        assert_eq!(order(&mut turns, 7), ["small0", "small1", "small2", "small3", "big0", "small4", "big1"]);
    }

    #[test]
    fn equal_teams_take_turns_and_a_tie_goes_to_the_older_head() {
        let mut turns = Turns::new(&HashMap::new());
        turns.team(id("ns", "b"), 0, queue("b", 5, 3));
        turns.team(id("ns", "a"), 0, queue("a", 0, 3));
        assert_eq!(order(&mut turns, 6), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    }

    #[test]
    fn namespaces_take_turns_before_teams() {
        // Namespace x has two teams, y one: y gets every other slot, x's teams share the rest.
        let mut turns = Turns::new(&HashMap::new());
        turns.team(id("x", "t1"), 0, queue("t1", 0, 3));
        turns.team(id("x", "t2"), 0, queue("t2", 1, 3));
        turns.team(id("y", "t3"), 0, queue("t3", 2, 3));
        assert_eq!(order(&mut turns, 6), ["t10", "t30", "t20", "t31", "t11", "t32"]);
    }

    #[test]
    fn a_higher_priority_goes_first_and_equal_priorities_share() {
        let mut turns = Turns::new(&HashMap::from([(id("ns", "low"), 0), (id("ns", "urgent"), 3)]));
        turns.team(id("ns", "low"), 0, queue("low", 0, 3));
        turns.team(id("ns", "urgent"), 10, queue("urgent", 50, 2));
        turns.team(id("ns", "negative"), -1, queue("negative", 0, 1));
        // Urgent holds more slots already and still goes first; the negative team goes last.
        assert_eq!(order(&mut turns, 6), ["urgent0", "urgent1", "low0", "low1", "low2", "negative0"]);
    }

    #[test]
    fn a_team_without_room_is_skipped_and_its_slots_count() {
        let mut turns = Turns::new(&HashMap::new());
        turns.team(id("ns", "capped"), 0, queue("capped", 0, 5));
        turns.team(id("ns", "other"), 0, queue("other", 10, 3));
        let mut got = Vec::new();
        while let Some((team, m)) = turns.next(|t, held| t.1 != "capped" || held < 2) {
            got.push(m);
            assert!(turns.held(&team) <= 3);
        }
        assert_eq!(got, ["capped0", "other0", "capped1", "other1", "other2"]);
        assert_eq!(turns.held(&id("ns", "capped")), 2);
    }

    #[test]
    fn positions_follow_the_same_turns_from_teams_and_members() {
        use crate::api::MemberStatus;
        use std::sync::Arc;
        let team = |name: &str, max: i32, priority: i32| {
            let mut t = crate::controller::fixtures::team(name, max);
            t.metadata.namespace = Some("ns".into());
            t.spec.priority = priority;
            Arc::new(t)
        };
        let member = |name: &str, team: &str, at: i64, pod: Option<&str>, phase: MemberPhase| {
            let mut m = crate::controller::fixtures::member_created(team, name, &format!("u-{name}"), at);
            m.status = Some(MemberStatus { phase: Some(phase), pod_name: pod.map(str::to_owned), ..Default::default() });
            Arc::new(m)
        };
        let teams = [team("big", 100, 0), team("small", 5, 0), team("urgent", 1, 10)];
        let members = [
            member("b1", "big", 1, Some("p1"), MemberPhase::Active),
            member("b2", "big", 2, Some("p2"), MemberPhase::Starting),
            member("b0", "big", 0, Some("p0"), MemberPhase::Completed),
            member("b3", "big", 3, None, MemberPhase::Queued),
            member("s1", "small", 10, None, MemberPhase::Queued),
            member("s2", "small", 11, None, MemberPhase::Queued),
            member("u1", "urgent", 20, None, MemberPhase::Queued),
            member("u2", "urgent", 21, None, MemberPhase::Queued),
        ];
        let got = positions(&teams, &members);
        let at = |n: &str| got.get(&format!("u-{n}")).copied();
        // Urgent first; small holds 0 of big's 2; then a tie at 2, which big's older head wins.
        assert_eq!([at("u1"), at("s1"), at("s2"), at("b3")], [Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(at("u2"), None, "held by its team's maxAgents of 1");
        assert_eq!(at("b1"), None, "an admitted member has no place in the queue");
    }
}
