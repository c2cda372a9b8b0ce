//! What an adapter does: say how to run one turn, and read what the runtime printed (its
//! session id, so the next turn continues the same conversation; the model tokens it reports,
//! so the loop can report them against a budget).

use super::{RunArgs, RuntimeKind};

/// How to run one turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct TurnCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the environment (which the runtime otherwise inherits: TEAM_*, the token file).
    pub env: Vec<(String, String)>,
    /// Written to its stdin (None: stdin is /dev/null).
    pub stdin: Option<String>,
}

/// One runtime.
pub(super) trait Adapter: Send {
    /// The command of turn `turn` (1 = the prompt), whose user message is `text`.
    fn turn(&mut self, turn: u32, text: &str) -> TurnCommand;
    /// One line the runtime printed on stdout.
    fn line(&mut self, _line: &str) {}
    /// Model tokens the runtime reported so far, over every turn (0 for one that reports none).
    fn tokens(&self) -> u64 {
        0
    }
}

/// The sum of the numbers at `paths` (dot-separated) of `v`; a missing one counts 0.
pub(super) fn token_sum(v: &serde_json::Value, paths: &[&str]) -> u64 {
    paths
        .iter()
        .filter_map(|p| p.split('.').try_fold(v, |at, key| at.get(key)).and_then(serde_json::Value::as_u64))
        .fold(0u64, u64::saturating_add)
}

/// The adapter `args` ask for.
pub(super) fn adapter(args: &RunArgs) -> Result<Box<dyn Adapter>, String> {
    let teamctl = std::env::current_exe()
        .map_err(|e| format!("cannot find the teamctl binary (for the runtime's MCP server): {e}"))?
        .to_string_lossy()
        .into_owned();
    let cmd = args.command.clone();
    Ok(match args.runtime {
        RuntimeKind::Opencode => Box::new(super::opencode::Opencode::new(or_default(cmd, "opencode"), &teamctl)?),
        RuntimeKind::Claude => Box::new(super::claude::Claude::new(or_default(cmd, "claude"), &teamctl)),
        RuntimeKind::Codex => Box::new(super::codex::Codex::new(or_default(cmd, "codex"), &teamctl)),
        RuntimeKind::Exec => {
            if cmd.is_empty() {
                return Err("--runtime exec needs a command: teamctl run -- CMD [ARGS…]".into());
            }
            Box::new(super::exec::Exec::new(cmd))
        }
    })
}

fn or_default(cmd: Vec<String>, program: &str) -> Vec<String> {
    if cmd.is_empty() { vec![program.to_owned()] } else { cmd }
}

/// The program and leading arguments of a non-empty command.
pub(super) fn split(cmd: &[String]) -> (String, Vec<String>) {
    (cmd.first().cloned().unwrap_or_default(), cmd.iter().skip(1).cloned().collect())
}

/// `value` unless the environment already sets `name` (the pod's own settings win).
pub(super) fn default_env(name: &str, value: &str) -> Option<(String, String)> {
    std::env::var_os(name).is_none().then(|| (name.to_owned(), value.to_owned()))
}
