//! `engine-room`: run a node (`serve`), a local dev cluster (`dev`), or talk to
//! a running cluster over its HTTP API (`cluster`, `pools`, `tokens`, `jobs`),
//! or run a job worker (`worker run`).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod config;
mod dev;
mod secrets;
mod serve;
mod sim;
mod sim_farm;
mod transport;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "engine-room", version, about = "Highly available control plane for worker fleets")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of a cluster.
    Serve(config::ServeArgs),
    /// Run a local 3-node cluster on loopback with simulated workers.
    Dev(dev::DevArgs),
    /// Cluster status and membership changes.
    Cluster(client::ClusterCmd),
    /// List and scale pools.
    Pools(client::PoolsCmd),
    /// Create, list and revoke named, scoped API tokens.
    Tokens(client::TokensCmd),
    /// Enqueue, list, read, cancel and requeue jobs.
    Jobs(client::JobsCmd),
    /// Create a cluster CA and node certificates for TLS.
    Certs(transport::certs::CertsCmd),
    /// Run a job worker: a command per claimed job.
    Worker(worker::WorkerCmd),
}

/// mimalloc 3 keeps freed memory for a second before giving it back to the
/// OS; right after a snapshot or a burst of registrations at 100k workers that
/// showed as 30-50 MB more RSS per node (`bench/scale.sh`). Give it back at
/// once: no throughput cost was measurable (`bench/compare.sh`-style A/B).
/// An operator who sets mimalloc's own `MIMALLOC_PURGE_DELAY` gets that instead.
fn return_freed_memory_promptly() {
    // `mi_option_purge_delay` in mimalloc 3's option enum (mimalloc.h); the
    // sys crate does not name it, so the number is used only on mimalloc 3.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: plain calls into the allocator's option table, no pointers.
    unsafe {
        if libmimalloc_sys::mi_version() / 10_000 == 3 && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    // A missing .env is normal; a malformed one is reported by clap's own checks.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engine-room: cannot start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Cmd::Serve(args) => {
            secrets::private_umask();
            match args.validate() {
                Ok(cfg) => runtime.block_on(serve::run(cfg)),
                Err(e) => {
                    eprintln!("engine-room: config error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        Cmd::Dev(args) => runtime.block_on(dev::run(args)),
        Cmd::Cluster(cmd) => runtime.block_on(cmd.run()),
        Cmd::Pools(cmd) => runtime.block_on(cmd.run()),
        Cmd::Tokens(cmd) => runtime.block_on(cmd.run()),
        Cmd::Jobs(cmd) => runtime.block_on(cmd.run()),
        Cmd::Certs(cmd) => cmd.run(),
        Cmd::Worker(cmd) => runtime.block_on(cmd.run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-room: {e:#}");
            ExitCode::FAILURE
        }
    }
}
