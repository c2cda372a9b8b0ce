//! The command line: every tool as a subcommand, and the global flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(super) const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  usage error (unknown flag, missing argument)
  2  refused by the gateway (4xx: invalid_argument, unauthenticated, forbidden, not_found, conflict, team_disbanded, too_large, ...)
  3  gateway unavailable (5xx or network error)

Errors are printed to stderr as `error: <code>: <message>` (with -o json or yaml: the gateway's
{\"error\": {\"code\", \"message\"}} object on stdout).

Without --gateway, teamctl reaches the gateway through the Kubernetes API server (the chart's
APIService v1alpha1.gateway.agentteams.dev) with the kubeconfig's own credentials, as kubectl
does: --kubeconfig / KUBECONFIG, --context, and -n defaulting to the context's namespace.

Environment: TEAM_GATEWAY_URL, TEAM_TOKEN_FILE (or TEAM_TOKEN), TEAM_NAMESPACE, TEAM,
TEAM_API_GROUP. In a member pod the operator sets the first ones, so `teamctl send general-2
\"hi\"` just works. As a kubectl plugin (`kubectl team …`) it is the same program named kubectl-team.";

/// The team tools from a shell.
#[derive(Parser, Debug)]
#[command(name = "teamctl", version, about = "Talk to your agent team: messages, tasks, memory, members", after_help = AFTER_HELP)]
pub struct Cli {
    /// Gateway URL, reached directly (member pods, a port-forward); unset: through the API server.
    #[arg(long, env = "TEAM_GATEWAY_URL", global = true)]
    pub gateway: Option<String>,
    /// Bearer token for --gateway (member pods use --token-file).
    #[arg(long, env = "TEAM_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token for --gateway, read on every call (projected tokens rotate).
    #[arg(long, env = "TEAM_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the kubeconfig context's; member pods act in their own).
    #[arg(short = 'n', long, env = "TEAM_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Every namespace (get teams, watch).
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Team (default: the caller's own team).
    #[arg(long, env = "TEAM", global = true)]
    pub team: Option<String>,
    /// Output format (default: human-readable lines and tables).
    #[arg(short = 'o', long, value_enum, global = true)]
    pub output: Option<Output>,
    /// API group of the gateway's APIService (another install of the chart may use another).
    #[arg(long, env = "TEAM_API_GROUP", default_value = crate::gateway::aggregated::DEFAULT_GROUP, global = true)]
    pub api_group: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats, as kubectl's `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The gateway's answer as JSON.
    Json,
    /// The gateway's answer as YAML.
    Yaml,
    /// Tables with more columns.
    Wide,
    /// `kind.group/name` of each object (to pipe into kubectl).
    Name,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a message to a member, or to everyone with `*`.
    Send {
        /// Member name (`general-2`) or `*`.
        to: String,
        /// The message; `-` reads it from stdin.
        #[arg(num_args = 1.., required = true)]
        body: Vec<String>,
        /// Idempotency key.
        #[arg(long)]
        id: Option<String>,
    },
    /// Wait for messages; prints them and acknowledges them (unless --no-ack).
    Wait {
        /// Most seconds to block (default and cap: the team's memberTimeoutSeconds).
        #[arg(long)]
        timeout: Option<u64>,
        /// Leave the messages unacknowledged: the next wait returns them again.
        #[arg(long)]
        no_ack: bool,
        /// Acknowledge these stream ids before waiting.
        #[arg(long)]
        ack: Vec<String>,
    },
    /// The team's task board.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Your agent type's memory.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Create or delete a team.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Start a new member of your team (lead only).
    Spawn {
        /// Agent type.
        agent: String,
        /// The member's task; `-` reads it from stdin.
        #[arg(num_args = 1.., required = true)]
        prompt: Vec<String>,
        /// Model override.
        #[arg(long)]
        model: Option<String>,
    },
    /// The shutdown handshake: ask a member to stop (lead), or answer such a request (member).
    #[command(subcommand)]
    Shutdown(ShutdownCommand),
    /// Plan approval: submit your plan (member), or approve or reject a member's (lead).
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Report what your runtime used so far, as running totals (`teamctl run` does it as each
    /// turn begins and ends); says when a budget is over. Under `teamctl run` the counts are
    /// this run's (`--turns "$TEAM_TURN"`): the member's usage before it (earlier attempts) is
    /// added (`TEAM_USAGE_BASE_TURNS`, `TEAM_USAGE_BASE_TOKENS`).
    Usage {
        /// Turns begun so far.
        #[arg(long)]
        turns: u64,
        /// Model tokens used so far.
        #[arg(long, default_value_t = 0)]
        tokens: u64,
    },
    /// Show teams, members, tasks or the newest messages.
    Get {
        /// teams | members | tasks | messages.
        #[arg(value_enum)]
        kind: GetKind,
        /// One object by name (messages: one member's inbox).
        name: Option<String>,
        /// messages: how many of the newest (1 to 100).
        #[arg(long)]
        limit: Option<usize>,
        /// messages of a disbanded team: the uid the Team had (default: the most recently
        /// disbanded team of that name whose transcript is kept).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Call any tool with raw JSON arguments (`-` reads them from stdin).
    Call {
        tool: String,
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Serve the tools as a stdio MCP server that forwards to the gateway.
    Mcp {
        /// Longest one wait_messages call blocks, in seconds (MCP clients drop calls after 60 s).
        #[arg(long, env = "TEAM_MCP_WAIT_SECONDS", default_value_t = 50)]
        wait_bound: u64,
    },
    /// Copy this binary into DIR (used by member pods' init container).
    Install { dir: PathBuf },
    /// Print a shell completion script (e.g. `source <(teamctl completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `teamctl man > teamctl.1`.
    Man,
    /// Live view of teams, members, task boards and messages (`--once`: one plain snapshot).
    Watch(crate::watch::WatchArgs),
    /// The member loop (a member pod's entrypoint): run an agent runtime on the prompt, then on
    /// each batch of messages as the next turn of the same conversation, until the team goes
    /// quiet for memberTimeoutSeconds (exit 0) or disbands.
    Run(super::run::RunArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GetKind {
    Teams,
    Members,
    Tasks,
    Messages,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Add a task.
    Create {
        subject: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// A task that must complete first (repeatable).
        #[arg(long = "depends-on")]
        depends_on: Vec<String>,
        /// key=value metadata (repeatable).
        #[arg(long = "meta", value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
    },
    /// Move a task's state, set its result or owner.
    Update {
        name: String,
        /// pending | in_progress | completed | failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        result: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one task.
    Get { name: String },
    /// List tasks.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Take the first pending, unblocked, unowned task (or NAME) as its owner; of two members
    /// claiming one task, one gets it.
    Claim {
        name: Option<String>,
        /// Who claims (people only; default the lead).
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ShutdownCommand {
    /// Ask MEMBER to stop (lead only); its answer comes back as a notice.
    Request {
        member: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approve the shutdown request you got: the member loop ends once this turn ends.
    Approve {
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject the shutdown request you got, saying why.
    Reject {
        #[arg(long, required = true)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Submit your plan for the lead's review (`-` reads stdin).
    Submit {
        #[arg(num_args = 1.., required = true)]
        plan: Vec<String>,
    },
    /// Approve MEMBER's plan (lead only).
    Approve {
        member: String,
        #[arg(long)]
        feedback: Option<String>,
    },
    /// Reject MEMBER's plan, saying what to change (lead only).
    Reject {
        member: String,
        #[arg(long, required = true)]
        feedback: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Print the memory.
    Read,
    /// Replace the memory (`-` reads stdin).
    Write { text: Vec<String> },
    /// Append to the memory (`-` reads stdin).
    Append { text: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum TeamCommand {
    /// Create a team you lead.
    Create(TeamCreate),
    /// Disband the team (lead only).
    Delete {
        /// The team (default: --team, else your own).
        name: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct TeamCreate {
    pub name: String,
    /// An agent type as NAME=IMAGE (repeatable).
    #[arg(long = "agent", value_parser = parse_kv)]
    pub agents: Vec<(String, String)>,
    #[arg(long)]
    pub max_agents: Option<i32>,
    #[arg(long)]
    pub member_timeout_seconds: Option<i64>,
    #[arg(long)]
    pub lead_agent: Option<String>,
    #[arg(long)]
    pub lead_prompt: Option<String>,
    #[arg(long)]
    pub memory_project: Option<String>,
    /// How long the transcript stays readable after the team disbands (24h, 1h30m, 90s, 0s).
    #[arg(long)]
    pub retention: Option<String>,
    /// Admission priority, -1000 to 1000 (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// The team's budget: most turns of all members together.
    #[arg(long)]
    pub budget_turns: Option<i64>,
    /// The team's budget: most wall-clock seconds from its creation.
    #[arg(long)]
    pub budget_seconds: Option<i64>,
    /// The team's budget: most model tokens of all members together.
    #[arg(long)]
    pub budget_tokens: Option<i64>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}
