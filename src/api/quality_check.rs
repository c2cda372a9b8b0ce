//! Quality gates of an agent type: commands `teamctl` runs in the member's own pod, at the
//! moments agent-team users know from Claude Code's `TaskCompleted` and `TeammateIdle` hooks.
//! The operator hands each to the pod as JSON in an environment variable; `teamctl` reads it
//! back with the same type, so the two sides cannot disagree on the shape.
//!
//! A gate is a quality check, not a security boundary: it runs inside the member's pod, where
//! the agent could change or skip it.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Environment variable carrying the agent type's `taskCompletedCheck`.
pub const TASK_COMPLETED_CHECK_ENV: &str = "TEAM_TASK_COMPLETED_CHECK";
/// Environment variable carrying the agent type's `idleCheck`.
pub const IDLE_CHECK_ENV: &str = "TEAM_IDLE_CHECK";

/// Default for `timeoutSeconds`: a test suite's worth of time.
pub const DEFAULT_CHECK_TIMEOUT_SECONDS: u32 = 300;

/// A command run in the member's agent container; exit 0 passes, anything else (a timeout or a
/// command that cannot start included) refuses, with the command's output as the reason.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QualityCheck {
    /// The program and its arguments, run without a shell (write `["sh", "-c", "…"]` for one),
    /// in the agent container's working directory and environment.
    #[schemars(length(min = 1, max = 64))]
    pub command: Vec<String>,
    /// Seconds the command may run before it is killed and the check refuses.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
}

fn default_timeout() -> u32 {
    DEFAULT_CHECK_TIMEOUT_SECONDS
}

impl QualityCheck {
    /// The check as the pod's environment carries it.
    pub fn to_env_value(&self) -> String {
        serde_json::to_string(self).expect("a QualityCheck serializes")
    }

    /// The check from the value of `var`; the error names the variable.
    pub fn from_env_value(var: &str, value: &str) -> Result<Self, String> {
        let check: QualityCheck = serde_json::from_str(value).map_err(|e| format!("{var}: not a quality check ({e})"))?;
        if check.command.first().is_none_or(|p| p.is_empty()) {
            return Err(format!("{var}: command must name a program"));
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_value_round_trips_and_defaults_the_timeout() {
        let check = QualityCheck { command: vec!["make".into(), "test".into()], timeout_seconds: 60 };
        assert_eq!(QualityCheck::from_env_value(IDLE_CHECK_ENV, &check.to_env_value()), Ok(check));
        let parsed = QualityCheck::from_env_value(IDLE_CHECK_ENV, r#"{"command":["true"]}"#).expect("parses");
        assert_eq!(parsed.timeout_seconds, DEFAULT_CHECK_TIMEOUT_SECONDS);
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let e = QualityCheck::from_env_value(TASK_COMPLETED_CHECK_ENV, "make test").unwrap_err();
        assert!(e.starts_with("TEAM_TASK_COMPLETED_CHECK:"), "{e}");
        let e = QualityCheck::from_env_value(IDLE_CHECK_ENV, r#"{"command":[""]}"#).unwrap_err();
        assert!(e.contains("must name a program"), "{e}");
    }
}
