//! `teamctl`: the team tools from a shell; see [`team_operator::teamctl`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(team_operator::teamctl::main().await)
}
