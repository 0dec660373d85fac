//! Client conveniences over the HTTP API, for operators at a shell.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct Target {
    /// Any node's base URL.
    #[arg(long, env = "ENGINE_URL", default_value = "http://127.0.0.1:7001", global = true)]
    pub url: String,
    /// API bearer token.
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA to trust (alone) for an https:// URL: the cluster CA from `certs init`.
    #[arg(long, env = "ENGINE_TLS_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
}

impl Target {
    fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
            builder = builder.tls_backend_rustls().tls_certs_only(roots);
        }
        builder.build().context("cannot build the HTTP client")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let token = self.token.as_deref().context("CONTROL_PLANE_TOKEN (--token) is required")?;
        let mut req =
            self.http()?.request(method, format!("{}{}", self.url.trim_end_matches('/'), path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.with_context(|| format!("cannot reach {}", self.url))?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{status}: {value}");
        }
        Ok(value)
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

#[derive(Debug, Args)]
pub struct ClusterCmd {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Nodes, roles, term, log indexes, lag.
    Status,
    /// Add a node as a non-voting learner.
    AddLearner { id: u64, addr: String },
    /// Promote a learner to voter.
    Promote { id: u64 },
    /// Remove a node from the cluster.
    Remove { id: u64 },
}

impl ClusterCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        use reqwest::Method;
        let t = &self.target;
        let v = match self.action {
            ClusterAction::Status => t.call(Method::GET, "/api/cluster/status", None).await?,
            ClusterAction::AddLearner { id, addr } => {
                t.call(Method::POST, "/api/cluster/learners", Some(json!({"id": id, "addr": addr}))).await?
            }
            ClusterAction::Promote { id } => {
                t.call(Method::POST, "/api/cluster/promote", Some(json!({"id": id}))).await?
            }
            ClusterAction::Remove { id } => {
                t.call(Method::POST, "/api/cluster/remove", Some(json!({"id": id}))).await?
            }
        };
        print(&v);
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct PoolsCmd {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: PoolsAction,
}

#[derive(Debug, Subcommand)]
enum PoolsAction {
    /// List pools.
    List,
    /// Set a pool's desired worker count.
    Scale { pool: String, desired_count: u32 },
}

impl PoolsCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        use reqwest::Method;
        let t = &self.target;
        let v = match self.action {
            PoolsAction::List => t.call(Method::GET, "/api/pools", None).await?,
            PoolsAction::Scale { pool, desired_count } => {
                let path = format!("/api/pools/{pool}/scale");
                t.call(Method::POST, &path, Some(json!({"desired_count": desired_count}))).await?
            }
        };
        print(&v);
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct TokensCmd {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: TokensAction,
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a named token; its secret is printed once.
    Create {
        /// admin, operator, read, worker, metrics or producer.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        name: String,
        /// Worker tokens: act only for worker ids starting with this.
        #[arg(long)]
        worker_prefix: Option<String>,
        /// Worker tokens: act only for this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

impl TokensCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        use reqwest::Method;
        let t = &self.target;
        let v = match self.action {
            TokensAction::Create { scope, name, worker_prefix, pool } => {
                let body = json!({"name": name, "scope": scope, "worker_prefix": worker_prefix, "pool": pool});
                t.call(Method::POST, "/api/tokens", Some(body)).await?
            }
            TokensAction::List => t.call(Method::GET, "/api/tokens", None).await?,
            TokensAction::Revoke { name } => t.call(Method::DELETE, &format!("/api/tokens/{name}"), None).await?,
        };
        print(&v);
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct JobsCmd {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: JobsAction,
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// Enqueue a job; prints it with its job_id.
    Enqueue {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        kind: String,
        /// The payload, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Not claimable before this RFC 3339 time.
        #[arg(long)]
        run_after: Option<String>,
        /// Only workers of this pool may claim it.
        #[arg(long)]
        pool: Option<String>,
    },
    /// The history, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// queued, running, succeeded, failed, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        worker: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// The previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One job with its attempts and lease.
    Get { job_id: String },
    /// Cancel a job.
    Cancel {
        job_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Requeue a dead, failed or cancelled job.
    Requeue { job_id: String },
}

/// `?k=v&...` of the parameters that are set, percent-encoded.
fn query(params: &[(&str, Option<String>)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let set: Vec<String> = params.iter().filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", enc(v)))).collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

/// A job id as a path segment: decimal digits only.
fn job_path(id: &str, rest: &str) -> anyhow::Result<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("job id {id:?} is not a decimal job id");
    }
    Ok(format!("/api/v1/jobs/{id}{rest}"))
}

impl JobsCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        use reqwest::Method;
        let t = &self.target;
        let v = match self.action {
            JobsAction::Enqueue { queue, kind, payload, priority, idempotency_key, max_attempts, run_after, pool } => {
                let payload: Value = serde_json::from_str(&payload).context("--payload is not JSON")?;
                let body = json!({"queue": queue, "kind": kind, "payload": payload, "priority": priority,
                    "idempotency_key": idempotency_key, "max_attempts": max_attempts, "run_after": run_after,
                    "pool": pool});
                t.call(Method::POST, "/api/v1/jobs", Some(body)).await?
            }
            JobsAction::List { queue, state, kind, worker, limit, cursor } => {
                let q = query(&[
                    ("queue", queue),
                    ("state", state),
                    ("kind", kind),
                    ("worker", worker),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ]);
                t.call(Method::GET, &format!("/api/v1/jobs{q}"), None).await?
            }
            JobsAction::Get { job_id } => t.call(Method::GET, &job_path(&job_id, "")?, None).await?,
            JobsAction::Cancel { job_id, reason } => {
                t.call(Method::POST, &job_path(&job_id, "/cancel")?, Some(json!({"reason": reason}))).await?
            }
            JobsAction::Requeue { job_id } => t.call(Method::POST, &job_path(&job_id, "/requeue")?, None).await?,
        };
        print(&v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_queries_and_paths_are_encoded() {
        assert_eq!(query(&[("queue", None)]), "");
        assert_eq!(
            query(&[("queue", Some("a b".into())), ("state", None), ("cursor", Some("42".into()))]),
            "?queue=a%20b&cursor=42"
        );
        assert_eq!(job_path("17", "/cancel").unwrap(), "/api/v1/jobs/17/cancel");
        assert!(job_path("../x", "").is_err());
        assert!(job_path("", "").is_err());
    }
}
