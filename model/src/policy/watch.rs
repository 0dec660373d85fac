//! A running canary watched on the three outcome rates the thresholds name:
//! one [`RollbackTest`] per rate, each at a third of the rollout's
//! false-rollback rate (Bonferroni), so the rollout as a whole keeps it.

use serde::{Deserialize, Serialize};

use super::rollback::{Decision, RollbackTest, Window};
use crate::command::CommandError;

/// An outcome rate a canary can be worse on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatchedRate {
    Tempfail,
    Reject,
    Unknown,
}

impl WatchedRate {
    pub const ALL: [WatchedRate; 3] = [WatchedRate::Tempfail, WatchedRate::Reject, WatchedRate::Unknown];
}

/// One window of a rollout: per cohort, probes and each rate's bad count.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CohortCounts {
    pub probes: u64,
    pub tempfail: u64,
    pub reject: u64,
    pub unknown: u64,
}

impl CohortCounts {
    fn bad(&self, rate: WatchedRate) -> u64 {
        match rate {
            WatchedRate::Tempfail => self.tempfail,
            WatchedRate::Reject => self.reject,
            WatchedRate::Unknown => self.unknown,
        }
    }
}

/// Why a canary is rolled back: the first rate whose test fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub rate: WatchedRate,
    pub window: u64,
    pub log_evidence: f64,
    pub threshold: f64,
}

/// The three tests of one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryWatch {
    tests: [RollbackTest; 3],
    verdict: Option<Verdict>,
}

impl CanaryWatch {
    /// A watch holding the rollout's false-rollback rate at `alpha`.
    pub fn new(alpha: f64) -> Result<Self, CommandError> {
        let t = RollbackTest::new(alpha / 3.0)?;
        Ok(Self { tests: [t.clone(), t.clone(), t], verdict: None })
    }

    /// Replays a rollout's recorded `(canary, baseline)` windows, as a new
    /// leader does after failover.
    pub fn replay(alpha: f64, windows: &[(CohortCounts, CohortCounts)]) -> Result<Self, CommandError> {
        let mut watch = Self::new(alpha)?;
        for (canary, baseline) in windows {
            watch.observe(*canary, *baseline)?;
        }
        Ok(watch)
    }

    /// The verdict, once a rate has fired.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Adds one window. The answer is latched: once a rate fires, every later
    /// window answers the same verdict.
    pub fn observe(&mut self, canary: CohortCounts, baseline: CohortCounts) -> Result<Option<Verdict>, CommandError> {
        if self.verdict.is_some() {
            return Ok(self.verdict);
        }
        let windows = WatchedRate::ALL.map(|rate| Window {
            canary_probes: canary.probes,
            canary_bad: canary.bad(rate),
            baseline_probes: baseline.probes,
            baseline_bad: baseline.bad(rate),
        });
        // Check all three before changing any, so a refused window leaves no trace.
        for w in &windows {
            if w.canary_bad > w.canary_probes || w.baseline_bad > w.baseline_probes {
                return Err(RollbackTest::refuse(w));
            }
        }
        for ((test, rate), w) in self.tests.iter_mut().zip(WatchedRate::ALL).zip(windows) {
            if let Decision::RollBack { window, log_evidence } = test.observe(w)? {
                self.verdict.get_or_insert(Verdict { rate, window, log_evidence, threshold: test.threshold() });
            }
        }
        Ok(self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ErrorKind;
    use crate::policy::rollback::tests::{binomial_quantile, Rng};

    fn counts(probes: u64, tempfail: u64, reject: u64, unknown: u64) -> CohortCounts {
        CohortCounts { probes, tempfail, reject, unknown }
    }

    #[test]
    fn the_rate_that_is_worse_is_named() {
        let mut w = CanaryWatch::new(0.05).unwrap();
        let baseline = counts(1_900, 95, 38, 57);
        assert_eq!(w.observe(counts(100, 5, 2, 3), baseline).unwrap(), None, "equal rates");
        let v = w.observe(counts(100, 5, 2, 20), baseline).unwrap().expect("unknowns six times as often");
        assert_eq!((v.rate, v.window), (WatchedRate::Unknown, 2));
        assert!(v.log_evidence >= v.threshold);
        assert_eq!(v.threshold, -(0.05f64 / 3.0).ln(), "each rate gets a third of alpha");
        assert_eq!(w.observe(counts(100, 0, 0, 0), baseline).unwrap(), Some(v), "latched");
        let replayed =
            CanaryWatch::replay(0.05, &[(counts(100, 5, 2, 3), baseline), (counts(100, 5, 2, 20), baseline)]).unwrap();
        assert_eq!(replayed.verdict(), Some(v), "a new leader reaches the same verdict");
    }

    /// 1,000 rollouts of 40 windows, 5 % of 4,000 probes on the canary, with
    /// tempfail, reject and unknown rates of 8 %, 3 % and 5 % in both cohorts.
    fn simulate(seed: u64, worse: [f64; 3]) -> Vec<u64> {
        const RATES: [f64; 3] = [0.08, 0.03, 0.05];
        (0..1_000u64)
            .filter_map(|i| {
                let mut rng = Rng(seed + i.wrapping_mul(0x1000_0001));
                let mut watch = CanaryWatch::new(0.05).unwrap();
                let mut cohort = |probes: u64, f: [f64; 3]| {
                    let [t, r, u] = [0, 1, 2].map(|k| rng.binomial(probes, RATES[k] * f[k]));
                    counts(probes, t, r, u)
                };
                (0..40).find_map(|_| {
                    let canary = cohort(200, worse);
                    let baseline = cohort(3_800, [1.0; 3]);
                    watch.observe(canary, baseline).unwrap().map(|v| v.window)
                })
            })
            .collect()
    }

    #[test]
    fn three_rates_together_keep_the_rollouts_rate() {
        let limit = binomial_quantile(1_000, 0.05, 0.999);
        let n = simulate(11, [1.0; 3]).len() as u64;
        eprintln!("three rates, equal canary: {n} of 1000 rolled back");
        assert!(n <= limit, "{n} > {limit}");
        let mut at = simulate(12, [1.0, 2.0, 1.0]);
        at.sort_unstable();
        eprintln!(
            "rejects doubled: {} of 1000, median window {}, last {}",
            at.len(),
            at[at.len() / 2],
            at[at.len() - 1]
        );
        assert_eq!(at.len(), 1_000);
        assert!(at[at.len() - 1] <= 15, "last caught at window {}", at[at.len() - 1]);
    }

    #[test]
    fn a_refused_window_changes_no_test() {
        let mut w = CanaryWatch::new(0.05).unwrap();
        let before = w.clone();
        let err = w.observe(counts(10, 1, 2, 11), counts(100, 1, 1, 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert_eq!(w, before);
        assert!(CanaryWatch::new(0.0).is_err());
    }
}
