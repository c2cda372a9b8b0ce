//! One turn's process: started, its stdout passed through (and shown to the adapter), SIGTERM
//! and SIGINT passed on with a grace period before a kill.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::runtime::Adapter;

/// How a turn ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The runtime exited with this code (128 + n when killed by signal n).
    Exited(u8),
    /// We were told to stop; the exit code to end with.
    Signalled(u8),
    /// It could not be started.
    NotStarted(std::io::Error),
}

/// SIGTERM and SIGINT, as exit codes 143 and 130.
pub(super) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next signal, as the exit code it calls for.
    pub(super) async fn next(&mut self) -> u8 {
        tokio::select! {
            _ = self.term.recv() => 143,
            _ = self.int.recv() => 130,
        }
    }
}

fn code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + s).unwrap_or(255),
        _ => 1,
    }
}

/// Sends `sig` to process `pid`.
fn send(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; a pid that has
        // exited meanwhile makes it fail with ESRCH, which is harmless here.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Runs turn `turn` with `text` to its end, with `env` (the loop's) and the adapter's
/// variables added to its environment.
pub(super) async fn run_turn(
    adapter: &mut dyn Adapter,
    turn: u32,
    text: &str,
    env: &[(String, String)],
    signals: &mut Signals,
    grace: Duration,
) -> Outcome {
    let spec = adapter.turn(turn, text);
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(env.iter().chain(&spec.env).map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::NotStarted(e),
    };
    if let (Some(input), Some(mut pipe)) = (spec.stdin, child.stdin.take()) {
        // A runtime that never reads its stdin must not block the turn.
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let mut lines = child.stdout.take().map(|out| BufReader::new(out).lines());
    let mut stopping: Option<u8> = None;
    // Armed when a signal comes in.
    let kill_at = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(kill_at);
    loop {
        tokio::select! {
            line = async { match lines.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => {
                match line {
                    Ok(Some(l)) => {
                        println!("{l}");
                        adapter.line(&l);
                    }
                    _ => lines = None,
                }
            }
            status = child.wait() => {
                // What is left of its output; a process it left behind may hold the pipe open,
                // so not for long.
                if let Some(mut l) = lines.take() {
                    let drain = async {
                        while let Ok(Some(line)) = l.next_line().await {
                            println!("{line}");
                            adapter.line(&line);
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                }
                return match (status, stopping) {
                    (_, Some(code)) => Outcome::Signalled(code),
                    (Ok(s), None) => Outcome::Exited(code_of(s)),
                    (Err(e), None) => Outcome::NotStarted(e),
                };
            }
            code = signals.next(), if stopping.is_none() => {
                stopping = Some(code);
                if let Some(pid) = child.id() {
                    send(pid, libc::SIGTERM);
                }
                kill_at.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            _ = &mut kill_at, if stopping.is_some() => {
                let _ = child.start_kill();
            }
        }
    }
}
