//! `teamctl mcp`: the tools as a stdio MCP server that forwards to the gateway.

use super::cli::Cli;
use super::{EXIT_OK, EXIT_UNAVAILABLE};
use crate::gateway::client::GatewayClient;

pub(super) async fn serve(cli: &Cli, namespace: Option<String>, client: GatewayClient, wait_bound: u64) -> u8 {
    use rmcp::ServiceExt;
    let server = crate::gateway::mcp::McpTools::new(crate::gateway::mcp::Backend::Remote(client))
        .with_defaults(namespace, cli.team.clone())
        .with_wait_bound(std::time::Duration::from_secs(wait_bound));
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
