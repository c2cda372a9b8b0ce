//! A bound on the controller's API requests in flight at once: kube's client has no limit of
//! its own, and every request in flight holds one HTTP/1.1 connection (TLS state and buffers)
//! of the client's pool, where it stays idle for 90 s after. A fleet's burst (a thousand Teams
//! applied at once, each reconciled at once while the API server answers in seconds) opened
//! about 440 connections, a third of the operator's memory (README, Performance, P4); the
//! limit keeps it to [`API_IN_FLIGHT`] and queues the rest in the client's buffer, in order.
//!
//! A request holds its place until its response's head arrives, so a watch, whose body streams
//! on, does not keep one.

use tower::limit::GlobalConcurrencyLimitLayer;

/// API requests in flight at most: the admission's 32 pod creates and 32 status writes, and
/// the reconcilers' writes beside them.
pub const API_IN_FLIGHT: usize = 96;

/// The layer that bounds the requests in flight of the client built with it to `limit`:
/// tower's concurrency limit, whose place goes with the response future (so a watch frees its
/// place once its head arrives), over one semaphore for every service the layer makes.
pub fn layer(limit: usize) -> GlobalConcurrencyLimitLayer {
    GlobalConcurrencyLimitLayer::new(limit)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use std::sync::Arc;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn no_more_than_the_limit_are_in_flight_and_the_rest_run_after() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let slow = tower::service_fn(move |i: usize| {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(in_flight, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok::<usize, std::convert::Infallible>(i)
            }
        });
        let mut service = layer(3).layer(slow);
        let mut calls = Vec::new();
        for i in 0..20 {
            // Ready only once a place is free: the fourth waits for the first to answer.
            let call = service.ready().await.expect("ready").call(i);
            calls.push(tokio::spawn(call));
        }
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.expect("joined").expect("answered"));
        }
        assert_eq!(out, (0..20).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3, "three at a time, each one's place freed when it answered");
    }
}
