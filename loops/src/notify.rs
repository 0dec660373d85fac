//! Notification delivery. For each due notification the leader first commits a
//! claim (so a deposed or partitioned leader, unable to commit, cannot send),
//! then sends, then commits the outcome. A new leader finishes what the old one
//! left: an unrecorded send is retried once its claim expires. Delivery is
//! therefore at-least-once, with the notification id as idempotency key in every
//! message; a duplicate needs a leader crash between the send and its record.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use model::state::{Incident, Notification};
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use serde_json::json;

use crate::LoopContext;
use raft_store::supervisor::Probe;

/// How long a claim keeps other leaders off a notification.
pub const CLAIM_MS: u64 = 15_000;
/// Attempts before a notification is marked failed for good.
pub const MAX_ATTEMPTS: u32 = 8;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(500);
/// Notifications started per poll.
const PER_ROUND: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS, or no delivery.
    Required,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    None,
}

/// SMTP delivery settings. `Debug` leaves the password out.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub tls: SmtpTls,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Where incident notifications go. The Slack webhook URL is a credential
/// (whoever has it can post to the channel): `Debug` leaves it out, and no
/// error or log line carries it.
#[derive(Clone, Default)]
pub struct NotifyConfig {
    pub slack_webhook: Option<String>,
    pub smtp: Option<SmtpConfig>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("slack_webhook", &self.slack_webhook.as_ref().map(|_| "<redacted>"))
            .field("smtp", &self.smtp)
            .finish()
    }
}

impl NotifyConfig {
    pub fn channels(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.slack_webhook.is_some() {
            c.push("slack".to_string());
        }
        if self.smtp.is_some() {
            c.push("email".to_string());
        }
        c
    }
}

/// Delay before attempt `attempts + 1`: 1 s doubling, capped at 5 minutes.
pub fn backoff_ms(attempts: u32) -> u64 {
    (1_000u64 << attempts.saturating_sub(1).min(9)).min(300_000)
}

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    let http = reqwest::Client::builder().timeout(SEND_TIMEOUT).build().expect("static reqwest options always build");
    let busy: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    loop {
        tokio::time::sleep(POLL).await;
        if !ctx.acting_leader().await {
            probe.idle();
            continue;
        }
        probe.busy();
        let now = now_ms();
        let due: Vec<u64> = {
            let applied = ctx.cluster.state.read();
            let busy = busy.lock().expect("busy set lock");
            let due = applied.state.notifications.values().filter(|n| n.due(now) && !busy.contains(&n.id));
            due.take(PER_ROUND).map(|n| n.id).collect()
        };
        for id in due {
            busy.lock().expect("busy set lock").insert(id);
            let (ctx, http, busy) = (ctx.clone(), http.clone(), busy.clone());
            tokio::spawn(async move {
                deliver(&ctx, &http, id).await;
                busy.lock().expect("busy set lock").remove(&id);
            });
        }
        probe.done(Ok(()));
    }
}

async fn deliver(ctx: &LoopContext, http: &reqwest::Client, id: u64) {
    let actor = ctx.actor("notify");
    let claim = Command::ClaimNotification { id, until_ms: now_ms() + CLAIM_MS };
    let n = match ctx.cluster.write(&actor, claim).await {
        Ok(Ok(Reply::Notification(n))) => n,
        Ok(other) => return tracing::debug!(id, ?other, "claim refused"),
        Err(e) => return tracing::warn!(id, error = %e, "claim not committed"),
    };
    let incident = ctx.cluster.state.read().state.incidents.get(&n.incident_id).cloned();
    let Some(incident) = incident else {
        let record = Command::RecordDelivery { id, error: Some("incident pruned".into()), retry_at_ms: None };
        let _ = ctx.cluster.write(&actor, record).await;
        return;
    };
    let result = match n.channel.as_str() {
        "slack" => send_slack(ctx, http, &n, &incident).await,
        "email" => send_email(ctx, &n, &incident).await,
        other => Err(format!("no channel {other} configured on this node")),
    };
    let record = match result {
        Ok(()) => Command::RecordDelivery { id, error: None, retry_at_ms: None },
        Err(e) => {
            tracing::warn!(id, channel = %n.channel, attempt = n.attempts, error = %e, "notification failed");
            let retry = (n.attempts < MAX_ATTEMPTS).then(|| now_ms() + backoff_ms(n.attempts));
            Command::RecordDelivery { id, error: Some(e), retry_at_ms: retry }
        }
    };
    if let Err(e) = ctx.cluster.write(&actor, record).await {
        tracing::warn!(id, error = %e, "delivery outcome not committed; it will be retried after the claim expires");
    }
}

/// Worker-supplied text (incident subjects and details name workers, pools
/// and providers as the workers report them) made inert for Slack's mrkdwn,
/// where `<...>` is a link or a mention such as `<!channel>`.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Subject and body; the body names the sending node so a duplicate can be traced.
fn text(n: &Notification, i: &Incident, node: u64) -> (String, String) {
    let subject = format!("[engine-room] {} {} {} {}", n.event, i.severity, i.kind, i.subject);
    let body = format!(
        "{}: {} {} on {}: {}\nincident #{} opened at {} ms; notification #{} (idempotency key engine-room-notification-{}); sent by node {}",
        n.event, i.severity, i.kind, i.subject, i.detail, i.id, i.opened_ms, n.id, n.id, node
    );
    (subject, body)
}

async fn send_slack(ctx: &LoopContext, http: &reqwest::Client, n: &Notification, i: &Incident) -> Result<(), String> {
    let url = ctx.notify.slack_webhook.as_deref().ok_or("SLACK_WEBHOOK_URL is not set on the leader")?;
    let (subject, body) = text(n, i, ctx.cluster.id);
    let payload = json!({
        "text": format!("*{}*\n{}", slack_escape(&subject), slack_escape(&body)),
        "engine_room": {"notification_id": n.id, "incident_id": i.id, "event": n.event, "kind": i.kind, "subject": i.subject, "node": ctx.cluster.id}
    });
    post_slack(http, url, n.id, &payload).await
}

/// POST one message to the webhook. The error names neither the URL nor the
/// response body: it is logged and replicated as the notification's last_error.
async fn post_slack(http: &reqwest::Client, url: &str, id: u64, payload: &serde_json::Value) -> Result<(), String> {
    let res = http
        .post(url)
        .header("x-engine-room-notification-id", id.to_string())
        .json(payload)
        .send()
        .await
        .map_err(|e| format!("slack webhook: {}", e.without_url()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("slack webhook answered {}", res.status()))
    }
}

async fn send_email(ctx: &LoopContext, n: &Notification, i: &Incident) -> Result<(), String> {
    let cfg = ctx.notify.smtp.as_ref().ok_or("SMTP_HOST is not set on the leader")?;
    let (subject, body) = text(n, i, ctx.cluster.id);
    let mut builder = Message::builder()
        .from(cfg.from.parse().map_err(|e| format!("SMTP_FROM: {e}"))?)
        .subject(subject)
        .message_id(Some(format!("<engine-room-notification-{}@{}>", n.id, ctx.cluster.opts.cluster_name)));
    for to in &cfg.to {
        builder = builder.to(to.parse().map_err(|e| format!("SMTP_TO {to}: {e}"))?);
    }
    let msg = builder.header(ContentType::TEXT_PLAIN).body(body).map_err(|e| e.to_string())?;
    let tls = || TlsParameters::new(cfg.host.clone()).map_err(|e| e.to_string());
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
        .port(cfg.port)
        .timeout(Some(SEND_TIMEOUT))
        .tls(match cfg.tls {
            SmtpTls::Opportunistic => Tls::Opportunistic(tls()?),
            SmtpTls::Required => Tls::Required(tls()?),
            SmtpTls::Implicit => Tls::Wrapper(tls()?),
            SmtpTls::None => Tls::None,
        });
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        transport = transport.credentials(Credentials::new(u.clone(), p.clone()));
    }
    transport.build().send(msg).await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_is_escaped() {
        assert_eq!(
            slack_escape("w-1 <!channel> & <https://evil|click>"),
            "w-1 &lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
        assert_eq!(slack_escape("plain *bold* text"), "plain *bold* text");
    }

    #[test]
    fn debug_output_leaves_the_secrets_out() {
        let cfg = NotifyConfig {
            slack_webhook: Some("https://hooks.slack.com/services/T0/B0/very-secret-hook".into()),
            smtp: Some(SmtpConfig {
                host: "smtp.example.com".into(),
                port: 587,
                username: Some("alerts".into()),
                password: Some("smtp-very-secret-password".into()),
                from: "a@example.com".into(),
                to: vec!["b@example.com".into()],
                tls: SmtpTls::Required,
            }),
        };
        let dbg = format!("{cfg:?} {:#?}", cfg);
        assert!(!dbg.contains("very-secret-hook") && !dbg.contains("hooks.slack.com"), "{dbg}");
        assert!(!dbg.contains("smtp-very-secret-password"), "{dbg}");
        assert!(dbg.contains("smtp.example.com") && dbg.contains("<redacted>"), "{dbg}");
    }

    /// A failed send's error is replicated (the notification's last_error) and
    /// logged: it must not carry the webhook URL, which reqwest's errors do.
    #[tokio::test]
    async fn a_failed_slack_send_does_not_name_the_webhook() {
        // A port that was free a moment ago: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/very-secret-hook");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let raw = http.post(&url).send().await.unwrap_err();
        assert!(raw.to_string().contains("very-secret-hook"), "reqwest's own error names the URL: {raw}");
        let e = post_slack(&http, &url, 7, &json!({"text": "x"})).await.unwrap_err();
        assert!(
            e.starts_with("slack webhook: ") && !e.contains("very-secret-hook") && !e.contains("/services/"),
            "{e}"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(4), 8_000);
        assert_eq!(backoff_ms(30), 300_000);
    }
}
