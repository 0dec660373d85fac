//! What one run measured: counts, errors by kind and latency percentiles,
//! printable as text and serializable as JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency histogram in microseconds, 1 µs to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1_000.0,
        }
    }
}

/// The result of one bounded run, as printed and as written with `--json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub target: String,
    /// `closed-loop` or `fixed-rate`.
    pub mode: String,
    pub urls: Vec<String>,
    pub connections: usize,
    pub workers: u64,
    /// Requested rate (fixed-rate mode only), requests per second.
    pub rate: Option<f64>,
    pub warmup_s: f64,
    /// Length of the measured window, from the end of warm-up to the last answer.
    pub measured_s: f64,
    /// Successful answers to requests started in the measured window.
    pub ok: u64,
    /// Failed requests in the measured window, by kind (`connect`, `io`, `timeout`, `http_<status>[:code]`).
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    /// Successful answers per second over the measured window.
    pub throughput_rps: f64,
    /// Latency of successful requests; in fixed-rate mode measured from the
    /// intended send time, so a stalled server cannot hide its queue.
    pub latency_ms: Latency,
    /// Mean request body size in bytes.
    pub body_bytes: f64,
}

impl Summary {
    pub fn print_text(&self) {
        println!(
            "target={} mode={} connections={} workers={} urls={}",
            self.target,
            self.mode,
            self.connections,
            self.workers,
            self.urls.join(",")
        );
        println!(
            "ok={} errors={} measured={:.2}s throughput={:.0}/s body={:.0}B",
            self.ok, self.errors_total, self.measured_s, self.throughput_rps, self.body_bytes
        );
        let l = &self.latency_ms;
        println!(
            "latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} mean={:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        for (kind, n) in &self.errors {
            println!("  error {kind}: {n}");
        }
    }
}
