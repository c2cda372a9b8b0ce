//! What an adapter does: say how to run one turn, and read what the runtime printed (its
//! session id, so the next turn continues the same conversation).

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
