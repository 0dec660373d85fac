//! The token command family (cluster format 4): named, scoped API tokens.
//!
//! The secret of a token never enters the replicated state: the node that
//! creates it draws 32 random bytes, shows them to the client once, and
//! proposes only their SHA-256. A fast hash is right here (a slow password
//! hash on every heartbeat would break the heartbeat budget): the secrets are
//! random and long, so there is nothing to guess a dictionary against.
//! Revoked tokens are kept (their name stays taken, for the audit trail) up to
//! [`MAX_REVOKED`]; live ones up to [`MAX_TOKENS`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::field;
use super::{validate_name, ControlState};
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

/// Live (not revoked) tokens the cluster keeps.
pub const MAX_TOKENS: usize = 1_000;
/// Revoked tokens kept for the record (oldest dropped first).
pub const MAX_REVOKED: usize = 1_000;

/// What a token may do. `admin` may do everything; `operator` controls the
/// fleet (and reads); `read` only reads; `worker` only heartbeats (and, with
/// the jobs domain, claims and reports jobs); `metrics` only scrapes
/// `/metrics`; `producer` only enqueues work.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Admin,
    Operator,
    Read,
    Worker,
    Metrics,
    Producer,
}

impl Scope {
    pub const ALL: [Scope; 6] =
        [Scope::Admin, Scope::Operator, Scope::Read, Scope::Worker, Scope::Metrics, Scope::Producer];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operator => "operator",
            Scope::Read => "read",
            Scope::Worker => "worker",
            Scope::Metrics => "metrics",
            Scope::Producer => "producer",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Does a token of this scope satisfy a route that needs `need`?
    /// `admin` satisfies everything; `operator` also reads; `read` and
    /// `operator` may scrape `/metrics` (a GET like any other).
    pub fn allows(self, need: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Operator => matches!(need, Scope::Operator | Scope::Read | Scope::Metrics),
            Scope::Read => matches!(need, Scope::Read | Scope::Metrics),
            other => other == need,
        }
    }
}

/// A token as the cluster keeps it: never the secret, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret.
    pub sha256: [u8; 32],
    /// A worker token bound to worker ids starting with this.
    pub worker_prefix: Option<String>,
    /// A worker token bound to this pool.
    pub pool: Option<String>,
    pub created_ms: u64,
    pub created_by: String,
    pub revoked_ms: Option<u64>,
}

/// A token to create (the command's payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewToken {
    pub name: String,
    pub scope: Scope,
    pub sha256: [u8; 32],
    pub worker_prefix: Option<String>,
    pub pool: Option<String>,
}

/// The tokens and an index by hash (derived, rebuilt after a decode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    pub by_name: BTreeMap<String, ApiToken>,
    by_hash: std::collections::HashMap<[u8; 32], String>,
}

impl Tokens {
    pub fn from_map(by_name: BTreeMap<String, ApiToken>) -> Self {
        let mut t = Tokens { by_name, by_hash: Default::default() };
        t.reindex();
        t
    }

    pub fn reindex(&mut self) {
        self.by_hash =
            self.by_name.values().filter(|t| t.revoked_ms.is_none()).map(|t| (t.sha256, t.name.clone())).collect();
    }

    /// The live token whose secret hashes to `sha256`.
    pub fn find(&self, sha256: &[u8; 32]) -> Option<&ApiToken> {
        self.by_hash.get(sha256).and_then(|name| self.by_name.get(name))
    }

    pub fn live(&self) -> usize {
        self.by_hash.len()
    }
}

fn invalid(message: String) -> CommandError {
    CommandError::new(ErrorKind::Invalid, message)
}

impl NewToken {
    fn validate(&self) -> Result<(), CommandError> {
        validate_name("token name", &self.name)?;
        if let Some(p) = &self.worker_prefix {
            validate_name("worker_prefix", p)?;
        }
        if let Some(p) = &self.pool {
            validate_name("pool", p)?;
        }
        if (self.worker_prefix.is_some() || self.pool.is_some()) && self.scope != Scope::Worker {
            return Err(invalid("worker_prefix and pool bind worker tokens only".into()));
        }
        Ok(())
    }
}

impl ControlState {
    pub(super) fn create_token(&mut self, req: &Request, t: &NewToken) -> Response {
        t.validate()?;
        if self.tokens.by_name.contains_key(&t.name) {
            return Err(CommandError::new(ErrorKind::Conflict, format!("a token named {:?} exists", t.name)));
        }
        if self.tokens.by_hash.contains_key(&t.sha256) {
            return Err(CommandError::new(ErrorKind::Conflict, "a token with this secret exists".to_string()));
        }
        if self.tokens.live() >= MAX_TOKENS {
            return Err(CommandError::new(
                ErrorKind::Limit,
                format!("the cluster keeps at most {MAX_TOKENS} live tokens; revoke one first"),
            ));
        }
        let token = ApiToken {
            name: t.name.clone(),
            scope: t.scope,
            sha256: t.sha256,
            worker_prefix: t.worker_prefix.clone(),
            pool: t.pool.clone(),
            created_ms: req.at_ms,
            created_by: req.actor.clone(),
            revoked_ms: None,
        };
        self.tokens.by_hash.insert(token.sha256, token.name.clone());
        self.tokens.by_name.insert(token.name.clone(), token.clone());
        let subject = format!("token:{}", t.name);
        self.changed(req, subject.clone(), vec![field("scope", t.scope.as_str())]);
        self.audit(req, &subject, Some(format!("scope {}", t.scope.as_str())));
        Ok(Reply::Token(token))
    }

    pub(super) fn revoke_token(&mut self, req: &Request, name: &str) -> Response {
        let Some(t) = self.tokens.by_name.get_mut(name).filter(|t| t.revoked_ms.is_none()) else {
            return Err(CommandError::new(ErrorKind::NotFound, format!("no live token named {name:?}")));
        };
        t.revoked_ms = Some(req.at_ms);
        let token = t.clone();
        self.tokens.by_hash.remove(&token.sha256);
        // Keep the newest revoked ones only.
        let mut revoked: Vec<(u64, String)> =
            self.tokens.by_name.values().filter_map(|t| Some((t.revoked_ms?, t.name.clone()))).collect();
        if revoked.len() > MAX_REVOKED {
            revoked.sort();
            for (_, n) in revoked.iter().take(revoked.len() - MAX_REVOKED) {
                self.tokens.by_name.remove(n);
            }
        }
        let subject = format!("token:{name}");
        self.changed(req, subject.clone(), vec![field("revoked", true)]);
        self.audit(req, &subject, None);
        Ok(Reply::Token(token))
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;
    use crate::command::Command;
    use crate::state::testkit::req;

    fn new(name: &str, scope: Scope, seed: u8) -> NewToken {
        NewToken { name: name.into(), scope, sha256: [seed; 32], worker_prefix: None, pool: None }
    }

    fn at4() -> ControlState {
        ControlState { format_version: 4, ..ControlState::default() }
    }

    #[test]
    fn tokens_are_created_found_by_hash_and_revoked() {
        let mut s = at4();
        s.apply(&req(Command::CreateToken(new("ops", Scope::Operator, 1)))).unwrap();
        assert_eq!(s.tokens.find(&[1; 32]).map(|t| t.scope), Some(Scope::Operator));
        assert!(s.tokens.find(&[2; 32]).is_none());
        let before = s.clone();
        let dup = s.apply(&req(Command::CreateToken(new("ops", Scope::Read, 3)))).unwrap_err();
        assert_eq!(dup.kind, ErrorKind::Conflict);
        let same_secret = s.apply(&req(Command::CreateToken(new("other", Scope::Read, 1)))).unwrap_err();
        assert_eq!(same_secret.kind, ErrorKind::Conflict);
        let mut bound = new("fleet", Scope::Read, 4);
        bound.pool = Some("eu".into());
        assert_eq!(s.apply(&req(Command::CreateToken(bound))).unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(s, before, "refusals change nothing");
        s.apply(&req(Command::RevokeToken { name: "ops".into() })).unwrap();
        assert!(s.tokens.find(&[1; 32]).is_none(), "a revoked token no longer authenticates");
        let again = s.apply(&req(Command::RevokeToken { name: "ops".into() })).unwrap_err();
        assert_eq!(again.kind, ErrorKind::NotFound);
        assert_eq!(s.audit.iter().filter(|a| a.subject == "token:ops").count(), 2);
    }

    #[test]
    fn tokens_need_format_4_and_survive_a_snapshot() {
        let mut s = ControlState { format_version: 3, ..ControlState::default() };
        let e = s.apply(&req(Command::CreateToken(new("ops", Scope::Operator, 1)))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        s.format_version = 4;
        let mut w = new("fleet-eu", Scope::Worker, 9);
        w.worker_prefix = Some("eu-".into());
        s.apply(&req(Command::CreateToken(w))).unwrap();
        let mut bytes = Vec::new();
        crate::state::encode_snapshot(&s, &mut bytes).unwrap();
        let back = crate::state::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.tokens.find(&[9; 32]).and_then(|t| t.worker_prefix.as_deref()), Some("eu-"));
    }

    #[test]
    fn scopes_allow_what_they_should() {
        use Scope::*;
        assert!(Admin.allows(Worker) && Admin.allows(Metrics) && Admin.allows(Producer));
        assert!(Operator.allows(Read) && Operator.allows(Operator) && !Operator.allows(Admin));
        assert!(!Operator.allows(Worker));
        assert!(Read.allows(Read) && Read.allows(Metrics) && !Read.allows(Operator));
        assert!(Worker.allows(Worker) && !Worker.allows(Read));
        assert!(Metrics.allows(Metrics) && !Metrics.allows(Read));
        assert!(Producer.allows(Producer) && !Producer.allows(Read));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn live_tokens_are_capped() {
        let mut s = at4();
        for i in 0..MAX_TOKENS {
            let mut t = new(&format!("t{i}"), Scope::Read, 0);
            t.sha256[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.apply(&req(Command::CreateToken(t))).unwrap();
        }
        let mut t = new("one-more", Scope::Read, 0xee);
        t.sha256[0] = 0xee;
        assert_eq!(s.apply(&req(Command::CreateToken(t))).unwrap_err().kind, ErrorKind::Limit);
    }
}
