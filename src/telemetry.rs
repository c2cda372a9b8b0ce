//! Logging and traces: `tracing` to stderr, human-readable or JSON, filtered by RUST_LOG; and,
//! when an OTLP endpoint is configured, the same spans exported as OpenTelemetry traces over
//! OTLP/HTTP ([`otlp`]), with W3C `traceparent` carried across processes and messages
//! ([`propagation`]).

pub mod otlp;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
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

/// Keeps the trace exporter alive; dropping it sends what is still buffered.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace export: shutdown: {e}");
        }
    }
}

/// Installs the global subscriber; RUST_LOG overrides the default `info`. Traces are exported
/// when the OTLP environment names an endpoint (see [`otlp::Settings::from_env`]), as
/// `OTEL_SERVICE_NAME` or else `default_service`. Fails on a malformed OTLP setting.
pub fn init(format: LogFormat, default_service: &str) -> anyhow::Result<Telemetry> {
    let provider = otlp::Settings::from_env(default_service)?.map(|s| s.provider()).transpose()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn"));
    let traces = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("team-operator")));
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).init(),
    }
    if let Some(endpoint) = provider.as_ref().and(otlp::endpoint_from_env()) {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}
