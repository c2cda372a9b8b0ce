//! `--runtime codex`: `codex exec --json`, continued with `codex exec resume <thread id>` (the id
//! read from its `thread.started` event); the turn's text goes on stdin (`-`). Its tokens are the
//! `usage` of each `turn.completed` event (input, cached input included, and output).
//!
//! The team tools come from `teamctl mcp` as the MCP server `team` (`-c mcp_servers.team…`),
//! which Codex offers the model as the namespace `mcp__team`. The server is `required` (a turn
//! fails rather than run without the team tools), its tools are approved up front (`codex exec`
//! never asks, so a tool that wants approval would be refused), and it gets the variables
//! teamctl reads (`env_vars`: Codex starts MCP servers with a minimal environment).
//!
//! Outside traffic is switched off with `-c` flags put before the command's own arguments, so a
//! `-c` of the pod's command wins: `analytics.enabled=false` (its analytics, sent to ab.chatgpt.com),
//! `features.plugins=false` (the plugin marketplace: `git ls-remote` of
//! github.com/openai/plugins, api.github.com, chatgpt.com) and `check_for_update_on_startup=false`.
//! The model provider is the pod's to configure (a provider with `wire_api = "responses"`: see
//! examples/agents/codex-team.yaml).

use serde_json::Value;

use super::runtime::{Adapter, TurnCommand, split, token_sum};

/// Outside traffic switched off (overridable by the command's own `-c` flags, which come later).
const QUIET: [&str; 3] = ["analytics.enabled=false", "features.plugins=false", "check_for_update_on_startup=false"];

/// What `teamctl mcp` reads from its environment (the gateway, the token, the team) and the
/// proxy settings, which Codex would otherwise not pass on to it.
const MCP_ENV: [&str; 12] = [
    "TEAM_GATEWAY_URL",
    "TEAM_TOKEN_FILE",
    "TEAM_TOKEN",
    "TEAM_NAMESPACE",
    "TEAM",
    "TEAM_MCP_WAIT_SECONDS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

pub(super) struct Codex {
    cmd: Vec<String>,
    teamctl: String,
    thread: Option<String>,
    tokens: u64,
}

impl Codex {
    pub(super) fn new(cmd: Vec<String>, teamctl: &str) -> Self {
        Codex { cmd, teamctl: teamctl.to_owned(), thread: None, tokens: 0 }
    }

    /// The `-c` flags that make `teamctl mcp` the MCP server `team` (values are TOML; a JSON
    /// string or list of strings is one).
    fn team_server(&self) -> Vec<String> {
        [
            format!("mcp_servers.team.command={}", serde_json::to_string(&self.teamctl).unwrap_or_default()),
            "mcp_servers.team.args=[\"mcp\"]".to_owned(),
            format!("mcp_servers.team.env_vars={}", serde_json::to_string(&MCP_ENV).unwrap_or_default()),
            "mcp_servers.team.required=true".to_owned(),
            "mcp_servers.team.default_tools_approval_mode=\"approve\"".to_owned(),
        ]
        .into_iter()
        .flat_map(|kv| ["-c".to_owned(), kv])
        .collect()
    }
}

impl Adapter for Codex {
    fn turn(&mut self, _turn: u32, text: &str) -> TurnCommand {
        let (program, own) = split(&self.cmd);
        let mut args: Vec<String> = QUIET.iter().flat_map(|kv| ["-c".to_owned(), (*kv).to_owned()]).collect();
        args.extend(own);
        args.push("exec".into());
        if let Some(id) = &self.thread {
            args.extend(["resume".into(), id.clone()]);
        }
        args.extend(["--json".into(), "--skip-git-repo-check".into()]);
        args.extend(self.team_server());
        args.push("-".into());
        TurnCommand { program, args, env: Vec::new(), stdin: Some(text.to_owned()) }
    }

    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        match v.get("type").and_then(Value::as_str) {
            Some("thread.started") if self.thread.is_none() => self.thread = v.get("thread_id").and_then(Value::as_str).map(str::to_owned),
            Some("turn.completed") => {
                self.tokens = self.tokens.saturating_add(token_sum(&v, &["usage.input_tokens", "usage.output_tokens"]))
            }
            _ => {}
        }
    }

    fn tokens(&self) -> u64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
        args.iter().find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }

    #[test]
    fn the_thread_is_resumed_and_the_commands_own_flags_come_after_the_defaults() {
        let mut c = Codex::new(vec!["codex".into(), "-c".into(), "analytics.enabled=true".into()], "/opt/bin/teamctl");
        let one = c.turn(1, "prompt");
        assert_eq!((one.program.as_str(), one.stdin.as_deref()), ("codex", Some("prompt")));
        let own = one.args.iter().position(|a| a == "analytics.enabled=true").unwrap();
        let default = one.args.iter().position(|a| a == "analytics.enabled=false").unwrap();
        let exec = one.args.iter().position(|a| a == "exec").unwrap();
        assert!(default < own && own < exec, "{:?}", one.args);
        assert_eq!(one.args[exec + 1], "--json");
        assert_eq!(one.args.last().map(String::as_str), Some("-"));

        c.line(r#"{"type":"thread.started","thread_id":"0199-a"}"#);
        c.line(r#"{"type":"thread.started","thread_id":"0199-b"}"#);
        let two = c.turn(2, "next");
        let exec = two.args.iter().position(|a| a == "exec").unwrap();
        assert_eq!(two.args[exec + 1..exec + 3], ["resume", "0199-a"]);
    }

    #[test]
    fn tokens_are_each_turns_usage_summed() {
        let mut c = Codex::new(vec!["codex".into()], "/bin/teamctl");
        c.line(r#"{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":80,"output_tokens":10}}"#);
        c.line(r#"{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":1}}"#);
        assert_eq!(c.tokens(), 116);
    }

    #[test]
    fn the_team_server_is_teamctl_mcp_with_its_environment() {
        let args = Codex::new(vec!["codex".into()], "/opt/bin/team ctl").turn(1, "x").args;
        assert_eq!(value_of(&args, "mcp_servers.team.command"), Some("\"/opt/bin/team ctl\""));
        assert_eq!(value_of(&args, "mcp_servers.team.args"), Some("[\"mcp\"]"));
        let env: Vec<String> = serde_json::from_str(value_of(&args, "mcp_servers.team.env_vars").unwrap()).unwrap();
        assert!(env.iter().any(|v| v == "TEAM_TOKEN_FILE") && env.iter().any(|v| v == "TEAM_GATEWAY_URL"), "{env:?}");
    }
}
