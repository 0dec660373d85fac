//! Authentication of `/raft` requests between nodes without sending a
//! reusable secret: each request carries an HMAC-SHA256, keyed by
//! `CLUSTER_SECRET`, of its method, path, send time, a nonce and the SHA-256
//! of its body. The receiver recomputes it, compares in constant time and
//! refuses a time outside its skew window; a forwarded proposal (a write,
//! the one request whose replay would change the state twice) is also
//! refused if its signature was seen before.
//!
//! One header, [`AUTH_HEADER`]: `v1 <unix ms> <nonce, 16 hex> <mac, 64 hex>`.
//! Rolling upgrade from a release that sent the plain secret
//! ([`PLAIN_SECRET_HEADER`]): with `ENGINE_ALLOW_PLAIN_SECRET=true` a node
//! also sends and accepts that header; default off.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The signature header on every `/raft` request.
pub const AUTH_HEADER: &str = "x-engine-peer-auth";

/// The header older releases send `CLUSTER_SECRET` in, in clear.
pub const PLAIN_SECRET_HEADER: &str = "x-engine-cluster-secret";

/// Default tolerated difference between the sender's and receiver's clocks.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(30);

/// Most remembered proposal signatures; past it the oldest are forgotten
/// (only authentic requests are remembered, so only a peer can fill it).
const REPLAY_MEMORY: usize = 200_000;

type HmacSha256 = Hmac<Sha256>;

/// Why a `/raft` request was refused; the message names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing peer signature (header {AUTH_HEADER})")]
    Missing,
    #[error("malformed peer signature header")]
    Malformed,
    #[error("wrong peer signature (different CLUSTER_SECRET?)")]
    BadSignature,
    #[error("peer signature time is {0} ms away from this node's clock, beyond the skew window (check NTP)")]
    Skewed(i64),
    #[error("peer request replayed")]
    Replayed,
    #[error("wrong cluster secret")]
    BadPlainSecret,
}

/// Both sides of peer authentication for one node.
pub struct PeerAuth {
    key: HmacSha256,
    secret: Box<[u8]>,
    skew: Duration,
    allow_plain: bool,
    seen: Mutex<Replays>,
}

#[derive(Default)]
struct Replays {
    set: HashSet<[u8; 32]>,
    order: VecDeque<(Instant, [u8; 32])>,
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth").field("skew", &self.skew).field("allow_plain", &self.allow_plain).finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl PeerAuth {
    pub fn new(secret: &str, skew: Duration, allow_plain: bool) -> Self {
        let key = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
        Self { key, secret: secret.as_bytes().into(), skew, allow_plain, seen: Mutex::default() }
    }

    /// Does this node still send and accept the plain secret (rolling upgrade)?
    pub fn allows_plain(&self) -> bool {
        self.allow_plain
    }

    /// The secret, for the plain header of the upgrade window only.
    pub fn plain_secret(&self) -> Option<&[u8]> {
        self.allow_plain.then_some(&self.secret[..])
    }

    fn mac(&self, method: &str, path: &str, time_ms: u64, nonce: &str, body: &[u8]) -> HmacSha256 {
        let body_hash = Sha256::digest(body);
        let mut mac = self.key.clone();
        for part in [b"engine-room-peer-v1".as_slice(), method.as_bytes(), path.as_bytes()] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.update(time_ms.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(nonce.as_bytes());
        mac.update(b"\n");
        mac.update(&body_hash);
        mac
    }

    /// The [`AUTH_HEADER`] value for a request sent now.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        self.sign_at(method, path, crate::cluster::now_ms(), rand::random::<u64>(), body)
    }

    fn sign_at(&self, method: &str, path: &str, time_ms: u64, nonce: u64, body: &[u8]) -> String {
        let nonce = format!("{nonce:016x}");
        let tag = self.mac(method, path, time_ms, &nonce, body).finalize().into_bytes();
        format!("v1 {time_ms} {nonce} {}", hex(&tag))
    }

    /// Check a request's signature header (or, in the upgrade window, its
    /// plain secret). `remember` marks requests whose replay must be refused.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        signed: Option<&str>,
        plain: Option<&[u8]>,
        body: &[u8],
        remember: bool,
    ) -> Result<(), AuthError> {
        self.verify_at(method, path, signed, plain, body, remember, crate::cluster::now_ms())
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_at(
        &self,
        method: &str,
        path: &str,
        signed: Option<&str>,
        plain: Option<&[u8]>,
        body: &[u8],
        remember: bool,
        now_ms: u64,
    ) -> Result<(), AuthError> {
        let Some(signed) = signed else {
            return match plain {
                Some(given) if self.allow_plain => {
                    use subtle::ConstantTimeEq;
                    if bool::from(given.ct_eq(&self.secret)) {
                        Ok(())
                    } else {
                        Err(AuthError::BadPlainSecret)
                    }
                }
                _ => Err(AuthError::Missing),
            };
        };
        let mut parts = signed.split(' ');
        let (Some("v1"), Some(time), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let time_ms: u64 = time.parse().map_err(|_| AuthError::Malformed)?;
        let tag = unhex::<32>(tag).ok_or(AuthError::Malformed)?;
        if nonce.len() != 16 {
            return Err(AuthError::Malformed);
        }
        // `verify_slice` compares in constant time.
        self.mac(method, path, time_ms, nonce, body).verify_slice(&tag).map_err(|_| AuthError::BadSignature)?;
        let off = now_ms as i64 - time_ms as i64;
        if off.unsigned_abs() > self.skew.as_millis() as u64 {
            return Err(AuthError::Skewed(off));
        }
        if remember {
            self.remember(tag)?;
        }
        Ok(())
    }

    /// Refuse a signature seen within twice the skew window (a replay is
    /// accepted by the time check for at most that long after the original).
    fn remember(&self, tag: [u8; 32]) -> Result<(), AuthError> {
        let now = Instant::now();
        let keep = self.skew * 2;
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((at, old)) = seen.order.front().copied() {
            if now.duration_since(at) <= keep && seen.order.len() < REPLAY_MEMORY {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&old);
        }
        if !seen.set.insert(tag) {
            return Err(AuthError::Replayed);
        }
        seen.order.push_back((now, tag));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes!";

    fn auth(allow_plain: bool) -> PeerAuth {
        PeerAuth::new(SECRET, DEFAULT_SKEW, allow_plain)
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let a = auth(false);
        let now = 1_700_000_000_000;
        let h = a.sign_at("POST", "/raft/append", now, 42, b"body");
        assert!(!h.contains(SECRET));
        let check = |m: &str, p: &str, h: &str, b: &[u8]| a.verify_at(m, p, Some(h), None, b, false, now);
        assert_eq!(check("POST", "/raft/append", &h, b"body"), Ok(()));
        assert_eq!(check("POST", "/raft/append", &h, b"bodY"), Err(AuthError::BadSignature));
        assert_eq!(check("POST", "/raft/vote", &h, b"body"), Err(AuthError::BadSignature));
        assert_eq!(check("GET", "/raft/append", &h, b"body"), Err(AuthError::BadSignature));
        let other_time = h.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        assert_eq!(check("POST", "/raft/append", &other_time, b"body"), Err(AuthError::BadSignature));
        let other_key = PeerAuth::new("another-secret-another-secret-xx", DEFAULT_SKEW, false);
        let forged = other_key.sign_at("POST", "/raft/append", now, 42, b"body");
        assert_eq!(check("POST", "/raft/append", &forged, b"body"), Err(AuthError::BadSignature));
        for junk in ["", "v1", "v2 1 0000000000000000 00", "v1 x 0000000000000000 00", &format!("{h} extra")] {
            assert_eq!(check("POST", "/raft/append", junk, b"body"), Err(AuthError::Malformed), "{junk:?}");
        }
    }

    #[test]
    fn times_outside_the_skew_window_are_refused() {
        let a = auth(false);
        let now = 1_700_000_000_000;
        for (sent, ok) in [(now - 29_000, true), (now + 29_000, true), (now - 31_000, false), (now + 31_000, false)] {
            let h = a.sign_at("POST", "/raft/vote", sent, 1, b"");
            let r = a.verify_at("POST", "/raft/vote", Some(&h), None, b"", false, now);
            assert_eq!(r.is_ok(), ok, "sent {} ms off: {r:?}", sent as i64 - now as i64);
        }
    }

    #[test]
    fn a_remembered_request_is_refused_the_second_time() {
        let a = auth(false);
        let now = crate::cluster::now_ms();
        let h = a.sign_at("POST", "/raft/propose", now, 7, b"write");
        assert_eq!(a.verify_at("POST", "/raft/propose", Some(&h), None, b"write", true, now), Ok(()));
        assert_eq!(a.verify_at("POST", "/raft/propose", Some(&h), None, b"write", true, now), Err(AuthError::Replayed));
        let again = a.sign_at("POST", "/raft/propose", now, 8, b"write");
        assert_eq!(a.verify_at("POST", "/raft/propose", Some(&again), None, b"write", true, now), Ok(()));
    }

    #[test]
    fn the_plain_secret_is_accepted_only_in_the_upgrade_window() {
        let strict = auth(false);
        assert_eq!(
            strict.verify("POST", "/raft/vote", None, Some(SECRET.as_bytes()), b"", false),
            Err(AuthError::Missing)
        );
        assert!(strict.plain_secret().is_none());
        let upgrading = auth(true);
        assert_eq!(upgrading.verify("POST", "/raft/vote", None, Some(SECRET.as_bytes()), b"", false), Ok(()));
        assert_eq!(
            upgrading.verify("POST", "/raft/vote", None, Some(b"wrong"), b"", false),
            Err(AuthError::BadPlainSecret)
        );
        assert_eq!(upgrading.plain_secret(), Some(SECRET.as_bytes()));
        assert!(!format!("{upgrading:?}").contains(SECRET));
    }

    /// Cost of signing plus verifying, as the hot path pays it (run with
    /// `--ignored --nocapture`; figures are quoted in the README).
    #[test]
    #[ignore]
    fn measure_sign_and_verify() {
        let a = auth(false);
        for size in [64usize, 16 << 10, 512 << 10, 4 << 20] {
            let body = vec![7u8; size];
            let rounds = (64 << 20) / size.max(1 << 12);
            let started = Instant::now();
            for _ in 0..rounds {
                let h = a.sign("POST", "/raft/append", &body);
                a.verify("POST", "/raft/append", Some(&h), None, &body, false).unwrap();
            }
            let per = started.elapsed() / rounds as u32;
            println!("{size:>8} bytes: sign+verify {per:?} per request ({rounds} rounds)");
        }
    }
}
