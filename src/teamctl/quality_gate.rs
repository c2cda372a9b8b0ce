//! The agent type's quality gates, run by teamctl in the member's own pod (see
//! `api::quality_check`): `taskCompletedCheck` before a completion of a task goes to the gateway,
//! `idleCheck` by `teamctl run` after each turn. A failing gate answers the agent, in its own
//! words: the completion is refused with the command's output as the tool result, or the output
//! becomes the next turn.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;

use crate::api::QualityCheck;
use crate::api::quality_check::{IDLE_CHECK_ENV, TASK_COMPLETED_CHECK_ENV};
use crate::gateway::client::{CallCheck, ClientError};
use crate::gateway::error::ErrorCode;
use crate::gateway::tools::Tool;

/// How much of a check's output reaches the agent: its end, where test runners put the summary.
const OUTPUT_TAIL_BYTES: usize = 8 * 1024;

/// One gate: the check and the field it came from (named in what the agent reads).
#[derive(Clone, Debug)]
pub(super) struct Gate {
    field: &'static str,
    check: QualityCheck,
}

/// What a gate said.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Passed,
    /// Why not: the command, how it ended and the tail of its output.
    Refused(String),
}

impl Gate {
    /// The agent type's `idleCheck`, when its pod has one.
    pub(super) fn idle() -> Result<Option<Gate>, String> {
        Self::from_env(IDLE_CHECK_ENV, "idleCheck")
    }

    /// The agent type's `taskCompletedCheck`, when its pod has one.
    pub(super) fn task_completed() -> Result<Option<Gate>, String> {
        Self::from_env(TASK_COMPLETED_CHECK_ENV, "taskCompletedCheck")
    }

    fn from_env(var: &str, field: &'static str) -> Result<Option<Gate>, String> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Gate { field, check: QualityCheck::from_env_value(var, &v)? })),
            _ => Ok(None),
        }
    }

    /// Runs the check with `env` added to teamctl's own environment.
    pub(super) async fn run(&self, env: &[(&str, &str)]) -> Verdict {
        let (program, args) = self.check.command.split_first().expect("from_env refuses an empty command");
        let shown = self.check.command.join(" ");
        let timeout = Duration::from_secs(self.check.timeout_seconds.into());
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => return Verdict::Refused(format!("{} `{shown}` could not start: {e}", self.field)),
        };
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Verdict::Refused(format!("{} `{shown}` failed: {e}", self.field)),
            Err(_) => return Verdict::Refused(format!("{} `{shown}` did not finish within {}s", self.field, timeout.as_secs())),
        };
        if output.status.success() {
            return Verdict::Passed;
        }
        let how = match output.status.code() {
            Some(code) => format!("exited with {code}"),
            None => "was killed by a signal".to_owned(),
        };
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Verdict::Refused(format!("{} `{shown}` {how}:\n{}", self.field, tail(&text, OUTPUT_TAIL_BYTES)))
    }

    /// The gate as a check on the client's calls: completions of tasks wait for it.
    pub(super) fn into_call_check(self) -> CallCheck {
        let gate = Arc::new(self);
        Arc::new(move |tool: &str, args: &Value| {
            let task = completed_task(tool, args)?;
            let gate = gate.clone();
            Some(
                async move {
                    match gate.run(&[("TEAM_TASK", task.as_str())]).await {
                        Verdict::Passed => Ok(()),
                        Verdict::Refused(why) => Err(ClientError::Refused {
                            status: ErrorCode::CheckFailed.http_status(),
                            code: ErrorCode::CheckFailed.as_str().to_owned(),
                            message: format!("task {task} was not completed: {why}"),
                        }),
                    }
                }
                .boxed(),
            )
        })
    }
}

/// The task a call completes: a `team_task` update to state `completed`.
fn completed_task(tool: &str, args: &Value) -> Option<String> {
    let completes = tool == Tool::TeamTask.as_str() && args["action"] == "update" && args["state"] == "completed";
    completes.then(|| args["name"].as_str().unwrap_or_default().to_owned())
}

/// The last `max` bytes of `text`, cut at a character boundary, marked when cut.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut]\n{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gate(script: &str) -> Gate {
        Gate { field: "idleCheck", check: QualityCheck { command: vec!["sh".into(), "-c".into(), script.into()], timeout_seconds: 5 } }
    }

    #[tokio::test]
    async fn a_zero_exit_passes_and_anything_else_refuses_with_the_output() {
        assert_eq!(gate("exit 0").run(&[]).await, Verdict::Passed);
        let Verdict::Refused(why) = gate("echo 2 tests failed; echo see log >&2; exit 3").run(&[]).await else { panic!("passed") };
        assert!(why.starts_with("idleCheck `sh -c echo 2 tests failed; echo see log >&2; exit 3` exited with 3:"), "{why}");
        assert!(why.contains("2 tests failed") && why.contains("see log"), "{why}");
        let Verdict::Refused(why) = gate("test \"$TEAM_TASK\" = t1").run(&[("TEAM_TASK", "t2")]).await else { panic!("passed") };
        assert!(why.contains("exited with 1"), "{why}");
    }

    #[tokio::test]
    async fn a_missing_program_or_a_timeout_refuses() {
        let missing =
            Gate { field: "taskCompletedCheck", check: QualityCheck { command: vec!["/nonexistent/check".into()], timeout_seconds: 5 } };
        let Verdict::Refused(why) = missing.run(&[]).await else { panic!("passed") };
        assert!(why.contains("could not start"), "{why}");
        let mut slow = gate("sleep 30");
        slow.check.timeout_seconds = 1;
        let Verdict::Refused(why) = slow.run(&[]).await else { panic!("passed") };
        assert!(why.contains("did not finish within 1s"), "{why}");
    }

    #[test]
    fn only_a_completion_is_gated() {
        let update = |state: &str| json!({ "action": "update", "name": "t1", "state": state });
        assert_eq!(completed_task("team_task", &update("completed")).as_deref(), Some("t1"));
        assert_eq!(completed_task("team_task", &update("failed")), None);
        assert_eq!(completed_task("team_task", &json!({ "action": "create", "state": "completed" })), None);
        assert_eq!(completed_task("send_message", &update("completed")), None);
    }

    #[test]
    fn the_tail_keeps_the_end() {
        assert_eq!(tail("short", 10), "short");
        let t = tail(&format!("{}END", "é".repeat(10)), 6);
        assert!(t.ends_with("END") && t.starts_with("[… "), "{t}");
    }
}
