//! `GET /api/slo`: fleet availability over 1 h / 6 h / 24 h from the leader's
//! replicated samples, error-budget burn against `SLO_AVAILABILITY_TARGET`, and
//! heartbeat commit latency percentiles measured on this node.

use axum::extract::State;
use axum::Json;
use prometheus::core::Collector;
use raft_store::cluster::now_ms;

use crate::openapi::{SloLatency, SloView, SloWindow};
use crate::AppState;

const WINDOWS: [(&str, u64); 3] = [("1h", 3_600_000), ("6h", 21_600_000), ("24h", 86_400_000)];

/// Quantile `q` from cumulative histogram buckets, interpolated inside a bucket.
pub fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let inside = (cumulative - below).max(1) as f64;
            return Some(lo + (upper - lo) * ((rank - below as f64) / inside).clamp(0.0, 1.0));
        }
        (lo, below) = (upper, cumulative);
    }
    Some(lo)
}

#[utoipa::path(get, path = "/api/slo", tag = "alerts", responses((status = 200, body = crate::openapi::SloView), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn get(State(s): State<AppState>) -> Json<SloView> {
    Json(slo_view(&s))
}

/// The body of `GET /api/slo`, shared with the alerts page.
pub fn slo_view(s: &AppState) -> SloView {
    let target = s.with_settings(|e| e.num("SLO_AVAILABILITY_TARGET"));
    let now = now_ms();
    let windows: Vec<SloWindow> = {
        let applied = s.cluster.state.read();
        let samples = &applied.state.fleet_samples;
        WINDOWS
            .iter()
            .map(|(name, span)| {
                let inside: Vec<_> =
                    samples.iter().filter(|x| now.saturating_sub(x.at_ms) <= *span && x.total > 0).collect();
                let availability = (!inside.is_empty()).then(|| {
                    100.0 * inside.iter().map(|x| x.healthy as f64 / x.total as f64).sum::<f64>() / inside.len() as f64
                });
                let burn = availability.map(|a| if target >= 100.0 { 0.0 } else { (100.0 - a) / (100.0 - target) });
                SloWindow {
                    window: name.to_string(),
                    samples: inside.len(),
                    availability_percent: availability,
                    error_budget_burn_rate: burn,
                }
            })
            .collect()
    };
    let (buckets, count) = commit_buckets(s);
    let ms = |q| quantile(&buckets, count, q).map(|v| v * 1000.0);
    SloView {
        target_availability_percent: target,
        windows,
        heartbeat_commit_latency_ms: SloLatency {
            node_id: s.cluster.id,
            batches: count,
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
        },
    }
}

/// This node's heartbeat commit-latency histogram: cumulative `(upper bound
/// in seconds, count)` buckets and the total count.
pub fn commit_buckets(s: &AppState) -> (Vec<(f64, u64)>, u64) {
    let families = s.metrics.heartbeat_commit_seconds.collect();
    let proto = families.first().and_then(|f| f.get_metric().first()).map(|m| m.get_histogram().clone());
    match &proto {
        Some(p) => {
            (p.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect(), p.get_sample_count())
        }
        None => (vec![], 0),
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.001, 50), (0.01, 90), (0.1, 100)];
        assert_eq!(quantile(&b, 0, 0.5), None);
        assert!((quantile(&b, 100, 0.5).unwrap() - 0.001).abs() < 1e-9);
        let p90 = quantile(&b, 100, 0.9).unwrap();
        assert!((p90 - 0.01).abs() < 1e-9, "{p90}");
        let p99 = quantile(&b, 100, 0.99).unwrap();
        assert!(p99 > 0.01 && p99 <= 0.1);
    }
}
