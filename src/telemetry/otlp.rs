//! The OTLP trace exporter, configured by the standard OpenTelemetry environment variables and
//! off unless one of them names an endpoint.
//!
//! | variable | meaning |
//! |----------|---------|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the full URL traces are POSTed to (`…/v1/traces`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector's base URL; `/v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | only `http/protobuf` (the default) is spoken |
//! | `OTEL_TRACES_EXPORTER` | `none` turns export off; `otlp` (the default) keeps it |
//! | `OTEL_SERVICE_NAME` | `service.name`; default `team-operator-controller` or `-gateway` |
//!
//! The SDK reads the rest itself (`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`). Export is plain HTTP: this build's HTTP client for OTLP has no
//! TLS, so an `https://` endpoint is refused at start rather than failing every export; send to
//! a collector in the cluster (or a node-local agent) that forwards over TLS.

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// Where traces go and under which service name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The URL spans are POSTed to.
    pub traces_url: String,
    pub service_name: String,
}

impl Settings {
    /// From the process environment; None when no endpoint is set (or export is `none`).
    pub fn from_env(default_service: &str) -> anyhow::Result<Option<Settings>> {
        Self::from_vars(|name| std::env::var(name).ok(), default_service)
    }

    /// From the variables `get` returns (empty counts as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, default_service: &str) -> anyhow::Result<Option<Settings>> {
        let var = |name| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        match var(EXPORTER).as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => anyhow::bail!("{EXPORTER}={other:?}: only \"otlp\" or \"none\" are supported"),
        }
        let (source, traces_url) = match (var(TRACES_ENDPOINT), var(ENDPOINT)) {
            (Some(url), _) => (TRACES_ENDPOINT, url),
            (None, Some(base)) => (ENDPOINT, format!("{}/v1/traces", base.trim_end_matches('/'))),
            (None, None) => return Ok(None),
        };
        if let Some(p) = var(PROTOCOL).filter(|p| p != "http/protobuf") {
            anyhow::bail!("{PROTOCOL}={p:?}: only \"http/protobuf\" is supported (OTLP over HTTP, no gRPC)");
        }
        if !traces_url.starts_with("http://") {
            anyhow::bail!(
                "{source}={traces_url:?}: must be an http:// URL (OTLP/HTTP without TLS); send to a collector in the cluster that forwards over TLS"
            );
        }
        let service_name = var(SERVICE_NAME).unwrap_or_else(|| default_service.to_owned());
        Ok(Some(Settings { traces_url, service_name }))
    }

    /// A tracer provider exporting in batches (the batch processor runs on its own thread).
    pub fn provider(&self) -> anyhow::Result<SdkTracerProvider> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.traces_url.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP trace exporter: {e}"))?;
        let resource = Resource::builder().with_service_name(self.service_name.clone()).build();
        Ok(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build())
    }
}

/// The endpoint variable that is set, for the start-up log line.
pub(super) fn endpoint_from_env() -> Option<String> {
    [TRACES_ENDPOINT, ENDPOINT].into_iter().find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<Settings>> {
        Settings::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()), "team-operator-gateway")
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[(ENDPOINT, " ")]).unwrap(), None);
        assert_eq!(settings(&[(ENDPOINT, "http://c:4318"), (EXPORTER, "none")]).unwrap(), None);
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_kept() {
        let s = settings(&[(ENDPOINT, "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(s, Settings { traces_url: "http://collector:4318/v1/traces".into(), service_name: "team-operator-gateway".into() });
        let s = settings(&[(ENDPOINT, "http://a:1"), (TRACES_ENDPOINT, "http://b:2/x"), (SERVICE_NAME, "gw-eu")]).unwrap().unwrap();
        assert_eq!((s.traces_url.as_str(), s.service_name.as_str()), ("http://b:2/x", "gw-eu"));
    }

    #[test]
    fn what_is_not_spoken_is_refused_naming_the_variable() {
        let e = settings(&[(ENDPOINT, "https://c:4318")]).unwrap_err().to_string();
        assert!(e.contains(ENDPOINT) && e.contains("http://"), "{e}");
        let e = settings(&[(ENDPOINT, "http://c:4317"), (PROTOCOL, "grpc")]).unwrap_err().to_string();
        assert!(e.contains(PROTOCOL) && e.contains("http/protobuf"), "{e}");
        let e = settings(&[(ENDPOINT, "http://c:4318"), (EXPORTER, "zipkin")]).unwrap_err().to_string();
        assert!(e.contains(EXPORTER), "{e}");
    }
}
