//! `teamctl watch`: a live view of teams, their members, task boards and latest messages.
//!
//! - [`model`]: the screen as data ([`model::Screen`]), built purely from Team, Member and
//!   TeamTask objects and inbox entries.
//! - [`render`]: the screen as lines; `--once` prints them as plain text (no escape codes).
//! - `source`: the API server (the kubeconfig teamctl resolved: `--kubeconfig`, `--context`) and
//!   the gateway's `get messages` (read-only, under the RBAC of wait_messages), through the API
//!   server or `--gateway`, so no Redis is reached from outside the cluster.
//! - `tui`: the terminal UI (ratatui over crossterm, keyboard only, so it works over plain SSH),
//!   fed by watches on the three kinds; `q` quits.

pub mod model;
pub mod render;
mod source;
mod tui;

use std::io::IsTerminal;

/// Flags of `teamctl watch` (besides the global `-n`, `-A` and `--team`).
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Print one plain-text snapshot and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,
    /// How many of a team's latest messages to show (at most 100).
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
}

/// Runs the watch of `target`'s namespace (every one with `-A`); the process exit code (0, or 3
/// when the API server cannot be reached).
pub(crate) async fn run(cli: &crate::teamctl::Cli, target: crate::teamctl::Target, args: &WatchArgs) -> u8 {
    let client = match target.kube {
        Some(c) => c,
        // With --gateway the kube client is still the kubeconfig's: Teams, Members and TeamTasks
        // are read from the API server as the user.
        None => match crate::teamctl::kube_client(cli).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 3;
            }
        },
    };
    let (namespace, team) = (target.namespace.as_deref(), cli.team.as_deref());
    let inboxes = source::Inboxes::new(target.client, args.messages);
    if args.once || !std::io::stdout().is_terminal() {
        return match once(&client, namespace, team, &inboxes).await {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                3
            }
        };
    }
    match tui::run(client, namespace, team, inboxes).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            3
        }
    }
}

/// One snapshot as plain text.
async fn once(client: &kube::Client, namespace: Option<&str>, team: Option<&str>, inboxes: &source::Inboxes) -> anyhow::Result<String> {
    let (teams, members, tasks) = source::list_all(client, namespace).await?;
    let screen = model::build(namespace, team, &teams, &members, &tasks, &Default::default());
    let messages = inboxes.read_all(&team_ids(&screen)).await;
    let screen = model::build(namespace, team, &teams, &members, &tasks, &messages);
    Ok(render::plain(&screen))
}

/// The teams on the screen: whose messages to read.
fn team_ids(screen: &model::Screen) -> Vec<model::TeamId> {
    screen.teams.iter().map(|t| (t.namespace.clone(), t.name.clone())).collect()
}

#[cfg(test)]
mod tests;
