//! Issue 5, the short CI version: every fault scenario under load on real
//! node processes, each followed by the no-lost-acknowledged-write checks.
//! The long version is `deploy/run_reliability_drill.sh`.

use chaos_tests::scenarios::{self, median_worst, Params, Report};

fn check(r: Report) {
    let fo = median_worst(&r.failovers);
    eprintln!(
        "FIGURE {}: acked {} ({:?}), lost {}, errors {:?}, failover median/worst {:?}, {:?}",
        r.name, r.acked, r.acked_by_kind, r.lost, r.errors, fo, r.notes
    );
    assert!(r.passed, "{}: {:?}", r.name, r.failure);
    assert_eq!(r.regressions, 0, "{}: a worker went back to an older heartbeat", r.name);
    assert_eq!(r.lost, 0, "{}: acknowledged writes lost", r.name);
    assert!(r.acked > 0, "{}: no load got through", r.name);
}

fn need_iptables() {
    assert!(
        chaos_tests::net::available(),
        "partition scenarios need root and iptables (test.sh installs it: apt-get install -y iptables)"
    );
}

#[test]
fn leader_kill_repeated_3_nodes() {
    let r = scenarios::leader_kill_repeated(&Params::ci(), 3);
    assert_eq!(r.failovers.len(), Params::ci().leader_kills);
    check(r);
}

#[test]
fn leader_kill_5_nodes() {
    check(scenarios::leader_kill_repeated(&Params { leader_kills: 2, ..Params::ci() }, 5));
}

#[test]
fn follower_kill_and_restart() {
    check(scenarios::follower_kill(&Params::ci()));
}

#[test]
fn rolling_restart_of_every_node() {
    check(scenarios::rolling_restart(&Params::ci()));
}

#[test]
fn minority_partition_3_nodes() {
    need_iptables();
    check(scenarios::minority_partition(&Params::ci(), 3));
}

#[test]
fn minority_partition_5_nodes() {
    need_iptables();
    check(scenarios::minority_partition(&Params::ci(), 5));
}

/// Issue 17: partitions shorter than the write timeout, clients that give up
/// sooner; no node's view of a worker may go back to an older heartbeat.
#[test]
fn short_partitions_3_nodes() {
    need_iptables();
    check(scenarios::short_partitions(&Params::ci(), 3));
}

#[test]
fn short_partitions_5_nodes() {
    need_iptables();
    check(scenarios::short_partitions(&Params::ci(), 5));
}

#[test]
fn isolated_leader_stops_acknowledging() {
    need_iptables();
    let r = scenarios::leader_isolated(&Params::ci());
    assert_eq!(r.failovers.len(), 1);
    check(r);
}

#[test]
fn sigstop_leader_then_sigcont() {
    let r = scenarios::leader_paused(&Params::ci());
    assert_eq!(r.failovers.len(), 1);
    check(r);
}

#[test]
fn sigstop_follower_then_sigcont_keeps_the_leader() {
    let r = scenarios::follower_paused(&Params::ci());
    assert!(r.failovers.is_empty());
    check(r);
}

#[test]
fn node_down_through_compaction_returns_by_snapshot() {
    check(scenarios::snapshot_catch_up(&Params::ci()));
}

#[test]
fn membership_change_under_load() {
    check(scenarios::membership_under_load(&Params::ci()));
}

/// Issue 20, point 10 (short version; the drill runs it with 20 leader kills).
#[test]
fn jobs_survive_leader_kills_and_a_minority_partition() {
    need_iptables();
    check(chaos_tests::jobs::jobs_under_faults(&Params::ci()));
}
