//! Budgets: limits on the turns, wall-clock seconds and model tokens of a member (per agent type,
//! `spec.agents[].budget`) or of a whole team (`spec.budget`), and the usage held against them.
//! The arithmetic is here, pure, because two parts judge with it: the gateway answers a
//! `usage_report` that goes over (so `teamctl run` starts no turn past a budget) and the
//! operator stops a member that is over (phase Failed, reason [`BUDGET_EXCEEDED`]).
//!
//! What "over" means, per limit:
//! - turns: a turn counts when it begins, so a budget of 2 turns is over when a third begins;
//!   a member that ends its work within its turns is not over.
//! - tokens: more tokens than the budget, as the runtime reported them at the end of a turn (the
//!   turn that crosses the line runs to its end; no further turn starts).
//! - seconds: a member's wall-clock from its `status.startTime`, a team's from its creation; over
//!   once that many seconds have passed.

use std::fmt;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reason of a member stopped for going over its own budget or its team's.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

/// The most of each limit the schema takes (each limit is at least 1).
pub const MAX_TURNS: i64 = 1_000_000;
/// A year.
pub const MAX_SECONDS: i64 = 31_536_000;
pub const MAX_TOKENS: i64 = 1_000_000_000_000;
/// The rule of the schema's `x-kubernetes-validations` on a budget, in words.
const SETS_ONE: &str = "a budget sets at least one of turns, seconds, tokens";

/// Limits; each one left out is no limit. No budget at all is today's behaviour: no limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.turns) || has(self.seconds) || has(self.tokens)").message(SETS_ONE))]
pub struct Budget {
    /// Most turns (a turn counts when it begins: with 2, a third turn is over the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TURNS))]
    pub turns: Option<i64>,
    /// Most wall-clock seconds: a member's from its start (`status.startTime`), a team's from its
    /// creation. At most a year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub seconds: Option<i64>,
    /// Most model tokens (input and output, cached ones included) as the runtime reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TOKENS))]
    pub tokens: Option<i64>,
}

/// What was used: turns begun and model tokens, as the member's runtime adapter reported them
/// (`usage_report`, called by `teamctl run`), or their sum over a team's members.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Turns begun.
    #[serde(default)]
    pub turns: i64,
    /// Model tokens (input and output, cached ones included).
    #[serde(default)]
    pub tokens: i64,
}

impl Usage {
    /// The larger of each count: reports are running totals, so an older (or repeated) one
    /// never lowers what a newer one said.
    pub fn max(self, other: Usage) -> Usage {
        Usage { turns: self.turns.max(other.turns), tokens: self.tokens.max(other.tokens) }
    }

    /// Whether `self` says at least as much as `other` in each count.
    pub fn covers(&self, other: &Usage) -> bool {
        self.turns >= other.turns && self.tokens >= other.tokens
    }

    /// The sum of each count (saturating: a sum is a display, never a wrap).
    pub fn plus(self, other: Usage) -> Usage {
        Usage { turns: self.turns.saturating_add(other.turns), tokens: self.tokens.saturating_add(other.tokens) }
    }
}

/// Which limit a budget is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    Turns,
    Seconds,
    Tokens,
}

impl Limit {
    /// Its name, as the field and the metric label spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Turns => "turns",
            Limit::Seconds => "seconds",
            Limit::Tokens => "tokens",
        }
    }

    pub const ALL: [Limit; 3] = [Limit::Turns, Limit::Seconds, Limit::Tokens];
}

/// A budget gone over: which limit, what was used, what was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Over {
    pub limit: Limit,
    pub used: i64,
    pub allowed: i64,
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (used, allowed) = (self.used, self.allowed);
        match self.limit {
            Limit::Turns => write!(f, "turn {used} began, over the budget of {allowed} turns"),
            // Not the seconds that passed: a message that changed with each look would be a new
            // status to write each time.
            Limit::Seconds => write!(f, "its wall-clock budget of {allowed}s has run out"),
            Limit::Tokens => write!(f, "{used} tokens used, over the budget of {allowed} tokens"),
        }
    }
}

impl Budget {
    /// What the schema refuses of this budget, given at `field` (`budget`, `spec.budget`): the
    /// field (`budget.turns`) and the rule of the first problem, for a caller that builds a Team
    /// from its own arguments (`team_create`) and should hear of them by their names, not the
    /// API server's.
    pub fn check(&self, field: &str) -> Result<(), (String, String)> {
        if self.turns.is_none() && self.seconds.is_none() && self.tokens.is_none() {
            return Err((field.to_owned(), SETS_ONE.to_owned()));
        }
        for (limit, value, max) in
            [("turns", self.turns, MAX_TURNS), ("seconds", self.seconds, MAX_SECONDS), ("tokens", self.tokens, MAX_TOKENS)]
        {
            match value {
                Some(v) if !(1..=max).contains(&v) => {
                    return Err((format!("{field}.{limit}"), format!("{v} is out of range: at least 1, at most {max}")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The first limit that `usage` after `elapsed_seconds` of wall-clock is over, if any
    /// (turns, then tokens, then seconds).
    pub fn over(&self, usage: &Usage, elapsed_seconds: i64) -> Option<Over> {
        let turns = self.turns.filter(|&max| usage.turns > max).map(|allowed| Over { limit: Limit::Turns, used: usage.turns, allowed });
        let tokens =
            self.tokens.filter(|&max| usage.tokens > max).map(|allowed| Over { limit: Limit::Tokens, used: usage.tokens, allowed });
        let seconds = self.seconds.filter(|&max| elapsed_seconds >= max).map(|allowed| Over {
            limit: Limit::Seconds,
            used: elapsed_seconds,
            allowed,
        });
        turns.or(tokens).or(seconds)
    }

    /// Seconds until the seconds limit is reached after `elapsed_seconds` (at least 1), when
    /// there is one and it has not been: when to look again.
    pub fn seconds_left(&self, elapsed_seconds: i64) -> Option<i64> {
        self.seconds.filter(|&max| elapsed_seconds < max).map(|max| (max - elapsed_seconds).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(turns: i64, tokens: i64) -> Usage {
        Usage { turns, tokens }
    }

    #[test]
    fn a_budget_is_checked_as_the_schema_checks_it_naming_the_field() {
        assert_eq!(Budget { turns: Some(1), ..Default::default() }.check("budget"), Ok(()));
        assert_eq!(Budget { seconds: Some(MAX_SECONDS), tokens: Some(MAX_TOKENS), turns: Some(MAX_TURNS) }.check("budget"), Ok(()));
        let refused = |field: &str, rule: &str| Err((field.to_owned(), rule.to_owned()));
        assert_eq!(Budget::default().check("budget"), refused("budget", "a budget sets at least one of turns, seconds, tokens"));
        assert_eq!(
            Budget { turns: Some(0), ..Default::default() }.check("budget"),
            refused("budget.turns", "0 is out of range: at least 1, at most 1000000")
        );
        let e = Budget { turns: Some(2), seconds: Some(MAX_SECONDS + 1), ..Default::default() }.check("spec.budget");
        assert_eq!(e, refused("spec.budget.seconds", "31536001 is out of range: at least 1, at most 31536000"));
    }

    #[test]
    fn no_limit_is_never_over() {
        assert_eq!(Budget::default().over(&usage(i64::MAX, i64::MAX), i64::MAX), None);
        assert_eq!(Budget::default().seconds_left(0), None);
    }

    #[test]
    fn turns_are_over_when_one_past_the_budget_begins() {
        let b = Budget { turns: Some(2), ..Default::default() };
        assert_eq!(b.over(&usage(2, 0), 0), None, "two turns of a budget of two are within it");
        let over = b.over(&usage(3, 0), 0).expect("a third turn");
        assert_eq!(over, Over { limit: Limit::Turns, used: 3, allowed: 2 });
        assert_eq!(over.to_string(), "turn 3 began, over the budget of 2 turns");
    }

    #[test]
    fn tokens_are_over_past_the_budget_not_at_it() {
        let b = Budget { tokens: Some(1000), ..Default::default() };
        assert_eq!(b.over(&usage(1, 1000), 0), None);
        assert_eq!(b.over(&usage(1, 1001), 0).map(|o| (o.limit, o.used)), Some((Limit::Tokens, 1001)));
    }

    #[test]
    fn seconds_are_over_once_reached_and_say_when_to_look_again() {
        let b = Budget { seconds: Some(60), ..Default::default() };
        assert_eq!(b.over(&usage(0, 0), 59), None);
        assert_eq!(b.seconds_left(59), Some(1));
        assert_eq!(b.seconds_left(0), Some(60));
        assert_eq!(b.over(&usage(0, 0), 60).map(|o| o.limit), Some(Limit::Seconds));
        assert_eq!(b.over(&usage(0, 0), 61).map(|o| o.to_string()), b.over(&usage(0, 0), 99).map(|o| o.to_string()), "one message");
        assert_eq!(b.seconds_left(60), None, "nothing to wait for once over");
    }

    #[test]
    fn turns_are_named_before_tokens_and_seconds() {
        let b = Budget { turns: Some(1), seconds: Some(1), tokens: Some(1) };
        assert_eq!(b.over(&usage(2, 2), 2).map(|o| o.limit), Some(Limit::Turns));
        assert_eq!(b.over(&usage(1, 2), 2).map(|o| o.limit), Some(Limit::Tokens));
        assert_eq!(b.over(&usage(1, 1), 2).map(|o| o.limit), Some(Limit::Seconds));
    }

    #[test]
    fn running_totals_merge_by_the_larger_count_and_sum_without_wrapping() {
        assert_eq!(usage(3, 10).max(usage(2, 50)), usage(3, 50));
        assert!(usage(3, 50).covers(&usage(3, 10)) && !usage(3, 10).covers(&usage(3, 50)));
        assert_eq!(usage(1, 10).plus(usage(2, 5)), usage(3, 15));
        assert_eq!(usage(i64::MAX, 1).plus(usage(1, 1)), usage(i64::MAX, 2));
    }
}
