//! `teamctl`: the team tools from a shell, for people and for agents in member pods.
//!
//! Every tool is a subcommand; `teamctl mcp` serves the same tools as a stdio MCP server that
//! forwards to the gateway; `teamctl install DIR` copies the binary (the member pods' init
//! container does this). Member pods reach the gateway's URL with their projected token (the
//! operator sets `TEAM_GATEWAY_URL`, `TEAM_TOKEN_FILE`); people reach it through the API server
//! with their kubeconfig, as kubectl does (see `connect`). Named `kubectl-team`, it is the kubectl
//! plugin `kubectl team`.

//!
//! # Layout
//! - `cli`: the clap types (flags, subcommands, exit-code help).
//! - `connect`: where calls go (the gateway's URL, or the API server of the kubeconfig) and the
//!   namespace they act in.
//! - `request`: a command as a tool call, built from the gateway's typed argument structs.
//! - `output`: tables and lines, `-o wide|json|yaml|name`.
//! - `install`, `mcp`, `run`, `docs`: the subcommands that are not tool calls (`run` is the member
//!   loop; `docs` the completion scripts and the man page).

use clap::FromArgMatches;
use serde_json::Value;

use crate::gateway::args::WaitMessagesArgs;
use crate::gateway::client::ClientError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad usage (unknown flag, missing argument).
pub const EXIT_USAGE: u8 = 1;
/// Exit code: the gateway refused the call (4xx: invalid, forbidden, not found, ...).
pub const EXIT_REFUSED: u8 = 2;
/// Exit code: the gateway could not be reached or failed (5xx, network).
pub const EXIT_UNAVAILABLE: u8 = 3;

mod cli;
mod connect;
mod docs;
mod install;
mod mcp;
mod output;
mod quality_gate;
mod request;
pub mod run;

pub use cli::{Cli, Command, GetKind, MemoryCommand, Output, TaskCommand, TeamCommand, TeamCreate};
pub(crate) use connect::{Target, kube_client};

/// The name kubectl finds its plugin `kubectl team` by.
pub const PLUGIN_NAME: &str = "kubectl-team";

/// Parses the command line and runs; the process exit code.
pub async fn main() -> u8 {
    // Run as `kubectl team …`, usage and help say so.
    let invoked = std::env::args_os().next().map(std::path::PathBuf::from);
    let as_plugin = invoked.as_deref().and_then(|p| p.file_name()).is_some_and(|n| n == PLUGIN_NAME);
    let parsed =
        docs::command(if as_plugin { "kubectl team" } else { "teamctl" }).try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
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
    match &cli.command {
        Command::Install { dir } => return install::install(dir),
        Command::Completion { shell } => return docs::completion(*shell, "teamctl"),
        Command::Man => return docs::man("teamctl"),
        _ => {}
    }
    if let Err(msg) = connect::check(&cli).and_then(|()| output::check(&cli)) {
        eprintln!("error: {msg}");
        return EXIT_USAGE;
    }
    let target = match connect::connect(&cli).await {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("error: {msg}");
            return EXIT_UNAVAILABLE;
        }
    };
    let namespace = target.namespace.clone();
    // In a member pod whose agent type has a taskCompletedCheck, completions wait for it.
    let client = match quality_gate::Gate::task_completed() {
        Ok(Some(gate)) => target.client.clone().with_check(gate.into_call_check()),
        Ok(None) => target.client.clone(),
        Err(msg) => {
            eprintln!("error: {msg}");
            return EXIT_USAGE;
        }
    };
    match &cli.command {
        Command::Watch(args) => return crate::watch::run(&cli, target, args).await,
        Command::Mcp { wait_bound } => return mcp::serve(&cli, namespace, client, *wait_bound).await,
        Command::Run(args) => return run::run(&cli, namespace, args, client).await,
        _ => {}
    }
    let (tool, args) = match request::request(&cli, namespace.clone()) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("error: {msg}");
            return EXIT_USAGE;
        }
    };
    let result = match client.call(tool.as_str(), &args).await {
        Ok(r) => r,
        Err(e) => return report(&cli, &e),
    };
    // A person's wait only looks at an inbox (`peek`): the acks are the member's.
    if let (Command::Wait { no_ack: false, .. }, false) = (&cli.command, result["peek"] == true) {
        let ack: Vec<String> = result["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("stream_id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if !ack.is_empty() {
            let args =
                WaitMessagesArgs { ack, receive: Some(false), namespace: namespace.clone(), team: cli.team.clone(), ..Default::default() };
            if let Err(e) = client.call(crate::gateway::tools::Tool::WaitMessages.as_str(), &request::to_value(&args)).await {
                output::print(&cli, &result);
                return report(&cli, &e);
            }
        }
    }
    output::print(&cli, &result);
    EXIT_OK
}

fn report(cli: &Cli, e: &ClientError) -> u8 {
    match cli.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&e.body()).unwrap_or_default()),
        Some(Output::Yaml) => print!("{}", serde_yaml::to_string(&e.body()).unwrap_or_default()),
        _ => eprintln!("error: {e}"),
    }
    match e {
        ClientError::Refused { .. } => EXIT_REFUSED,
        ClientError::Unavailable(_) => EXIT_UNAVAILABLE,
    }
}
