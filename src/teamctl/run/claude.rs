//! `--runtime claude`: Claude Code in print mode, `claude -p --output-format json`, turn 1 under
//! a session id chosen here (`--session-id`), later turns `--resume` it; the turn's text goes on
//! stdin. Its tokens are the `usage` of each turn's result (input, output, cache creation and
//! cache reads). The team tools come from `teamctl mcp` as the MCP server `team` (`--mcp-config`), and
//! are allowed without prompting (`--allowedTools mcp__team`); other tools keep Claude Code's
//! permission rules.
//!
//! Outside traffic is switched off unless the pod's environment says otherwise:
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC` (telemetry, error reports, update checks),
//! `DISABLE_AUTOUPDATER`, `DISABLE_TELEMETRY`, `DISABLE_ERROR_REPORTING`. The model endpoint is
//! `ANTHROPIC_BASE_URL` (the pod's setting). `ENABLE_TOOL_SEARCH=false` keeps the team tools in
//! the model's tool list rather than behind a search tool.

use serde_json::{Value, json};

use super::runtime::{Adapter, TurnCommand, default_env, split, token_sum};

pub(super) struct Claude {
    cmd: Vec<String>,
    session: String,
    mcp: String,
    env: Vec<(String, String)>,
    tokens: u64,
}

impl Claude {
    pub(super) fn new(cmd: Vec<String>, teamctl: &str) -> Self {
        let mcp = json!({ "mcpServers": { "team": { "type": "stdio", "command": teamctl, "args": ["mcp"] } } }).to_string();
        let mut env = Vec::new();
        for name in ["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING"] {
            env.extend(default_env(name, "1"));
        }
        // The team tools are few: offer them to the model directly, not behind a tool search.
        env.extend(default_env("ENABLE_TOOL_SEARCH", "false"));
        Claude { cmd, session: uuid::Uuid::new_v4().to_string(), mcp, env, tokens: 0 }
    }
}

impl Adapter for Claude {
    fn turn(&mut self, turn: u32, text: &str) -> TurnCommand {
        let (program, mut args) = split(&self.cmd);
        args.extend(["--allowedTools".into(), "mcp__team".into(), "-p".into(), "--output-format".into(), "json".into()]);
        args.extend(["--mcp-config".into(), self.mcp.clone()]);
        if turn == 1 {
            args.extend(["--session-id".into(), self.session.clone()]);
        } else {
            args.extend(["--resume".into(), self.session.clone()]);
        }
        TurnCommand { program, args, env: self.env.clone(), stdin: Some(text.to_owned()) }
    }

    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        if let Some(id) = v.get("session_id").and_then(Value::as_str) {
            self.session = id.to_owned();
        }
        if v.get("type").and_then(Value::as_str) == Some("result") {
            let used = token_sum(
                &v,
                &["usage.input_tokens", "usage.output_tokens", "usage.cache_creation_input_tokens", "usage.cache_read_input_tokens"],
            );
            self.tokens = self.tokens.saturating_add(used);
        }
    }

    fn tokens(&self) -> u64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_one_names_the_session_and_later_turns_resume_it() {
        let mut c = Claude::new(vec!["claude".into()], "/bin/teamctl");
        let one = c.turn(1, "prompt");
        assert_eq!(one.stdin.as_deref(), Some("prompt"));
        let id = one.args[one.args.iter().position(|a| a == "--session-id").unwrap() + 1].clone();
        let two = c.turn(2, "next");
        assert_eq!(two.args[two.args.iter().position(|a| a == "--resume").unwrap() + 1], id);
        c.line(r#"{"type":"result","session_id":"other"}"#);
        assert!(c.turn(3, "x").args.contains(&"other".to_owned()));
    }

    #[test]
    fn tokens_are_the_results_usage_summed_over_turns() {
        let mut c = Claude::new(vec!["claude".into()], "/bin/teamctl");
        c.line(r#"{"type":"result","usage":{"input_tokens":100,"output_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":20}}"#);
        c.line(r#"{"type":"assistant","usage":{"input_tokens":999}}"#);
        c.line(r#"{"type":"result","usage":{"input_tokens":1,"output_tokens":1}}"#);
        assert_eq!(c.tokens(), 137);
    }
}
