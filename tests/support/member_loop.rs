//! `teamctl run --runtime exec` as a local process standing in for a member pod: the test's
//! gateway, the pod's token, a shell script as the agent (teamctl on its PATH), the loop's log in
//! `dir/run.log`.

use std::path::Path;

/// Starts the member loop in `dir` with `flags` before `--` (e.g. `--idle-timeout 3`) and
/// `extra` environment.
pub fn exec_member(
    gateway_url: &str,
    token: &str,
    prompt: &str,
    flags: &[&str],
    script: &str,
    dir: &Path,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    let bin = Path::new(env!("CARGO_BIN_EXE_teamctl"));
    let bin_dir = bin.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    tokio::process::Command::new(bin)
        .args(["run", "--runtime", "exec"])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .env_clear()
        .env("PATH", path)
        .env("TEAM_GATEWAY_URL", gateway_url)
        .env("TEAM_TOKEN", token)
        .env("TEAM_PROMPT", prompt)
        .envs(extra.iter().copied())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start teamctl run")
}
