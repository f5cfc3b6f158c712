//! The gate every routed request passes: admission (a bound on requests in flight, beyond which
//! the node answers 503 `overloaded` at once instead of queueing) and the request metrics
//! (count and latency by route template, method and status).
//!
//! One hand-written layer instead of a stack of generic ones: axum clones a route's whole
//! service stack for every request, and boxed middleware allocates each time; this gate clones
//! one `Arc` and its future lives inline in the response future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::extract::Request;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::Layer;
use tower::Service;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Admission and metrics for every route of one node.
#[derive(Clone)]
pub struct GateLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
}

impl Shared {
    fn observe(&self, route: &str, method: &Method, status: StatusCode, start: Instant) {
        let m = &self.metrics;
        m.http_duration.with_label_values(&[route, method.as_str()]).observe(start.elapsed().as_secs_f64());
        m.http_requests.with_label_values(&[route, method.as_str(), status.as_str()]).inc();
    }
}

/// The answer to a request beyond the in-flight limit.
pub fn overloaded() -> Response {
    ApiError::unavailable("overloaded", "too many requests in flight on this node; retry shortly").into_response()
}

impl GateLayer {
    pub fn new(metrics: Arc<Metrics>, max_in_flight: usize) -> Self {
        GateLayer { shared: Arc::new(Shared { metrics, in_flight: AtomicUsize::new(0), max_in_flight }) }
    }

    /// Admit one request: `None` when `max_in_flight` are already being served.
    pub fn admit(&self) -> Option<Admission> {
        Admission::enter(&self.shared)
    }

    /// Count and time one answered request under its route template.
    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, start: Instant) {
        self.shared.observe(route, method, status, start);
    }

    /// Requests admitted and not yet answered.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, shared: self.shared.clone() }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Both are cheap clones (a shared string and a method enum), not fresh allocations.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        let start = Instant::now();
        let admitted = Admission::enter(&self.shared);
        let inner = admitted.as_ref().map(|_| self.inner.call(req));
        GateFuture { inner, admitted, shared: self.shared.clone(), route, method, start }
    }
}

/// One admitted request: counted in flight until dropped (answered, failed or abandoned).
pub struct Admission {
    shared: Arc<Shared>,
}

impl Admission {
    fn enter(shared: &Arc<Shared>) -> Option<Admission> {
        let before = shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= shared.max_in_flight {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission { shared: shared.clone() })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    pub struct GateFuture<F> {
        // `None` when the request was not admitted.
        #[pin]
        inner: Option<F>,
        admitted: Option<Admission>,
        shared: Arc<Shared>,
        route: Option<MatchedPath>,
        method: Method,
        start: Instant,
    }
}

impl<F> Future for GateFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match this.inner.as_pin_mut() {
            Some(fut) => match fut.poll(cx) {
                Poll::Ready(Ok(resp)) => resp,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            None => overloaded(),
        };
        // Answered: no longer in flight.
        this.admitted.take();
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        this.shared.observe(route, this.method, resp.status(), *this.start);
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::StatusCode;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;

    use super::*;

    /// A route that answers 200 once `release` hands it a permit.
    fn held_route(
        release: Arc<Semaphore>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
        tower::service_fn(move |_req: Request| {
            let release = release.clone();
            async move {
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
                Ok::<_, Infallible>(StatusCode::OK.into_response())
            }
        })
    }

    fn request() -> Request {
        Request::builder().uri("/v1/kv/a").body(Body::empty()).expect("a valid request")
    }

    async fn body_code(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 4096).await.expect("a readable body");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        json["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn beyond_the_limit_requests_are_shed_at_once_and_slots_come_back() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let gate = GateLayer::new(metrics.clone(), 2);
        let release = Arc::new(Semaphore::new(0));
        let svc = gate.layer(held_route(release.clone()));

        let first = tokio::spawn(svc.clone().oneshot(request()));
        let second = tokio::spawn(svc.clone().oneshot(request()));
        for _ in 0..200 {
            if gate.in_flight() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.in_flight(), 2);

        // A third request is answered at once, without waiting for a slot.
        let shed = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(request()))
            .await
            .expect("answered without waiting")
            .expect("infallible");
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(body_code(shed).await, "overloaded");
        assert_eq!(gate.in_flight(), 2, "a shed request takes no slot");

        release.add_permits(2);
        for handle in [first, second] {
            let resp = handle.await.expect("task").expect("infallible");
            assert_eq!(resp.status(), StatusCode::OK);
        }
        assert_eq!(gate.in_flight(), 0);

        // Counted by status, under "unmatched" (no router put a route template here).
        let ok = metrics.http_requests.with_label_values(&["unmatched", "GET", "200"]).get();
        let unavailable = metrics.http_requests.with_label_values(&["unmatched", "GET", "503"]).get();
        assert_eq!((ok, unavailable), (2, 1));
        assert_eq!(metrics.http_duration.with_label_values(&["unmatched", "GET"]).get_sample_count(), 3);
    }

    #[tokio::test]
    async fn an_abandoned_request_gives_its_slot_back() {
        let gate = GateLayer::new(Arc::new(Metrics::new().expect("metrics")), 1);
        let release = Arc::new(Semaphore::new(0));
        let svc = gate.layer(held_route(release.clone()));
        // The client goes away before the answer: the future is dropped unfinished.
        let waited = tokio::time::timeout(Duration::from_millis(20), svc.clone().oneshot(request())).await;
        assert!(waited.is_err(), "the route was still holding the request");
        assert_eq!(gate.in_flight(), 0);
        release.add_permits(1);
        let resp = svc.oneshot(request()).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
