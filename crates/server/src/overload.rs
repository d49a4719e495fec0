//! Load shedding: at most `MAX_IN_FLIGHT` requests are handled at once; past it a request is
//! answered `503` with `Retry-After` at once. A queue in front of a saturated server only turns
//! every request into a slow one (and, past the request timeout, into a failed one); a fast
//! refusal lets clients and load balancers go elsewhere or come back.
//!
//! A tower layer rather than `axum::middleware::from_fn`: that clones and boxes the inner
//! service and boxes a future for every request, which this layer, on every request's path,
//! does not need.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::error::ApiError;

/// Probes must answer however loaded the server is: a liveness probe shed under load would get
/// a busy replica restarted, and metrics are how an operator sees the overload.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The in-flight request budget shared by every connection of one listener.
#[derive(Debug, Clone)]
pub(crate) struct ShedLayer(Arc<Semaphore>);

impl ShedLayer {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit.max(1))))
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            budget: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Shed<S> {
    inner: S,
    budget: Arc<Semaphore>,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = axum::http::Response<B>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let permit = if EXEMPT.contains(&request.uri().path()) {
            None
        } else {
            match self.budget.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Admitted::refused(),
            }
        };
        Admitted::Yes {
            inner: self.inner.call(request),
            _permit: permit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of an admitted request, its permit held until the response head; or the
    /// refusal.
    #[project = AdmittedProj]
    pub(crate) enum Admitted<F> {
        Yes { #[pin] inner: F, _permit: Option<OwnedSemaphorePermit> },
        No { response: Option<Response> },
    }
}

impl<F> Admitted<F> {
    fn refused() -> Self {
        Self::No {
            response: Some(ApiError::overloaded().into_response()),
        }
    }
}

impl<F, B, E> Future for Admitted<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Yes { inner, .. } => {
                Poll::Ready(Ok(ready!(inner.poll(cx))?.map(Body::new)))
            }
            AdmittedProj::No { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}
