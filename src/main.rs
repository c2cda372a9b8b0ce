//! `team-operator`: the controller, the gateway, and the CRD generator.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use team_operator::config::{ControllerArgs, GatewayArgs};
use team_operator::metrics::Metrics;
use team_operator::telemetry::{self, LogFormat};

/// mimalloc rather than the statically linked glibc malloc, whose `_int_malloc`,
/// `malloc_consolidate` and `free` were a quarter of the gateway's CPU per message (README,
/// Performance, P3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "team-operator", version, about = "Runs teams of AI agents on Kubernetes")]
struct Cli {
    /// Log format.
    #[arg(long, env = "TEAM_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (reconcilers, slot admission, metrics).
    Controller(ControllerArgs),
    /// Run the agent gateway (the tools over a JSON API and MCP, /metrics on the same port).
    Gateway(GatewayArgs),
    /// Write the CRDs as YAML, one file per kind.
    Crd {
        /// Directory to write into.
        #[arg(long, default_value = "crds")]
        out: PathBuf,
        /// Compare instead of writing; fail when a file differs.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Controller(_)) {
        // Before the runtime's threads allocate (see `allocator`).
        team_operator::allocator::purge_at_once();
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd { out, check } => team_operator::crd::write_all(&out, check),
        Command::Gateway(args) => {
            let _telemetry = telemetry::init(cli.log_format, "team-operator-gateway")?;
            team_operator::gateway::run(args, Arc::new(Metrics::default())).await
        }
        Command::Controller(args) => {
            let _telemetry = telemetry::init(cli.log_format, "team-operator-controller")?;
            let metrics = Arc::new(Metrics::default());
            let bus = args.bus.bus_config();
            let readiness = team_operator::controller::readiness::Readiness::new(bus, metrics.clone());
            let server = team_operator::health::serve(args.metrics_addr, metrics.clone(), readiness.check());
            tokio::select! {
                r = team_operator::controller::run(args, metrics, readiness) => r,
                r = server => r,
            }
        }
    }
}
