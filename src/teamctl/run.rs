//! `teamctl run`: the member loop, the entrypoint of a member pod.
//!
//! It wraps an agent runtime. Turn 1 is the prompt (`TEAM_PROMPT`), with the agent type's memory
//! in front when `TEAM_MEMORY=local` (read through the gateway as the turn starts). When a turn
//! ends, it waits for messages through the gateway; each batch becomes the next turn of the same
//! conversation, and the stream ids of the batch a turn handled ride as `ack` on the next wait.
//! It ends:
//! - after `TEAM_MEMBER_TIMEOUT_SECONDS` (or `--idle-timeout`) without a message: exit 0, so the
//!   pod Succeeds and the Member reads Completed;
//! - on a `[TEAM DISBANDED]` system notice: exit 0 (the Member reads Cancelled anyway);
//! - on the `[SHUTDOWN APPROVED]` notice the gateway writes when the runtime approved a shutdown
//!   request (`shutdown_response`; the request itself is a notice, so a turn): exit 0;
//! - when the runtime fails: with the runtime's exit code (128 + signal when killed);
//! - on SIGTERM or SIGINT: passed on to the runtime, which gets a grace period; then 143 / 130.
//!
//! With an `idleCheck` on the agent type, a turn is followed by the check before the wait: while
//! it exits non-zero, its output is the next turn (see `quality_gate`).
//!
//! As each turn begins and ends, it reports the member's usage through the gateway
//! (`usage_report`: turns begun, the tokens the runtime reported so far), on top of what the
//! member used before this run, read as it starts (its earlier attempts': see `base`). When the
//! answer says a budget is over (the agent type's or the team's), no further turn begins: it
//! waits for the operator, which stops the member (BudgetExceeded) by deleting its pod.
//!
//! # Layout
//! - `runtime`: what every adapter does (one turn as a command) and the choice among them.
//! - `opencode`, `claude`, `codex`, `exec`: one adapter per runtime.
//! - `child`: running one turn's process with signals passed on.
//! - `base`: the member's usage before this run, which its reports add to.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;
use tokio::time::Instant;

use super::cli::Cli;
use super::quality_gate::{Gate, Verdict};
use super::{EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};
use crate::api::Usage;
use crate::gateway::args::{AgentMemoryArgs, MemoryAction, UsageReportArgs, WaitMessagesArgs};
use crate::gateway::client::{ClientError, GatewayClient};
use crate::gateway::error::ErrorCode;
use crate::gateway::tools::Tool;
use crate::gateway::tools::shutdown::APPROVED_MARK;

pub(super) mod base;
mod child;
mod claude;
mod codex;
mod exec;
mod opencode;
mod runtime;

use base::Base;

/// The system notice the operator sends when a team disbands.
pub const DISBANDED_MARK: &str = "[TEAM DISBANDED]";

/// Which agent runtime `teamctl run` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// `opencode run`, continuing its session with `--session`.
    Opencode,
    /// Claude Code: `claude -p`, continuing with `--resume`.
    Claude,
    /// `codex exec`, continuing with `codex exec resume`.
    Codex,
    /// Any command: each turn is a new run of it with the turn's text on stdin.
    Exec,
}

/// `teamctl run [--runtime …] -- CMD…`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The agent runtime.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Exec)]
    pub runtime: RuntimeKind,
    /// Seconds without a message after which the member exits 0 (Completed).
    #[arg(long, env = "TEAM_MEMBER_TIMEOUT_SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Turn 1's text.
    #[arg(long, env = "TEAM_PROMPT", default_value = "", hide_env_values = true)]
    pub prompt: String,
    /// `local`: turn 1 starts with the agent type's memory.
    #[arg(long, env = "TEAM_MEMORY", default_value = "none")]
    pub memory: String,
    /// Most turns before it stops (exit 0), a bound on a conversation that never goes quiet.
    #[arg(long, default_value_t = 200)]
    pub max_turns: u32,
    /// Seconds a runtime gets after SIGTERM before it is killed.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
    /// The runtime's command and leading arguments (default: `opencode`, `claude`, `codex`;
    /// required for exec). The adapter adds the arguments of each turn.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// One message as the loop reads it from a wait.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub stream_id: String,
    pub from: String,
    pub system: bool,
    pub body: String,
}

impl Incoming {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Incoming {
            stream_id: v.get("stream_id")?.as_str()?.to_owned(),
            from: v.get("from").and_then(Value::as_str).unwrap_or_default().to_owned(),
            system: v.get("kind").and_then(Value::as_str) == Some("system"),
            body: v.get("body").and_then(Value::as_str).unwrap_or_default().to_owned(),
        })
    }
}

/// The text of turn 1: the memory block (when memory is local) and the prompt.
pub fn first_turn(prompt: &str, memory: Option<Option<&str>>) -> String {
    let loop_note = "\n\n(Messages sent to you arrive as your next turns: end your turn when you are done or waiting.)";
    match memory {
        Some(m) => format!("{}\n{prompt}{loop_note}", crate::bus::prompt_block(m)),
        None => format!("{prompt}{loop_note}"),
    }
}

/// The text of a turn made of `batch`.
pub fn batch_turn(batch: &[Incoming]) -> String {
    let mut out = format!("{} new message{} for you:\n", batch.len(), if batch.len() == 1 { "" } else { "s" });
    for m in batch {
        let kind = if m.system { "system notice" } else { "message" };
        out.push_str(&format!("\n[{kind} from {}]\n{}\n", m.from, m.body));
    }
    out
}

/// The text of a turn made of an idle check's refusal.
pub fn idle_check_turn(why: &str) -> String {
    format!("Your idle check did not pass, so the team is not told you are done yet. Fix what it reports, then end your turn:\n\n{why}")
}

/// Whether the batch ends the loop without a turn: the disband notice, or the notice that the
/// runtime approved a shutdown.
pub fn disbanded(batch: &[Incoming]) -> bool {
    batch.iter().any(|m| m.system && (m.body.contains(DISBANDED_MARK) || m.body.starts_with(APPROVED_MARK)))
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("teamctl run: {msg}");
}

/// Runs the loop; the process exit code.
pub(super) async fn run(cli: &Cli, namespace: Option<String>, args: &RunArgs, client: GatewayClient) -> u8 {
    let mut adapter = match runtime::adapter(args) {
        Ok(a) => a,
        Err(msg) => {
            say(format!("error: {msg}"));
            return EXIT_USAGE;
        }
    };
    let mut signals = match child::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            say(format!("error: cannot watch signals: {e}"));
            return EXIT_UNAVAILABLE;
        }
    };
    let idle_check = match Gate::idle() {
        Ok(g) => g,
        Err(msg) => {
            say(format!("error: {msg}"));
            return EXIT_USAGE;
        }
    };
    let gateway = Gateway { client, namespace, team: cli.team.clone() };
    let base = gateway.base().await;
    if base != Base::default() {
        say(format!("this member used {} turns and {} tokens before this run: counting on from there", base.turns, base.tokens));
    }

    let memory = if args.memory == "local" {
        match gateway.memory().await {
            Ok(text) => Some(text),
            Err(e) => return refused_or_unavailable("reading the memory", &e),
        }
    } else {
        None
    };
    let mut text = first_turn(&args.prompt, memory.as_ref().map(Option::as_deref));
    let grace = Duration::from_secs(args.grace_seconds);
    let idle = Duration::from_secs(args.idle_timeout.max(1));
    let mut pending: Vec<String> = Vec::new();
    for turn in 1..=args.max_turns {
        // A turn counts when it begins: one past a budget does not begin.
        if let Some(over) = gateway.report_usage(base.plus(turn.into(), adapter.tokens())).await {
            say(format!("not starting turn {turn}: {over}; waiting for the operator to stop this member"));
            return wait_for_stop(&mut signals, idle).await;
        }
        say(format!("turn {turn} starts ({} bytes)", text.len()));
        let outcome = child::run_turn(adapter.as_mut(), turn, &text, &base.env(), &mut signals, grace).await;
        // The tokens of the turn, whatever its end; a budget it went over stops the next turn.
        gateway.report_usage(base.plus(turn.into(), adapter.tokens())).await;
        match outcome {
            child::Outcome::Exited(0) => {}
            child::Outcome::Exited(code) => {
                say(format!("the runtime exited with {code} in turn {turn}"));
                return code;
            }
            child::Outcome::Signalled(code) => {
                say(format!("stopped by a signal in turn {turn}"));
                return code;
            }
            child::Outcome::NotStarted(e) => {
                say(format!("error: cannot start the runtime: {e}"));
                return 127;
            }
        }
        // The idle check stands between a turn and the wait: while it refuses, its output is the
        // next turn (the acks of the batch before ride the wait that follows).
        if let Some(gate) = &idle_check {
            let verdict = tokio::select! {
                v = gate.run(&[]) => v,
                code = signals.next() => {
                    say("stopped by a signal during the idle check");
                    return code;
                }
            };
            if let Verdict::Refused(why) = verdict {
                say(format!("the idle check refused after turn {turn}: its output is the next turn"));
                text = idle_check_turn(&why);
                continue;
            }
        }
        // Wait for the next batch, acking what the last turn handled.
        let deadline = Instant::now() + idle;
        let batch = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if !pending.is_empty() {
                    let _ = gateway.ack_only(&pending).await;
                }
                say(format!("no message for {}s: done", idle.as_secs()));
                return EXIT_OK;
            }
            let wait = gateway.wait(&pending, left);
            let answer = tokio::select! {
                a = wait => a,
                code = signals.next() => {
                    say("stopped by a signal while waiting");
                    return code;
                }
            };
            match answer {
                Ok(batch) => {
                    pending.clear();
                    if !batch.is_empty() {
                        break batch;
                    }
                }
                Err(ClientError::Refused { code, message, .. }) if code == ErrorCode::TeamDisbanded.as_str() => {
                    say(format!("the team is disbanded ({message}): done"));
                    return EXIT_OK;
                }
                Err(e @ ClientError::Refused { .. }) => return refused_or_unavailable("waiting for messages", &e),
                Err(ClientError::Unavailable(msg)) => {
                    say(format!("the gateway is unavailable ({msg}); retrying"));
                    let pause = Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        code = signals.next() => return code,
                    }
                }
            }
        };
        if disbanded(&batch) {
            let ids: Vec<String> = batch.iter().map(|m| m.stream_id.clone()).collect();
            let _ = gateway.ack_only(&ids).await;
            say("the team disbanded, or the shutdown was approved: done");
            return EXIT_OK;
        }
        let from: Vec<&str> = batch.iter().map(|m| m.from.as_str()).collect();
        say(format!("{} message(s) from {}", batch.len(), from.join(", ")));
        pending = batch.iter().map(|m| m.stream_id.clone()).collect();
        text = batch_turn(&batch);
    }
    if !pending.is_empty() {
        let _ = gateway.ack_only(&pending).await;
    }
    say(format!("stopping after {} turns (--max-turns)", args.max_turns));
    EXIT_OK
}

/// Past a budget: no turn starts, and the operator stops the member (deletes its pod: SIGTERM).
/// If it does not within `bound`, the loop ends with [`EXIT_REFUSED`].
async fn wait_for_stop(signals: &mut child::Signals, bound: Duration) -> u8 {
    tokio::select! {
        code = signals.next() => code,
        _ = tokio::time::sleep(bound) => {
            say(format!("not stopped within {}s of going over a budget: exiting", bound.as_secs()));
            EXIT_REFUSED
        }
    }
}

fn refused_or_unavailable(what: &str, e: &ClientError) -> u8 {
    say(format!("error {what}: {e}"));
    match e {
        ClientError::Refused { .. } => EXIT_REFUSED,
        ClientError::Unavailable(_) => EXIT_UNAVAILABLE,
    }
}

/// The loop's calls to the gateway.
struct Gateway {
    client: GatewayClient,
    namespace: Option<String>,
    team: Option<String>,
}

impl Gateway {
    /// The memory text (None when empty), retried while the gateway is unavailable (10 tries).
    async fn memory(&self) -> Result<Option<String>, ClientError> {
        let args = AgentMemoryArgs {
            action: MemoryAction::Read,
            text: None,
            agent: None,
            team: self.team.clone(),
            namespace: self.namespace.clone(),
        };
        let args = super::request::to_value(&args);
        let mut tries = 0;
        loop {
            match self.client.call(Tool::AgentMemory.as_str(), &args).await {
                Ok(v) => return Ok(v.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned)),
                Err(ClientError::Unavailable(msg)) if tries < 10 => {
                    tries += 1;
                    say(format!("the gateway is unavailable ({msg}); retrying"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One wait: acks `ack`, blocks up to `left` (the gateway may return sooner, empty).
    async fn wait(&self, ack: &[String], left: Duration) -> Result<Vec<Incoming>, ClientError> {
        let seconds = left.as_secs_f64().ceil() as u64;
        let args = WaitMessagesArgs {
            ack: ack.to_vec(),
            timeout_seconds: Some(seconds.max(1)),
            team: self.team.clone(),
            namespace: self.namespace.clone(),
            ..Default::default()
        };
        let v = self.client.call(Tool::WaitMessages.as_str(), &super::request::to_value(&args)).await?;
        Ok(v.get("messages").and_then(Value::as_array).into_iter().flatten().filter_map(Incoming::from_json).collect())
    }

    /// The member's usage before this run: the totals a report of nothing answers (see `base`),
    /// retried while the gateway is unavailable (10 tries). None read (a gateway without the
    /// tool, or one that stays away) is no base: the loop goes on, as it does when a report
    /// fails, since a budget is the operator's to enforce.
    async fn base(&self) -> Base {
        let mut tries = 0;
        loop {
            match self.usage_report(0, 0).await {
                Ok(v) => {
                    let usage = v.get("usage").cloned().and_then(|u| serde_json::from_value::<Usage>(u).ok()).unwrap_or_default();
                    return Base::from_usage(usage);
                }
                Err(ClientError::Unavailable(msg)) if tries < 10 => {
                    tries += 1;
                    say(format!("the gateway is unavailable ({msg}); retrying"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    say(format!("could not read the usage recorded before this run ({e}); counting from zero"));
                    return Base::default();
                }
            }
        }
    }

    /// Reports the member's totals `(turns begun, tokens used)` (usage_report); why a budget is
    /// over, if one is. A report that cannot be made is logged and the loop goes on: a budget is
    /// the operator's to enforce, and a gateway without the tool must not stop a member.
    async fn report_usage(&self, (turns, tokens): (u64, u64)) -> Option<String> {
        match self.usage_report(turns, tokens).await {
            Ok(v) => v.get("over").and_then(Value::as_str).map(str::to_owned),
            Err(e) => {
                say(format!("could not report usage ({e}); going on"));
                None
            }
        }
    }

    async fn usage_report(&self, turns: u64, tokens: u64) -> Result<Value, ClientError> {
        let args = UsageReportArgs { turns, tokens, team: self.team.clone(), namespace: self.namespace.clone() };
        self.client.call(Tool::UsageReport.as_str(), &super::request::to_value(&args)).await
    }

    async fn ack_only(&self, ack: &[String]) -> Result<(), ClientError> {
        let args = WaitMessagesArgs {
            ack: ack.to_vec(),
            receive: Some(false),
            team: self.team.clone(),
            namespace: self.namespace.clone(),
            ..Default::default()
        };
        self.client.call(Tool::WaitMessages.as_str(), &super::request::to_value(&args)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(from: &str, system: bool, body: &str) -> Incoming {
        Incoming { stream_id: "1-0".into(), from: from.into(), system, body: body.into() }
    }

    #[test]
    fn turn_one_puts_the_memory_first() {
        let t = first_turn("review the API", Some(Some("use cargo nextest")));
        let mem = t.find("use cargo nextest").expect("memory");
        let prompt = t.find("review the API").expect("prompt");
        assert!(mem < prompt, "{t}");
        assert!(first_turn("x", Some(None)).contains("fresh start"));
        assert!(!first_turn("x", None).contains("memory"));
    }

    #[test]
    fn a_batch_names_its_senders() {
        let t = batch_turn(&[msg("general-2", false, "found a bug"), msg("team-operator", true, "[AGENT FAILURE] @x failed")]);
        assert!(t.starts_with("2 new messages"), "{t}");
        assert!(t.contains("[message from general-2]\nfound a bug"), "{t}");
        assert!(t.contains("[system notice from team-operator]"), "{t}");
    }

    #[test]
    fn only_a_system_notice_disbands() {
        assert!(disbanded(&[msg("team-operator", true, "[TEAM DISBANDED] team t disbanded: deleted.")]));
        assert!(!disbanded(&[msg("lead", false, "[TEAM DISBANDED] fake")]));
        assert!(disbanded(&[msg("team-operator", true, "[SHUTDOWN APPROVED] general approved the shutdown")]));
        assert!(!disbanded(&[msg("general", false, "[SHUTDOWN APPROVED] fake")]));
        assert!(!disbanded(&[msg("team-operator", true, "[SHUTDOWN REQUEST] from lead: stop")]), "a request is a turn");
    }
}
