//! The key routes served straight from hyper: `GET`, `PUT` and `DELETE /v1/kv/<key>` with no
//! percent-escapes in the key and no query string (a `GET` may have `?consistency=<level>`),
//! which is nearly every request a busy node sees. They skip the router's matching, its extractors (which copy the header map and parse an
//! empty query into a map) and its per-request layers, and run the same handlers as the routed
//! requests (`kv::read_key`, `kv::write_key`, `kv::remove_key`), with the same checks, value
//! limit, body timeout, admission and metrics. Every other request goes to the axum router.

use std::convert::Infallible;
use std::future::Future;
use std::future::poll_fn;
use std::pin::Pin;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::http::Method;
use axum::http::Request;
use axum::response::IntoResponse;
use axum::response::Response;
use http_body_util::BodyExt;
use http_body_util::LengthLimitError;
use http_body_util::Limited;
use hyper::body::Body as _;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::AppState;
use super::gate::GateLayer;
use super::gate::overloaded;
use super::kv;
use crate::error::ApiError;
use crate::service::Consistency;

/// The key route's template: the router's route, and the label the direct requests are counted under.
pub const KEY_ROUTE: &str = "/v1/kv/{*key}";
const KEY_PREFIX: &str = "/v1/kv/";

/// How long a client may take to send a request body, here and in the router.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The hyper service of every HTTP connection: direct key requests, or the router.
#[derive(Clone)]
pub struct NodeService(Arc<Shared>);

struct Shared {
    router: Router,
    state: AppState,
    gate: GateLayer,
}

impl NodeService {
    pub fn new(router: Router, state: AppState, gate: GateLayer) -> Self {
        NodeService(Arc::new(Shared { router, state, gate }))
    }
}

impl hyper::service::Service<Request<Incoming>> for NodeService {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        match direct_key(&req) {
            Some((key, consistency)) => {
                let shared = self.0.clone();
                Box::pin(async move { Ok(shared.serve_key(key, consistency, req).await) })
            }
            None => Box::pin(self.0.router.clone().oneshot(req.map(Body::new))),
        }
    }
}

/// The key of a request this module serves itself, with the `consistency` parameter's value
/// for a `GET`; `None` for a request for the router.
fn direct_key<B>(req: &Request<B>) -> Option<(String, Option<String>)> {
    let consistency = match (req.method(), req.uri().query()) {
        (&Method::GET | &Method::PUT | &Method::DELETE, None) => None,
        // Anything that needs decoding, or another parameter, is the router's to parse.
        (&Method::GET, Some(query)) => match query.strip_prefix("consistency=") {
            Some(level) if !level.contains(['%', '+', '&', '=']) => Some(level.to_string()),
            _ => return None,
        },
        _ => return None,
    };
    let key = req.uri().path().strip_prefix(KEY_PREFIX)?;
    // The router decodes escapes (and answers an empty key); leave both to it.
    (!key.is_empty() && !key.contains('%')).then(|| (key.to_string(), consistency))
}

impl Shared {
    async fn serve_key(&self, key: String, consistency: Option<String>, req: Request<Incoming>) -> Response {
        let start = Instant::now();
        let method = req.method().clone();
        let resp = match self.gate.admit() {
            None => overloaded(),
            Some(_in_flight) => {
                let (parts, body) = req.into_parts();
                let state = &self.state;
                let answer = match parts.method {
                    Method::GET => match consistency.as_deref().map_or(Ok(Consistency::Linearizable), str::parse) {
                        Ok(consistency) => kv::read_key(state, key, consistency).await,
                        Err(e) => Err(e),
                    },
                    Method::PUT => {
                        let value = read_value(state, body).await;
                        kv::write_key(state, key, None, &parts.headers, value).await
                    }
                    _ => kv::remove_key(state, key, &parts.headers).await,
                };
                answer.into_response()
            }
        };
        self.gate.observe(KEY_ROUTE, &method, resp.status(), start);
        resp
    }
}

/// The whole body of a PUT, within the value limit and the body timeout.
async fn read_value(state: &AppState, body: Incoming) -> Result<Bytes, ApiError> {
    let limit = state.cfg.max_value_bytes;
    // A declared length over the limit is refused before anything is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(kv::value_too_large(state));
    }
    match within(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Some(Ok(collected)) => Ok(collected.to_bytes()),
        Some(Err(e)) if e.is::<LengthLimitError>() => Err(kv::value_too_large(state)),
        Some(Err(e)) => Err(ApiError::bad_request("invalid_body", format!("failed to read the request body: {e}"))),
        None => Err(ApiError::bad_request(
            "invalid_body",
            format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
        )),
    }
}

/// `fut`'s output, or `None` once `limit` has passed. The timer is armed only if `fut` is still
/// pending when polled a second time: a body that came with the request head (nearly all of
/// them) is complete by then, and costs no timer.
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut timer = pin!(None::<tokio::time::Sleep>);
    let mut pending = 0u32;
    poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        pending += 1;
        if pending == 1 {
            // Come back once the connection has had its turn to read what already arrived.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep(limit)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).expect("a valid request")
    }

    #[test]
    fn only_plain_key_requests_are_served_directly() {
        let direct = |method, uri| direct_key(&request(method, uri));
        assert_eq!(direct(Method::PUT, "/v1/kv/a/b"), Some(("a/b".to_string(), None)));
        assert_eq!(direct(Method::GET, "/v1/kv/k"), Some(("k".to_string(), None)));
        assert_eq!(direct(Method::DELETE, "/v1/kv/k"), Some(("k".to_string(), None)));
        assert_eq!(direct(Method::GET, "/v1/kv/k?consistency=stale"), Some(("k".to_string(), Some("stale".into()))));
        // Parsed (and refused) by the handler, as the router's would.
        assert_eq!(direct(Method::GET, "/v1/kv/k?consistency=odd"), Some(("k".to_string(), Some("odd".into()))));
        for (method, uri) in [
            (Method::GET, "/v1/kv/k?consistency=st%61le"),
            (Method::GET, "/v1/kv/k?consistency=stale&x=1"),
            (Method::GET, "/v1/kv/k?consistency=a=b"),
            (Method::GET, "/v1/kv/k?other=1"),
            (Method::GET, "/v1/kv/k?"),
            (Method::PUT, "/v1/kv/k?consistency=stale"),
            (Method::PUT, "/v1/kv/k?ttl=5"),
            (Method::GET, "/v1/kv/a%20b"),
            (Method::GET, "/v1/kv/"),
            (Method::GET, "/v1/kv"),
            (Method::POST, "/v1/kv/k"),
            (Method::HEAD, "/v1/kv/k"),
            (Method::GET, "/v1/cluster"),
            (Method::GET, "/v1/kvx/k"),
        ] {
            assert_eq!(direct_key(&request(method.clone(), uri)), None, "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn within_answers_at_once_or_after_the_limit() {
        assert_eq!(within(Duration::from_secs(5), async { 7 }).await, Some(7));
        // Ready on the second poll: no timer needed, and none fires.
        let mut polled = 0;
        let twice = poll_fn(|cx| {
            polled += 1;
            if polled == 2 {
                return Poll::Ready(2);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!(within(Duration::from_millis(1), twice).await, Some(2));
        // Never ready: the timer ends it.
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(20), never).await, None);
    }
}
