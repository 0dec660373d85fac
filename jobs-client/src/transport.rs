//! One call against a list of nodes: on a transport error, a 503 or a 408 the
//! same call moves to the next node and is retried, with capped exponential
//! backoff and a bounded number of tries. Each failed try is classified by
//! whether it may have been applied, so the caller can tell "refused" from
//! "maybe done".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::ClientError;

/// How a call is retried across nodes.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries of one call, the first included (at least 1, at most 32).
    pub max_tries: u32,
    /// Pause before the second try; doubles per try up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_tries: 8, base_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Pause after failed try `n` (1-based): `base · 2^(n-1)`, capped, plus up
    /// to 25% jitter so workers that lost the same node do not retry in step.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self.base_backoff.saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        let capped = exp.min(self.max_backoff);
        let jitter = rand::random::<f64>() * 0.25;
        capped.mul_f64(1.0 + jitter)
    }
}

/// A node's refusal, parsed from `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Jobs claimed by a `next` that rode with a refused complete or fail.
    pub next: Option<Value>,
}

/// What one try came to.
enum Try {
    Answer(Value),
    /// A definite 4xx (other than 408): retrying elsewhere would get the same.
    Refused(Refusal),
    /// Worth another node. `maybe_applied`: the request may have taken effect.
    Retry {
        reason: String,
        maybe_applied: bool,
    },
}

/// The nodes of one cluster, with the one that answered last preferred.
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    current: AtomicUsize,
    http: reqwest::Client,
    token: String,
    pub retry: RetryPolicy,
    /// Per-request timeout, on top of a claim's own `wait_ms`.
    pub timeout: Duration,
}

/// The outcome of a call after every try.
pub struct CallResult<T> {
    pub value: T,
    /// An earlier try of this call may have been applied before this answer.
    pub earlier_maybe_applied: bool,
}

impl Nodes {
    /// `urls`: base URLs (`http://host:port`), at least one.
    pub fn new(urls: Vec<String>, token: String, retry: RetryPolicy, timeout: Duration) -> Result<Self, ClientError> {
        let urls: Vec<String> = urls.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err(ClientError::Config("nodes must be one or more http:// or https:// URLs".into()));
        }
        if !(1..=32).contains(&retry.max_tries) {
            return Err(ClientError::Config("max_tries must be 1..=32".into()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { urls, current: AtomicUsize::new(0), http, token, retry, timeout })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The node the next call starts on.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.urls.len()
    }

    fn advance(&self, from: usize) {
        // Only the first caller that saw `from` fail moves the pointer on.
        let _ = self.current.compare_exchange(from, (from + 1) % self.urls.len(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// POST `body` to `path`, failing over between nodes. `extra` is added to
    /// the request timeout (a long poll's wait).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        extra: Duration,
    ) -> Result<CallResult<T>, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer(format!("cannot encode: {e}")))?;
        let mut maybe_applied = false;
        let mut last = String::new();
        for n in 1..=self.retry.max_tries {
            let node = self.current();
            match self.try_once(node, path, &body, extra).await {
                Try::Answer(v) => {
                    let value = serde_json::from_value(v)
                        .map_err(|e| ClientError::BadAnswer(format!("{path}: unexpected answer: {e}")))?;
                    return Ok(CallResult { value, earlier_maybe_applied: maybe_applied });
                }
                Try::Refused(r) => {
                    return Err(ClientError::Refused { refusal: r, earlier_maybe_applied: maybe_applied });
                }
                Try::Retry { reason, maybe_applied: m } => {
                    tracing::debug!(node = %self.urls[node], path, try_n = n, %reason, "call failed; trying another node");
                    maybe_applied |= m;
                    last = format!("{}: {reason}", self.urls[node]);
                    self.advance(node);
                    if n < self.retry.max_tries {
                        tokio::time::sleep(self.retry.backoff(n)).await;
                    }
                }
            }
        }
        Err(ClientError::Unavailable { tries: self.retry.max_tries, last, maybe_applied })
    }

    async fn try_once(&self, node: usize, path: &str, body: &[u8], extra: Duration) -> Try {
        let url = format!("{}{path}", self.urls[node]);
        let res = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .timeout(self.timeout + extra)
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            // Not connected: the request never left, so it cannot have been applied.
            Err(e) if e.is_connect() => {
                return Try::Retry { reason: format!("cannot connect: {e}"), maybe_applied: false }
            }
            Err(e) => return Try::Retry { reason: format!("no answer: {e}"), maybe_applied: true },
        };
        let status = res.status().as_u16();
        let bytes = match res.bytes().await {
            Ok(b) => b,
            Err(e) => return Try::Retry { reason: format!("answer cut: {e}"), maybe_applied: true },
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Try::Answer(value);
        }
        let refusal = Refusal {
            status,
            code: value.pointer("/error/code").and_then(Value::as_str).unwrap_or("").to_string(),
            message: value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()),
            next: value.get("next").cloned(),
        };
        match status {
            // `unavailable` (no leader reached) and `overloaded` (shed before the
            // handler) were not applied; any other 5xx or a 408 may have been.
            503 | 408 | 500..=599 => {
                let maybe_applied = !(status == 503 && matches!(refusal.code.as_str(), "unavailable" | "overloaded"));
                Try::Retry { reason: format!("{status} {}: {}", refusal.code, refusal.message), maybe_applied }
            }
            _ => Try::Refused(refusal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_tries: 8,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        let b1 = p.backoff(1);
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(125), "{b1:?}");
        let b3 = p.backoff(3);
        assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(500), "{b3:?}");
        let b30 = p.backoff(30);
        assert!(b30 >= Duration::from_millis(1000) && b30 <= Duration::from_millis(1250), "{b30:?}");
    }

    #[test]
    fn nodes_must_be_urls() {
        let t = Duration::from_secs(1);
        assert!(Nodes::new(vec![], "t".into(), RetryPolicy::default(), t).is_err());
        assert!(Nodes::new(vec!["127.0.0.1:1".into()], "t".into(), RetryPolicy::default(), t).is_err());
        let bad_retry = RetryPolicy { max_tries: 0, ..RetryPolicy::default() };
        assert!(Nodes::new(vec!["http://127.0.0.1:1".into()], "t".into(), bad_retry, t).is_err());
        let n = Nodes::new(vec!["http://127.0.0.1:1/".into()], "t".into(), RetryPolicy::default(), t).unwrap();
        assert_eq!(n.urls(), ["http://127.0.0.1:1"]);
    }
}
