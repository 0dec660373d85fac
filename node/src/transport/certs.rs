//! `engine-room certs`: a cluster CA and one certificate per node, so an
//! operator gets TLS (and mutual TLS between nodes) in one command. Node
//! certificates serve both as server and as client certificates.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Most node certificates one command writes.
const MAX_NODES: u64 = 100;
/// Most extra host names or addresses per certificate.
const MAX_HOSTS: usize = 64;

#[derive(Debug, Args)]
pub struct CertsCmd {
    #[command(subcommand)]
    action: CertsAction,
}

#[derive(Debug, Subcommand)]
enum CertsAction {
    /// Create a CA and certificates for nodes 1..=N in a new directory.
    Init {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory to create (0700); it must not hold certificates already.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        hosts: Hosts,
    },
    /// Add a certificate for one more node (a learner), signed by the CA in DIR.
    Add {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Directory made by `certs init` (holds ca.pem and ca-key.pem).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        hosts: Hosts,
    },
}

#[derive(Debug, Args)]
struct Hosts {
    /// Names or addresses peers and clients use, comma-separated; `ID=host`
    /// puts one on node ID's certificate only (e.g. `1=10.0.0.1,2=10.0.0.2,
    /// 3=10.0.0.3,er.example.com`). Always included: localhost, 127.0.0.1, ::1.
    #[arg(long, default_value = "")]
    hosts: String,
}

impl Hosts {
    /// The subject alternative names of node `id`'s certificate.
    fn for_node(&self, id: u64) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for item in self.hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let host = match item.split_once('=') {
                Some((n, h)) => match n.trim().parse::<u64>() {
                    Ok(n) if n == id => h.trim(),
                    Ok(_) => continue,
                    Err(_) => bail!("--hosts entry {item:?}: expected ID=host or host"),
                },
                None => item,
            };
            if host.is_empty() || host.len() > 253 || host.contains(|c: char| c.is_whitespace() || c == '/') {
                bail!("--hosts entry {item:?} is not a host name or address");
            }
            if !names.iter().any(|n| n == host) {
                names.push(host.to_string());
            }
        }
        if names.len() > MAX_HOSTS {
            bail!("at most {MAX_HOSTS} names per certificate");
        }
        Ok(names)
    }
}

impl CertsCmd {
    pub fn run(self) -> anyhow::Result<()> {
        match self.action {
            CertsAction::Init { nodes, out, hosts } => init(nodes, &out, &hosts),
            CertsAction::Add { id, out, hosts } => add(id, &out, &hosts),
        }
    }
}

fn init(nodes: u64, out: &Path, hosts: &Hosts) -> anyhow::Result<()> {
    if !(1..=MAX_NODES).contains(&nodes) {
        bail!("--nodes must be 1..={MAX_NODES}");
    }
    if out.join("ca.pem").exists() || out.join("ca-key.pem").exists() {
        bail!("{} already holds a CA; use `certs add` for another node", out.display());
    }
    create_private_dir(out)?;
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let ca_cert = ca_params(10).self_signed(&ca_key).context("cannot sign the CA certificate")?;
    write_private(&out.join("ca-key.pem"), ca_key.serialize_pem().as_bytes())?;
    write_private(&out.join("ca.pem"), ca_cert.pem().as_bytes())?;
    let issuer = Issuer::new(ca_params(10), ca_key);
    for id in 1..=nodes {
        node_cert(id, out, hosts, &issuer)?;
    }
    println!("wrote ca.pem, ca-key.pem and node-1..{nodes}.pem with their keys to {}", out.display());
    println!("on node N: ENGINE_TLS_CERT=node-N.pem ENGINE_TLS_KEY=node-N-key.pem ENGINE_TLS_CA=ca.pem");
    println!("keep ca-key.pem off the nodes: it is needed only for `engine-room certs add`");
    Ok(())
}

fn add(id: u64, out: &Path, hosts: &Hosts) -> anyhow::Result<()> {
    let key_path = out.join("ca-key.pem");
    let pem = std::fs::read_to_string(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let ca_key = KeyPair::from_pem(&pem).with_context(|| format!("{} is not a PEM key", key_path.display()))?;
    // The issuer is named by the CA's subject and key, both fixed by `init`.
    let issuer = Issuer::new(ca_params(10), ca_key);
    node_cert(id, out, hosts, &issuer)?;
    println!("wrote node-{id}.pem and node-{id}-key.pem to {}", out.display());
    Ok(())
}

/// The CA's subject and constraints; `init` and `add` must agree on them.
fn ca_params(years: i32) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "Engine Room cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p, years);
    p
}

fn node_cert(id: u64, out: &Path, hosts: &Hosts, issuer: &Issuer<'_, KeyPair>) -> anyhow::Result<()> {
    let (cert_path, key_path) = (out.join(format!("node-{id}.pem")), out.join(format!("node-{id}-key.pem")));
    if cert_path.exists() || key_path.exists() {
        bail!("{} already exists", cert_path.display());
    }
    let mut p = CertificateParams::new(hosts.for_node(id)?).context("invalid host name")?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, format!("engine-room node {id}"));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Server for its listener, client for its calls to peers (mutual TLS).
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, 5);
    let key = KeyPair::generate().context("cannot generate a node key")?;
    let cert = p.signed_by(&key, issuer).context("cannot sign a node certificate")?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    Ok(())
}

/// From a day ago (clock skew between hosts) for `years` years.
fn validity(p: &mut CertificateParams, years: i32) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let today = rcgen::date_time_ymd(1970, 1, 1) + time_days(now / 86_400);
    p.not_before = today - time_days(1);
    p.not_after = today + time_days(365 * years as u64 + years as u64 / 4);
}

fn time_days(days: u64) -> std::time::Duration {
    std::time::Duration::from_secs(days * 86_400)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Write a new file readable by its owner only (keys and certificates alike).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// A CA and two node certificates in `dir`, for other modules' tests.
#[cfg(test)]
pub fn tests_init(dir: &Path) {
    init(2, dir, &Hosts { hosts: String::new() }).expect("certs init in a temp dir");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_go_to_every_node_or_to_one() {
        let h = Hosts { hosts: "1=10.0.0.1,2=10.0.0.2,er.example.com".into() };
        let one = h.for_node(1).unwrap();
        assert!(one.contains(&"10.0.0.1".to_string()) && one.contains(&"er.example.com".to_string()));
        assert!(!one.contains(&"10.0.0.2".to_string()));
        assert!(one.contains(&"127.0.0.1".to_string()));
        assert!(Hosts { hosts: "x=10.0.0.1".into() }.for_node(1).is_err());
        assert!(Hosts { hosts: "a b".into() }.for_node(1).is_err());
    }

    #[test]
    fn init_writes_private_files_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        init(2, &out, &Hosts { hosts: String::new() }).unwrap();
        for f in ["ca.pem", "ca-key.pem", "node-1.pem", "node-1-key.pem", "node-2.pem", "node-2-key.pem"] {
            let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(init(2, &out, &Hosts { hosts: String::new() }).is_err());
        add(3, &out, &Hosts { hosts: String::new() }).unwrap();
        assert!(add(3, &out, &Hosts { hosts: String::new() }).is_err());
        // The files make a working TLS setup, the added node's too.
        for id in 1..=3 {
            let tls = super::super::tls::NodeTls::load(
                &out.join(format!("node-{id}.pem")),
                &out.join(format!("node-{id}-key.pem")),
                &out.join("ca.pem"),
                true,
            );
            assert!(tls.is_ok(), "node {id}");
        }
    }
}
