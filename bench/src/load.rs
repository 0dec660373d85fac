//! The load loop: C connection tasks, each one keep-alive HTTP/1.1 connection
//! to one target URL (round-robin over URLs), sharing one request counter.
//! Closed-loop: each connection sends its next request when the last is
//! answered. Fixed-rate: request i is due at start + i/rate, and its latency
//! counts from that due time. Every run stops at `--duration` or `--requests`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::report::{new_histogram, Latency, Summary};
use crate::target::{Endpoint, Target};

/// Longest run accepted, whatever `--duration` says.
pub const MAX_DURATION: Duration = Duration::from_secs(3_600);

/// Everything one run needs; see `er-bench run --help` for the meaning.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: Target,
    pub endpoints: Vec<Endpoint>,
    pub token: Option<String>,
    pub workers: u64,
    pub connections: usize,
    /// Total requests per second (fixed-rate mode); `None` is closed-loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Stop after this many requests were started (warm-up included).
    pub requests: Option<u64>,
    /// Requests started during warm-up are sent but not counted.
    pub warmup: Duration,
    pub timeout: Duration,
    /// First worker index; workers are `first_worker .. first_worker + workers`.
    pub first_worker: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// TLS for `https://` endpoints (roots: `--ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

struct Shared {
    opts: LoadOptions,
    next: AtomicU64,
    max_requests: u64,
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    ok_total: AtomicU64,
    err_total: AtomicU64,
}

#[derive(Default)]
struct ConnResult {
    hist: Option<Histogram<u64>>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    body_bytes: u64,
    bodies: u64,
    last_done: Option<Instant>,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(ep: &Endpoint, tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(ep.addr).await?;
    stream.set_nodelay(true)?;
    if !ep.tls {
        return http1(stream).await;
    }
    let config = tls.ok_or_else(|| std::io::Error::other("an https:// URL needs --ca"))?;
    let name = rustls::pki_types::ServerName::IpAddress(ep.addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream).await?;
    http1(stream).await
}

async fn http1<I>(io: I) -> std::io::Result<Sender>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `http_503:outcome_unknown` style error kind from a non-2xx answer.
fn status_kind(status: hyper::StatusCode, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_string));
    match code {
        Some(c) => format!("http_{}:{c}", status.as_u16()),
        None => format!("http_{}", status.as_u16()),
    }
}

async fn connection(shared: Arc<Shared>, idx: usize) -> ConnResult {
    let o = &shared.opts;
    let ep = &o.endpoints[idx % o.endpoints.len()];
    let mut out = ConnResult { hist: Some(new_histogram()), ..Default::default() };
    let hist = out.hist.as_mut().expect("just set");
    let mut sender: Option<Sender> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.max_requests {
            break;
        }
        let due = o.rate.map(|r| shared.start + Duration::from_secs_f64(i as f64 / r));
        if let Some(due) = due {
            if due >= shared.deadline {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        if Instant::now() >= shared.deadline {
            break;
        }
        let counted = due.unwrap_or_else(Instant::now) >= shared.measure_from;
        let fail = |kind: String, out_errors: &mut BTreeMap<String, u64>| {
            if counted {
                *out_errors.entry(kind).or_default() += 1;
                shared.err_total.fetch_add(1, Ordering::Relaxed);
            }
        };
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match tokio::time::timeout(o.timeout, connect(ep, o.tls.as_ref())).await {
                Ok(Ok(s)) => sender.insert(s),
                _ => {
                    fail("connect".into(), &mut out.errors);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let worker = o.first_worker + i % o.workers;
        let body = o.target.body(worker, i / o.workers);
        let mut req =
            hyper::Request::post(o.target.path()).header(HOST, &ep.authority).header(CONTENT_TYPE, "application/json");
        if let (Target::EngineRoom, Some(token)) = (o.target, &o.token) {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if counted {
            out.body_bytes += body.len() as u64;
            out.bodies += 1;
        }
        let req = req.body(Full::new(body)).expect("static request parts are valid");
        let sent = Instant::now();
        let answer = tokio::time::timeout(o.timeout, async {
            let res = s.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let done = Instant::now();
        match answer {
            Ok(Ok((status, _))) if status.is_success() => {
                if counted {
                    let us = done.duration_since(due.unwrap_or(sent)).as_micros() as u64;
                    hist.saturating_record(us.max(1));
                    out.ok += 1;
                    out.last_done = Some(done);
                    shared.ok_total.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Ok((status, body))) => fail(status_kind(status, &body), &mut out.errors),
            Ok(Err(_)) => {
                fail("io".into(), &mut out.errors);
                sender = None;
            }
            Err(_) => {
                fail("timeout".into(), &mut out.errors);
                sender = None;
            }
        }
    }
    out
}

async fn progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval_at(shared.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    loop {
        let now = tick.tick().await;
        let ok = shared.ok_total.load(Ordering::Relaxed);
        let phase = if now <= shared.measure_from { "warmup" } else { "measure" };
        eprintln!(
            "[{:>4.0}s {phase}] ok={ok} errors={} last_1s={}/s",
            now.duration_since(shared.start).as_secs_f64(),
            shared.err_total.load(Ordering::Relaxed),
            ok - last
        );
        last = ok;
    }
}

/// Run one bounded load and summarize it. `stop` ends it early (Ctrl-C).
pub async fn run(opts: LoadOptions, stop: Arc<AtomicBool>) -> Result<Summary, String> {
    if opts.endpoints.is_empty() {
        return Err("at least one --url is needed".into());
    }
    if opts.connections == 0 || opts.workers == 0 {
        return Err("--connections and --workers must be at least 1".into());
    }
    if opts.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    let duration = opts.duration.min(MAX_DURATION);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        max_requests: opts.requests.unwrap_or(u64::MAX),
        next: AtomicU64::new(0),
        start,
        measure_from: start + opts.warmup,
        deadline: start + opts.warmup + duration,
        stop,
        ok_total: AtomicU64::new(0),
        err_total: AtomicU64::new(0),
        opts,
    });
    let ticker = shared.opts.progress.then(|| tokio::spawn(progress(shared.clone())));
    let tasks: Vec<_> = (0..shared.opts.connections).map(|i| tokio::spawn(connection(shared.clone(), i))).collect();
    let mut hist = new_histogram();
    let (mut ok, mut errors, mut bytes, mut bodies) = (0, BTreeMap::<String, u64>::new(), 0u64, 0u64);
    let mut last_done = shared.measure_from;
    for t in tasks {
        let r = t.await.map_err(|e| format!("connection task failed: {e}"))?;
        if let Some(h) = &r.hist {
            hist.add(h).map_err(|e| e.to_string())?;
        }
        ok += r.ok;
        bytes += r.body_bytes;
        bodies += r.bodies;
        for (k, n) in r.errors {
            *errors.entry(k).or_default() += n;
        }
        if let Some(d) = r.last_done {
            last_done = last_done.max(d);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let o = &shared.opts;
    // Closed-loop runs end when the last answer arrives; a run cut short by
    // --requests ends then too, so the rate is never diluted by idle time.
    let end = last_done.max(shared.measure_from + Duration::from_millis(1));
    let measured_s = end.duration_since(shared.measure_from).as_secs_f64();
    Ok(Summary {
        target: o.target.name().to_string(),
        mode: if o.rate.is_some() { "fixed-rate" } else { "closed-loop" }.to_string(),
        urls: o.endpoints.iter().map(|e| e.url.clone()).collect(),
        connections: o.connections,
        workers: o.workers,
        rate: o.rate,
        warmup_s: o.warmup.as_secs_f64(),
        measured_s,
        ok,
        errors_total: errors.values().sum(),
        errors,
        throughput_rps: ok as f64 / measured_s,
        latency_ms: Latency::from_histogram(&hist),
        body_bytes: if bodies > 0 { bytes as f64 / bodies as f64 } else { 0.0 },
    })
}
