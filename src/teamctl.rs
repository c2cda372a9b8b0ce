//! `teamctl`: the team tools from a shell, for people and for agents in member pods.
//!
//! Every tool is a subcommand; `teamctl mcp` serves the same tools as a stdio MCP server that
//! forwards to the gateway; `teamctl install DIR` copies the binary (the member pods' init
//! container does this). Settings come from flags or the environment the operator gives member
//! pods (`TEAM_GATEWAY_URL`, `TEAM_TOKEN_FILE`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::gateway::client::{ClientError, GatewayClient, Token};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad usage (unknown flag, missing argument).
pub const EXIT_USAGE: u8 = 1;
/// Exit code: the gateway refused the call (4xx: invalid, forbidden, not found, ...).
pub const EXIT_REFUSED: u8 = 2;
/// Exit code: the gateway could not be reached or failed (5xx, network).
pub const EXIT_UNAVAILABLE: u8 = 3;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  usage error (unknown flag, missing argument)
  2  refused by the gateway (4xx: invalid_argument, unauthenticated, forbidden, not_found, conflict, team_disbanded, too_large, ...)
  3  gateway unavailable (5xx or network error)

Errors are printed to stderr as `error: <code>: <message>` (with -o json: the gateway's
{\"error\": {\"code\", \"message\"}} object on stdout).

Environment: TEAM_GATEWAY_URL, TEAM_TOKEN_FILE (or TEAM_TOKEN), TEAM_NAMESPACE, TEAM.
In a member pod these are set by the operator, so `teamctl send general-2 \"hi\"` just works.";

/// The team tools from a shell.
#[derive(Parser, Debug)]
#[command(name = "teamctl", version, about = "Talk to your agent team: messages, tasks, memory, members", after_help = AFTER_HELP)]
pub struct Cli {
    /// Gateway URL.
    #[arg(long, env = "TEAM_GATEWAY_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub gateway: String,
    /// Bearer token (a kube credential for people; member pods use --token-file).
    #[arg(long, env = "TEAM_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token, read on every call (projected tokens rotate).
    #[arg(long, env = "TEAM_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Namespace (people; member pods act in their own).
    #[arg(short = 'n', long, env = "TEAM_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Team (default: the caller's own team).
    #[arg(long, env = "TEAM", global = true)]
    pub team: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Human, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a message to a member, or to everyone with `*`.
    Send {
        /// Member name (`general-2`) or `*`.
        to: String,
        /// The message; `-` reads it from stdin.
        #[arg(num_args = 1.., required = true)]
        body: Vec<String>,
        /// Idempotency key.
        #[arg(long)]
        id: Option<String>,
    },
    /// Wait for messages; prints them and acknowledges them (unless --no-ack).
    Wait {
        /// Most seconds to block (default and cap: the team's memberTimeoutSeconds).
        #[arg(long)]
        timeout: Option<u64>,
        /// Leave the messages unacknowledged: the next wait returns them again.
        #[arg(long)]
        no_ack: bool,
        /// Acknowledge these stream ids before waiting.
        #[arg(long)]
        ack: Vec<String>,
    },
    /// The team's task board.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Your agent type's memory.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Create or delete a team.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Start a new member of your team (lead only).
    Spawn {
        /// Agent type.
        agent: String,
        /// The member's task; `-` reads it from stdin.
        #[arg(num_args = 1.., required = true)]
        prompt: Vec<String>,
        /// Model override.
        #[arg(long)]
        model: Option<String>,
    },
    /// Show teams, members or tasks.
    Get {
        /// teams | members | tasks.
        #[arg(value_enum)]
        kind: GetKind,
        /// One object by name.
        name: Option<String>,
    },
    /// Call any tool with raw JSON arguments (`-` reads them from stdin).
    Call {
        tool: String,
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Serve the tools as a stdio MCP server that forwards to the gateway.
    Mcp,
    /// Copy this binary into DIR (used by member pods' init container).
    Install { dir: PathBuf },
    /// Live view of teams, members, task boards and messages (`--once`: one plain snapshot).
    Watch(crate::watch::WatchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GetKind {
    Teams,
    Members,
    Tasks,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Add a task.
    Create {
        subject: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// A task that must complete first (repeatable).
        #[arg(long = "depends-on")]
        depends_on: Vec<String>,
        /// key=value metadata (repeatable).
        #[arg(long = "meta", value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
    },
    /// Move a task's state, set its result or owner.
    Update {
        name: String,
        /// pending | in_progress | completed | failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        result: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one task.
    Get { name: String },
    /// List tasks.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Print the memory.
    Read,
    /// Replace the memory (`-` reads stdin).
    Write { text: Vec<String> },
    /// Append to the memory (`-` reads stdin).
    Append { text: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum TeamCommand {
    /// Create a team you lead.
    Create(TeamCreate),
    /// Disband the team (lead only).
    Delete {
        /// The team (default: --team, else your own).
        name: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct TeamCreate {
    pub name: String,
    /// An agent type as NAME=IMAGE (repeatable).
    #[arg(long = "agent", value_parser = parse_kv)]
    pub agents: Vec<(String, String)>,
    #[arg(long)]
    pub max_agents: Option<i32>,
    #[arg(long)]
    pub member_timeout_seconds: Option<i64>,
    #[arg(long)]
    pub lead_agent: Option<String>,
    #[arg(long)]
    pub lead_prompt: Option<String>,
    #[arg(long)]
    pub memory_project: Option<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Parses the command line and runs; the process exit code.
pub async fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => EXIT_OK,
                _ => EXIT_USAGE,
            };
        }
    };
    run(cli).await
}

/// Runs a parsed command line; the process exit code.
pub async fn run(cli: Cli) -> u8 {
    if let Command::Watch(args) = &cli.command {
        return crate::watch::run(cli.namespace.as_deref(), cli.team.as_deref(), args).await;
    }
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Token::Literal(t.clone()),
        (None, Some(f)) => Token::File(f.clone()),
        (None, None) => Token::None,
    };
    let client = match GatewayClient::new(&cli.gateway, token) {
        Ok(c) => c,
        Err(e) => return report(&cli, &e),
    };
    match &cli.command {
        Command::Install { dir } => return install(dir),
        Command::Mcp => return mcp(&cli, client).await,
        _ => {}
    }
    let (tool, args) = match request(&cli) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("error: {msg}");
            return EXIT_USAGE;
        }
    };
    let result = match client.call(tool, &args).await {
        Ok(r) => r,
        Err(e) => return report(&cli, &e),
    };
    if let Command::Wait { no_ack: false, .. } = &cli.command {
        let ids: Vec<Value> = result["messages"].as_array().into_iter().flatten().filter_map(|m| m.get("stream_id").cloned()).collect();
        if !ids.is_empty() {
            let mut ack = scope(&cli, true);
            ack.insert("ack".into(), Value::Array(ids));
            ack.insert("receive".into(), Value::Bool(false));
            if let Err(e) = client.call("wait_messages", &Value::Object(ack)).await {
                print(&cli, &result);
                return report(&cli, &e);
            }
        }
    }
    print(&cli, &result);
    EXIT_OK
}

fn report(cli: &Cli, e: &ClientError) -> u8 {
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&e.body()).unwrap_or_default());
    } else {
        eprintln!("error: {e}");
    }
    match e {
        ClientError::Refused { .. } => EXIT_REFUSED,
        ClientError::Unavailable(_) => EXIT_UNAVAILABLE,
    }
}

/// `namespace` and `team` from flags, for tools that take them.
fn scope(cli: &Cli, team: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(ns) = &cli.namespace {
        m.insert("namespace".into(), json!(ns));
    }
    if let (true, Some(t)) = (team, &cli.team) {
        m.insert("team".into(), json!(t));
    }
    m
}

fn text_arg(words: &[String]) -> Result<String, String> {
    if words.len() == 1 && words[0] == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(s);
    }
    Ok(words.join(" "))
}

/// The tool and arguments of a command.
fn request(cli: &Cli) -> Result<(&'static str, Value), String> {
    let mut a = scope(cli, true);
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            a.insert(k.to_owned(), v);
        }
    };
    let tool = match &cli.command {
        Command::Send { to, body, id } => {
            put("to", json!(to));
            put("body", json!(text_arg(body)?));
            put("id", json!(id));
            "send_message"
        }
        Command::Wait { timeout, ack, .. } => {
            put("timeout_seconds", json!(timeout));
            if !ack.is_empty() {
                put("ack", json!(ack));
            }
            "wait_messages"
        }
        Command::Task(t) => {
            match t {
                TaskCommand::Create { subject, description, owner, depends_on, metadata } => {
                    put("action", json!("create"));
                    put("subject", json!(subject));
                    put("description", json!(description));
                    put("owner", json!(owner));
                    if !depends_on.is_empty() {
                        put("depends_on", json!(depends_on));
                    }
                    if !metadata.is_empty() {
                        put("metadata", json!(metadata.iter().cloned().collect::<BTreeMap<_, _>>()));
                    }
                }
                TaskCommand::Update { name, state, result, owner } => {
                    put("action", json!("update"));
                    put("name", json!(name));
                    put("state", json!(state));
                    put("result", json!(result));
                    put("owner", json!(owner));
                }
                TaskCommand::Get { name } => {
                    put("action", json!("get"));
                    put("name", json!(name));
                }
                TaskCommand::List { state, owner } => {
                    put("action", json!("list"));
                    put("state", json!(state));
                    put("owner", json!(owner));
                }
            }
            "team_task"
        }
        Command::Memory(m) => {
            match m {
                MemoryCommand::Read => put("action", json!("read")),
                MemoryCommand::Write { text } => {
                    put("action", json!("write"));
                    put("text", json!(text_arg(text)?));
                }
                MemoryCommand::Append { text } => {
                    put("action", json!("append"));
                    put("text", json!(text_arg(text)?));
                }
            }
            "agent_memory"
        }
        Command::Team(TeamCommand::Delete { name }) => {
            if let Some(n) = name {
                put("team", json!(n));
            }
            "team_delete"
        }
        Command::Team(TeamCommand::Create(c)) => {
            let mut a = scope(cli, false);
            a.insert("name".into(), json!(c.name));
            if !c.agents.is_empty() {
                let agents: Vec<Value> = c.agents.iter().map(|(n, image)| json!({ "name": n, "image": image })).collect();
                a.insert("agents".into(), json!(agents));
            }
            for (k, v) in [
                ("max_agents", json!(c.max_agents)),
                ("member_timeout_seconds", json!(c.member_timeout_seconds)),
                ("lead_agent", json!(c.lead_agent)),
                ("lead_prompt", json!(c.lead_prompt)),
                ("memory_project", json!(c.memory_project)),
            ] {
                if !v.is_null() {
                    a.insert(k.into(), v);
                }
            }
            return Ok(("team_create", Value::Object(a)));
        }
        Command::Spawn { agent, prompt, model } => {
            put("agent", json!(agent));
            put("prompt", json!(text_arg(prompt)?));
            put("model", json!(model));
            "spawn_member"
        }
        Command::Get { kind, name } => {
            let k = match kind {
                GetKind::Teams => "teams",
                GetKind::Members => "members",
                GetKind::Tasks => "tasks",
            };
            put("kind", json!(k));
            put("name", json!(name));
            "get"
        }
        Command::Call { tool, args } => {
            let text = text_arg(std::slice::from_ref(args))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
            let tool = crate::gateway::tools::tool_name(tool).ok_or_else(|| format!("no tool named {tool:?}"))?;
            return Ok((tool, v));
        }
        Command::Mcp | Command::Install { .. } | Command::Watch(_) => return Err("not a tool".into()),
    };
    Ok((tool, Value::Object(a)))
}

fn install(dir: &std::path::Path) -> u8 {
    let result = (|| -> std::io::Result<PathBuf> {
        let me = std::env::current_exe()?;
        std::fs::create_dir_all(dir)?;
        let target = dir.join("teamctl");
        let tmp = dir.join(".teamctl.tmp");
        std::fs::copy(&me, &tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::rename(&tmp, &target)?;
        Ok(target)
    })();
    match result {
        Ok(target) => {
            println!("installed {}", target.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: cannot install teamctl into {}: {e}", dir.display());
            EXIT_UNAVAILABLE
        }
    }
}

async fn mcp(cli: &Cli, client: GatewayClient) -> u8 {
    use rmcp::ServiceExt;
    let server = crate::gateway::mcp::McpTools::new(crate::gateway::mcp::Backend::Remote(client))
        .with_defaults(cli.namespace.clone(), cli.team.clone());
    match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => match running.waiting().await {
            Ok(_) => EXIT_OK,
            Err(e) => {
                eprintln!("error: mcp server: {e}");
                EXIT_UNAVAILABLE
            }
        },
        Err(e) => {
            eprintln!("error: mcp handshake: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

// --- human output -----------------------------------------------------------------------------

fn print(cli: &Cli, v: &Value) {
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let s = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match &cli.command {
        Command::Send { .. } => {
            let to: Vec<String> = v["delivered"].as_array().into_iter().flatten().map(|d| s(&d["to"])).collect();
            println!("sent {} to {}", s(&v["id"]), if to.is_empty() { "nobody".to_owned() } else { to.join(", ") });
        }
        Command::Wait { .. } => {
            let msgs = v["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                println!("no messages");
            }
            for m in msgs {
                let kind = if m["kind"] == "system" { "[system] " } else { "" };
                println!("{kind}{} -> {}: {}", s(&m["from"]), s(&m["to"]), s(&m["body"]));
            }
        }
        Command::Memory(MemoryCommand::Read) => {
            if let Some(text) = v["text"].as_str() {
                println!("{text}");
            }
        }
        Command::Memory(_) => {
            println!("stored {} bytes{}", s(&v["stored_bytes"]), if v["truncated"] == true { " (truncated)" } else { "" });
        }
        _ if v.get("tasks").is_some() => tasks_table(&v["tasks"]),
        _ if v.get("members").is_some() => members_table(&v["members"]),
        _ if v.get("teams").is_some() => teams_table(&v["teams"]),
        Command::Task(_) => tasks_table(&Value::Array(vec![v.clone()])),
        Command::Spawn { .. } => members_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Members, .. } => members_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Tasks, .. } => tasks_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Teams, .. } | Command::Team(TeamCommand::Create(_)) => teams_table(&Value::Array(vec![v.clone()])),
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r);
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn tasks_table(v: &Value) {
    let rows = v.as_array().into_iter().flatten().map(|t| {
        let state = if t["blocked"] == true { format!("{} (blocked)", cell(&t["state"])) } else { cell(&t["state"]) };
        vec![cell(&t["name"]), state, cell(&t["owner"]), cell(&t["subject"]), cell(&t["result"])]
    });
    table(&["NAME", "STATE", "OWNER", "SUBJECT", "RESULT"], rows.collect());
}

fn members_table(v: &Value) {
    let rows = v.as_array().into_iter().flatten().map(|m| {
        vec![cell(&m["name"]), cell(&m["agent"]), cell(&m["role"]), cell(&m["phase"]), cell(&m["reason"]), cell(&m["object"])]
    });
    table(&["NAME", "AGENT", "ROLE", "PHASE", "REASON", "OBJECT"], rows.collect());
}

fn teams_table(v: &Value) {
    let rows = v.as_array().into_iter().flatten().map(|t| {
        let c = &t["counts"];
        vec![cell(&t["name"]), cell(&t["phase"]), cell(&t["lead"]), cell(&c["active"]), cell(&c["queued"]), cell(&c["completed"]), cell(&c["failed"])]
    });
    table(&["NAME", "PHASE", "LEAD", "ACTIVE", "QUEUED", "COMPLETED", "FAILED"], rows.collect());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_tools() {
        let cli = Cli::try_parse_from(["teamctl", "send", "general-2", "hello", "there"]).unwrap();
        let (tool, args) = request(&cli).unwrap();
        assert_eq!(tool, "send_message");
        assert_eq!(args["body"], "hello there");
        let cli = Cli::try_parse_from(["teamctl", "task", "update", "t1", "--state", "completed", "--result", "ok"]).unwrap();
        let (tool, args) = request(&cli).unwrap();
        assert_eq!((tool, args["action"].as_str(), args["state"].as_str()), ("team_task", Some("update"), Some("completed")));
        let cli = Cli::try_parse_from(["teamctl", "-n", "ns", "team", "create", "x", "--agent", "general=img"]).unwrap();
        let (tool, args) = request(&cli).unwrap();
        assert_eq!(tool, "team_create");
        assert_eq!(args["agents"][0]["image"], "img");
        assert!(args.get("team").is_none());
    }
}
