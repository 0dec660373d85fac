//! Simulated rollouts with fixed seeds: the false-rollback rate an equal
//! canary sees, and how fast a worse one is caught.

use super::*;

/// SplitMix64: a small, fully specified PRNG, so runs repeat on any platform.
pub(in crate::policy) struct Rng(pub(in crate::policy) u64);

impl Rng {
    pub(in crate::policy) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub(in crate::policy) fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Binomial(n, p) by geometric gaps between successes.
    pub(in crate::policy) fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p <= 0.0 {
            return 0;
        }
        let log_q = (-p).ln_1p();
        let (mut trials, mut hits) = (0u64, 0u64);
        loop {
            trials += (self.unit().ln() / log_q).floor() as u64 + 1;
            if trials > n {
                return hits;
            }
            hits += 1;
        }
    }
}

/// Volumes per window: 5 % of 4,000 probes go to the canary.
const CANARY_PROBES: u64 = 200;
const BASELINE_PROBES: u64 = 3_800;
const BASELINE_BAD: f64 = 0.03;
const WINDOWS: u64 = 40;
const RUNS: u64 = 1_000;

/// One window's counts. `drift` moves the common bad rate between 1 % and
/// 8 % and the canary's volume between 100 and 300 probes, window by window.
fn window(rng: &mut Rng, ratio: f64, drift: bool) -> Window {
    let (base, canary_probes) =
        if drift { (0.01 + 0.07 * rng.unit(), 100 + rng.next() % 201) } else { (BASELINE_BAD, CANARY_PROBES) };
    Window {
        canary_probes,
        canary_bad: rng.binomial(canary_probes, (base * ratio).min(1.0)),
        baseline_probes: BASELINE_PROBES,
        baseline_bad: rng.binomial(BASELINE_PROBES, base),
    }
}

/// One rollout; the 1-based window it was rolled back in, if any.
fn rollout(seed: u64, ratio: f64, drift: bool) -> Option<u64> {
    let mut rng = Rng(seed);
    let mut test = RollbackTest::new(DEFAULT_FALSE_ROLLBACK_RATE).unwrap();
    for _ in 0..WINDOWS {
        if let Decision::RollBack { window, .. } = test.observe(window(&mut rng, ratio, drift)).unwrap() {
            return Some(window);
        }
    }
    None
}

/// Smallest `c` with `P(Binomial(n, p) ≤ c) ≥ q`.
pub(in crate::policy) fn binomial_quantile(n: u64, p: f64, q: f64) -> u64 {
    let mut pmf = (1.0 - p).powi(n as i32);
    let mut cdf = pmf;
    let mut c = 0;
    while cdf < q {
        pmf *= (n - c) as f64 / (c + 1) as f64 * p / (1.0 - p);
        c += 1;
        cdf += pmf;
    }
    c
}

fn rolled_back(ratio: f64, drift: bool, seed: u64) -> Vec<u64> {
    (0..RUNS).filter_map(|i| rollout(seed.wrapping_add(i.wrapping_mul(0x1000_0001)), ratio, drift)).collect()
}

#[test]
fn equal_canaries_are_rolled_back_no_more_often_than_alpha_allows() {
    let limit = binomial_quantile(RUNS, DEFAULT_FALSE_ROLLBACK_RATE, 0.999);
    assert_eq!(limit, 73, "99.9th percentile of Binomial(1000, 0.05)");
    for (drift, seed) in [(false, 1), (true, 2)] {
        let n = rolled_back(1.0, drift, seed).len() as u64;
        eprintln!("equal canary, drift {drift}: {n} of {RUNS} rolled back over {WINDOWS} windows");
        assert!(n <= limit, "{n} false rollbacks of {RUNS}, at most {limit} allowed");
    }
}

#[test]
fn better_canaries_are_rolled_back_less_still() {
    let limit = binomial_quantile(RUNS, DEFAULT_FALSE_ROLLBACK_RATE, 0.999);
    let n = rolled_back(0.5, false, 3).len() as u64;
    eprintln!("better canary: {n} of {RUNS} rolled back");
    assert!(n <= limit);
}

#[test]
fn a_canary_twice_as_bad_is_rolled_back_within_ten_windows() {
    for (drift, seed) in [(false, 4), (true, 5)] {
        let mut at = rolled_back(2.0, drift, seed);
        at.sort_unstable();
        let caught_by_10 = at.iter().filter(|&&w| w <= 10).count();
        eprintln!(
            "2x canary, drift {drift}: {} of {RUNS} rolled back, median window {}, 99th {}, last {}",
            at.len(),
            at[at.len() / 2],
            at[at.len() * 99 / 100],
            at[at.len() - 1]
        );
        assert!(caught_by_10 as u64 >= RUNS * 99 / 100, "only {caught_by_10} of {RUNS} caught by window 10");
        assert_eq!(at.len() as u64, RUNS, "every run rolled back within {WINDOWS} windows");
    }
}

#[test]
fn a_canary_half_again_as_bad_is_mostly_caught_within_the_rollout() {
    let mut at = rolled_back(1.5, false, 6);
    at.sort_unstable();
    eprintln!("1.5x canary: {} of {RUNS} rolled back, median window {}", at.len(), at[at.len() / 2]);
    assert!(at.len() as u64 >= RUNS * 9 / 10, "only {} of {RUNS} caught in {WINDOWS} windows", at.len());
}

/// What the sequential test is for: a one-sided z-test at 5 % re-run on the
/// pooled counts after every window (peeking) rolls back far more than 5 %
/// of equal canaries over the same 40 windows.
#[test]
fn peeking_at_a_fixed_sample_test_would_not_hold_the_rate() {
    let limit = binomial_quantile(RUNS, DEFAULT_FALSE_ROLLBACK_RATE, 0.999);
    let naive = (0..RUNS)
        .filter(|&i| {
            let mut rng = Rng(7 + i.wrapping_mul(0x1000_0001));
            let (mut x, mut nx, mut y, mut ny) = (0.0, 0.0, 0.0, 0.0);
            (0..WINDOWS).any(|_| {
                let w = window(&mut rng, 1.0, false);
                (x, nx) = (x + w.canary_bad as f64, nx + w.canary_probes as f64);
                (y, ny) = (y + w.baseline_bad as f64, ny + w.baseline_probes as f64);
                let p = (x + y) / (nx + ny);
                let se = (p * (1.0 - p) * (1.0 / nx + 1.0 / ny)).sqrt();
                se > 0.0 && (x / nx - y / ny) / se > 1.645
            })
        })
        .count() as u64;
    eprintln!("peeking z-test: {naive} of {RUNS} equal canaries rolled back");
    assert!(naive > limit, "{naive} of {RUNS}: peeking was expected to exceed {limit}");
}

#[test]
fn windows_without_evidence_change_nothing() {
    let mut t = RollbackTest::new(0.05).unwrap();
    for w in [
        Window::default(),
        Window { canary_probes: 100, canary_bad: 0, baseline_probes: 900, baseline_bad: 0 },
        Window { canary_probes: 0, canary_bad: 0, baseline_probes: 900, baseline_bad: 50 },
    ] {
        assert_eq!(t.observe(w).unwrap(), Decision::Continue);
    }
    assert_eq!(t.log_evidence(), 0.0);
    assert_eq!(t.windows(), 3);
}

#[test]
fn the_decision_latches_and_replay_reaches_it_too() {
    let worse = Window { canary_probes: 100, canary_bad: 30, baseline_probes: 900, baseline_bad: 30 };
    let fine = Window { canary_probes: 100, canary_bad: 0, baseline_probes: 900, baseline_bad: 90 };
    let mut t = RollbackTest::new(0.05).unwrap();
    let d = t.observe(worse).unwrap();
    let Decision::RollBack { window: 1, log_evidence } = d else { panic!("expected a rollback, got {d:?}") };
    assert!(log_evidence >= t.threshold());
    assert_eq!(t.observe(fine).unwrap(), d, "a decision is not taken back");
    let (replayed, again) = RollbackTest::replay(0.05, &[worse, fine]).unwrap();
    assert_eq!(again, d);
    assert_eq!(replayed, t);
}

#[test]
fn a_better_canary_lowers_the_evidence() {
    let mut t = RollbackTest::new(0.05).unwrap();
    t.observe(Window { canary_probes: 100, canary_bad: 1, baseline_probes: 900, baseline_bad: 60 }).unwrap();
    assert!(t.log_evidence() < 0.0, "{}", t.log_evidence());
}

#[test]
fn bad_input_is_refused() {
    for alpha in [0.0, -0.1, 0.6, f64::NAN] {
        assert_eq!(RollbackTest::new(alpha).unwrap_err().kind, ErrorKind::Invalid, "alpha {alpha}");
    }
    let mut t = RollbackTest::new(0.05).unwrap();
    let w = Window { canary_probes: 1, canary_bad: 2, baseline_probes: 1, baseline_bad: 0 };
    assert_eq!(t.observe(w).unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(t.windows(), 0, "a refused window is not counted");
}

/// Golden evidence for a fixed window, so a change of the rule shows.
#[test]
fn evidence_is_the_documented_formula() {
    let mut t = RollbackTest::new(0.05).unwrap();
    t.observe(Window { canary_probes: 50, canary_bad: 4, baseline_probes: 950, baseline_bad: 36 }).unwrap();
    // s = 0.05, x = 4, k = 40: mean over r of exp(4 ln r − 40 ln(1 + 0.05 (r − 1))).
    let expect: f64 =
        RATIO_GRID.iter().map(|r| (4.0 * r.ln() - 40.0 * (0.05 * (r - 1.0)).ln_1p()).exp()).sum::<f64>() / 5.0;
    assert!((t.log_evidence() - expect.ln()).abs() < 1e-12);
    assert_eq!(t.threshold(), -(0.05f64).ln());
}
