//! `teamctl`: the team tools from a shell, for people and for agents in member pods.
//!
//! Every tool is a subcommand; `teamctl mcp` serves the same tools as a stdio MCP server that
//! forwards to the gateway; `teamctl install DIR` copies the binary (the member pods' init
//! container does this). Settings come from flags or the environment the operator gives member
//! pods (`TEAM_GATEWAY_URL`, `TEAM_TOKEN_FILE`).

//!
//! # Layout
//! - `cli`: the clap types (flags, subcommands, exit-code help).
//! - `request`: a command as a tool call, built from the gateway's typed argument structs.
//! - `output`: human output (lines and tables); `-o json` prints the answer as it is.
//! - `install`, `mcp`, `run`: the subcommands that are not tool calls (`run` is the member loop).

use clap::Parser;
use serde_json::Value;

use crate::gateway::args::WaitMessagesArgs;
use crate::gateway::client::{ClientError, GatewayClient, Token};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad usage (unknown flag, missing argument).
pub const EXIT_USAGE: u8 = 1;
/// Exit code: the gateway refused the call (4xx: invalid, forbidden, not found, ...).
pub const EXIT_REFUSED: u8 = 2;
/// Exit code: the gateway could not be reached or failed (5xx, network).
pub const EXIT_UNAVAILABLE: u8 = 3;

mod cli;
mod install;
mod mcp;
mod output;
mod request;
pub mod run;

pub use cli::{Cli, Command, GetKind, MemoryCommand, Output, TaskCommand, TeamCommand, TeamCreate};

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
        Command::Install { dir } => return install::install(dir),
        Command::Mcp { wait_bound } => return mcp::serve(&cli, client, *wait_bound).await,
        Command::Run(args) => return run::run(&cli, args, client).await,
        _ => {}
    }
    let (tool, args) = match request::request(&cli) {
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
    if let Command::Wait { no_ack: false, .. } = &cli.command {
        let ack: Vec<String> = result["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("stream_id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if !ack.is_empty() {
            let args = WaitMessagesArgs {
                ack,
                receive: Some(false),
                namespace: cli.namespace.clone(),
                team: cli.team.clone(),
                ..Default::default()
            };
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
