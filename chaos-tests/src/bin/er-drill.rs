//! The reliability drill: every chaos scenario, long version (20 leader kills
//! by default), against local clusters of real `engine-room serve` processes;
//! writes a markdown report. Exit status 1 when any scenario failed.
//!
//! `er-drill [--report PATH] [--leader-kills N] [--settle-ms MS] [--fault-ms MS] [--only NAME]`
//! (`--only jobs` runs the scenarios whose name starts with `jobs`).

use std::time::Duration;

use chaos_tests::scenarios::{self, Params};

fn main() {
    let mut p = Params::drill();
    let mut report = std::path::PathBuf::from("drill-report.md");
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--report" => report = val().into(),
            "--leader-kills" => p.leader_kills = val().parse().unwrap_or_else(|_| fail("--leader-kills: a number")),
            "--settle-ms" => {
                p.settle = Duration::from_millis(val().parse().unwrap_or_else(|_| fail("--settle-ms: a number")))
            }
            "--fault-ms" => {
                p.fault = Duration::from_millis(val().parse().unwrap_or_else(|_| fail("--fault-ms: a number")))
            }
            "--only" => only = Some(val()),
            "-h" | "--help" => {
                println!("er-drill [--report PATH] [--leader-kills N] [--settle-ms MS] [--fault-ms MS] [--only NAME]");
                return;
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    let started = std::process::Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let machine = machine();
    eprintln!(
        "drill: {} leader kills, settle {:?}, fault {:?}; binary {:?}",
        p.leader_kills,
        p.settle,
        p.fault,
        chaos_tests::binary()
    );
    let reports = scenarios::some(&p, only.as_deref());
    let md = scenarios::markdown(&reports, &started, &machine);
    std::fs::write(&report, &md).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", report.display())));
    println!("{md}");
    eprintln!("report written to {}", report.display());
    if reports.iter().any(|r| !r.passed) {
        std::process::exit(1);
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores, {model}")
}

fn fail(msg: &str) -> ! {
    eprintln!("er-drill: {msg}");
    std::process::exit(2)
}
