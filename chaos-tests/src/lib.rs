//! Multi-process test harness: real `engine-room serve` processes on loopback,
//! each on its own 127.0.0.x address, with kill, restart, pause and network
//! partitions (iptables rules between those addresses). Node logs are printed
//! when a test fails.

pub mod cluster;
pub mod jobs;
pub mod net;
pub mod peer;
pub mod receivers;
pub mod scenarios;
pub mod workload;

pub use cluster::{Options, TestCluster};
pub use net::Partition;

/// Path of the binary under test: `ENGINE_ROOM_BIN` as it is, else
/// `debug/engine-room` in the workspace target dir, which the first call in
/// each process brings up to date with `cargo build` (see [`BUILD_ARGS`]), so
/// a test never runs a binary older than the sources. When it is fresh this
/// is cargo's no-op check, about a second. Panics if the build fails.
pub fn binary() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("ENGINE_ROOM_BIN") {
            return p.into();
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target =
            std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| root.join("target"));
        build_binary(&root);
        target.join("debug/engine-room")
    })
    .clone()
}

/// Run `engine-room ARGS` in `dir`; panics unless it succeeds.
pub fn run_ok(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new(binary())
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run engine-room {args:?}: {e}"));
    assert!(out.status.success(), "engine-room {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// How [`binary`] builds `engine-room`: as `cargo nextest run --workspace` (and
/// `./test.sh`'s build) does, so that right after those this is a no-op. Two
/// things decide whether cargo sees the same build: the profile (`cargo test`
/// builds the binary in the `test` profile, which inherits `dev` but is kept
/// apart) and the features of the dependencies, which depend on what one
/// command builds (resolver 2): here the whole workspace with its
/// dev-dependencies. `--examples` (the workspace has none) is what asks for
/// the dev-dependencies without building every test.
pub const BUILD_ARGS: &[&str] = &["build", "--profile", "test", "--workspace", "--bin", "engine-room", "--examples"];

fn build_binary(root: &std::path::Path) {
    // Cargo sets CARGO for the tests it runs, and so does nextest; er-drill
    // started by hand falls back to the cargo that compiled it, then to PATH.
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").filter(|c| std::path::Path::new(c).exists()).map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let out = std::process::Command::new(&cargo)
        .args(BUILD_ARGS)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build engine-room: {e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        panic!("building the binary under test failed ({cargo:?} {}, {}):\n{log}", BUILD_ARGS.join(" "), out.status);
    }
    if log.contains("Compiling ") {
        eprintln!("chaos-tests: engine-room was stale, rebuilt in {:.1?}:\n{log}", started.elapsed());
    }
}
