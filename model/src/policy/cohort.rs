//! The canary cohort: which workers a promoted version reaches.
//!
//! A worker's bucket is `u64::from_be_bytes(SHA-256(id)[0..8]) mod 10_000`,
//! the id taken as its UTF-8 bytes with nothing added. A worker is in a
//! canary of `b` basis points when its bucket is below `b`. SHA-256 is fixed
//! by its standard, so every node, release and platform puts a worker in the
//! same bucket (Rust's `DefaultHasher` promises none of that), and raising
//! the share only adds workers: one in at 5 % stays in at 25 %. The modulo
//! bias (2^64 mod 10_000 over 2^64) is below 10^-15.

use sha2::{Digest, Sha256};

/// Buckets, one per basis point of the fleet.
pub const BUCKETS: u64 = 10_000;

/// The worker's bucket in `0..BUCKETS`; stable across releases (see module).
pub fn canary_bucket(worker_id: &str) -> u64 {
    let digest = Sha256::digest(worker_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head) % BUCKETS
}

/// Whether the worker is in a canary of `basis_points` (10_000 is all).
pub fn in_canary(worker_id: &str, basis_points: u64) -> bool {
    canary_bucket(worker_id) < basis_points
}

/// [`in_canary`] with the share in whole percent, as `canary_percent` is sent.
pub fn in_canary_percent(worker_id: &str, percent: u8) -> bool {
    in_canary(worker_id, u64::from(percent) * 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("worker-{i}"))
    }

    #[test]
    fn share_is_within_three_points_of_the_requested_percent() {
        for percent in [1u8, 5, 10, 25, 50, 75, 100] {
            let n = ids().filter(|id| in_canary_percent(id, percent)).count();
            let share = n as f64 / 100.0;
            assert!((share - f64::from(percent)).abs() <= 3.0, "{percent}% asked, {share}% got");
        }
        assert_eq!(ids().filter(|id| in_canary_percent(id, 0)).count(), 0);
        assert_eq!(ids().filter(|id| in_canary_percent(id, 100)).count(), 10_000);
    }

    #[test]
    fn stepping_up_only_adds_workers() {
        for id in ids().take(2_000) {
            let mut was_in = false;
            for percent in [0u8, 5, 25, 50, 100] {
                let now_in = in_canary_percent(&id, percent);
                assert!(now_in || !was_in, "{id} left the cohort at {percent}%");
                was_in = now_in;
            }
        }
    }

    /// Golden buckets: if this fails, the cohort function changed and a
    /// rolling upgrade would move workers between cohorts mid-canary.
    #[test]
    fn buckets_are_the_documented_function() {
        let golden: [(&str, u64); 4] = [("", 1652), ("worker-1", 6925), ("w-alpha", 922), ("node-3/worker-17", 4683)];
        for (id, bucket) in golden {
            assert_eq!(canary_bucket(id), bucket, "bucket of {id:?}");
        }
        // The empty id, spelled out from SHA-256("") = e3b0c44298fc1c14…
        assert_eq!(canary_bucket(""), 0xe3b0_c442_98fc_1c14 % 10_000);
    }
}
