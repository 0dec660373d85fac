//! Prometheus metrics of one node: Raft progress, heartbeat ingest, HTTP
//! traffic, the fleet by state and the job queues (computed at scrape time),
//! job claim latency and the job group commit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use model::state::worker::heartbeat_state;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::AppState;

pub struct Metrics {
    registry: Registry,
    pub heartbeats_received: IntCounter,
    pub heartbeat_batch_size: Histogram,
    pub heartbeat_commit_seconds: Histogram,
    pub heartbeats_abandoned: IntCounter,
    pub heartbeats_stale: IntCounter,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    raft_term: IntGauge,
    raft_is_leader: IntGauge,
    raft_last_log_index: IntGauge,
    raft_applied_index: IntGauge,
    raft_apply_lag: IntGauge,
    workers_heartbeat: IntGaugeVec,
    workers_desired: IntGaugeVec,
    workers_quarantined: IntGauge,
    loop_panics: IntCounterVec,
    loop_runs: IntCounterVec,
    /// Time from a claim's arrival to its answer with jobs (long polls included).
    pub job_claim_seconds: Histogram,
    job_batch_size: Histogram,
    job_commit_seconds: Histogram,
    job_ops_abandoned: IntCounter,
    jobs_by_state: IntGaugeVec,
    jobs_oldest_queued: GaugeVec,
    /// Cluster-wide totals from the replicated state, by event.
    job_events: IntCounterVec,
    /// Build jobs kept, by state; the build queue's depth; cache reports.
    farm_builds: IntGaugeVec,
    farm_queue_depth: IntGauge,
    farm_cache: IntCounterVec,
    /// Build events kept, by kind.
    farm_events: IntGaugeVec,
    /// Finished worker triggers by kind and result; those still pending.
    farm_triggers: IntCounterVec,
    farm_triggers_pending: IntGauge,
}

/// Queues given their own series; the rest are summed into `other`, so a
/// producer inventing queue names cannot blow up the scrape.
const MAX_QUEUE_SERIES: usize = 100;

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique and valid");
    c
}

impl Metrics {
    pub fn new(node_id: u64) -> Self {
        let labels = std::collections::HashMap::from([("node_id".to_string(), node_id.to_string())]);
        let r = Registry::new_custom(Some("engine_room".into()), Some(labels)).expect("valid registry prefix");
        let latency = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Self {
            heartbeats_received: register(
                &r,
                IntCounter::new("heartbeats_received_total", "Heartbeats received").unwrap(),
            ),
            heartbeat_batch_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("heartbeat_batch_size", "Heartbeats per Raft entry")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
                )
                .unwrap(),
            ),
            heartbeat_commit_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("heartbeat_commit_seconds", "Time to commit and apply a heartbeat batch")
                        .buckets(latency.clone()),
                )
                .unwrap(),
            ),
            heartbeats_abandoned: register(
                &r,
                IntCounter::new(
                    "heartbeats_abandoned_total",
                    "Heartbeats not proposed, or no longer retried, because every caller had given up",
                )
                .unwrap(),
            ),
            heartbeats_stale: register(
                &r,
                IntCounter::new(
                    "heartbeats_stale_total",
                    "Heartbeats answered stale: their seq was not above the worker's recorded one",
                )
                .unwrap(),
            ),
            http_requests: register(
                &r,
                IntCounterVec::new(Opts::new("http_requests_total", "HTTP requests"), &["route", "method", "status"])
                    .unwrap(),
            ),
            http_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("http_request_seconds", "HTTP request latency").buckets(latency.clone()),
                    &["route", "method"],
                )
                .unwrap(),
            ),
            raft_term: register(&r, IntGauge::new("raft_term", "Current Raft term").unwrap()),
            raft_is_leader: register(&r, IntGauge::new("raft_is_leader", "1 if this node leads").unwrap()),
            raft_last_log_index: register(&r, IntGauge::new("raft_last_log_index", "Last log index").unwrap()),
            raft_applied_index: register(&r, IntGauge::new("raft_applied_index", "Last applied index").unwrap()),
            raft_apply_lag: register(&r, IntGauge::new("raft_apply_lag", "Log entries not yet applied").unwrap()),
            workers_heartbeat: register(
                &r,
                IntGaugeVec::new(Opts::new("workers_by_heartbeat_state", "Workers by heartbeat state"), &["state"])
                    .unwrap(),
            ),
            workers_desired: register(
                &r,
                IntGaugeVec::new(Opts::new("workers_by_desired_state", "Workers by desired state"), &["state"])
                    .unwrap(),
            ),
            workers_quarantined: register(&r, IntGauge::new("workers_quarantined", "Quarantined workers").unwrap()),
            loop_panics: register(
                &r,
                IntCounterVec::new(
                    Opts::new("loop_panics_total", "Panics of a supervised loop (each restarted)"),
                    &["loop"],
                )
                .unwrap(),
            ),
            loop_runs: register(
                &r,
                IntCounterVec::new(Opts::new("loop_runs_total", "Rounds a supervised loop completed"), &["loop"])
                    .unwrap(),
            ),
            job_claim_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("job_claim_seconds", "Time from a claim's arrival to its answer with jobs")
                        .buckets(vec![
                            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        ]),
                )
                .unwrap(),
            ),
            job_batch_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("job_batch_size", "Job operations per Raft entry")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
                )
                .unwrap(),
            ),
            job_commit_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("job_commit_seconds", "Time to commit and apply a batch of job operations")
                        .buckets(latency.clone()),
                )
                .unwrap(),
            ),
            job_ops_abandoned: register(
                &r,
                IntCounter::new(
                    "job_ops_abandoned_total",
                    "Job operations not proposed, or no longer retried, because every caller had given up",
                )
                .unwrap(),
            ),
            jobs_by_state: register(
                &r,
                IntGaugeVec::new(Opts::new("jobs_by_state", "Jobs kept, by queue and state"), &["queue", "state"])
                    .unwrap(),
            ),
            jobs_oldest_queued: register(
                &r,
                GaugeVec::new(
                    Opts::new("jobs_oldest_queued_seconds", "Age of the oldest job claimable now, by queue"),
                    &["queue"],
                )
                .unwrap(),
            ),
            job_events: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "job_events_total",
                        "Claims, completions, failures, lease expirations and dead letters, cluster-wide",
                    ),
                    &["event"],
                )
                .unwrap(),
            ),
            farm_builds: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("farm_builds", "Builds (jobs of the build queue) kept, by state"),
                    &["state"],
                )
                .unwrap(),
            ),
            farm_queue_depth: register(
                &r,
                IntGauge::new("farm_queue_depth", "Builds queued or waiting for a retry").unwrap(),
            ),
            farm_cache: register(
                &r,
                IntCounterVec::new(
                    Opts::new("farm_cache_total", "Build cache hits and misses the workers reported, cluster-wide"),
                    &["result"],
                )
                .unwrap(),
            ),
            farm_events: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("farm_build_events", "Build events kept (30 days at most), by kind"),
                    &["kind"],
                )
                .unwrap(),
            ),
            farm_triggers: register(
                &r,
                IntCounterVec::new(
                    Opts::new("farm_triggers_total", "Worker triggers and smoke runs finished, by kind and outcome"),
                    &["kind", "outcome"],
                )
                .unwrap(),
            ),
            farm_triggers_pending: register(
                &r,
                IntGauge::new("farm_triggers_pending", "Worker triggers waiting for an outcome").unwrap(),
            ),
            registry: r,
        }
    }

    /// Build-farm gauges and totals from the applied state.
    fn render_farm(&self, state: &AppState) {
        use model::state::farm::{EventKind, TriggerKind, TriggerResult, BUILD_QUEUE};
        let stats = crate::routes::job_queue::stats(state);
        let build = stats.queues.iter().map(|q| &q.stats).find(|q| q.queue == BUILD_QUEUE);
        let l = build.map(|q| q.length.clone()).unwrap_or_default();
        for (s, n) in by_state(&l) {
            self.farm_builds.with_label_values(&[s]).set(n as i64);
        }
        self.farm_queue_depth.set((l.queued + l.failed) as i64);
        let applied = state.cluster.state.read();
        let farm = &applied.state.farm;
        for (result, total) in [("hit", farm.cache.hits), ("miss", farm.cache.misses)] {
            let c = self.farm_cache.with_label_values(&[result]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        let mut kinds = std::collections::BTreeMap::new();
        for e in &farm.events {
            *kinds.entry(e.kind.as_str()).or_insert(0i64) += 1;
        }
        for k in [
            EventKind::Queued,
            EventKind::Started,
            EventKind::Succeeded,
            EventKind::Failed,
            EventKind::Retried,
            EventKind::Cancelled,
        ] {
            self.farm_events.with_label_values(&[k.as_str()]).set(kinds.get(k.as_str()).copied().unwrap_or(0));
        }
        let t = &farm.triggers;
        for kind in [TriggerKind::Trigger, TriggerKind::Smoke] {
            for result in [TriggerResult::Succeeded, TriggerResult::Failed, TriggerResult::NotConfigured] {
                let total = t.totals.get(&(kind, result)).copied().unwrap_or(0);
                let c = self.farm_triggers.with_label_values(&[kind.as_str(), result.as_str()]);
                c.inc_by(total.saturating_sub(c.get()));
            }
        }
        self.farm_triggers_pending.set(t.pending() as i64);
    }

    /// Job gauges and totals from the applied state.
    fn render_jobs(&self, state: &AppState) {
        let stats = crate::routes::job_queue::stats(state);
        self.jobs_by_state.reset();
        self.jobs_oldest_queued.reset();
        let mut other = [0i64; 6];
        for (i, q) in stats.queues.iter().map(|q| &q.stats).enumerate() {
            for (j, (s, n)) in by_state(&q.length).into_iter().enumerate() {
                if i < MAX_QUEUE_SERIES {
                    self.jobs_by_state.with_label_values(&[q.queue.as_str(), s]).set(n as i64);
                } else {
                    other[j] += n as i64;
                }
            }
            if let Some(age) = q.oldest_queued_age_ms.filter(|_| i < MAX_QUEUE_SERIES) {
                self.jobs_oldest_queued.with_label_values(&[q.queue.as_str()]).set(age as f64 / 1000.0);
            }
        }
        if stats.queues.len() > MAX_QUEUE_SERIES {
            for (j, (s, _)) in by_state(&stats.total.stats.length).into_iter().enumerate() {
                self.jobs_by_state.with_label_values(&["other", s]).set(other[j]);
            }
        }
        let t = &stats.total.stats;
        for (event, total) in [
            ("claim", t.claims),
            ("completion", t.completions),
            ("failure", t.failures),
            ("lease_expiration", t.expirations),
            ("dead_letter", t.dead),
        ] {
            let c = self.job_events.with_label_values(&[event]);
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    /// Refresh scrape-time gauges and render the text exposition format.
    pub fn render(&self, state: &AppState) -> String {
        let report = state.cluster.report();
        self.raft_term.set(report.term as i64);
        self.raft_is_leader.set(i64::from(report.role == "leader"));
        self.raft_last_log_index.set(report.last_log_index as i64);
        self.raft_applied_index.set(report.applied_index as i64);
        self.raft_apply_lag.set(report.last_log_index.saturating_sub(report.applied_index) as i64);
        let now = raft_store::cluster::now_ms();
        let grace = state.grace_ms();
        let (mut by_hb, mut by_desired, mut quarantined) =
            (std::collections::BTreeMap::new(), std::collections::BTreeMap::new(), 0);
        {
            let applied = state.cluster.state.read();
            for w in applied.state.workers.values() {
                *by_hb.entry(heartbeat_state(Some(w.last_heartbeat_ms), now, grace)).or_insert(0i64) += 1;
                *by_desired.entry(w.desired_state.as_str()).or_insert(0i64) += 1;
                quarantined += i64::from(w.quarantined);
            }
        }
        for s in ["healthy", "stale", "none"] {
            self.workers_heartbeat.with_label_values(&[s]).set(by_hb.get(s).copied().unwrap_or(0));
        }
        for d in model::state::DesiredState::ALL {
            self.workers_desired.with_label_values(&[d.as_str()]).set(by_desired.get(d.as_str()).copied().unwrap_or(0));
        }
        self.workers_quarantined.set(quarantined);
        // The supervisor keeps the counts; the counters catch up at scrape.
        for l in state.cluster.supervisor.statuses() {
            for (counter, total) in [(&self.loop_panics, l.panics), (&self.loop_runs, l.runs)] {
                let c = counter.with_label_values(&[l.name.as_str()]);
                c.inc_by(total.saturating_sub(c.get()));
            }
        }
        self.render_jobs(state);
        self.render_farm(state);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("prometheus text format is UTF-8")
    }
}

/// Jobs of each state, under their metric label.
fn by_state(l: &model::views::StateCounts) -> [(&'static str, u64); 6] {
    [
        ("queued", l.queued),
        ("running", l.running),
        ("succeeded", l.succeeded),
        ("failed", l.failed),
        ("dead", l.dead),
        ("cancelled", l.cancelled),
    ]
}

/// Count and time every request by its route template (not the raw path).
/// A plain tower layer (see [`crate::limits`] for why): the route, method
/// and start time ride in the future, the metrics are updated when it ends.
#[derive(Clone)]
pub struct TrackHttp(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TrackHttp {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Both are reference-counted or inline: no copy per request.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        TrackedFuture {
            inner: self.inner.call(req),
            route,
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: axum::http::Method,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for TrackedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(res) = ready!(this.inner.poll(cx));
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let m = &this.metrics;
        m.http_seconds.with_label_values(&[route, this.method.as_str()]).observe(this.started.elapsed().as_secs_f64());
        m.http_requests.with_label_values(&[route, this.method.as_str(), res.status().as_str()]).inc();
        Poll::Ready(Ok(res))
    }
}

/// The heartbeat group commit reports into these metrics.
impl raft_store::group_commit::BatchObserver for Metrics {
    fn proposed(&self, heartbeats: usize) {
        self.heartbeat_batch_size.observe(heartbeats as f64);
    }

    fn committed(&self, elapsed: std::time::Duration) {
        self.heartbeat_commit_seconds.observe(elapsed.as_secs_f64());
    }

    fn abandoned(&self, heartbeats: usize) {
        self.heartbeats_abandoned.inc_by(heartbeats as u64);
    }
}

/// The job group commit reports into the `job_*` metrics.
pub struct JobCommitObserver(pub std::sync::Arc<Metrics>);

impl raft_store::group_commit::BatchObserver for JobCommitObserver {
    fn proposed(&self, ops: usize) {
        self.0.job_batch_size.observe(ops as f64);
    }

    fn committed(&self, elapsed: std::time::Duration) {
        self.0.job_commit_seconds.observe(elapsed.as_secs_f64());
    }

    fn abandoned(&self, ops: usize) {
        self.0.job_ops_abandoned.inc_by(ops as u64);
    }
}
