//! A bound on the controller's API requests in flight at once: kube's client has no limit of
//! its own, and every request in flight holds one HTTP/1.1 connection (TLS state and buffers)
//! of the client's pool, where it stays idle for 90 s after. A fleet's burst (a thousand Teams
//! applied at once, each reconciled at once while the API server answers in seconds) opened
//! about 440 connections, a third of the operator's memory (README, Performance, P4); the
//! limit keeps it to [`API_IN_FLIGHT`] and queues the rest in the client's buffer, in order.
//!
//! A request holds its place until its response's head arrives, so a watch, whose body streams
//! on, does not keep one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// API requests in flight at most: the admission's 32 pod creates and 32 status writes, and
/// the reconcilers' writes beside them.
pub const API_IN_FLIGHT: usize = 96;

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// The layer that bounds the requests in flight of the client built with it to `limit`.
pub fn layer(limit: usize) -> InFlightLayer {
    InFlightLayer(Arc::new(Semaphore::new(limit)))
}

pub struct InFlightLayer(Arc<Semaphore>);

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight { inner, places: self.0.clone(), permit: None, acquiring: None }
    }
}

/// A service that is ready only once it holds a place; the place goes with the request.
pub struct InFlight<S> {
    inner: S,
    places: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquire>,
}

impl<S, R> Service<R> for InFlight<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.permit.is_none() {
            let places = self.places.clone();
            let acquiring = self.acquiring.get_or_insert_with(|| Box::pin(async move { places.acquire_owned().await.ok() }));
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    self.acquiring = None;
                    // The semaphore is never closed; were it, requests would go unbounded.
                    self.permit = permit;
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let permit = self.permit.take();
        let response = self.inner.call(request);
        Box::pin(async move {
            let out = response.await;
            drop(permit);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::ServiceExt;

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
