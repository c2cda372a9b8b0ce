//! Prometheus metrics of the controller and the gateway (prometheus-client). Labels are small
//! closed sets (kind, phase, error category, tool, code), never object names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of per-kind reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Label of reconcile failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub kind: &'static str,
    pub category: &'static str,
}

/// Label of member counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// Label of notices written by the operator.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoticeLabel {
    pub notice: &'static str,
}

impl NoticeLabel {
    pub const AGENT_FAILURE: NoticeLabel = NoticeLabel { notice: "agent_failure" };
    pub const TEAM_DISBANDED: NoticeLabel = NoticeLabel { notice: "team_disbanded" };
    /// `[DONE]`, to the lead (the operator's).
    pub const MEMBER_DONE: NoticeLabel = NoticeLabel { notice: "member_done" };
    /// `[IDLE]`, to the lead (the gateway's).
    pub const MEMBER_IDLE: NoticeLabel = NoticeLabel { notice: "member_idle" };
    pub const ALL: [NoticeLabel; 4] = [Self::AGENT_FAILURE, Self::TEAM_DISBANDED, Self::MEMBER_DONE, Self::MEMBER_IDLE];
}

/// Label of members stopped for a budget: whose budget was over, the member's own (its agent
/// type's) or its team's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: &'static str,
}

impl BudgetLabel {
    pub const MEMBER: BudgetLabel = BudgetLabel { budget: "member" };
    pub const TEAM: BudgetLabel = BudgetLabel { budget: "team" };
}

/// Label of gateway request durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    pub tool: &'static str,
}

/// Label of the build information gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
}

/// Label of gateway requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub tool: &'static str,
    pub code: &'static str,
}

/// Every metric the processes export.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabel, Counter>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub reconcile_duration: Family<KindLabel, Histogram>,
    pub members: Family<PhaseLabel, Gauge>,
    pub slots_in_use: Gauge,
    pub slots_cap: Gauge,
    pub pods_created: Counter,
    pub notices: Family<NoticeLabel, Counter>,
    pub messages_sent: Counter,
    pub gateway_requests: Family<RequestLabel, Counter>,
    pub gateway_request_duration: Family<ToolLabel, Histogram>,
    pub gateway_waits: Gauge,
    /// Members stopped with BudgetExceeded (the controller's).
    pub over_budget: Family<BudgetLabel, Counter>,
    /// Turns begun, as members reported them (the gateway's, from usage_report).
    pub usage_turns: Counter,
    /// Model tokens, as members reported them (the gateway's, from usage_report).
    pub usage_tokens: Counter,
    /// 1 while this controller holds the Lease (or runs without leader election), else 0.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("team_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let reconcile_errors = Family::<ErrorLabel, Counter>::default();
        let reconcile_duration =
            Family::<KindLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14)));
        let members = Family::<PhaseLabel, Gauge>::default();
        let slots_in_use = Gauge::default();
        let slots_cap = Gauge::default();
        let pods_created = Counter::default();
        let notices = Family::<NoticeLabel, Counter>::default();
        let messages_sent = Counter::default();
        let gateway_requests = Family::<RequestLabel, Counter>::default();
        let gateway_waits = Gauge::default();
        // 1 ms to ~65 s: tool calls take milliseconds, a wait_messages up to its bound.
        let gateway_request_duration =
            Family::<ToolLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17)));
        let leader = Gauge::default();
        let over_budget = Family::<BudgetLabel, Counter>::default();
        let usage_turns = Counter::default();
        let usage_tokens = Counter::default();
        registry.register("members_over_budget", "Members stopped with BudgetExceeded, per budget (member or team)", over_budget.clone());
        registry.register("usage_turns", "Turns begun, as members reported them through usage_report", usage_turns.clone());
        registry.register("usage_tokens", "Model tokens used, as members reported them through usage_report", usage_tokens.clone());
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The running version (always 1)", build_info);
        registry.register("leader", "1 while this controller holds the Lease and reconciles, else 0", leader.clone());
        registry.register(
            "gateway_request_duration_seconds",
            "Duration of gateway tool calls (a wait_messages blocks until a message or its bound), per tool",
            gateway_request_duration.clone(),
        );
        registry.register("reconciles", "Reconciles run, per kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, per kind and error category", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconciles, per kind", reconcile_duration.clone());
        registry.register("members", "Members per phase, across the cluster", members.clone());
        registry.register("slots_in_use", "Specialist pods holding a slot under the operator-wide cap", slots_in_use.clone());
        registry.register("slots_cap", "The operator-wide cap on specialist pods", slots_cap.clone());
        registry.register("pods_created", "Member pods created", pods_created.clone());
        registry.register("notices", "System notices written to inboxes, per notice", notices.clone());
        registry.register("messages_sent", "Messages sent through the gateway", messages_sent.clone());
        registry.register("gateway_requests", "Gateway requests, per tool and result code", gateway_requests.clone());
        registry.register(
            "gateway_waits",
            "wait_messages calls in progress in this gateway: agents waiting for a message",
            gateway_waits.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            members,
            slots_in_use,
            slots_cap,
            pods_created,
            notices,
            messages_sent,
            gateway_requests,
            gateway_request_duration,
            gateway_waits,
            over_budget,
            usage_turns,
            usage_tokens,
            leader,
        }
    }
}

/// One in a gauge for as long as it lives: a call in progress, uncounted also when its future is
/// dropped (a client that went away).
pub struct InProgress(Gauge);

impl InProgress {
    pub fn count(gauge: &Gauge) -> Self {
        gauge.inc();
        InProgress(gauge.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The content type of [`Metrics::encode`]: prometheus-client writes OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Creates the series of the controller at zero: every reconcile kind with every error
    /// category, every notice. A family without a series is not exposed at all, and a query
    /// (`rate(…)`, a dashboard panel, an alert) should see 0 before the first error, not nothing.
    pub fn zero_controller_series(&self, kinds: &[&'static str], categories: &[&'static str]) {
        for &kind in kinds {
            let _ = self.reconciles.get_or_create(&KindLabel { kind });
            let _ = self.reconcile_duration.get_or_create(&KindLabel { kind });
            for &category in categories {
                let _ = self.reconcile_errors.get_or_create(&ErrorLabel { kind, category });
            }
        }
        for notice in &NoticeLabel::ALL {
            let _ = self.notices.get_or_create(notice);
        }
        for budget in [BudgetLabel::MEMBER, BudgetLabel::TEAM] {
            let _ = self.over_budget.get_or_create(&budget);
        }
    }

    /// Likewise for the gateway: every tool's duration and its successful calls.
    pub fn zero_gateway_series(&self, tools: &[&'static str]) {
        for &tool in tools {
            let _ = self.gateway_request_duration.get_or_create(&ToolLabel { tool });
            let _ = self.gateway_requests.get_or_create(&RequestLabel { tool, code: "ok" });
        }
    }

    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
