//! A member's usage before this run of `teamctl run`: what earlier attempts (retries, see
//! `controller::retry`) and earlier runs in the same pod used, so that what the loop reports is
//! the member's totals over all of them and a budget holds across attempts.
//!
//! Why the loop adds a base it read, rather than the gateway adding the reports of each attempt
//! (by `TEAM_ATTEMPT`): a report stays a running total of the whole member, so the gateway's
//! rule stays "keep the larger of each count" and a repeated or late report changes nothing.
//! - A run restarted in the same attempt (its container started again in place, or a second
//!   `teamctl run` in one pod) reads as its base what the run before it recorded, and counts on
//!   from there; reports keyed by attempt would have that run start again from zero inside the
//!   attempt's count, and either hide its first turns (larger-of) or count the earlier run twice
//!   (a sum).
//! - The gateway holds nothing that a restart of it could lose: the base is read once, from the
//!   Member's `status.usage` (the API server's), and every later report carries it, so a gateway
//!   that lost reports it had not written yet gets them back with the member's next report.
//!   What a gateway still holds when it stops is written before it exits (`gateway::run`).
//!
//! The base goes to the runtime's processes too (`TEAM_USAGE_BASE_TURNS`,
//! `TEAM_USAGE_BASE_TOKENS`), so that an exec agent's own `teamctl usage --turns "$TEAM_TURN"
//! --tokens N`, counted from this run's start, is added to it the same way.

use crate::api::Usage;

/// The base's turns, in the environment of the runtime's processes.
pub const TURNS_ENV: &str = "TEAM_USAGE_BASE_TURNS";
/// The base's tokens, in the environment of the runtime's processes.
pub const TOKENS_ENV: &str = "TEAM_USAGE_BASE_TOKENS";

/// What the member used before this run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Base {
    pub turns: u64,
    pub tokens: u64,
}

impl Base {
    /// The totals a gateway answered (negative counts are none).
    pub fn from_usage(u: Usage) -> Base {
        Base { turns: u64::try_from(u.turns).unwrap_or(0), tokens: u64::try_from(u.tokens).unwrap_or(0) }
    }

    /// The base `teamctl run` gave this process (none outside it).
    pub fn from_env() -> Base {
        let read = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Base { turns: read(TURNS_ENV), tokens: read(TOKENS_ENV) }
    }

    /// The member's totals once this run began `turns` turns and used `tokens`.
    pub fn plus(self, turns: u64, tokens: u64) -> (u64, u64) {
        (self.turns.saturating_add(turns), self.tokens.saturating_add(tokens))
    }

    /// The variables that pass it on to the runtime's processes.
    pub fn env(self) -> Vec<(String, String)> {
        vec![(TURNS_ENV.into(), self.turns.to_string()), (TOKENS_ENV.into(), self.tokens.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_added_to_the_runs_own_counts_and_never_wraps() {
        let b = Base::from_usage(Usage { turns: 2, tokens: 150 });
        assert_eq!(b.plus(1, 40), (3, 190));
        assert_eq!(Base::default().plus(1, 0), (1, 0), "a first run reports its own counts");
        assert_eq!(Base { turns: u64::MAX, tokens: 0 }.plus(1, 1), (u64::MAX, 1));
        assert_eq!(Base::from_usage(Usage { turns: -1, tokens: 5 }), Base { turns: 0, tokens: 5 });
        assert_eq!(b.env(), [(TURNS_ENV.to_string(), "2".to_string()), (TOKENS_ENV.to_string(), "150".to_string())]);
    }
}
