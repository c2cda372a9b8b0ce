//! `--runtime opencode`: `opencode run --format json`, continued with `--session <id>` (the id
//! read from its JSON events; its tokens from the `part.tokens` of each `step_finish` event: input,
//! output, reasoning and cache reads and writes), the team tools added as the local MCP server `team` (`teamctl
//! mcp`) through `OPENCODE_CONFIG_CONTENT`, merged into whatever that variable already holds.
//!
//! Outside traffic is switched off unless the pod's environment says otherwise: update checks,
//! the models.dev catalog, default plugins and LSP downloads (their `OPENCODE_DISABLE_*`
//! variables), and the background `npm install` of `@opencode-ai/plugin` into each config
//! directory, which opencode skips for a directory that is read-only or whose `node_modules`
//! and `package-lock.json` already list it (written here when missing). The provider package
//! (`@ai-sdk/openai-compatible`, `@ai-sdk/anthropic`, ...) is bundled in the opencode binary.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::runtime::{Adapter, TurnCommand, default_env, split, token_sum};

pub(super) struct Opencode {
    cmd: Vec<String>,
    session: Option<String>,
    env: Vec<(String, String)>,
    tokens: u64,
}

/// Deep-merges `patch` into `base`.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// The `OPENCODE_CONFIG_CONTENT` with the team's MCP server added to `existing`.
pub(super) fn config_content(existing: Option<&str>, teamctl: &str) -> Result<String, String> {
    let mut config = match existing.filter(|s| !s.trim().is_empty()) {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("OPENCODE_CONFIG_CONTENT is not JSON: {e}"))?,
        None => json!({}),
    };
    merge(&mut config, json!({ "mcp": { "team": { "type": "local", "command": [teamctl, "mcp"], "enabled": true } } }));
    Ok(config.to_string())
}

/// Marks `@opencode-ai/plugin` as installed in opencode's global config directory, so opencode
/// does not run `npm install` at start; a directory that exists with `node_modules` is left as is.
fn seed_plugin_install() {
    let dir = match (std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) => PathBuf::from(x).join("opencode"),
        (None, Some(h)) => PathBuf::from(h).join(".config/opencode"),
        (None, None) => return,
    };
    if dir.join("node_modules").exists() {
        return;
    }
    let lock = json!({ "lockfileVersion": 3, "packages": { "": { "dependencies": { "@opencode-ai/plugin": "*" } } } });
    let made =
        std::fs::create_dir_all(dir.join("node_modules")).and_then(|_| std::fs::write(dir.join("package-lock.json"), lock.to_string()));
    if let Err(e) = made {
        eprintln!("teamctl run: cannot pre-seed {} ({e}); opencode may try an npm install", dir.display());
    }
}

impl Opencode {
    pub(super) fn new(cmd: Vec<String>, teamctl: &str) -> Result<Self, String> {
        let content = config_content(std::env::var("OPENCODE_CONFIG_CONTENT").ok().as_deref(), teamctl)?;
        let mut env = vec![("OPENCODE_CONFIG_CONTENT".to_owned(), content)];
        for name in [
            "OPENCODE_DISABLE_AUTOUPDATE",
            "OPENCODE_DISABLE_MODELS_FETCH",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS",
            "OPENCODE_DISABLE_LSP_DOWNLOAD",
            "OPENCODE_DISABLE_SHARE",
        ] {
            env.extend(default_env(name, "1"));
        }
        seed_plugin_install();
        Ok(Opencode { cmd, session: None, env, tokens: 0 })
    }
}

impl Adapter for Opencode {
    fn turn(&mut self, _turn: u32, text: &str) -> TurnCommand {
        let (program, mut args) = split(&self.cmd);
        args.extend(["run".into(), "--format".into(), "json".into()]);
        if let Some(id) = &self.session {
            args.extend(["--session".into(), id.clone()]);
        }
        args.extend(["--".into(), text.to_owned()]);
        TurnCommand { program, args, env: self.env.clone(), stdin: None }
    }

    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        if self.session.is_none()
            && let Some(id) = v.get("sessionID").and_then(Value::as_str)
        {
            self.session = Some(id.to_owned());
        }
        if v.get("type").and_then(Value::as_str) == Some("step_finish") {
            let used = token_sum(
                &v,
                &["part.tokens.input", "part.tokens.output", "part.tokens.reasoning", "part.tokens.cache.read", "part.tokens.cache.write"],
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
    fn the_team_server_joins_existing_config() {
        let c: Value =
            serde_json::from_str(&config_content(Some(r#"{"model":"p/m","mcp":{"other":{"type":"local"}}}"#), "/bin/teamctl").unwrap())
                .unwrap();
        assert_eq!(c["model"], "p/m");
        assert_eq!(c["mcp"]["other"]["type"], "local");
        assert_eq!(c["mcp"]["team"]["command"], json!(["/bin/teamctl", "mcp"]));
        assert!(config_content(Some("{"), "t").is_err());
    }

    #[test]
    fn the_session_is_continued() {
        let mut o = Opencode { cmd: vec!["opencode".into()], session: None, env: vec![], tokens: 0 };
        assert!(!o.turn(1, "hi").args.contains(&"--session".to_owned()));
        o.line(r#"{"type":"step_start","sessionID":"ses_1"}"#);
        o.line(r#"{"type":"text","sessionID":"ses_2"}"#);
        let t = o.turn(2, "next");
        assert_eq!(t.args, ["run", "--format", "json", "--session", "ses_1", "--", "next"]);
    }

    #[test]
    fn tokens_add_up_over_steps_and_turns() {
        let mut o = Opencode { cmd: vec!["opencode".into()], session: None, env: vec![], tokens: 0 };
        o.line(r#"{"type":"step_finish","part":{"type":"step-finish","tokens":{"input":100,"output":10,"reasoning":2,"cache":{"read":50,"write":0}}}}"#);
        o.line(r#"{"type":"text","part":{"tokens":{"input":999}}}"#);
        o.line(r#"{"type":"step_finish","part":{"tokens":{"input":7,"output":3}}}"#);
        assert_eq!(o.tokens(), 172);
    }
}
