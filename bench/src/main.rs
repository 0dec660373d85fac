//! `er-bench run` loads a target with SPEC §3 heartbeats; `er-bench noop-server`
//! serves the no-op ceiling endpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bench::{Endpoint, LoadOptions, Target};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "er-bench", about = "Heartbeat load generator for Engine Room, etcd and a no-op ceiling")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send bounded heartbeat load to one target and report throughput and latency.
    Run(RunArgs),
    /// The job workload (P producers, W workers claim → complete) on Engine Room or Postgres.
    Jobs(JobsArgs),
    /// Enqueue many jobs in batches, claiming none (the memory figure).
    JobsFill(FillArgs),
    /// Answer 200 to every request (the machine's HTTP ceiling).
    NoopServer {
        /// Loopback host:port to listen on (port 0 picks one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "engine-room")]
    target: Target,
    /// Target base URL (loopback only); repeat or comma-separate for several nodes.
    #[arg(long = "url", required = true, value_delimiter = ',')]
    urls: Vec<String>,
    /// Bearer token for Engine Room.
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Simulated workers; request i comes from worker i mod W.
    #[arg(long, default_value_t = 10_000)]
    workers: u64,
    /// Keep-alive connections, spread round-robin over the URLs.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Fixed total rate in requests/s; without it the run is closed-loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds (after warm-up); capped at one hour.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests were started, warm-up included.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// First worker number (lets several runs register disjoint workers).
    #[arg(long, default_value_t = 0)]
    first_worker: u64,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the summary as JSON to this file (`-` for stdout).
    #[arg(long)]
    json: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// PEM CA that `https://` targets are verified against (e.g. `certs init`'s ca.pem).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
struct JobsArgs {
    #[arg(long, value_enum)]
    target: bench::jobs::JobsTarget,
    /// Engine Room node URLs (comma-separated), or a Postgres connection string.
    #[arg(long = "url", required = true, value_delimiter = ',')]
    urls: Vec<String>,
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true, default_value = "")]
    token: String,
    #[arg(long, default_value_t = 8)]
    producers: usize,
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Jobs enqueued in all.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Seconds after which the run stops even with jobs left (at most 3600).
    #[arg(long, default_value_t = 120.0)]
    max_time: f64,
    /// Jobs per claim.
    #[arg(long, default_value_t = 1)]
    claim_batch: u32,
    /// Complete the last job of a batch and claim the next batch in one call
    /// (Postgres: in one transaction).
    #[arg(long)]
    complete_next: bool,
    /// Queue name (default: one per run).
    #[arg(long)]
    queue: Option<String>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<String>,
}

#[derive(Debug, clap::Args)]
struct FillArgs {
    #[arg(long = "url", required = true, value_delimiter = ',')]
    urls: Vec<String>,
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// Queues the jobs are spread over (each under its cap on queued jobs).
    #[arg(long, default_value_t = 20)]
    queues: u64,
    #[arg(long, default_value_t = 4)]
    producers: usize,
}

fn jobs(a: JobsArgs) -> anyhow::Result<()> {
    for u in &a.urls {
        if !(u.contains("127.0.0.1") || u.contains("localhost") || u.contains("[::1]") || u.contains("host=/")) {
            anyhow::bail!("loopback targets only, not {u}");
        }
    }
    let max_time = secs("max-time", a.max_time)?.min(bench::load::MAX_DURATION);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let opts = bench::jobs::JobsOptions {
        target: a.target,
        urls: a.urls,
        token: a.token,
        producers: a.producers.clamp(1, 1_000),
        workers: a.workers.clamp(1, 1_000),
        jobs: a.jobs,
        max_time,
        claim_batch: a.claim_batch.clamp(1, 100),
        complete_next: a.complete_next,
        queue: a.queue.unwrap_or_else(|| format!("bench-{stamp}")),
    };
    let summary = runtime(None)?.block_on(bench::jobs::run(opts)).map_err(anyhow::Error::msg)?;
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(path) = a.json {
        std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

fn jobs_fill(a: FillArgs) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let (done, errors, secs) = runtime(None)?
        .block_on(bench::jobs::fill(
            a.urls,
            a.token,
            a.jobs,
            a.queues,
            a.producers.clamp(1, 64),
            format!("fill-{stamp}"),
        ))
        .map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::json!({"enqueued": done, "errors": errors, "seconds": secs}));
    Ok(())
}

/// A TLS client trusting only the certificates in `path`.
fn tls_config(path: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        roots.add(cert.with_context(|| format!("{} is not PEM", path.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn secs(what: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("--{what} must be a non-negative number of seconds"))
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build().context("cannot start the tokio runtime")
}

/// Ctrl-C or SIGTERM: stop sending, finish in-flight requests, still report.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let endpoints =
        a.urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    if a.target == Target::EngineRoom && a.token.is_none() {
        anyhow::bail!("--token (or CONTROL_PLANE_TOKEN) is needed for --target engine-room");
    }
    let opts = LoadOptions {
        target: a.target,
        endpoints,
        token: a.token,
        workers: a.workers,
        connections: a.connections,
        rate: a.rate,
        duration: secs("duration", a.duration)?,
        requests: a.requests,
        warmup: secs("warmup", a.warmup)?,
        timeout: secs("timeout", a.timeout)?,
        first_worker: a.first_worker,
        progress: !a.quiet,
        tls: a.ca.as_deref().map(tls_config).transpose()?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime(Some(a.threads))?;
    let summary = rt.block_on(async {
        let flag = stop.clone();
        tokio::spawn(async move {
            stop_signal().await;
            flag.store(true, Ordering::Relaxed);
        });
        bench::run(opts, stop).await
    });
    let summary = summary.map_err(anyhow::Error::msg)?;
    summary.print_text();
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path == "-" {
            println!("{text}");
        } else {
            std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {path}"))?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run(a) => run(a),
        Cmd::Jobs(a) => jobs(a),
        Cmd::JobsFill(a) => jobs_fill(a),
        Cmd::NoopServer { listen, threads } => {
            if !listen.ip().is_loopback() {
                anyhow::bail!("noop-server listens on loopback only, not {}", listen.ip());
            }
            runtime(threads)?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                println!("listening on http://{}", listener.local_addr()?);
                tokio::select! {
                    r = bench::noop::serve(listener) => r.context("noop server failed"),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })
        }
    }
}
