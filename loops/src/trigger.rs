//! Worker triggers (reference 003's `/worker/trigger` and `/worker/smoke`),
//! sent by the leader exactly like notifications: for each due trigger it
//! commits a claim (a deposed leader cannot, so it cannot send), sends with
//! the trigger's idempotency key, then commits the outcome. A new leader
//! finishes what the old one left: a claim that expires without an outcome
//! is claimed and sent again with the same key, so a crash between the send
//! and its record costs one resend, never a second trigger.
//!
//! The target is the leader's own configuration: `WORKER_TRIGGER_COMMAND`
//! (run as `sh -c`, the key in `ENGINE_IDEMPOTENCY_KEY`, the payload on
//! stdin) or `WORKER_WEBHOOK_URL` (POSTed with `Idempotency-Key` and, when
//! set, `X-Worker-Token`). Neither the command's output nor the webhook's
//! answer is logged or replicated: either may carry secrets.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::state::farm::trigger::MAX_TRIGGER_ATTEMPTS;
use model::state::farm::{FarmOp, FarmReply, Trigger, TriggerKind, TriggerOutcome, TriggerResult, TriggerTarget};
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use raft_store::supervisor::Probe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::LoopContext;

/// How long a claim outlasts the send's own timeout, so that a slow send is
/// never repeated by another leader while it may still be under way.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);
/// Triggers started per poll.
const PER_ROUND: usize = 4;
/// Bytes of a webhook's answer read (and dropped) before the connection is let go.
const MAX_ANSWER: usize = 4096;
/// Environment variables a trigger command inherits from the node; the rest
/// (tokens, secrets) are not passed on.
const KEPT_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

/// Where the leader sends triggers. `Debug` names the kind only: the
/// command line and the URL may embed credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum TriggerTargetConfig {
    /// Run with `sh -c`.
    Command(String),
    Webhook(String),
}

impl std::fmt::Debug for TriggerTargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TriggerTargetConfig::Command(_) => f.write_str("Command(<redacted>)"),
            TriggerTargetConfig::Webhook(_) => f.write_str("Webhook(<redacted>)"),
        }
    }
}

/// The worker trigger's settings. `Debug` leaves the token and the webhook
/// URL (which may embed a credential) out.
#[derive(Clone)]
pub struct TriggerConfig {
    pub target: Option<TriggerTargetConfig>,
    /// Sent as `X-Worker-Token` (`WORKER_TOKEN`).
    pub token: Option<String>,
    /// Longest send: the command is killed, the request abandoned (`WORKER_TRIGGER_TIMEOUT_SECONDS`).
    pub timeout: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig { target: None, token: None, timeout: Duration::from_secs(30) }
    }
}

impl std::fmt::Debug for TriggerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerConfig")
            .field("target", &self.target)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The body reference 003's worker expects: `{"action":"drain"}`, and for a
/// smoke run the same with `"dry_run": true`.
pub fn payload(kind: TriggerKind) -> serde_json::Value {
    match kind {
        TriggerKind::Trigger => serde_json::json!({"action": "drain"}),
        TriggerKind::Smoke => serde_json::json!({"action": "drain", "dry_run": true}),
    }
}

/// Delay before attempt `attempts + 1` after a failure: 2 s doubling.
pub fn backoff_ms(attempts: u32) -> u64 {
    2_000u64 << attempts.saturating_sub(1).min(8)
}

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    let http = reqwest::Client::builder()
        .timeout(ctx.trigger.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static reqwest options always build");
    let busy: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    loop {
        tokio::time::sleep(POLL).await;
        if !ctx.acting_leader().await {
            probe.idle();
            continue;
        }
        probe.busy();
        let now = now_ms();
        let due: Vec<Trigger> = {
            let applied = ctx.cluster.state.read();
            let busy = busy.lock().expect("busy set lock");
            let kept = applied.state.farm.triggers.kept.iter();
            kept.filter(|t| t.due(now) && !busy.contains(&t.id)).take(PER_ROUND).cloned().collect()
        };
        for t in due {
            busy.lock().expect("busy set lock").insert(t.id);
            let (ctx, http, busy) = (ctx.clone(), http.clone(), busy.clone());
            tokio::spawn(async move {
                let id = t.id;
                send(&ctx, &http, t).await;
                busy.lock().expect("busy set lock").remove(&id);
            });
        }
        probe.done(Ok(()));
    }
}

async fn commit(ctx: &LoopContext, op: FarmOp) -> Option<Trigger> {
    let actor = ctx.actor("trigger");
    match ctx.cluster.write(&actor, Command::Farm(op)).await {
        Ok(Ok(Reply::Farm(FarmReply::Trigger { trigger, .. }))) => Some(trigger),
        Ok(other) => {
            tracing::debug!(?other, "trigger operation refused");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "trigger operation not committed");
            None
        }
    }
}

async fn send(ctx: &LoopContext, http: &reqwest::Client, t: Trigger) {
    if t.attempts >= MAX_TRIGGER_ATTEMPTS {
        // Every attempt's leader died before recording: give up, recorded.
        let outcome = TriggerOutcome {
            result: TriggerResult::Failed,
            target: None,
            code: None,
            duration_ms: 0,
            detail: format!("no outcome recorded after {MAX_TRIGGER_ATTEMPTS} attempts"),
            retry_at_ms: None,
        };
        commit(ctx, FarmOp::RecordTrigger { id: t.id, attempt: t.attempts, outcome }).await;
        return;
    }
    let until_ms = now_ms() + (ctx.trigger.timeout + CLAIM_MARGIN).as_millis() as u64;
    let Some(t) = commit(ctx, FarmOp::ClaimTrigger { id: t.id, until_ms }).await else { return };
    let started = Instant::now();
    let mut outcome = match &ctx.trigger.target {
        None => TriggerOutcome {
            result: TriggerResult::NotConfigured,
            target: None,
            code: None,
            duration_ms: 0,
            detail: "neither WORKER_TRIGGER_COMMAND nor WORKER_WEBHOOK_URL is set on the leader".into(),
            retry_at_ms: None,
        },
        Some(TriggerTargetConfig::Webhook(url)) => {
            post(http, url, ctx.trigger.token.as_deref(), ctx.cluster.id, &t).await
        }
        Some(TriggerTargetConfig::Command(cmd)) => run_command(cmd, &t, ctx.trigger.timeout).await,
    };
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    if outcome.retry_at_ms.is_some() {
        outcome.retry_at_ms = (t.attempts < MAX_TRIGGER_ATTEMPTS).then(|| now_ms() + backoff_ms(t.attempts));
    }
    tracing::info!(id = t.id, kind = t.kind.as_str(), attempt = t.attempts, result = outcome.result.as_str(),
        code = ?outcome.code, duration_ms = outcome.duration_ms, "worker trigger sent");
    let record = FarmOp::RecordTrigger { id: t.id, attempt: t.attempts, outcome };
    if commit(ctx, record).await.is_none() {
        tracing::warn!(id = t.id, "trigger outcome not recorded; it is sent again (same key) after the claim expires");
    }
}

/// POST the payload; the sending node and the trigger's id ride in headers
/// of their own (the body is reference 003's). The detail names neither the
/// URL nor the answer.
async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, node: u64, t: &Trigger) -> TriggerOutcome {
    let mut req = http
        .post(url)
        .header("Idempotency-Key", &t.key)
        .header("X-Engine-Room-Trigger", t.id.to_string())
        .header("X-Engine-Room-Node", node.to_string())
        .json(&payload(t.kind));
    if let Some(token) = token {
        req = req.header("X-Worker-Token", token);
    }
    let failed = |code: Option<i32>, detail: String, retry: bool| TriggerOutcome {
        result: TriggerResult::Failed,
        target: Some(TriggerTarget::Webhook),
        code,
        duration_ms: 0,
        detail,
        retry_at_ms: retry.then_some(0),
    };
    match req.send().await {
        Err(e) => {
            let what = if e.is_timeout() { "timed out".to_string() } else { one_line(&e.without_url().to_string()) };
            failed(None, format!("webhook: {what}"), true)
        }
        Ok(mut res) => {
            let status = res.status();
            // Read a little of the answer so the connection ends cleanly; drop it.
            let mut read = 0;
            while read < MAX_ANSWER {
                match res.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            let code = Some(i32::from(status.as_u16()));
            if status.is_success() {
                TriggerOutcome {
                    result: TriggerResult::Succeeded,
                    target: Some(TriggerTarget::Webhook),
                    code,
                    duration_ms: 0,
                    detail: format!("webhook answered {}", status.as_u16()),
                    retry_at_ms: None,
                }
            } else {
                // Overload and server errors are retried; other answers are final.
                let retry = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
                failed(code, format!("webhook answered {}", status.as_u16()), retry)
            }
        }
    }
}

/// Run the command with the key in its environment and the payload on
/// stdin; its output is read (so it never blocks on a full pipe) and
/// dropped, only its size kept.
async fn run_command(cmd: &str, t: &Trigger, timeout: Duration) -> TriggerOutcome {
    let outcome = |result, code, detail: String| TriggerOutcome {
        result,
        target: Some(TriggerTarget::Command),
        code,
        duration_ms: 0,
        detail,
        retry_at_ms: None,
    };
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(cmd).env_clear();
    for k in KEPT_ENV {
        if let Some(v) = std::env::var_os(k) {
            command.env(k, v);
        }
    }
    command
        .env("ENGINE_IDEMPOTENCY_KEY", &t.key)
        .env("ENGINE_TRIGGER_ID", t.id.to_string())
        .env("ENGINE_TRIGGER_KIND", t.kind.as_str())
        .env("ENGINE_TRIGGER_DRY_RUN", if t.kind == TriggerKind::Smoke { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return outcome(TriggerResult::Failed, None, format!("command did not start: {}", e.kind())),
    };
    let body = payload(t.kind).to_string();
    let stdin = child.stdin.take();
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is no error.
            let _ = stdin.write_all(body.as_bytes()).await;
            drop(stdin);
        }
        let (o, e) = tokio::join!(count(out), count(err));
        (child.wait().await, o + e)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => outcome(TriggerResult::Failed, None, format!("command killed after {} s", timeout.as_secs())),
        Ok((Err(e), _)) => outcome(TriggerResult::Failed, None, format!("command: {}", e.kind())),
        Ok((Ok(status), bytes)) => match status.code() {
            Some(0) => {
                outcome(TriggerResult::Succeeded, Some(0), format!("command exited 0 ({bytes} bytes of output)"))
            }
            Some(c) => outcome(TriggerResult::Failed, Some(c), format!("command exited {c} ({bytes} bytes of output)")),
            None => outcome(TriggerResult::Failed, None, "command ended by a signal".into()),
        },
    }
}

/// Bytes read from a pipe to its end (dropped as read).
async fn count<R: AsyncRead + Unpin>(pipe: Option<R>) -> u64 {
    let Some(mut pipe) = pipe else { return 0 };
    let mut buf = [0u8; 8192];
    let mut n = 0u64;
    while let Ok(k) = pipe.read(&mut buf).await {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    model::state::job::cut(&line, 200).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::state::farm::TriggerState;

    fn trigger(kind: TriggerKind) -> Trigger {
        Trigger {
            id: 7,
            kind,
            key: "key-7".into(),
            by: "operator".into(),
            requested_ms: 1,
            state: TriggerState::Pending,
            attempts: 1,
            claimed_by: Some(1),
            claimed_until_ms: 10,
            next_attempt_ms: 0,
            outcome: None,
            outcome_ms: None,
        }
    }

    #[test]
    fn payloads_are_reference_003s() {
        assert_eq!(payload(TriggerKind::Trigger).to_string(), r#"{"action":"drain"}"#);
        assert_eq!(payload(TriggerKind::Smoke), serde_json::json!({"action": "drain", "dry_run": true}));
    }

    #[test]
    fn debug_output_leaves_the_secrets_out() {
        let cfg = TriggerConfig {
            target: Some(TriggerTargetConfig::Webhook("https://user:pw-very-secret@worker.example/hook".into())),
            token: Some("worker-token-very-secret".into()),
            timeout: Duration::from_secs(3),
        };
        let dbg = format!("{cfg:?} {cfg:#?}");
        assert!(!dbg.contains("very-secret") && !dbg.contains("worker.example"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[tokio::test]
    async fn the_command_gets_the_key_and_the_payload_but_not_the_nodes_secrets() {
        let dir = std::env::temp_dir().join(format!("trigger-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("seen");
        // The node's own environment may hold its token; the command must not see it.
        std::env::set_var("CONTROL_PLANE_TOKEN", "node-secret-token");
        let cmd = format!(
            "echo \"$ENGINE_IDEMPOTENCY_KEY $ENGINE_TRIGGER_KIND ${{CONTROL_PLANE_TOKEN:-none}} $(cat)\" > {}; echo chatter",
            out.display()
        );
        let o = run_command(&cmd, &trigger(TriggerKind::Smoke), Duration::from_secs(5)).await;
        assert_eq!((o.result, o.code), (TriggerResult::Succeeded, Some(0)), "{o:?}");
        assert!(o.detail.contains("8 bytes of output") && !o.detail.contains("chatter"), "{o:?}");
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(seen.trim(), r#"key-7 smoke none {"action":"drain","dry_run":true}"#);
        let o = run_command("exit 3", &trigger(TriggerKind::Trigger), Duration::from_secs(5)).await;
        assert_eq!((o.result, o.code), (TriggerResult::Failed, Some(3)));
        let t0 = Instant::now();
        let o = run_command("sleep 5", &trigger(TriggerKind::Trigger), Duration::from_millis(300)).await;
        assert!(o.detail.contains("killed") && t0.elapsed() < Duration::from_secs(3), "{o:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_post_names_neither_the_url_nor_the_token() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hooks/very-secret-path");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let o = post(&http, &url, Some("tok-very-secret"), 1, &trigger(TriggerKind::Trigger)).await;
        assert_eq!(o.result, TriggerResult::Failed);
        assert!(o.retry_at_ms.is_some(), "a connection error is retried");
        assert!(o.detail.starts_with("webhook: ") && !o.detail.contains("very-secret"), "{o:?}");
    }
}
