//! Fault scenarios under load, shared by the CI tests (short) and the
//! reliability drill (long). Each scenario starts its own cluster, runs the
//! workload, injects its faults, then checks that nothing acknowledged was
//! lost, that every node holds the same state, that no term had two leaders,
//! and that the healed cluster takes writes again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Options, TestCluster};
use crate::workload::{self, Record, Spec, Targets, Workload};

/// How hard and how long; `ci()` is the bounded CI version, `drill()` the long one.
#[derive(Debug, Clone)]
pub struct Params {
    pub leader_kills: usize,
    /// Load before and between faults.
    pub settle: Duration,
    /// How long a partition or pause lasts.
    pub fault: Duration,
    /// Partitions shorter than the write timeout, in the scenario for them.
    pub short_partitions: usize,
    pub spec: Spec,
}

impl Params {
    pub fn ci() -> Params {
        Params {
            leader_kills: 3,
            settle: Duration::from_millis(1500),
            fault: Duration::from_secs(3),
            short_partitions: 2,
            spec: Spec { max: Duration::from_secs(90), ..Spec::default() },
        }
    }

    pub fn drill() -> Params {
        Params {
            leader_kills: 20,
            settle: Duration::from_secs(4),
            fault: Duration::from_secs(8),
            short_partitions: 8,
            spec: Spec { heartbeat_threads: 8, max: Duration::from_secs(600), ..Spec::default() },
        }
    }
}

/// What one scenario did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    pub nodes: usize,
    pub passed: bool,
    pub failure: Option<String>,
    pub elapsed: Duration,
    pub acked: u64,
    pub acked_by_kind: BTreeMap<String, u64>,
    pub lost: u64,
    pub errors: BTreeMap<String, u64>,
    /// Fault → first acknowledged write sent after it, per leader loss.
    pub failovers: Vec<Duration>,
    pub terms_seen: usize,
    /// Times a node's own view of a worker moved back to an older heartbeat
    /// (watched scenarios only).
    pub regressions: u64,
    pub notes: Vec<String>,
}

/// One thread per node slot (so a frozen node does not blind the others),
/// each calling `visit(http, node id, url)` about every 100 ms until `stop`.
fn poll_each_node(
    targets: &Targets,
    stop: &Arc<AtomicBool>,
    visit: impl Fn(&reqwest::blocking::Client, u64, &str) + Send + Sync + 'static,
) -> Vec<std::thread::JoinHandle<()>> {
    let visit = Arc::new(visit);
    (0..5)
        .map(|slot| {
            let (stop, targets, visit) = (stop.clone(), targets.clone(), visit.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_millis(800))
                    .connect_timeout(Duration::from_millis(200))
                    .build()
                    .expect("http client");
                while !stop.load(Ordering::Relaxed) {
                    let target = targets.lock().expect("targets").get(slot).cloned();
                    if let Some((node, url)) = target {
                        visit(&http, node, &url);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect()
}

/// Samples every node's view of (term, leader) until stopped; a term claimed
/// by two different leaders is a split brain.
struct LeaderSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LeaderSampler {
    fn start(targets: &Targets) -> LeaderSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::<u64, BTreeSet<u64>>::new()));
        let threads = {
            let seen = seen.clone();
            poll_each_node(targets, &stop, move |http, _, url| {
                let res = http.get(format!("{url}/api/cluster/status")).bearer_auth(crate::cluster::TOKEN).send();
                if let Ok(v) = res.and_then(|r| r.json::<Value>()) {
                    if let (Some(term), Some(leader)) = (v["term"].as_u64(), v["leader_id"].as_u64()) {
                        seen.lock().expect("seen").entry(term).or_default().insert(leader);
                    }
                }
            })
        };
        LeaderSampler { stop, seen, threads }
    }

    fn finish(mut self) -> BTreeMap<u64, BTreeSet<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let s = self.seen.lock().expect("seen").clone();
        s
    }
}

impl Drop for LeaderSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads every node's own (local, not linearizable) view of the workload's
/// workers until stopped, and counts each time a worker's `seq` there is
/// lower than that node showed before. A node applies in log order, so a
/// lower seq means an older heartbeat was applied over a newer one. Only for
/// scenarios that restart no node (a restarted node replays from a snapshot).
struct RegressionWatch {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RegressionWatch {
    fn start(targets: &Targets) -> RegressionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Vec::new()));
        let seen = Mutex::new(BTreeMap::<(u64, String), u64>::new());
        let threads = {
            let found = found.clone();
            poll_each_node(targets, &stop, move |http, node, url| {
                let path = format!("{url}/api/workers?pool={}&limit=1000", workload::POOL);
                let res = http.get(path).bearer_auth(crate::cluster::TOKEN).send();
                let workers = res.and_then(|r| r.json::<Value>()).unwrap_or(Value::Null);
                let mut seen = seen.lock().expect("seen");
                for w in workers["workers"].as_array().into_iter().flatten() {
                    let (Some(id), Some(seq)) = (w["id"].as_str(), w["metrics"]["seq"].as_u64()) else {
                        continue;
                    };
                    let before = seen.entry((node, id.to_string())).or_insert(seq);
                    if seq < *before {
                        found
                            .lock()
                            .expect("found")
                            .push(format!("node {node}: worker {id} went from seq {before} back to {seq}"));
                    }
                    *before = seq.max(*before);
                }
            })
        };
        RegressionWatch { stop, found, threads }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let found = self.found.lock().expect("found").clone();
        found
    }
}

impl Drop for RegressionWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn opts(extra: &[(&str, &str)]) -> Options {
    let mut o = Options::default();
    for (k, v) in extra {
        o = o.env(k, v);
    }
    o
}

fn targets_of(c: &TestCluster) -> Targets {
    Arc::new(Mutex::new(c.nodes.values().map(|n| (n.id, n.url())).collect()))
}

/// The state a node holds, read linearizably through it.
#[derive(Debug, PartialEq, Eq)]
struct View {
    seqs: BTreeMap<String, u64>,
    pools: BTreeMap<String, u64>,
    reasons: BTreeSet<(String, String)>,
}

fn read_view(c: &TestCluster, id: u64, rec: &Record) -> Result<View, String> {
    let get = |path: &str| -> Result<Value, String> {
        let (code, v) = c.get(id, path);
        if code == 200 {
            Ok(v)
        } else {
            Err(format!("GET {path} on node {id}: {code} {v}"))
        }
    };
    let w = get(&format!("/api/workers?consistent=true&pool={}&limit=1000", workload::POOL))?;
    let seqs = w["workers"]
        .as_array()
        .ok_or("workers missing")?
        .iter()
        .filter_map(|w| Some((w["id"].as_str()?.to_string(), w["metrics"]["seq"].as_u64().unwrap_or(0))))
        .collect();
    let p = get("/api/pools?consistent=true")?;
    let pools = p["pools"]
        .as_array()
        .ok_or("pools missing")?
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("chaos-op-")))
        .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["desired_count"].as_u64()?)))
        .collect();
    let mut reasons = BTreeSet::new();
    let subjects: BTreeSet<&String> = rec.actions_acked.iter().map(|(w, _)| w).collect();
    for s in subjects {
        let a = get(&format!("/api/audit?consistent=true&subject={s}&limit=1000"))?;
        for e in a["entries"].as_array().ok_or("entries missing")? {
            if let Some(r) = e["reason"].as_str().filter(|r| r.starts_with("chaos-")) {
                reasons.insert((s.clone(), r.to_string()));
            }
        }
    }
    Ok(View { seqs, pools, reasons })
}

/// Count acknowledged writes missing from `v`, and values never sent.
fn lost_in(v: &View, rec: &Record) -> (u64, Vec<String>) {
    let mut lost = 0;
    let mut why = Vec::new();
    for (w, acked) in &rec.hb_acked {
        let have = v.seqs.get(w).copied().unwrap_or(0);
        let sent = rec.hb_sent.get(w).copied().unwrap_or(0);
        if have < *acked {
            lost += 1;
            why.push(format!("worker {w}: acked seq {acked}, state has {have}"));
        } else if have > sent {
            why.push(format!("worker {w}: state has seq {have}, never sent (max {sent})"));
        }
    }
    for (p, acked) in &rec.pool_acked {
        let have = v.pools.get(p).copied().unwrap_or(0);
        if have < *acked {
            lost += 1;
            why.push(format!("pool {p}: acked {acked}, state has {have}"));
        } else if have > rec.pool_sent.get(p).copied().unwrap_or(0) {
            why.push(format!("pool {p}: state has {have}, never sent"));
        }
    }
    for a in &rec.actions_acked {
        if !v.reasons.contains(a) {
            lost += 1;
            why.push(format!("action {a:?} acknowledged but not in the audit log"));
        }
    }
    (lost, why)
}

/// The checks run after every scenario; fills `rep` and panics on a violation.
fn verify(c: &TestCluster, rec: &Record, terms: &BTreeMap<u64, BTreeSet<u64>>, rep: &mut Report) {
    rep.acked = rec.acked_total();
    rep.acked_by_kind = rec.ok.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    rep.errors = rec.errors.clone();
    rep.terms_seen = terms.len();
    let split: Vec<_> = terms.iter().filter(|(_, l)| l.len() > 1).collect();
    assert!(split.is_empty(), "two leaders in one term: {split:?}");
    assert!(rec.acked_total() > 0, "the workload got no acknowledgement at all");
    // The healed cluster takes writes through every node.
    for id in c.running() {
        c.eventually(Duration::from_secs(20), &format!("a write through node {id} after healing"), || {
            let (code, _) = c.post(id, "/api/pools/chaos-final/scale", serde_json::json!({"desired_count": id}));
            (code == 200).then_some(())
        });
    }
    let mut first: Option<View> = None;
    for id in c.running() {
        let v = c.eventually(Duration::from_secs(20), &format!("a consistent read through node {id}"), || {
            read_view(c, id, rec).map_err(|e| eprintln!("retrying: {e}")).ok()
        });
        let (lost, why) = lost_in(&v, rec);
        rep.lost = rep.lost.max(lost);
        assert!(
            why.is_empty(),
            "node {id}: {lost} acknowledged writes lost or invented: {:?}",
            &why[..why.len().min(10)]
        );
        match &first {
            None => first = Some(v),
            Some(f) => assert_eq!(f, &v, "node {id} diverged from node {}", c.running()[0]),
        }
    }
    // Leader loops: no incident opened twice for one fact.
    let leader = c.wait_for_leader(Duration::from_secs(10));
    let (code, v) = c.get(leader, "/api/incidents?consistent=true&status=active");
    assert_eq!(code, 200, "incidents: {v}");
    let mut keys = BTreeSet::new();
    for i in v["incidents"].as_array().into_iter().flatten() {
        let key = (i["kind"].to_string(), i["subject"].to_string());
        assert!(keys.insert(key.clone()), "incident {key:?} active twice: {v}");
    }
}

/// Run one scenario: cluster, sampler and workload set up around `body`,
/// which injects faults and pushes failover figures; the checks follow.
fn scenario(
    name: &str,
    nodes: u64,
    env: &[(&str, &str)],
    p: &Params,
    body: impl FnOnce(&mut TestCluster, &Targets, &Workload, &mut Report),
) -> Report {
    run_scenario(name, nodes, env, p, false, body)
}

/// [`scenario`] with a [`RegressionWatch`], for scenarios that restart no node.
fn watched_scenario(
    name: &str,
    nodes: u64,
    p: &Params,
    body: impl FnOnce(&mut TestCluster, &Targets, &Workload, &mut Report),
) -> Report {
    run_scenario(name, nodes, &[], p, true, body)
}

fn run_scenario(
    name: &str,
    nodes: u64,
    env: &[(&str, &str)],
    p: &Params,
    watch: bool,
    body: impl FnOnce(&mut TestCluster, &Targets, &Workload, &mut Report),
) -> Report {
    let t0 = Instant::now();
    let mut rep = Report { name: name.to_string(), nodes: nodes as usize, ..Report::default() };
    let mut c = TestCluster::start(nodes, opts(env));
    let targets = targets_of(&c);
    let sampler = LeaderSampler::start(&targets);
    let watcher = watch.then(|| RegressionWatch::start(&targets));
    let wl = Workload::start(targets.clone(), p.spec.clone());
    std::thread::sleep(p.settle);
    body(&mut c, &targets, &wl, &mut rep);
    std::thread::sleep(p.settle);
    let rec = wl.finish();
    let terms = sampler.finish();
    let regressions = watcher.map(RegressionWatch::finish).unwrap_or_default();
    rep.regressions = regressions.len() as u64;
    verify(&c, &rec, &terms, &mut rep);
    rep.passed = regressions.is_empty();
    if watch {
        rep.notes.push(format!("regressions seen in each node's own view: {}", regressions.len()));
    }
    if !regressions.is_empty() {
        rep.failure =
            Some(format!("{} regressions: {:?}", regressions.len(), &regressions[..regressions.len().min(10)]));
    }
    rep.elapsed = t0.elapsed();
    rep
}

/// Wait for the first acknowledgement of a write sent after `t` and return the delay.
fn failover(c: &TestCluster, wl: &Workload, t: Instant, what: &str) -> Duration {
    c.eventually(Duration::from_secs(30), what, || wl.snapshot().first_ack_after(t))
}

fn other_than(c: &TestCluster, not: &[u64]) -> Vec<u64> {
    c.running().into_iter().filter(|id| !not.contains(id)).collect()
}

/// Wait until node `id` has applied what the leader has applied.
fn caught_up(c: &TestCluster, id: u64, within: Duration) {
    c.eventually(within, &format!("node {id} catches up"), || {
        let leader = c.leader()?;
        let target =
            c.status(leader)?["nodes"].as_array()?.iter().find(|n| n["id"] == leader)?["applied_index"].as_u64()?;
        let me = c.status(id)?;
        let mine = me["nodes"].as_array()?.iter().find(|n| n["id"] == id)?["applied_index"].as_u64()?;
        (mine + 50 >= target).then_some(())
    });
}

pub fn leader_kill_repeated(p: &Params, nodes: u64) -> Report {
    scenario(&format!("leader kill x{} ({nodes} nodes)", p.leader_kills), nodes, &[], p, |c, _, wl, rep| {
        for _ in 0..p.leader_kills {
            let old = c.wait_for_leader(Duration::from_secs(15));
            let t = Instant::now();
            c.kill(old);
            rep.failovers.push(failover(c, wl, t, "first write after leader kill"));
            std::thread::sleep(p.settle / 2);
            c.run_node(old);
            caught_up(c, old, Duration::from_secs(30));
            std::thread::sleep(p.settle / 2);
        }
    })
}

pub fn follower_kill(p: &Params) -> Report {
    scenario("follower kill and restart", 3, &[], p, |c, _, _, _| {
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let f = other_than(c, &[leader])[0];
        c.kill(f);
        std::thread::sleep(p.fault);
        c.run_node(f);
        caught_up(c, f, Duration::from_secs(30));
    })
}

pub fn rolling_restart(p: &Params) -> Report {
    scenario("rolling restart of every node", 3, &[], p, |c, _, wl, rep| {
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            let was_leader = c.leader() == Some(id);
            let t = Instant::now();
            c.restart(id);
            if was_leader {
                rep.failovers.push(failover(c, wl, t, "first write after restarting the leader"));
            }
            caught_up(c, id, Duration::from_secs(30));
            std::thread::sleep(p.settle / 2);
        }
    })
}

pub fn minority_partition(p: &Params, nodes: u64) -> Report {
    watched_scenario(&format!("minority partition ({nodes} nodes)"), nodes, p, |c, _, _, rep| {
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let followers = other_than(c, &[leader]);
        let minority: Vec<u64> = followers[..(nodes as usize - 1) / 2].to_vec();
        let majority = other_than(c, &minority);
        let cut = c.cut(&minority, &majority);
        std::thread::sleep(p.fault);
        // The majority keeps its leader and keeps committing.
        assert_eq!(c.leader_seen_by(majority[0]), Some(leader), "the majority side should keep its leader");
        drop(cut);
        for m in &minority {
            caught_up(c, *m, Duration::from_secs(30));
        }
        rep.notes.push(format!("cut {minority:?} from {majority:?} for {:?}", p.fault));
    })
}

/// Issue 17: partitions shorter than the write timeout (5 s), with clients
/// that give up sooner (1.5 s) and move on to other nodes. A node cut off
/// with their heartbeats must not apply them after the newer ones once the
/// partition heals; every node's own view is watched for a worker going back.
/// Rounds alternate between cutting followers and cutting the leader.
pub fn short_partitions(p: &Params, nodes: u64) -> Report {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
    let fault = p.fault.min(Duration::from_millis(3_500));
    assert!(fault < WRITE_TIMEOUT);
    let spec = Spec { client_timeout: Duration::from_millis(1_500), ..p.spec.clone() };
    let p = Params { spec, ..p.clone() };
    let name = format!("partitions shorter than the write timeout x{} ({nodes} nodes)", p.short_partitions);
    watched_scenario(&name, nodes, &p, |c, _, _, rep| {
        for round in 0..p.short_partitions {
            let leader = c.wait_for_leader(Duration::from_secs(15));
            let followers = other_than(c, &[leader]);
            let size = (nodes as usize - 1) / 2;
            let minority: Vec<u64> = if round % 2 == 0 {
                followers[..size].to_vec()
            } else {
                std::iter::once(leader).chain(followers[..size - 1].iter().copied()).collect()
            };
            let majority = other_than(c, &minority);
            let cut = c.cut(&minority, &majority);
            std::thread::sleep(fault);
            drop(cut);
            for m in &minority {
                caught_up(c, *m, Duration::from_secs(30));
            }
            std::thread::sleep(p.settle / 2);
            rep.notes.push(format!("round {round}: cut {minority:?} from {majority:?} for {fault:?}"));
        }
    })
}

pub fn leader_isolated(p: &Params) -> Report {
    watched_scenario("leader isolated from the majority", 3, p, |c, _, wl, rep| {
        let old = c.wait_for_leader(Duration::from_secs(15));
        let rest = other_than(c, &[old]);
        let cut = c.cut(&[old], &rest);
        let in_force = Instant::now();
        rep.failovers.push(failover(c, wl, in_force, "first write after isolating the leader"));
        let new = c.eventually(Duration::from_secs(15), "a new leader on the majority side", || {
            c.leader_seen_by(rest[0]).filter(|l| *l != old)
        });
        std::thread::sleep(p.fault);
        let healed = Instant::now();
        drop(cut);
        // The old leader acknowledged nothing it received while cut off.
        let rec = wl.snapshot();
        let stale: Vec<_> =
            rec.acks.iter().filter(|a| a.node == old && a.start >= in_force && a.end < healed).collect();
        assert!(stale.is_empty(), "isolated old leader {old} acknowledged {} writes: {:?}", stale.len(), stale.first());
        caught_up(c, old, Duration::from_secs(30));
        rep.notes.push(format!("old leader {old} isolated; new leader {new}; it acknowledged 0 writes while cut off"));
    })
}

pub fn leader_paused(p: &Params) -> Report {
    scenario("SIGSTOP leader past the election timeout, then SIGCONT", 3, &[], p, |c, _, wl, rep| {
        let old = c.wait_for_leader(Duration::from_secs(15));
        let rest = other_than(c, &[old]);
        let t = Instant::now();
        c.pause(old);
        rep.failovers.push(failover(c, wl, t, "first write after pausing the leader"));
        let new = c.eventually(Duration::from_secs(15), "a new leader while the old one is frozen", || {
            c.leader_seen_by(rest[0]).filter(|l| *l != old)
        });
        std::thread::sleep(p.fault);
        c.resume(old);
        caught_up(c, old, Duration::from_secs(30));
        let back = c.eventually(Duration::from_secs(15), "old leader learns the new term", || {
            c.leader_seen_by(old).filter(|l| *l != old || old == new)
        });
        rep.notes
            .push(format!("paused leader {old} for {:?}; new leader {new}; it rejoined following {back}", p.fault));
    })
}

/// A follower frozen past the election timeout must rejoin without unseating
/// the leader: the pre-vote keeps it from standing at a higher term on waking.
pub fn follower_paused(p: &Params) -> Report {
    scenario("SIGSTOP a follower past the election timeout, then SIGCONT", 3, &[], p, |c, _, _, rep| {
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let term = |c: &TestCluster| c.status(leader).and_then(|s| s["term"].as_u64()).expect("leader answers status");
        let before = term(c);
        // Each follower in turn: one wake-up does not always race the
        // leader's next heartbeat, two in a row nearly always do.
        for f in other_than(c, &[leader]) {
            c.pause(f);
            std::thread::sleep(p.fault);
            c.resume(f);
            caught_up(c, f, Duration::from_secs(30));
            std::thread::sleep(p.settle);
            let after = term(c);
            assert_eq!(
                c.wait_for_leader(Duration::from_secs(15)),
                leader,
                "the leader changed after follower {f} woke"
            );
            assert_eq!(after, before, "the term moved from {before} to {after} after follower {f} woke");
        }
        rep.notes.push(format!("paused each follower for {:?}; leader {leader} kept term {before}", p.fault));
    })
}

pub fn snapshot_catch_up(p: &Params) -> Report {
    let env = [("ENGINE_SNAPSHOT_LOGS", "100"), ("ENGINE_KEEP_LOGS", "20")];
    scenario("node down through log compaction, back by snapshot install", 3, &env, p, |c, _, _, rep| {
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let f = other_than(c, &[leader])[0];
        let last =
            c.status(f).and_then(|s| s["nodes"].as_array()?.iter().find(|n| n["id"] == f)?["last_log_index"].as_u64());
        c.kill(f);
        let last = last.unwrap_or(0);
        c.eventually(Duration::from_secs(60), "the leader purges past the stopped node's log", || {
            let s = c.status(c.leader()?)?;
            let purged = s["nodes"].as_array()?.iter().find(|n| n["id"] == s["node_id"])?["purged_index"].as_u64()?;
            (purged > last).then_some(())
        });
        c.run_node(f);
        caught_up(c, f, Duration::from_secs(30));
        let s = c.status(f).expect("status");
        let me = s["nodes"].as_array().unwrap().iter().find(|n| n["id"] == f).unwrap().clone();
        let snap = me["snapshot_index"].as_u64().unwrap_or(0);
        assert!(snap > last, "node {f} should hold a snapshot past its old log end {last}: {me}");
        rep.notes.push(format!("node {f} stopped at log {last}, came back by snapshot at {snap}"));
    })
}

pub fn membership_under_load(p: &Params) -> Report {
    scenario("membership change under load (add 4th, remove one)", 3, &[], p, |c, targets, _, rep| {
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let addr = c.add_spec(4);
        c.run_node(4);
        let (code, body) = c.post(leader, "/api/cluster/learners", serde_json::json!({"id": 4, "addr": addr}));
        assert_eq!(code, 200, "add learner: {body}");
        targets.lock().expect("targets").push((4, addr));
        caught_up(c, 4, Duration::from_secs(30));
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let (code, body) = c.post(leader, "/api/cluster/promote", serde_json::json!({"id": 4}));
        assert_eq!(code, 200, "promote: {body}");
        std::thread::sleep(p.settle);
        let leader = c.wait_for_leader(Duration::from_secs(15));
        let gone = other_than(c, &[leader, 4])[0];
        let (code, body) = c.post(leader, "/api/cluster/remove", serde_json::json!({"id": gone}));
        assert_eq!(code, 200, "remove: {body}");
        targets.lock().expect("targets").retain(|t| t.0 != gone);
        c.kill(gone);
        let s = c.status(4).expect("status");
        let voters: Vec<u64> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["voter"] == true)
            .filter_map(|n| n["id"].as_u64())
            .collect();
        assert_eq!(voters.len(), 3, "three voters after add+remove: {s}");
        assert!(voters.contains(&4) && !voters.contains(&gone), "{voters:?}");
        rep.notes.push(format!("added node 4, removed node {gone}; voters now {voters:?}"));
    })
}

/// Every scenario, in drill order; `catch_unwind` turns a failed check into a
/// failed report so the drill goes on.
pub fn all(p: &Params) -> Vec<Report> {
    some(p, None)
}

/// The scenarios whose drill name starts with `only` (all of them for `None`).
pub fn some(p: &Params, only: Option<&str>) -> Vec<Report> {
    type Run<'a> = (&'a str, Box<dyn Fn() -> Report + 'a>);
    let runs: Vec<Run> = vec![
        ("leader kill (3)", Box::new(|| leader_kill_repeated(p, 3))),
        (
            "leader kill (5)",
            Box::new(|| leader_kill_repeated(&Params { leader_kills: p.leader_kills.min(5), ..p.clone() }, 5)),
        ),
        ("follower kill", Box::new(|| follower_kill(p))),
        ("rolling restart", Box::new(|| rolling_restart(p))),
        ("minority partition (3)", Box::new(|| minority_partition(p, 3))),
        ("minority partition (5)", Box::new(|| minority_partition(p, 5))),
        ("short partitions (3)", Box::new(|| short_partitions(p, 3))),
        ("short partitions (5)", Box::new(|| short_partitions(p, 5))),
        ("leader isolated", Box::new(|| leader_isolated(p))),
        ("leader paused", Box::new(|| leader_paused(p))),
        ("follower paused", Box::new(|| follower_paused(p))),
        ("snapshot catch-up", Box::new(|| snapshot_catch_up(p))),
        ("membership", Box::new(|| membership_under_load(p))),
        ("jobs", Box::new(|| crate::jobs::jobs_under_faults(p))),
    ];
    runs.into_iter()
        .filter(|(name, _)| only.is_none_or(|o| name.starts_with(o)))
        .map(|(name, run)| {
            let t0 = Instant::now();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Report { name: name.into(), failure: Some(msg), elapsed: t0.elapsed(), ..Report::default() }
            })
        })
        .collect()
}

fn fmt_d(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Median and worst of a set of durations.
pub fn median_worst(ds: &[Duration]) -> Option<(Duration, Duration)> {
    let mut v = ds.to_vec();
    v.sort();
    Some((*v.get(v.len() / 2)?, *v.last()?))
}

/// The drill report in markdown.
pub fn markdown(reports: &[Report], started: &str, machine: &str) -> String {
    let mut s = String::new();
    s.push_str("# Engine Room reliability drill\n\n");
    s.push_str(&format!("- Started: {started}\n- Machine: {machine}\n"));
    let passed = reports.iter().filter(|r| r.passed).count();
    let lost: u64 = reports.iter().map(|r| r.lost).sum();
    let all_f: Vec<Duration> = reports.iter().flat_map(|r| r.failovers.clone()).collect();
    s.push_str(&format!(
        "- Result: **{}** ({passed}/{} scenarios passed)\n",
        if passed == reports.len() { "PASS" } else { "FAIL" },
        reports.len()
    ));
    s.push_str(&format!("- Acknowledged operations: {}; lost: {lost}\n", reports.iter().map(|r| r.acked).sum::<u64>()));
    s.push_str(&format!(
        "- Regressions (a worker's record moving back to an older heartbeat, watched scenarios): {}\n",
        reports.iter().map(|r| r.regressions).sum::<u64>()
    ));
    if let Some((m, w)) = median_worst(&all_f) {
        s.push_str(&format!(
            "- Leader losses: {}; fault → first acknowledged write: median {}, worst {}\n",
            all_f.len(),
            fmt_d(m),
            fmt_d(w)
        ));
    }
    s.push_str(
        "\n| Scenario | Nodes | Result | Duration | Acked ops | Lost | Regressions | Errors by kind | Failover median / worst |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in reports {
        let errors = if r.errors.is_empty() {
            "none".to_string()
        } else {
            r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        };
        let fo = median_worst(&r.failovers).map(|(m, w)| format!("{} / {}", fmt_d(m), fmt_d(w))).unwrap_or("-".into());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.nodes,
            if r.passed { "pass" } else { "**FAIL**" },
            fmt_d(r.elapsed),
            r.acked,
            r.lost,
            r.regressions,
            errors,
            fo
        ));
    }
    s.push_str("\n## Details\n\n");
    for r in reports {
        s.push_str(&format!("### {}\n\n", r.name));
        if let Some(f) = &r.failure {
            s.push_str(&format!("Failure: `{}`\n\n", f.replace('`', "'")));
        }
        if !r.failovers.is_empty() {
            let list: Vec<String> = r.failovers.iter().map(|d| fmt_d(*d)).collect();
            s.push_str(&format!("Failovers: {}\n\n", list.join(", ")));
        }
        for n in &r.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s.push_str(&format!("- acknowledged by kind: {:?}; terms observed: {}\n\n", r.acked_by_kind, r.terms_seen));
    }
    let jobs: Vec<&Report> = reports.iter().filter(|r| r.name.starts_with("jobs")).collect();
    if !jobs.is_empty() {
        s.push_str("## Jobs\n\n");
        for r in jobs {
            s.push_str(&format!("- {}: **{}**\n", r.name, if r.passed { "pass" } else { "FAIL" }));
            for n in &r.notes {
                s.push_str(&format!("  - {n}\n"));
            }
        }
        s.push_str("\nJobs checks: every acknowledged enqueue exists exactly once (idempotency keys); every job whose completion was accepted is `succeeded` with that lease's result, and no job had two accepted completions (fencing); once the producers stop, the workers drain the queue and every job is `succeeded` (none lost, queued or stuck `running`); every node holds the same jobs.\n\n");
    }
    s.push_str("Checks after every scenario: every acknowledged heartbeat seq, pool count and quarantine action is present in a `?consistent=true` read through every live node; all nodes hold identical state; no term had two leaders in sampled status; every node takes writes after healing; no incident active twice.\n");
    s
}
