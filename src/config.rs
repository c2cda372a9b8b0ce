//! Settings of the operator's processes, from flags or environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::jiff::SignedDuration;

use crate::bus::{BusConfig, BusLimits};
use crate::controller::member_status::Deadlines;
use crate::controller::pod::PodSettings;

/// Limits of the message bus, on every process that sends (the gateway for members, the
/// controller for its notices): give both the same values.
#[derive(clap::Args, Clone, Debug)]
pub struct BusLimitArgs {
    /// Most messages an inbox holds unacknowledged; past it, sends to it are refused (inbox_full).
    #[arg(long, env = "TEAM_OPERATOR_INBOX_MAX_ENTRIES", default_value_t = BusLimits::default().inbox_max_entries, value_parser = clap::value_parser!(u64).range(1..))]
    pub inbox_max_entries: u64,
    /// Most bytes an inbox holds unacknowledged (bodies plus 64 bytes and the names per message).
    #[arg(long, env = "TEAM_OPERATOR_INBOX_MAX_BYTES", default_value_t = BusLimits::default().inbox_max_bytes, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub inbox_max_bytes: u64,
    /// Most bytes all inboxes of one team hold together; keep it well below Redis maxmemory.
    #[arg(long, env = "TEAM_OPERATOR_TEAM_MAX_BYTES", default_value_t = BusLimits::default().team_max_bytes, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub team_max_bytes: u64,
    /// Sends one member may make at once before its rate applies (rate_limited).
    #[arg(long, env = "TEAM_OPERATOR_SEND_BURST", default_value_t = BusLimits::default().send_burst, value_parser = clap::value_parser!(u32).range(1..))]
    pub send_burst: u32,
    /// Sustained sends per second of one member; 0 turns the rate limit off.
    #[arg(long, env = "TEAM_OPERATOR_SEND_RATE_PER_SECOND", default_value_t = BusLimits::default().send_rate_per_second)]
    pub send_rate_per_second: u32,
}

/// Where the bus's Redis is and its limits, the same on the controller and the gateway.
#[derive(clap::Args, Clone, Debug)]
pub struct BusArgs {
    /// Redis URL (redis:// or rediss://, with user and password if needed); with --redis-cluster,
    /// the URLs of one or more of the cluster's nodes, comma-separated.
    #[arg(long, env = "TEAM_OPERATOR_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Talk to a Redis Cluster instead of a single server. `--redis-cluster` alone turns it on;
    /// `--redis-cluster=<bool>` and the variable take true/false, 1/0, yes/no or on/off (what
    /// charts and shells write).
    #[arg(
        long,
        env = "TEAM_OPERATOR_REDIS_CLUSTER",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub redis_cluster: bool,
    #[command(flatten)]
    pub limits: BusLimitArgs,
}

impl BusArgs {
    /// The bus settings these flags give.
    pub fn bus_config(&self) -> BusConfig {
        let l = &self.limits;
        BusConfig {
            cluster: self.redis_cluster,
            limits: BusLimits {
                inbox_max_entries: l.inbox_max_entries,
                inbox_max_bytes: l.inbox_max_bytes,
                team_max_bytes: l.team_max_bytes,
                send_burst: l.send_burst,
                send_rate_per_second: l.send_rate_per_second,
            },
            ..BusConfig::from_url(&self.redis_url)
        }
    }
}

/// Settings of `team-operator controller`.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Operator-wide cap: specialist pods holding a slot across all teams.
    #[arg(long, env = "TEAM_OPERATOR_MAX_AGENTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_agents: u32,
    #[command(flatten)]
    pub bus: BusArgs,
    /// URL at which member pods reach the gateway.
    #[arg(long, env = "TEAM_OPERATOR_GATEWAY_URL", default_value = "http://team-operator-gateway:8080")]
    pub gateway_url: String,
    /// Image with /teamctl, copied into each member pod by an init container; empty: none.
    #[arg(long, env = "TEAM_OPERATOR_TEAMCTL_IMAGE")]
    pub teamctl_image: Option<String>,
    /// Seconds a member's pod may stay unschedulable before the member fails.
    #[arg(long, env = "TEAM_OPERATOR_UNSCHEDULABLE_DEADLINE_SECONDS", default_value_t = 300)]
    pub unschedulable_deadline_seconds: i64,
    /// Seconds a member's scheduled pod may take to start (an image that cannot be pulled, a
    /// missing Secret) before the member fails with the kubelet's reason.
    #[arg(long, env = "TEAM_OPERATOR_START_DEADLINE_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(1..))]
    pub start_deadline_seconds: i64,
    /// Seconds a failed member waits before its first retry (agent types' `backoffLimit`); each
    /// further retry waits twice the one before, at most 360 (the Job controller's backoff).
    #[arg(long, env = "TEAM_OPERATOR_RETRY_BACKOFF_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=360))]
    pub retry_backoff_seconds: u64,
    /// Watch and manage this namespace only (the operator-wide cap then applies to it alone);
    /// empty: every namespace.
    #[arg(long, env = "TEAM_OPERATOR_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /metrics, /readyz and /livez.
    #[arg(long, env = "TEAM_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_addr: SocketAddr,
    /// Reconcile only while holding the Lease, so several replicas can run.
    #[arg(long, env = "TEAM_OPERATOR_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (defaults to POD_NAMESPACE, else `default`).
    #[arg(long, env = "TEAM_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "TEAM_OPERATOR_LEASE_NAME", default_value = "team-operator-controller")]
    pub lease_name: String,
    /// Seconds a lease stays valid after its last renewal: how long a dead leader blocks others.
    #[arg(long, env = "TEAM_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader goes without a confirmed renewal before it stops reconciling (and
    /// exits); below the lease duration, so it has stopped before a standby may take over.
    /// Default: two thirds of the lease duration.
    #[arg(long, env = "TEAM_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS")]
    pub lease_renew_deadline_seconds: Option<u64>,
    /// Seconds between the leader's renewals, and between a standby's tries for the lease (how
    /// soon it takes a released one). Default: a seventh of the lease duration, at least 1.
    #[arg(long, env = "TEAM_OPERATOR_LEASE_RETRY_PERIOD_SECONDS")]
    pub lease_retry_period_seconds: Option<u64>,
    /// This replica's identity in the Lease (defaults to POD_NAME, else the host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl ControllerArgs {
    /// The lease settings, when leader election is on.
    pub fn lease(&self) -> Option<crate::controller::leader::LeaseSettings> {
        self.leader_election.then(|| crate::controller::leader::LeaseSettings {
            namespace: self.lease_namespace.clone().or_else(|| std::env::var("POD_NAMESPACE").ok()).unwrap_or_else(|| "default".into()),
            name: self.lease_name.clone(),
            identity: self.identity.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            duration: Duration::from_secs(self.lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.lease_renew_deadline_seconds.unwrap_or(self.lease_duration_seconds * 2 / 3)),
            retry_period: Duration::from_secs(self.lease_retry_period_seconds.unwrap_or((self.lease_duration_seconds / 7).max(1))),
        })
    }
}

/// Settings of `team-operator gateway`.
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Address of the JSON API, /mcp, /metrics, /readyz and /livez.
    #[arg(long, env = "TEAM_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub bus: BusArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TEAM_GATEWAY_MAX_BODY_BYTES", default_value_t = 262_144)]
    pub max_body_bytes: usize,
    /// Longest a wait_messages call blocks, whatever a team's memberTimeoutSeconds says.
    #[arg(long, env = "TEAM_GATEWAY_MAX_WAIT_SECONDS", default_value_t = 3600)]
    pub max_wait_seconds: u64,
    /// How long an authenticated token's identity is cached, in seconds.
    #[arg(long, env = "TEAM_GATEWAY_AUTH_CACHE_SECONDS", default_value_t = 30)]
    pub auth_cache_seconds: u64,
    /// Cache the Teams of this namespace only (set with the operator's; the chart's gateway role
    /// is then namespaced); empty: every namespace.
    #[arg(long, env = "TEAM_OPERATOR_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the aggregated API (TLS; what the APIService's Service points at); unset: none.
    #[arg(long, env = "TEAM_GATEWAY_AGGREGATED_LISTEN", requires_all = ["tls_cert_file", "tls_key_file"])]
    pub aggregated_listen: Option<SocketAddr>,
    /// PEM serving certificate of the aggregated API (for `<service>.<namespace>.svc`, signed by
    /// the CA in the APIService's caBundle).
    #[arg(long, env = "TEAM_GATEWAY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "TEAM_GATEWAY_TLS_KEY_FILE")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// API group of the aggregated API (the APIService is `v1alpha1.<group>`).
    #[arg(long, env = "TEAM_GATEWAY_API_GROUP", default_value = crate::gateway::aggregated::DEFAULT_GROUP)]
    pub api_group: String,
}

/// The controller's settings as the reconcilers use them.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub max_agents: usize,
    pub deadlines: Deadlines,
    /// The first retry's backoff (see `controller::retry`).
    pub retry_backoff: Duration,
    pub pod: PodSettings,
}

impl From<&ControllerArgs> for ControllerConfig {
    fn from(a: &ControllerArgs) -> Self {
        Self {
            max_agents: a.max_agents as usize,
            deadlines: Deadlines {
                unschedulable: SignedDuration::from_secs(a.unschedulable_deadline_seconds),
                start: SignedDuration::from_secs(a.start_deadline_seconds),
            },
            retry_backoff: Duration::from_secs(a.retry_backoff_seconds),
            pod: PodSettings {
                gateway_url: a.gateway_url.clone(),
                teamctl_image: a.teamctl_image.clone().filter(|s| !s.is_empty()),
                token_expiration_seconds: 3600,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::*;

    /// The bus flags alone, deaf to this process's environment (clap parses a variable's value
    /// with the flag's own parser, so the flag's cases are the variable's).
    fn parse(args: &[&str]) -> Result<BusArgs, clap::Error> {
        let cmd = BusArgs::augment_args(Command::new("t")).mut_args(|a| a.env(None));
        BusArgs::from_arg_matches(&cmd.try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))?)
    }

    #[test]
    fn redis_cluster_is_off_by_default_and_on_as_a_bare_flag() {
        assert!(!parse(&[]).expect("no flags").redis_cluster);
        let on = parse(&["--redis-cluster", "--redis-url", "redis://a:1,redis://b:2"]).expect("bare flag");
        assert!(on.redis_cluster);
        assert_eq!(on.redis_url, "redis://a:1,redis://b:2", "the next flag is not taken as the bool");
        let cfg = on.bus_config();
        assert!(cfg.cluster);
        assert_eq!(cfg.url, "redis://a:1,redis://b:2");
    }

    #[test]
    fn redis_cluster_takes_what_charts_and_shells_write() {
        for (value, want) in
            [("true", true), ("1", true), ("yes", true), ("on", true), ("false", false), ("0", false), ("no", false), ("off", false)]
        {
            let got = parse(&[&format!("--redis-cluster={value}")]).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(got.redis_cluster, want, "--redis-cluster={value}");
        }
    }

    #[test]
    fn redis_cluster_refuses_other_words_naming_the_flag() {
        let err = parse(&["--redis-cluster=maybe"]).expect_err("maybe is no bool").to_string();
        assert!(err.contains("--redis-cluster") && err.contains("maybe"), "{err}");
    }
}
