//! Prometheus metrics: requests by route and status, a latency histogram, and, read at scrape
//! time, the cache counters of the core, the pools' occupancy and the client connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::Request;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};
use userstack_core::UserService;

use crate::serve::Connections;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Occupancy of one connection pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSample {
    pub pool: &'static str,
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

/// The batches of one kind of request an adapter sends to its store together (see
/// `userstack_storage_pg::BatchCounts`): `jobs / batches` is their mean size.
#[derive(Debug, Clone, Copy)]
pub struct BatchSample {
    pub kind: &'static str,
    pub batches: u64,
    pub jobs: u64,
}

/// What the adapters report at scrape time.
#[derive(Debug, Default)]
pub struct AdapterSample {
    pub pools: Vec<PoolSample>,
    pub batches: Vec<BatchSample>,
}

/// Reads the adapters at scrape time; the wiring supplies it because only it knows them.
pub type AdapterProbe = Arc<dyn Fn() -> AdapterSample + Send + Sync>;

/// The registry and the request metrics; shared by the middleware and the `/metrics` handler.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Metrics {
    /// Metrics of `service`, its `adapters` and the public listener's `connections`.
    pub fn new(
        service: UserService,
        adapters: AdapterProbe,
        connections: Arc<Connections>,
    ) -> Self {
        let mut registry = Registry::with_prefix("userstack");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms to ~4 s: a cache hit sits at the bottom, a timeout at the top.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00025, 2.0, 15,
            ))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by method and route",
            latency.clone(),
        );
        registry.register_collector(Box::new(ScrapeTime {
            service,
            adapters,
            connections,
        }));
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Values that live elsewhere and are read when scraped.
struct ScrapeTime {
    service: UserService,
    adapters: AdapterProbe,
    connections: Arc<Connections>,
}

impl std::fmt::Debug for ScrapeTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeTime")
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.service.cache_stats();
        let mut cache = encoder.encode_descriptor(
            "cache_operations",
            "Cache reads by result (memory_hit: from this process's memory; hit: from Redis; miss: \
             loaded from PostgreSQL; shared: a miss answered by the load of the same key in flight; \
             expired: an entry past its TTL served from memory because its refresh failed; bypass) \
             and failed cache calls (error)",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in [
            ("memory_hit", stats.local_hits),
            ("hit", stats.hits),
            ("miss", stats.misses),
            ("shared", stats.shared),
            ("expired", stats.expired),
            ("bypass", stats.bypassed),
            ("error", stats.errors),
        ] {
            ConstCounter::new(value).encode(cache.encode_family(&[("result", result)])?)?;
        }
        let memory = encoder.encode_descriptor(
            "cache_memory_bytes",
            "Bytes of cached users and pages held in this process's memory (LOCAL_CACHE_BYTES)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(stats.local_bytes as i64).encode(memory)?;

        let mut connections = encoder.encode_descriptor(
            "http_connections",
            "Open client connections of the public listener, by state (parked: idle, without \
             hyper's buffers; see PARK_IDLE_ABOVE)",
            None,
            MetricType::Gauge,
        )?;
        let (open, parked) = (self.connections.open(), self.connections.parked());
        for (state, value) in [("active", open.saturating_sub(parked)), ("parked", parked)] {
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                .encode(connections.encode_family(&[("state", state)])?)?;
        }

        let AdapterSample { pools, batches } = (self.adapters)();
        for (name, help, value) in [
            (
                "pool_connections",
                "Open connections, by pool",
                (|s: &PoolSample| s.connections) as fn(&PoolSample) -> u32,
            ),
            ("pool_idle_connections", "Idle connections, by pool", |s| {
                s.idle
            }),
            (
                "pool_max_connections",
                "Configured maximum connections, by pool",
                |s| s.max,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for sample in &pools {
                ConstGauge::new(i64::from(value(sample)))
                    .encode(family.encode_family(&[("pool", sample.pool)])?)?;
            }
        }

        for (name, help, value) in [
            (
                "db_batches",
                "Batches of requests sent to the database together, by kind (create, user, page)",
                (|s: &BatchSample| s.batches) as fn(&BatchSample) -> u64,
            ),
            (
                "db_batched_jobs",
                "Requests those batches served, by kind; divided by db_batches, the mean batch size",
                |s| s.jobs,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for sample in &batches {
                ConstCounter::new(value(sample))
                    .encode(family.encode_family(&[("kind", sample.kind)])?)?;
            }
        }
        Ok(())
    }
}

/// Counts and times every request under its route template (`/users/{id}`, not `/users/42`),
/// so label cardinality stays bounded whatever clients send. A tower layer rather than
/// `axum::middleware::from_fn`, which clones and boxes the inner service and boxes a future for
/// every request.
#[derive(Debug, Clone)]
pub(crate) struct TrackLayer(pub(crate) Arc<Metrics>);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Track<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Before the inner call: the layers inside may do their work in `call`, not in the future.
        let started = Instant::now();
        let labels = RouteLabels {
            method: request.method().as_str().to_owned(),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str)
                .to_owned(),
        };
        Tracked {
            inner: self.inner.call(request),
            started,
            labels: Some(labels),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response, recorded when it is ready.
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        started: Instant,
        labels: Option<RouteLabels>,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(labels)) = (&result, this.labels.take()) {
            this.metrics
                .latency
                .get_or_create(&labels)
                .observe(this.started.elapsed().as_secs_f64());
            this.metrics
                .requests
                .get_or_create(&RequestLabels {
                    method: labels.method,
                    route: labels.route,
                    status: response.status().as_u16(),
                })
                .inc();
        }
        Poll::Ready(result)
    }
}
