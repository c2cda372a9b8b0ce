//! `--runtime codex`: `codex exec --json`, continued with `codex exec resume <thread id>` (the id
//! read from its `thread.started` event); the turn's text goes on stdin (`-`). The team tools
//! come from `teamctl mcp` as the MCP server `team` (`-c mcp_servers.team…`), and the update
//! check is off (`-c check_for_update_on_startup=false`).
//!
//! Not yet run against a real codex here (tests/loop.rs drives opencode and Claude Code).

use serde_json::Value;

use super::runtime::{Adapter, TurnCommand, split};

pub(super) struct Codex {
    cmd: Vec<String>,
    teamctl: String,
    thread: Option<String>,
}

impl Codex {
    pub(super) fn new(cmd: Vec<String>, teamctl: &str) -> Self {
        Codex { cmd, teamctl: teamctl.to_owned(), thread: None }
    }
}

impl Adapter for Codex {
    fn turn(&mut self, _turn: u32, text: &str) -> TurnCommand {
        let (program, mut args) = split(&self.cmd);
        args.push("exec".into());
        if let Some(id) = &self.thread {
            args.extend(["resume".into(), id.clone()]);
        }
        let server = serde_json::to_string(&self.teamctl).unwrap_or_default();
        args.extend([
            "--json".into(),
            "--skip-git-repo-check".into(),
            "-c".into(),
            format!("mcp_servers.team.command={server}"),
            "-c".into(),
            "mcp_servers.team.args=[\"mcp\"]".into(),
            "-c".into(),
            "check_for_update_on_startup=false".into(),
            "-".into(),
        ]);
        TurnCommand { program, args, env: Vec::new(), stdin: Some(text.to_owned()) }
    }

    fn line(&mut self, line: &str) {
        if self.thread.is_none()
            && let Ok(v) = serde_json::from_str::<Value>(line)
            && v.get("type").and_then(Value::as_str) == Some("thread.started")
            && let Some(id) = v.get("thread_id").and_then(Value::as_str)
        {
            self.thread = Some(id.to_owned());
        }
    }
}
