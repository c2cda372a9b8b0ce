//! `teamctl run` as a local process standing in for a member pod: the test's gateway, the pod's
//! token, an agent runtime (a shell script under `--runtime exec`, or a real one such as
//! opencode) with teamctl on its PATH, the loop's log in `dir/run.log`, what the runtime printed
//! in `dir/out.log`.

use std::path::Path;

/// Starts the member loop in `dir` with `flags` before `--` (e.g. `--idle-timeout 3`) and
/// `extra` environment, a shell `script` as its agent.
pub fn exec_member(
    gateway_url: &str,
    token: &str,
    prompt: &str,
    flags: &[&str],
    script: &str,
    dir: &Path,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    runtime_member("exec", &["sh", "-c", script], gateway_url, token, prompt, flags, dir, extra)
}

/// Starts the member loop in `dir` around `runtime` (`opencode`, `claude`, `codex`, `exec`) and
/// its `command`, with `flags` before `--` and `extra` environment.
#[allow(clippy::too_many_arguments)]
pub fn runtime_member(
    runtime: &str,
    command: &[&str],
    gateway_url: &str,
    token: &str,
    prompt: &str,
    flags: &[&str],
    dir: &Path,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    let bin = Path::new(env!("CARGO_BIN_EXE_teamctl"));
    let bin_dir = bin.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    tokio::process::Command::new(bin)
        .args(["run", "--runtime", runtime])
        .args(flags)
        .arg("--")
        .args(command)
        .env_clear()
        .env("PATH", path)
        .env("TEAM_GATEWAY_URL", gateway_url)
        .env("TEAM_TOKEN", token)
        .env("TEAM_PROMPT", prompt)
        .envs(extra.iter().copied())
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("out.log")).expect("out log"))
        .stderr(std::fs::File::create(dir.join("run.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start teamctl run")
}
