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
    Required,
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub slack_webhook: Option<String>,
    pub smtp: Option<SmtpConfig>,
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
        "text": format!("*{subject}*\n{body}"),
        "engine_room": {"notification_id": n.id, "incident_id": i.id, "event": n.event, "kind": i.kind, "subject": i.subject, "node": ctx.cluster.id}
    });
    let res = http
        .post(url)
        .header("x-engine-room-notification-id", n.id.to_string())
        .json(&payload)
        .send()
        .await
        .map_err(|e| e.to_string())?;
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
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(4), 8_000);
        assert_eq!(backoff_ms(30), 300_000);
    }
}
