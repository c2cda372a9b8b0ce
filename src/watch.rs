//! `teamctl watch`: a live view of teams, their members, task boards and latest messages.
//!
//! - [`model`]: the screen as data ([`model::Screen`]), built purely from Team, Member and
//!   TeamTask objects and inbox entries.
//! - [`render`]: the screen as lines; `--once` prints them as plain text (no escape codes).
//! - `source`: the API server (the user's kubeconfig, `kube::Client::try_default`) and the inbox
//!   streams in Redis (`TEAM_OPERATOR_REDIS_URL`; XREVRANGE, nothing is acknowledged).
//! - `tui`: the terminal UI (ratatui over crossterm, keyboard only, so it works over plain SSH),
//!   fed by watches on the three kinds; `q` quits.

pub mod model;
pub mod render;
mod source;
mod tui;

use std::io::IsTerminal;

/// Flags of `teamctl watch` (besides the global `-n` and `--team`).
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Print one plain-text snapshot and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,
    /// Redis holding the inboxes; without it the messages panel says it is not shown.
    #[arg(long, env = "TEAM_OPERATOR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// How many of a team's latest messages to show.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
}

/// Runs the watch; the process exit code (0, or 3 when the API server cannot be reached).
pub async fn run(namespace: Option<&str>, team: Option<&str>, args: &WatchArgs) -> u8 {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no Kubernetes client (kubeconfig or in-cluster config): {e}");
            return 3;
        }
    };
    let inboxes = source::Inboxes::connect(args.redis_url.as_deref(), args.messages).await;
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
    let wanted = team_inboxes(&screen);
    let messages = inboxes.read_all(&wanted).await;
    let screen = model::build(namespace, team, &teams, &members, &tasks, &messages);
    Ok(render::plain(&screen))
}

/// The teams on the screen with their members' names: whose inboxes to read.
fn team_inboxes(screen: &model::Screen) -> Vec<(model::TeamId, Vec<String>)> {
    screen
        .teams
        .iter()
        .map(|t| {
            let names = t.members.iter().filter(|m| !m.name.starts_with('(')).map(|m| m.name.clone()).collect();
            ((t.namespace.clone(), t.name.clone()), names)
        })
        .collect()
}

#[cfg(test)]
mod tests;
