//! team-operator: runs teams of AI agents on Kubernetes.
//!
//! A lead agent orchestrates specialist agents, each in its own pod. Team, Member and TeamTask
//! are custom resources; messages travel through Redis streams; agent memory lives in Redis.
//!
//! # Layout
//! - [`api`]: the CRD types and their pure rules; no I/O.
//! - [`controller`]: one reconciler per kind, the slot admission (names and caps, one writer; the
//!   fair-share turns it shares with the gateway's queue positions) and pod building.
//! - [`bus`]: Redis inbox streams, the roster the operator projects into Redis, agent memory.
//! - [`gateway`]: the agents' tools over a JSON API and MCP, with TokenReview-based auth, the
//!   aggregated API the Kubernetes API server proxies to with the caller's identity, and the
//!   client `teamctl` uses.
//! - [`teamctl`]: the `teamctl` CLI (every tool as a subcommand, `teamctl mcp` over stdio).
//! - [`config`], [`telemetry`], [`metrics`], [`health`]: settings, logging and traces, Prometheus
//!   metrics, the probe and metrics endpoints; [`allocator`]: the controller's mimalloc options.
//! - [`crd`]: writes `crds/` from the types.
//! - [`watch`]: `teamctl watch`, the live view of teams (ratatui) and its `--once` snapshot.

/// An enum of unit variants that each have one fixed name (a tool name, an error code, a metric
/// label): the enum, `ALL` (in declaration order) and `as_str`, written once, so no list of the
/// names is kept by hand beside it.
macro_rules! named_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// Its fixed name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

pub mod allocator;
pub mod api;
pub mod bus;
pub mod config;
pub mod controller;
pub mod crd;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod teamctl;
pub mod telemetry;
pub mod watch;
