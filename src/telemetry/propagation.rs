//! W3C trace context (`traceparent`) in and out of spans: read from an incoming HTTP request,
//! written into a message when it is sent and read back when it is received, so a lead's
//! send_message and the member's wait_messages join one trace. Without trace export every span
//! context is invalid, so nothing is written and what is read changes nothing.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and message field) name of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, when it is being traced.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The remote context a `traceparent` names; None when it is malformed.
pub fn context_of(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    remote(&carrier)
}

/// Makes `span` a child of the context in the request's `traceparent` (and `tracestate`)
/// headers, when they carry a valid one.
pub fn adopt_http_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if let Some(cx) = remote(&Headers(headers)) {
        // Fails only when the span is not traced (export off), where there is nothing to join.
        let _ = span.set_parent(cx);
    }
}

fn remote(carrier: &dyn Extractor) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Request headers as a propagation carrier.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_names_its_trace() {
        let cx = context_of(VALID).expect("valid");
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(cx.span().span_context().is_remote());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-zzzzzzzzzzzzzzzz-01",
        ] {
            assert!(context_of(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn headers_are_read_case_insensitively() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("TraceParent", VALID.parse().unwrap());
        assert!(remote(&Headers(&headers)).is_some());
    }

    #[test]
    fn nothing_is_written_when_nothing_is_traced() {
        assert_eq!(current_traceparent(), None);
    }
}
