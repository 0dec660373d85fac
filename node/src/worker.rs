//! `engine-room worker run --queue Q -- CMD ARGS…`: a job worker that runs a
//! command per job through the reference client (`jobs-client`). The payload
//! goes to the command's stdin; its stdout and stderr lines become the job's
//! log; exit 0 completes the job (result: the last stdout line if it is
//! JSON, else null), another exit fails it. A failure is retryable (within
//! the job's `max_attempts`) unless the exit code is one of
//! `--permanent-exit` (default 65, sysexits' EX_DATAERR: the payload itself
//! is wrong, so another attempt cannot help). A command killed by a signal
//! is a retryable failure. If the lease is lost the command is killed.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use jobs_client::{ClaimedJob, JobContext, JobFailure, JobsClient, RunStats, WorkerConfig};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The longest stdout line kept as a possible result (the payload cap).
const MAX_RESULT_BYTES: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct WorkerCmd {
    #[command(subcommand)]
    action: WorkerAction,
}

#[derive(Debug, Subcommand)]
enum WorkerAction {
    /// Claim jobs and run a command for each.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Queue to claim from; repeat for several, in preference order.
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// Node base URLs, comma-separated; calls move to the next when one fails.
    #[arg(long, env = "ENGINE_NODES", value_delimiter = ',', default_value = "http://127.0.0.1:7001")]
    nodes: Vec<String>,
    /// File holding the bearer token (a `worker` token); else CONTROL_PLANE_TOKEN.
    #[arg(long, env = "WORKER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// This worker's id (default: `<hostname>-<pid>`).
    #[arg(long, env = "WORKER_ID")]
    worker_id: Option<String>,
    /// Pool reported in the runtime heartbeat.
    #[arg(long, env = "WORKER_POOL")]
    pool: Option<String>,
    /// Jobs run at once (1..=100).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Lease renewal period, seconds.
    #[arg(long, env = "WORKER_HEARTBEAT_INTERVAL_SECONDS", default_value_t = 20)]
    renew_every: u64,
    /// Lease TTL, seconds: a job not renewed within it is given up (and killed).
    #[arg(long, env = "WORKER_LEASE_TTL_SECONDS", default_value_t = 60)]
    lease_ttl: u64,
    /// Long poll of one claim, milliseconds (at most 30000).
    #[arg(long, default_value_t = 20_000)]
    wait_ms: u64,
    /// Exit codes that fail a job for good (no retry), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "65")]
    permanent_exit: Vec<i32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

impl WorkerCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.action {
            WorkerAction::Run(args) => run(args).await,
        }
    }
}

fn token(args: &RunArgs) -> anyhow::Result<String> {
    let value = args.token_file.is_none().then(|| args.token.clone()).flatten();
    crate::secrets::secret_value(value, args.token_file.clone(), "WORKER_TOKEN")
        .map_err(anyhow::Error::msg)?
        .context("a token is needed: --token-file F or CONTROL_PLANE_TOKEN")
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).take(100).collect();
    format!("{}-{}", if host.is_empty() { "worker" } else { &host }, std::process::id())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let token = token(&args)?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let mut cfg = WorkerConfig::new(args.nodes.clone(), token, worker_id.clone(), args.queues.clone());
    cfg.pool = args.pool.clone();
    cfg.concurrency = args.concurrency;
    cfg.renew_every = Duration::from_secs(args.renew_every);
    cfg.lease_ttl = Duration::from_secs(args.lease_ttl);
    cfg.wait_ms = args.wait_ms;
    let client = Arc::new(JobsClient::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    client.check().await.map_err(|e| anyhow::anyhow!("the cluster refused this worker's credential: {e}"))?;
    eprintln!(
        "worker {worker_id}: claiming from {} on {} ({} at once); Ctrl-C stops claiming and waits for jobs in hand",
        args.queues.join(","),
        args.nodes.join(","),
        args.concurrency
    );
    let command = Arc::new(Command { argv: args.command, permanent_exit: args.permanent_exit });
    let stats = Arc::new(RunStats::default());
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        eprintln!("worker {worker_id}: stopping: no new claims");
    };
    client
        .run(
            move |job, ctx| {
                let command = command.clone();
                async move { command.run(&job, &ctx).await }
            },
            stats.clone(),
            shutdown,
        )
        .await;
    let s = stats.snapshot();
    eprintln!(
        "worker: claimed {}, succeeded {}, failed {}, lease lost {}, outcome unknown {}",
        s.claimed, s.succeeded, s.failed, s.lease_lost, s.unknown
    );
    Ok(())
}

/// The command run for every job.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub permanent_exit: Vec<i32>,
}

impl Command {
    /// Run once for `job`, its output into `ctx`'s log. Dropping the future
    /// kills the child (`kill_on_drop`).
    pub async fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<Option<Value>, JobFailure> {
        let (program, rest) = self.argv.split_first().expect("clap requires a command");
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .env("JOB_ID", &job.job_id)
            .env("JOB_QUEUE", &job.queue)
            .env("JOB_KIND", &job.kind)
            .env("JOB_ATTEMPT", job.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| JobFailure { error: format!("cannot start {program}: {e}"), retryable: true })?;
        let payload = job.payload.to_string();
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // A command that never reads its stdin must not block the job.
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(payload.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let (last, _, status) = tokio::join!(
            read_lines(stdout, |l| {
                ctx.log(l);
            }),
            read_lines(stderr, |l| {
                ctx.log(&format!("[stderr] {l}"));
            }),
            child.wait()
        );
        feed.abort();
        let status =
            status.map_err(|e| JobFailure { error: format!("cannot wait for {program}: {e}"), retryable: true })?;
        match status.code() {
            Some(0) => Ok(last.and_then(|l| serde_json::from_str::<Value>(&l).ok())),
            Some(code) => Err(JobFailure {
                error: format!("{program} exited with {code}"),
                retryable: !self.permanent_exit.contains(&code),
            }),
            None => Err(JobFailure { error: format!("{program} was killed by a signal ({status})"), retryable: true }),
        }
    }
}

/// Read `r` to its end, calling `each` per line (cut to the log's line cap)
/// and answering the last non-empty line (cut to [`MAX_RESULT_BYTES`]).
/// Memory stays bounded whatever the command writes.
async fn read_lines(mut r: impl AsyncRead + Unpin, mut each: impl FnMut(&str)) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut last: Option<String> = None;
    let mut finish = |line: &mut Vec<u8>, last: &mut Option<String>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        each(jobs_client::cut(text, jobs_client::MAX_LINE_BYTES));
        if !text.trim().is_empty() {
            *last = Some(text.to_string());
        }
        line.clear();
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                finish(&mut line, &mut last);
            } else if line.len() < MAX_RESULT_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        finish(&mut line, &mut last);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> ClaimedJob {
        ClaimedJob {
            job_id: "42".into(),
            lease_token: "1-0".into(),
            lease_expires_at: String::new(),
            queue: "mail".into(),
            kind: "send".into(),
            payload: json!({"to": "a@b"}),
            attempt: 2,
            max_attempts: 3,
        }
    }

    fn sh(script: &str) -> Command {
        Command { argv: vec!["sh".into(), "-c".into(), script.into()], permanent_exit: vec![65] }
    }

    fn lines(ctx: &JobContext) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let batch = ctx.take_logs();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    #[tokio::test]
    async fn payload_on_stdin_env_and_json_result() {
        let ctx = JobContext::new(Default::default());
        let script = r#"read p; echo "payload $p"; echo "env $JOB_ID $JOB_QUEUE $JOB_KIND $JOB_ATTEMPT"; echo oops >&2; echo '{"sent": true}'"#;
        let r = tokio::time::timeout(Duration::from_secs(10), sh(script).run(&job(), &ctx)).await.unwrap();
        assert_eq!(r, Ok(Some(json!({"sent": true}))));
        let logged = lines(&ctx);
        assert!(logged.contains(&r#"payload {"to":"a@b"}"#.to_string()), "{logged:?}");
        assert!(logged.contains(&"env 42 mail send 2".to_string()), "{logged:?}");
        assert!(logged.contains(&"[stderr] oops".to_string()), "{logged:?}");
    }

    #[tokio::test]
    async fn a_last_line_that_is_not_json_gives_a_null_result() {
        let ctx = JobContext::new(Default::default());
        let r = sh("echo done").run(&job(), &ctx).await;
        assert_eq!(r, Ok(None));
    }

    #[tokio::test]
    async fn exit_codes_decide_retry() {
        let ctx = JobContext::new(Default::default());
        let r = sh("echo trying; exit 3").run(&job(), &ctx).await.unwrap_err();
        assert_eq!(r, JobFailure { error: "sh exited with 3".into(), retryable: true });
        let r = sh("exit 65").run(&job(), &ctx).await.unwrap_err();
        assert!(!r.retryable, "65 is permanent");
        let r = sh("kill -9 $$").run(&job(), &ctx).await.unwrap_err();
        assert!(r.retryable && r.error.contains("signal"), "{r:?}");
        let missing = Command { argv: vec!["/nonexistent/cmd".into()], permanent_exit: vec![] };
        assert!(missing.run(&job(), &ctx).await.unwrap_err().error.contains("cannot start"));
    }

    #[tokio::test]
    async fn dropping_the_job_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let ctx = JobContext::new(Default::default());
        let script = format!("sleep 1; touch {}", marker.display());
        let cmd = sh(&script);
        let r = tokio::time::timeout(Duration::from_millis(200), cmd.run(&job(), &ctx)).await;
        assert!(r.is_err(), "timed out, so the future was dropped");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the child was killed with the job");
    }

    #[tokio::test]
    async fn long_output_is_bounded() {
        let ctx = JobContext::new(Default::default());
        // One 200 KB line and 5,000 short ones.
        let r = sh("head -c 200000 /dev/zero | tr '\\0' x; echo; seq 5000").run(&job(), &ctx).await;
        assert_eq!(r, Ok(Some(json!(5000))));
        let logged = lines(&ctx);
        assert!(logged.iter().any(|l| l.len() == jobs_client::MAX_LINE_BYTES), "the long line, cut");
        assert!(logged.len() < 2_100, "the buffer keeps at most its cap: {}", logged.len());
        assert!(logged.iter().any(|l| l.contains("dropped")), "the gap is reported");
    }
}
