//! Which addresses may become Raft members (`ENGINE_PEER_ALLOWLIST`). A new
//! member receives every replicated entry and a full snapshot, so a learner's
//! URL must match: an exact URL, or a CIDR holding the URL's host (an IP
//! literal: a hostname is not resolved, since what it resolves to can change
//! after the check). Unset, the hosts of the current membership and of
//! `ENGINE_PEERS` are allowed, on any port.

use std::net::IpAddr;

use ipnet::IpNet;

/// The parsed `ENGINE_PEER_ALLOWLIST`, or the default when it is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerAllowlist {
    /// `None`: unset, allow the hosts of known peers.
    entries: Option<Vec<Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Url(String),
    Net(IpNet),
}

/// `scheme://host:port` of a URL, trailing slash dropped, host lowercased.
fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The host of an `http(s)://host[:port][/…]` URL, brackets of IPv6 removed.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host =
        if let Some(v6) = authority.strip_prefix('[') { v6.split_once(']')?.0 } else { authority.split(':').next()? };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl PeerAllowlist {
    /// Parse a comma-separated list of URLs and CIDRs (a bare IP is a
    /// single-address CIDR). Empty or blank means unset.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let entry = if item.starts_with("http://") || item.starts_with("https://") {
                url_host(item).ok_or_else(|| format!("ENGINE_PEER_ALLOWLIST: {item:?} has no host"))?;
                Entry::Url(normalize(item))
            } else if let Ok(net) = item.parse::<IpNet>() {
                Entry::Net(net.trunc())
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                Entry::Net(IpNet::from(ip))
            } else {
                return Err(format!(
                    "ENGINE_PEER_ALLOWLIST: {item:?} is neither an http(s) URL nor a CIDR such as 10.0.0.0/24"
                ));
            };
            entries.push(entry);
        }
        Ok(Self { entries: (!entries.is_empty()).then_some(entries) })
    }

    /// Is `url` allowed as a member, given the URLs of the peers known now
    /// (current membership and `ENGINE_PEERS`; used only when unset)?
    pub fn check<'a>(&self, url: &str, known: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let host = url_host(url).ok_or_else(|| format!("{url:?} has no host"))?;
        let allowed = match &self.entries {
            Some(entries) => {
                let exact = normalize(url);
                let ip = host.parse::<IpAddr>().ok();
                entries.iter().any(|e| match e {
                    Entry::Url(u) => *u == exact,
                    Entry::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
                })
            }
            None => known.into_iter().filter_map(url_host).any(|h| h == host),
        };
        if allowed {
            Ok(())
        } else if self.entries.is_some() {
            Err(format!("{url} is not in ENGINE_PEER_ALLOWLIST"))
        } else {
            Err(format!(
                "{url} is not on a host of the current members or ENGINE_PEERS; list it in ENGINE_PEER_ALLOWLIST to allow it"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_urls() {
        assert_eq!(url_host("http://10.0.0.1:7001").as_deref(), Some("10.0.0.1"));
        assert_eq!(url_host("https://Node-2.example.com/").as_deref(), Some("node-2.example.com"));
        assert_eq!(url_host("http://[::1]:7001/x").as_deref(), Some("::1"));
        assert_eq!(url_host("http://user@10.0.0.9:1").as_deref(), Some("10.0.0.9"));
        assert_eq!(url_host("http://:7001"), None);
        assert_eq!(url_host("10.0.0.1:7001"), None);
    }

    #[test]
    fn unset_allows_the_hosts_of_known_peers() {
        let list = PeerAllowlist::parse(" ").unwrap();
        let known = ["http://10.0.0.1:7001", "http://10.0.0.2:7001"];
        assert!(list.check("http://10.0.0.2:7009/", known).is_ok(), "same host, other port");
        let e = list.check("http://203.0.113.9:7001", known).unwrap_err();
        assert!(e.contains("ENGINE_PEER_ALLOWLIST"), "{e}");
        assert!(list.check("http://10.0.0.10:7001", known).is_err(), "not a prefix match");
    }

    #[test]
    fn set_allows_exact_urls_and_cidrs_only() {
        let list = PeerAllowlist::parse("https://node-4.example.com:7001/, 10.1.0.0/16, 192.0.2.7, fd00::/8").unwrap();
        let known = ["http://203.0.113.1:7001"];
        assert!(list.check("https://NODE-4.example.com:7001", known).is_ok());
        assert!(list.check("https://node-4.example.com:7002", known).is_err(), "exact URL only");
        assert!(list.check("http://10.1.200.3:7001", known).is_ok());
        assert!(list.check("http://10.2.0.1:7001", known).is_err());
        assert!(list.check("http://192.0.2.7:1", known).is_ok());
        assert!(list.check("http://192.0.2.8:1", known).is_err());
        assert!(list.check("http://[fd12::1]:7001", known).is_ok());
        assert!(list.check("http://203.0.113.1:7001", known).is_err(), "known hosts only count when unset");
        assert!(list.check("http://evil.example.com:7001", known).is_err(), "hostnames are not resolved");
    }

    #[test]
    fn bad_entries_are_one_line_errors() {
        for bad in ["10.0.0.0/33", "ftp://x", "node-4", "http://"] {
            let e = PeerAllowlist::parse(bad).unwrap_err();
            assert!(e.starts_with("ENGINE_PEER_ALLOWLIST") && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
