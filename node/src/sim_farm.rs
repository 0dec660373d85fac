//! The dev cluster's simulated build farm: a producer that requests builds
//! of a few Python packages now and then (reference 003's `/queue/enqueue`),
//! and a build worker that claims them from the `build` queue with the
//! reference client, posts log chunks, cache reports, the build plan and the
//! manifest, and fails some builds. `lxml` always fails on a missing C
//! header, which the hint seeded at startup recognizes, so its events name
//! the hint and its log viewer highlights the line. Bounded: a build every
//! 20 s, two at a time, a plan every 5 minutes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

/// (package, version, dependencies) of the simulated plan.
const PACKAGES: &[(&str, &str, &[&str])] = &[
    ("six", "1.16.0", &[]),
    ("cython", "3.0.10", &[]),
    ("numpy", "1.26.4", &["cython"]),
    ("pytz", "2024.1", &[]),
    ("python-dateutil", "2.9.0", &["six"]),
    ("scipy", "1.13.1", &["numpy", "cython"]),
    ("pandas", "2.2.2", &["numpy", "python-dateutil", "pytz"]),
    ("joblib", "1.4.2", &[]),
    ("scikit-learn", "1.5.0", &["numpy", "scipy", "joblib"]),
    ("lxml", "5.2.2", &["cython"]),
];

/// The hint dev seeds: a C header missing at compile time.
pub const SEED_PATTERN: &str = r"fatal error: [\w/.+-]+\.h: No such file or directory";
/// The failure every `lxml` build ends with (it matches [`SEED_PATTERN`]).
const LXML_ERROR: &str =
    "src/lxml/includes/etree_defs.h:14:10: fatal error: libxml/xmlversion.h: No such file or directory";
/// Between two requested builds, and between two plans.
const BUILD_EVERY: Duration = Duration::from_secs(20);
const PLAN_EVERY: Duration = Duration::from_secs(300);

/// Start the producer and one build worker (two builds at a time) against
/// `urls` until the process ends.
pub fn spawn(urls: Vec<String>, token: String) {
    let client = |id: &str| {
        let mut cfg = jobs_client::WorkerConfig::new(urls.clone(), token.clone(), id.into(), vec!["build".into()]);
        cfg.pool = Some("builds".into());
        cfg.concurrency = 2;
        cfg.renew_every = Duration::from_secs(2);
        cfg.heartbeat_every = Duration::from_secs(5);
        cfg.retry.max_tries = 3;
        jobs_client::JobsClient::new(cfg).map(Arc::new)
    };
    let (worker, farm) = match (client("sim-build-00"), client("sim-build-farm")) {
        (Ok(w), Ok(f)) => (w, f),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("simulated build farm: {e}");
            return;
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("reqwest client with static options always builds");
    tokio::spawn(produce(farm.clone(), http, urls));
    let built: Arc<Mutex<BTreeMap<String, (String, String)>>> = Arc::default();
    let handler = move |job, ctx| build(farm.clone(), built.clone(), job, ctx);
    let stats = Arc::new(jobs_client::RunStats::default());
    tokio::spawn(worker.run(handler, stats, std::future::pending()));
}

/// POST to the farm API (failover between nodes); `None` when refused.
async fn post(farm: &jobs_client::JobsClient, path: &str, body: &Value) -> Option<Value> {
    farm.nodes().post::<_, Value>(path, body, Duration::ZERO).await.ok().map(|r| r.value)
}

/// Seed the hint once the cluster runs the farm's format, post the plan,
/// request one build of each package, then one every [`BUILD_EVERY`].
async fn produce(farm: Arc<jobs_client::JobsClient>, http: reqwest::Client, urls: Vec<String>) {
    let token = farm.config().token.clone();
    // Farm writes are refused until the cluster's format allows them: retry.
    for attempt in 0u32.. {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let url = &urls[attempt as usize % urls.len()];
        let Ok(res) = http.get(format!("{url}/hints")).bearer_auth(&token).send().await else { continue };
        let Ok(list) = res.json::<Value>().await else { continue };
        let hints = list.get("hints").and_then(Value::as_array).cloned().unwrap_or_default();
        if hints.iter().any(|h| h.get("pattern").and_then(Value::as_str) == Some(SEED_PATTERN)) {
            break;
        }
        let hint = json!({
            "pattern": SEED_PATTERN,
            "recipe": {
                "env": {"CFLAGS": "-I/usr/include/libxml2"},
                "extra_requirements": ["libxml2-dev", "libxslt1-dev"],
                "note": "A C header is missing: install the library's -dev package in the build image (seeded by engine-room dev)."
            }
        });
        if post(&farm, "/hints", &hint).await.is_some() {
            break;
        }
    }
    let plan = json!({
        "packages": PACKAGES.iter().map(|(name, version, deps)| json!({"name": name, "version": version, "deps": deps})).collect::<Vec<_>>(),
    });
    post(&farm, "/plan", &plan).await;
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut last_plan = tokio::time::Instant::now();
    for n in 0u64.. {
        let run = format!("dev-{started}-{}", n / 10);
        let (package, version, _) = if (n as usize) < PACKAGES.len() {
            PACKAGES[n as usize]
        } else {
            PACKAGES[rand::thread_rng().gen_range(0..PACKAGES.len())]
        };
        post(&farm, "/queue/enqueue", &json!({"package": package, "version": version, "run_id": run})).await;
        if last_plan.elapsed() >= PLAN_EVERY {
            post(&farm, "/plan", &plan).await;
            last_plan = tokio::time::Instant::now();
        }
        // The first round quickly, so a newcomer sees builds at once.
        let pause = if (n as usize) < PACKAGES.len() { Duration::from_millis(500) } else { BUILD_EVERY };
        tokio::time::sleep(pause).await;
    }
}

/// One simulated build: log lines posted as it goes, a cache report, then
/// success (the wheel joins the manifest) or a failure.
async fn build(
    farm: Arc<jobs_client::JobsClient>,
    built: Arc<Mutex<BTreeMap<String, (String, String)>>>,
    job: jobs_client::ClaimedJob,
    ctx: jobs_client::JobContext,
) -> Result<Option<Value>, jobs_client::JobFailure> {
    let text = |k: &str| job.payload.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (package, version) = (text("package"), text("version"));
    if package.is_empty() || version.is_empty() {
        return Err(jobs_client::JobFailure { error: "payload names no package and version".into(), retryable: false });
    }
    let log_path = format!("/logs/{package}/{version}");
    let (ms, roll, hits, misses) = {
        let mut r = rand::thread_rng();
        (r.gen_range(1_500..5_000u64), r.gen::<f64>(), r.gen_range(0..6u64), r.gen_range(0..3u64))
    };
    let head = vec![
        format!("=== job {} attempt {} of {}: {package} {version}", job.job_id, job.attempt, job.max_attempts),
        format!("Collecting {package}=={version}"),
        format!("  Downloading {package}-{version}.tar.gz"),
        "  Installing build dependencies: started".into(),
        format!("  Installing build dependencies: finished ({hits} from cache, {misses} downloaded)"),
        format!("Building wheel for {package} (pyproject.toml): started"),
    ];
    for l in &head {
        ctx.log(l);
    }
    post(&farm, &log_path, &json!({ "lines": head })).await;
    post(&farm, "/cache/report", &json!({"hits": hits, "misses": misses})).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let fail = |lines: Vec<String>, error: &str| (lines, error.to_string());
    let failure = if package == "lxml" {
        Some(fail(
            vec![
                "  building 'lxml.etree' extension".into(),
                "  gcc -pthread -fPIC -Isrc/lxml/includes -I/usr/include/python3.12 -c src/lxml/etree.c -o build/etree.o".into(),
                format!("  {LXML_ERROR}"),
                "  compilation terminated.".into(),
                "  error: command '/usr/bin/gcc' failed with exit code 1".into(),
                format!("ERROR: Failed building wheel for {package}"),
            ],
            LXML_ERROR,
        ))
    } else if roll < 0.08 {
        Some(fail(
            vec![
                "  error: subprocess-exited-with-error".into(),
                "  × Preparing metadata (pyproject.toml) did not run successfully (simulated)".into(),
            ],
            "metadata-generation-failed (simulated)",
        ))
    } else {
        None
    };
    if let Some((lines, error)) = failure {
        for l in &lines {
            ctx.log(l);
        }
        post(&farm, &log_path, &json!({ "lines": lines })).await;
        return Err(jobs_client::JobFailure { error, retryable: true });
    }
    let wheel = format!("{}-{version}-cp312-cp312-manylinux_2_28_x86_64.whl", package.replace('-', "_"));
    let tail =
        vec![format!("  Created wheel for {package}: filename={wheel}"), format!("Successfully built {package}")];
    for l in &tail {
        ctx.log(l);
    }
    post(&farm, &log_path, &json!({ "lines": tail })).await;
    let manifest = {
        let mut b = built.lock().unwrap_or_else(|e| e.into_inner());
        b.insert(package.clone(), (version.clone(), format!("wheels/{wheel}")));
        let packages: Vec<Value> =
            b.iter().map(|(n, (v, a))| json!({"name": n, "version": v, "artifacts": [a]})).collect();
        json!({ "packages": packages })
    };
    post(&farm, "/manifest", &manifest).await;
    Ok(Some(json!({"wheel": wheel, "took_ms": ms})))
}
