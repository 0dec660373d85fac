//! `engine-room dev`: a local cluster of real node processes on loopback, with
//! per-node data dirs and logs, simulated workers and job workers with a
//! producer, and a simulated build farm, for a newcomer to look at and poke.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Port of node 1; node N listens on base_port + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Where node data and logs go.
    #[arg(long, default_value = ".engine-room-dev")]
    pub dir: PathBuf,
    /// Token for the API and UI. The default is fixed and public: the dev
    /// cluster listens on loopback only.
    #[arg(long, env = "CONTROL_PLANE_TOKEN", default_value = DEV_TOKEN, hide_env_values = true)]
    pub token: String,
    /// Start from empty data dirs.
    #[arg(long)]
    pub fresh: bool,
    /// Simulated workers heartbeating to random nodes.
    #[arg(long, default_value_t = 36)]
    pub workers: usize,
    /// Simulated job workers (each runs up to 4 jobs at once).
    #[arg(long, default_value_t = 4)]
    pub job_workers: usize,
    /// Jobs the simulated producer enqueues per minute (0: none).
    #[arg(long, default_value_t = 60)]
    pub jobs_per_minute: u32,
    /// Run the simulated build farm (`--builds=false`: none).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub builds: bool,
}

/// The dev cluster's default token: long enough for the node's secret check.
pub const DEV_TOKEN: &str = "dev-token-loopback-only-0123456789abcdef";

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.fresh && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("cannot clear {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find own executable")?;
    let url = |n: u64| format!("http://127.0.0.1:{}", args.base_port as u64 + n - 1);
    let peers: Vec<String> = (1..=args.nodes).map(|n| format!("{n}={}", url(n))).collect();
    let peers = peers.join(",");

    let weak = args.token.len() < crate::secrets::MIN_SECRET_BYTES;
    let mut children = Vec::new();
    for n in 1..=args.nodes {
        let log_path = args.dir.join(format!("node-{n}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .env("ENGINE_NODE_ID", n.to_string())
            .env("ENGINE_LISTEN", format!("127.0.0.1:{}", args.base_port as u64 + n - 1))
            .env("ENGINE_DATA_DIR", args.dir.join(format!("node-{n}")))
            .env("ENGINE_PEERS", &peers)
            .env("CONTROL_PLANE_TOKEN", &args.token)
            .env("CLUSTER_SECRET", format!("dev-secret-{}-{}", args.token, "0123456789abcdef0123456789abcdef"))
            // A short --token is fine on loopback; the node then warns once.
            .env("ENGINE_ALLOW_WEAK_SECRETS", weak.to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start node process")?;
        children.push((n, child));
    }

    println!("Engine Room dev cluster: {} nodes", args.nodes);
    for n in 1..=args.nodes {
        println!("  node {n}: {}  (log: {})", url(n), args.dir.join(format!("node-{n}.log")).display());
    }
    println!("  UI:    {}/verifier-engine-room/overview  (any user, password below)", url(1));
    println!("  token: {}", args.token);
    println!("  try:   curl -H 'Authorization: Bearer {}' {}/api/cluster/status", args.token, url(1));
    println!("  {} simulated workers heartbeat to random nodes.", args.workers);
    crate::sim::spawn(args.workers, (1..=args.nodes).map(url).collect(), args.token.clone());
    println!(
        "  {} simulated job workers run jobs from queues email, reports, images; a producer enqueues {} a minute",
        args.job_workers, args.jobs_per_minute
    );
    println!("  (some fail and retry, email.bounce always fails and ends dead): see the Jobs page");
    crate::sim::spawn_jobs(
        args.job_workers,
        args.jobs_per_minute,
        (1..=args.nodes).map(url).collect(),
        args.token.clone(),
    );
    if args.builds {
        println!("  a simulated build worker builds a few Python packages (one requested every 20 s); lxml always");
        println!("  fails on a missing C header that a seeded hint recognizes: see the Builds, Plan and Hints pages");
        crate::sim_farm::spawn((1..=args.nodes).map(url).collect(), args.token.clone());
    }
    println!("Ctrl-C stops the cluster; data stays in {}.", args.dir.display());

    // SIGTERM as well as Ctrl-C: a script that started `dev` stops it with
    // `kill <pid>` and expects the node processes to go with it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                // A node that dies (a crash, or an operator's kill drill) is
                // reported once; the others keep serving. When none is left,
                // dev stops.
                let mut alive = 0;
                for (n, child) in children.iter_mut() {
                    match child.try_wait() {
                        Ok(Some(status)) if reported.insert(*n) => {
                            eprintln!("node {n} exited ({status}); the others keep running; its log: {}",
                                args.dir.join(format!("node-{n}.log")).display());
                        }
                        Ok(None) => alive += 1,
                        _ => {}
                    }
                }
                if alive == 0 {
                    anyhow::bail!("every node exited; see the logs in {}", args.dir.display());
                }
            }
        }
    }
    println!("stopping nodes");
    for (_, child) in children.iter_mut() {
        let _ = child.kill().await;
    }
    Ok(())
}
