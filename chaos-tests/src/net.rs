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

/// Remove cuts left behind by a test process that died without dropping its
/// guard (killed on timeout): chains named for a pid that no longer runs.
pub fn remove_stale_cuts() {
    let Ok(out) = Command::new("iptables").arg("-S").output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(chain) = line.strip_prefix("-N ER_CHAOS_") else { continue };
        let pid = chain.split('_').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let chain = format!("ER_CHAOS_{chain}");
            iptables(&["-D", "INPUT", "-j", &chain]);
            iptables(&["-F", &chain]);
            iptables(&["-X", &chain]);
        }
    }
}

impl Partition {
    /// Cut every link between a node process in `a` and one in `b`, given
    /// as `(ip, port)` listen addresses. Rules match the listening port on
    /// one side, so only these processes are cut off from each other and
    /// other clusters on the same addresses are untouched.
    pub fn cut(a: &[(String, u16)], b: &[(String, u16)]) -> Partition {
        remove_stale_cuts();
        let chain = format!("ER_CHAOS_{}_{}", std::process::id(), rand::random::<u32>());
        assert!(iptables(&["-N", &chain]), "iptables -N {chain} failed (need root and iptables)");
        assert!(iptables(&["-I", "INPUT", "-j", &chain]), "cannot hook {chain} into INPUT");
        let drop = |src: &str, dst: &str, port_flag: &str, port: u16| {
            let port = port.to_string();
            let rule = ["-A", &chain, "-p", "tcp", "-s", src, "-d", dst, port_flag, &port, "-j", "DROP"];
            assert!(iptables(&rule), "iptables {rule:?} failed");
        };
        for (ip_x, port_x) in a {
            for (ip_y, port_y) in b {
                // x calling y, and y's answers to x; then y calling x, and x's answers.
                drop(ip_x, ip_y, "--dport", *port_y);
                drop(ip_y, ip_x, "--sport", *port_y);
                drop(ip_y, ip_x, "--dport", *port_x);
                drop(ip_x, ip_y, "--sport", *port_x);
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
