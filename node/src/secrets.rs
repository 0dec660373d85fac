//! Secret hygiene for the node's configuration: secrets from files, the
//! refusal of weak ones, debug output without them, TLS for SMTP credentials,
//! and a data directory only the node's user can read.

use std::path::PathBuf;

use crate::config::{NodeConfig, ServeArgs};

/// Shortest token or cluster secret accepted outside `ENGINE_ALLOW_WEAK_SECRETS`.
pub const MIN_SECRET_BYTES: usize = 32;

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServeArgs")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("data_dir", &self.data_dir)
            .field("peers", &self.peers)
            .field("token", &redact(&self.token))
            .field("token_file", &self.token_file)
            .field("cluster_secret", &redact(&self.cluster_secret))
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("cluster_id", &self.cluster_id)
            .field("slack_webhook_url", &redact(&self.slack_webhook_url))
            .field("worker_trigger_command", &redact(&self.worker_trigger_command))
            .field("worker_webhook_url", &redact(&self.worker_webhook_url))
            .field("worker_token", &redact(&self.worker_token))
            .field("worker_token_file", &self.worker_token_file)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &redact(&self.smtp_password))
            .field("smtp_password_file", &self.smtp_password_file)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("data_dir", &self.data_dir)
            .field("peers", &self.peers)
            .field("token", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("settings", &self.settings)
            .field("batch", &self.batch)
            .field("notify", &self.notify)
            .field("trigger", &self.trigger)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// A secret given either inline (`KEY`) or as a file (`KEY_FILE`), never both.
/// Errors name the key and the file, never the content.
pub(crate) fn secret_value(value: Option<String>, file: Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    let value = value.filter(|v| !v.trim().is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("set {key} or {key}_FILE, not both")),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}_FILE {} cannot be read: {}", path.display(), e.kind()))?;
            let v = raw.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&raw);
            if v.trim().is_empty() {
                return Err(format!("{key}_FILE {} is empty", path.display()));
            }
            Ok(Some(v.to_string()))
        }
    }
}

/// A token or secret too short, or a token that also opens `/raft`, stops the
/// node unless `allow_weak`; then each problem becomes a startup warning.
pub(crate) fn check_secret_strength(token: &str, secret: &str, allow_weak: bool) -> Result<Option<String>, String> {
    let mut problems = Vec::new();
    for (key, v) in [("CONTROL_PLANE_TOKEN", token), ("CLUSTER_SECRET", secret)] {
        if v.len() < MIN_SECRET_BYTES {
            problems.push(format!("{key} is {} bytes, shorter than {MIN_SECRET_BYTES}", v.len()));
        }
    }
    if token == secret {
        problems.push("CONTROL_PLANE_TOKEN equals CLUSTER_SECRET (an API client could join Raft)".to_string());
    }
    if problems.is_empty() {
        return Ok(None);
    }
    let problems = problems.join("; ");
    match allow_weak {
        true => Ok(Some(format!("WEAK SECRETS: {problems}; starting anyway because ENGINE_ALLOW_WEAK_SECRETS=true"))),
        false => Err(format!(
            "{problems} (generate one with `openssl rand -hex 32`; ENGINE_ALLOW_WEAK_SECRETS=true starts anyway)"
        )),
    }
}

/// SMTP_TLS, resolved. Credentials travel only inside TLS (STARTTLS required,
/// or implicit TLS) unless SMTP_ALLOW_PLAINTEXT_AUTH says otherwise: with
/// `opportunistic`, an attacker on the path strips STARTTLS and reads them.
pub(crate) fn smtp_tls(a: &ServeArgs, credentials: bool) -> Result<loops::notify::SmtpTls, String> {
    use loops::notify::SmtpTls;
    let tls = match a.smtp_tls.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None if a.smtp_port == 465 => SmtpTls::Implicit,
        None if credentials => SmtpTls::Required,
        None | Some("opportunistic") => SmtpTls::Opportunistic,
        Some("required") => SmtpTls::Required,
        Some("implicit") => SmtpTls::Implicit,
        Some("none") => SmtpTls::None,
        Some(other) => {
            return Err(format!("SMTP_TLS must be required, implicit, opportunistic or none, got {other:?}"))
        }
    };
    let weak = matches!(tls, SmtpTls::Opportunistic | SmtpTls::None);
    if credentials && weak && !a.smtp_allow_plaintext_auth {
        return Err(
            "SMTP credentials need SMTP_TLS=required or implicit (SMTP_ALLOW_PLAINTEXT_AUTH=true sends them anyway)"
                .into(),
        );
    }
    Ok(tls)
}

/// Most entries [`restrict`] visits: a data dir holds a sled database, WAL
/// chunks and a few snapshots, far fewer.
const RESTRICT_MAX_ENTRIES: usize = 100_000;

/// chmod `dir` 0700 and everything under it 0600 (files) or 0700 (dirs),
/// without following symlinks.
pub(crate) fn restrict(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&d)? {
            seen += 1;
            if seen > RESTRICT_MAX_ENTRIES {
                return Err(std::io::Error::other(format!("more than {RESTRICT_MAX_ENTRIES} entries")));
            }
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// Files and directories the node creates are for its own user only (the
/// Raft log and state hold every worker's data and the audit trail).
pub fn private_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it is called
    // at startup before any thread that creates files.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::args;

    const TOKEN: &str = "test-token-0123456789abcdef0123456789";
    const SECRET: &str = "test-secret-0123456789abcdef0123456789";

    fn base(d: &str) -> Vec<String> {
        ["--peers", "1=http://127.0.0.1:7001", "--data-dir", d, "--node-id", "1"].map(String::from).to_vec()
    }

    fn validate(d: &str, extra: &[&str]) -> Result<NodeConfig, String> {
        let mut v = base(d);
        v.extend(extra.iter().map(|s| s.to_string()));
        args(&v.iter().map(String::as_str).collect::<Vec<_>>()).validate()
    }

    #[test]
    fn secrets_are_read_from_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let d = d.to_str().unwrap();
        let (tf, sf, pf) = (dir.path().join("token"), dir.path().join("secret"), dir.path().join("smtp"));
        std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
        std::fs::write(&sf, format!("{SECRET}\r\n")).unwrap();
        std::fs::write(&pf, "smtp-pass word\n").unwrap();
        let (tf, sf, pf) = (tf.to_str().unwrap(), sf.to_str().unwrap(), pf.to_str().unwrap());
        let smtp = ["--smtp-host", "mail.example.com", "--smtp-from", "a@example.com", "--smtp-to", "b@example.com"];
        let cfg = validate(
            d,
            &[
                &["--token-file", tf, "--cluster-secret-file", sf, "--smtp-username", "u", "--smtp-password-file", pf]
                    [..],
                &smtp,
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(cfg.token, TOKEN);
        assert_eq!(cfg.cluster.secret, SECRET);
        let smtp_cfg = cfg.notify.smtp.as_ref().unwrap();
        assert_eq!(smtp_cfg.password.as_deref(), Some("smtp-pass word"));
        assert_eq!(smtp_cfg.tls, loops::notify::SmtpTls::Required, "credentials default to STARTTLS required");

        let e = validate(d, &["--token", TOKEN, "--token-file", tf, "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN or CONTROL_PLANE_TOKEN_FILE, not both"), "{e}");
        let missing = dir.path().join("nope");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("CLUSTER_SECRET_FILE") && e.contains("cannot be read"), "{e}");
        // A file that is not text: the error names the key, never the content.
        std::fs::write(dir.path().join("bin"), [0xffu8, 0xfe, b'X', b'Y', b'Z']).unwrap();
        let bin = dir.path().join("bin");
        let e = validate(d, &["--token-file", bin.to_str().unwrap(), "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN_FILE") && !e.contains("XYZ"), "{e}");
    }

    #[test]
    fn weak_secrets_stop_the_node_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = validate(d, &["--token", "short", "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN is 5 bytes, shorter than 32") && !e.contains("short "), "{e}");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret", "s3cret"]).unwrap_err();
        assert!(e.contains("CLUSTER_SECRET is 6 bytes") && !e.contains("s3cret"), "{e}");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret", TOKEN]).unwrap_err();
        assert!(e.contains("equals CLUSTER_SECRET") && !e.contains(TOKEN), "{e}");
        let cfg = validate(d, &["--token", "t", "--cluster-secret", "t", "--allow-weak-secrets", "true"]).unwrap();
        assert_eq!(cfg.warnings.len(), 1, "one warning line: {:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("ENGINE_ALLOW_WEAK_SECRETS") && cfg.warnings[0].contains("equals"));
    }

    #[test]
    fn smtp_credentials_need_tls() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let smtp = |extra: &[&str]| {
            let base = ["--token", TOKEN, "--cluster-secret", SECRET, "--smtp-host", "mail.example.com"];
            let addrs = ["--smtp-from", "a@example.com", "--smtp-to", "b@example.com"];
            validate(d, &[&base[..], &addrs, extra].concat()).map(|c| c.notify.smtp.unwrap().tls)
        };
        use loops::notify::SmtpTls;
        let creds = ["--smtp-username", "u", "--smtp-password", "p"];
        assert_eq!(smtp(&[]).unwrap(), SmtpTls::Opportunistic, "no credentials: STARTTLS when offered");
        assert_eq!(smtp(&creds).unwrap(), SmtpTls::Required);
        assert_eq!(smtp(&[&creds[..], &["--smtp-port", "465"]].concat()).unwrap(), SmtpTls::Implicit);
        for tls in ["none", "opportunistic"] {
            let e = smtp(&[&creds[..], &["--smtp-tls", tls]].concat()).unwrap_err();
            assert!(e.contains("SMTP_ALLOW_PLAINTEXT_AUTH"), "{e}");
        }
        let allowed = [&creds[..], &["--smtp-tls", "none", "--smtp-allow-plaintext-auth", "true"]].concat();
        assert_eq!(smtp(&allowed).unwrap(), SmtpTls::None);
        assert!(smtp(&["--smtp-tls", "maybe"]).unwrap_err().contains("SMTP_TLS"));
    }

    #[test]
    fn a_bad_webhook_url_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = validate(
            d,
            &["--token", TOKEN, "--cluster-secret", SECRET, "--slack-webhook-url", "hooks.slack.com/T0/B0/hook-secret"],
        )
        .unwrap_err();
        assert!(e.contains("SLACK_WEBHOOK_URL") && !e.contains("hook-secret"), "{e}");
    }

    #[test]
    fn debug_output_leaves_every_secret_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let hook = "https://hooks.slack.com/services/T0/B0/hook-secret-value";
        let extra = [
            "--token",
            TOKEN,
            "--cluster-secret",
            SECRET,
            "--slack-webhook-url",
            hook,
            "--smtp-host",
            "mail.example.com",
            "--smtp-from",
            "a@example.com",
            "--smtp-to",
            "b@example.com",
            "--smtp-username",
            "u",
            "--smtp-password",
            "smtp-password-value",
            "--worker-webhook-url",
            "https://worker.example/drain/worker-hook-secret",
            "--worker-token",
            "worker-token-value",
        ];
        let mut v = base(d);
        v.extend(extra.iter().map(|s| s.to_string()));
        let a = args(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let cfg = a.clone().validate().unwrap();
        for dbg in [format!("{a:?}"), format!("{cfg:?}"), format!("{cfg:#?}"), format!("{:?}", cfg.cluster)] {
            for secret in
                [TOKEN, SECRET, "hook-secret-value", "smtp-password-value", "worker-hook-secret", "worker-token-value"]
            {
                assert!(!dbg.contains(secret), "{secret} in {dbg}");
            }
            assert!(dbg.contains("<redacted>"), "{dbg}");
        }
    }

    #[test]
    fn the_data_dir_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        std::fs::create_dir_all(d.join("sled")).unwrap();
        std::fs::write(d.join("sled").join("db"), b"x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("sled").join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        validate(d.to_str().unwrap(), &["--token", TOKEN, "--cluster-secret", SECRET]).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("sled")), 0o700);
        assert_eq!(mode(&d.join("sled").join("db")), 0o600);
        let fresh = dir.path().join("fresh").join("data");
        validate(fresh.to_str().unwrap(), &["--token", TOKEN, "--cluster-secret", SECRET]).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
