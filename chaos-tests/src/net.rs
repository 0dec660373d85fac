//! Network partitions between node processes: iptables DROP rules on the
//! nodes' loopback addresses, in both directions, in a chain of our own that
//! is removed when the guard drops.

use std::process::Command;

pub struct Partition {
    chain: String,
}

fn iptables(args: &[&str]) -> bool {
    Command::new("iptables").args(args).status().map(|s| s.success()).unwrap_or(false)
}

/// Is iptables usable here (root, kernel support)? Probed with a scratch chain.
pub fn available() -> bool {
    let chain = format!("ER_PROBE_{}", std::process::id());
    let ok = iptables(&["-N", &chain]);
    if ok {
        iptables(&["-X", &chain]);
    }
    ok
}

impl Partition {
    /// Cut every link between a node in `a` and a node in `b`.
    pub fn cut(a: &[u64], b: &[u64]) -> Partition {
        let chain = format!("ER_CHAOS_{}_{}", std::process::id(), rand::random::<u32>());
        assert!(iptables(&["-N", &chain]), "iptables -N {chain} failed (need root and iptables)");
        assert!(iptables(&["-I", "INPUT", "-j", &chain]), "cannot hook {chain} into INPUT");
        for x in a {
            for y in b {
                let (ix, iy) = (format!("127.0.0.{}", 10 + x), format!("127.0.0.{}", 10 + y));
                assert!(iptables(&["-A", &chain, "-s", &ix, "-d", &iy, "-j", "DROP"]));
                assert!(iptables(&["-A", &chain, "-s", &iy, "-d", &ix, "-j", "DROP"]));
            }
        }
        Partition { chain }
    }

    /// Remove the cut.
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        iptables(&["-D", "INPUT", "-j", &self.chain]);
        iptables(&["-F", &self.chain]);
        iptables(&["-X", &self.chain]);
    }
}
