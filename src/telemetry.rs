//! Logging: `tracing` to stderr, human-readable or JSON, filtered by RUST_LOG; W3C trace
//! context carried across processes and messages ([`propagation`]).

pub mod propagation;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with the span fields.
    Json,
}

/// Installs the global subscriber; RUST_LOG overrides the default `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).init(),
    }
}
