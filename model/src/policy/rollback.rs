//! Automatic rollback's decision rule: is the canary cohort worse than the
//! baseline on one outcome rate (error, reject or unknown), window by window,
//! with the chance of rolling back an equal canary held at `alpha` however
//! many windows the rollout runs?
//!
//! **Method: a mixture likelihood-ratio test conditioned on the bad count.**
//! In window `w` the canary makes `n_c` probes with `x` bad outcomes and the
//! baseline `n_b` with `y`; `k = x + y` and `s = n_c / (n_c + n_b)` is the
//! canary's share of the traffic. Given `k`, an equal-quality canary's share
//! of the bad outcomes does not depend on the (unknown, drifting) common bad
//! rate: it is hypergeometric with mean `s`. If the canary's rate is `r`
//! times the baseline's, its share is `θ = s·r / (s·r + 1 − s)` in the
//! binomial (Poisson-limit) model, and the window's likelihood ratio of
//! `Binomial(k, θ)` against `Binomial(k, s)` is
//! `exp(x·ln r − k·ln(1 + s·(r − 1)))`.
//! The evidence is the running product over windows, mixed with equal weight
//! over the ratios in [`RATIO_GRID`]; the canary is rolled back the first
//! time the mixture reaches `1/alpha`.
//!
//! Why it holds: each window's ratio is `exp(c·x)` times a constant, a convex
//! function of `x`, so by Hoeffding (1963, Thm 4) its mean under the
//! hypergeometric null is at most its mean under `Binomial(k, s)`, which is
//! one. The product is then a non-negative supermartingale under "equal
//! rates in every window" (volumes, shares and the common rate may change
//! from window to window), so is the mixture, and Ville's inequality bounds the
//! chance it ever reaches `1/alpha` by `alpha`, for any number of windows.
//! A fixed-sample test re-run every window would not: peeking drives its
//! false-rollback rate towards 1. Flagger's bare thresholds ignore volume.
//! The mixture adapts to the size of the effect at a cost of `ln(grid len)`
//! nats over the best single ratio; a grid, not a Beta prior, because `s`
//! changes between windows and leaves no closed form. The test is one-sided:
//! a better canary lowers every ratio.
//!
//! Limits: outcomes are taken as independent given the cohort's rate. A few
//! workers that fail together (one blocked IP) are overdispersion the test
//! reads as a worse canary, which at a small canary is the cohort, if not the
//! policy, doing worse. Watching three rates means three tests; split
//! `alpha` between them (Bonferroni) to keep the per-rollout rate.
//!
//! Arithmetic: `f64` with `ln_1p`, `ln` and `exp` from the platform's libm,
//! which need not be correctly rounded; two platforms can differ in the last
//! bits and so decide a window apart only when the evidence is within about
//! 1e-12 of the threshold. The leader decides and commits the decision;
//! replicas never recompute it, so this cannot split the state.

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorKind};

/// The false-rollback rate per rollout when none is configured.
pub const DEFAULT_FALSE_ROLLBACK_RATE: f64 = 0.05;

/// Canary-to-baseline bad-rate ratios the evidence is mixed over, weighted
/// alike: from a mild regression to a broken policy.
pub const RATIO_GRID: [f64; 5] = [1.25, 1.5, 2.0, 3.0, 5.0];

/// One window's counts for one outcome rate, per cohort.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Window {
    pub canary_probes: u64,
    pub canary_bad: u64,
    pub baseline_probes: u64,
    pub baseline_bad: u64,
}

/// The rule's answer after a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Not enough evidence that the canary is worse; keep watching.
    Continue,
    /// The canary is worse: roll back. Latched; `window` is 1-based.
    RollBack { window: u64, log_evidence: f64 },
}

/// The running test for one rate of one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackTest {
    alpha: f64,
    /// Log likelihood ratio so far, per entry of [`RATIO_GRID`].
    log_lr: [f64; RATIO_GRID.len()],
    windows: u64,
    decided: Option<Decision>,
}

impl RollbackTest {
    /// A test at false-rollback rate `alpha`, in `(0, 0.5]`.
    pub fn new(alpha: f64) -> Result<Self, CommandError> {
        if !(alpha > 0.0 && alpha <= 0.5) {
            return Err(CommandError::new(ErrorKind::Invalid, format!("alpha must be in (0, 0.5], got {alpha}")));
        }
        Ok(Self { alpha, log_lr: [0.0; RATIO_GRID.len()], windows: 0, decided: None })
    }

    /// Replays recorded windows, as a new leader does after failover.
    pub fn replay(alpha: f64, windows: &[Window]) -> Result<(Self, Decision), CommandError> {
        let mut test = Self::new(alpha)?;
        let mut decision = Decision::Continue;
        for w in windows {
            decision = test.observe(*w)?;
        }
        Ok((test, decision))
    }

    /// Adds one window and answers. A window where either cohort made no
    /// probes, or nothing went bad, carries no evidence either way.
    pub fn observe(&mut self, w: Window) -> Result<Decision, CommandError> {
        if w.canary_bad > w.canary_probes || w.baseline_bad > w.baseline_probes {
            return Err(Self::refuse(&w));
        }
        if let Some(d) = self.decided {
            return Ok(d);
        }
        self.windows += 1;
        let k = w.canary_bad + w.baseline_bad;
        if w.canary_probes > 0 && w.baseline_probes > 0 && k > 0 {
            let s = w.canary_probes as f64 / (w.canary_probes + w.baseline_probes) as f64;
            let (x, k) = (w.canary_bad as f64, k as f64);
            for (l, r) in self.log_lr.iter_mut().zip(RATIO_GRID) {
                *l += x * r.ln() - k * (s * (r - 1.0)).ln_1p();
            }
        }
        if self.log_evidence() >= self.threshold() {
            let d = Decision::RollBack { window: self.windows, log_evidence: self.log_evidence() };
            self.decided = Some(d);
            return Ok(d);
        }
        Ok(Decision::Continue)
    }

    pub(super) fn refuse(w: &Window) -> CommandError {
        CommandError::new(ErrorKind::Invalid, format!("more bad outcomes than probes in {w:?}"))
    }

    /// Log of the mixture likelihood ratio (the e-value) so far.
    pub fn log_evidence(&self) -> f64 {
        let top = self.log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self.log_lr.iter().map(|l| (l - top).exp()).sum();
        top + (sum / RATIO_GRID.len() as f64).ln()
    }

    /// The log evidence at which the canary is rolled back: `ln(1/alpha)`.
    pub fn threshold(&self) -> f64 {
        -self.alpha.ln()
    }

    /// Windows observed until now (or until the decision).
    pub fn windows(&self) -> u64 {
        self.windows
    }
}

#[cfg(test)]
pub(super) mod tests;
