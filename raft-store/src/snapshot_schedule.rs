//! When each node builds its snapshot. openraft's own policy
//! (`LogsSinceLast`) snapshots at the same log index on every node, because
//! every node applies the same entries: all members then encode their state
//! at the same moment, apply pauses on all of them together, and the leader's
//! AppendEntries time out. Here each voter snapshots every `every` entries
//! too, but at an index offset by its rank among the voters, so at most one
//! member of a cluster is building at a time and the other two still commit.

use std::sync::Weak;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::types::NodeId;

/// How often a node checks whether its next snapshot is due.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// This node's offset within each period of `every` entries: voters are
/// spread evenly (rank `r` of `n` starts at `r * every / n`); a learner, not
/// among the voters, uses the last voter's slot.
pub fn phase(id: NodeId, voters: &[NodeId], every: u64) -> u64 {
    let n = voters.len().max(1) as u64;
    let rank = voters.iter().position(|v| *v == id).map_or(n - 1, |r| r as u64);
    rank * every / n
}

/// Is a snapshot due: has the applied index crossed one of this node's
/// snapshot points (`phase + k * every`) since the last snapshot? A point
/// less than half a period after the last snapshot is skipped: a node that
/// has just installed the leader's snapshot does not build its own at once.
pub fn due(applied: u64, last_snapshot: Option<u64>, every: u64, phase: u64) -> bool {
    // Snapshot points at or below `x`, counting one at index `phase`.
    let points = |x: u64| if x < phase { 0 } else { (x - phase) / every + 1 };
    // Points up to half a period past the last snapshot count as taken.
    let taken = last_snapshot.map_or(0, |l| l.saturating_add(every / 2));
    points(applied) > points(taken)
}

/// Trigger this node's snapshots, every `snapshot_logs` entries at its own
/// phase, until the cluster handle is dropped.
pub async fn run(cluster: Weak<Cluster>, probe: crate::supervisor::Probe) {
    let Some(every) = cluster.upgrade().map(|c| c.opts.snapshot_logs.max(1)) else { return };
    // The applied index of our last trigger: until openraft reports that
    // snapshot built, it counts as taken, so a check that lands between the
    // build's end and the metrics' update does not start a second build.
    let mut triggered_at = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cluster) = cluster.upgrade() else { return };
        let (applied, is_due) = {
            let metrics = cluster.raft.metrics();
            let m = metrics.borrow();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let last = m.snapshot.map(|l| l.index).max(triggered_at);
            (applied, due(applied, last, every, phase(cluster.id, &voters, every)))
        };
        // openraft ignores the trigger while a build is already running.
        if is_due {
            triggered_at = Some(applied);
            probe.busy();
            if let Err(e) = cluster.raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "snapshot trigger refused; raft is stopping");
                probe.done(Err("snapshot trigger refused: raft is stopping".into()));
                return;
            }
            probe.done(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_spread_over_the_period() {
        let voters = [1, 2, 3];
        let phases: Vec<u64> = voters.iter().map(|id| phase(*id, &voters, 5000)).collect();
        assert_eq!(phases, vec![0, 1666, 3333]);
        assert_eq!(phase(9, &voters, 5000), 3333, "a learner takes the last slot");
        assert_eq!(phase(1, &[], 5000), 0);
    }

    #[test]
    fn due_once_per_period_at_the_nodes_own_points() {
        // Phase 0: points at 0, 5000, 10000, ...
        assert!(!due(4999, None, 5000, 0));
        assert!(due(5000, None, 5000, 0));
        assert!(!due(9999, Some(5000), 5000, 0));
        assert!(due(10_000, Some(5000), 5000, 0));
        // Phase 1666: points at 1666, 6666, ...
        assert!(!due(1665, None, 5000, 1666));
        assert!(due(1666, None, 5000, 1666));
        assert!(!due(6665, Some(1666), 5000, 1666));
        assert!(due(6666, Some(1666), 5000, 1666));
        // A snapshot installed from the leader (index 5000, not one of this
        // node's points) moves the next one to this node's next point, or the
        // one after when the next is less than half a period away.
        assert!(!due(6665, Some(4000), 5000, 1666));
        assert!(due(6666, Some(4000), 5000, 1666));
        assert!(!due(6666, Some(5000), 5000, 1666));
        assert!(!due(7_500, Some(5000), 5000, 1666), "a skipped point is not made up off-phase");
        assert!(!due(11_665, Some(5000), 5000, 1666));
        assert!(due(11_666, Some(5000), 5000, 1666));
        // Far behind (a restart with a long log): due at once.
        assert!(due(40_000, Some(1666), 5000, 1666));
    }

    #[test]
    fn no_two_voters_are_due_at_the_same_index() {
        let voters = [1, 2, 3];
        let every = 300;
        let mut last = [None::<u64>; 3];
        for applied in 1..=3000u64 {
            let mut building = 0;
            for (i, id) in voters.iter().enumerate() {
                if due(applied, last[i], every, phase(*id, &voters, every)) {
                    last[i] = Some(applied);
                    building += 1;
                }
            }
            assert!(building <= 1, "two voters snapshot at index {applied}");
        }
        assert!(last.iter().all(|l| l.is_some_and(|i| i > 3000 - every)), "{last:?}");
    }
}
