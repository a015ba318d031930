//! The bearer token table of `--token-file`: tokens kept only as SHA-256
//! digests, compared in constant time; each token carries the
//! cancellation that revokes the streams it opened.
//!
//! The table is keyed by digest, so a lookup's timing depends on digest
//! bytes, which an attacker cannot steer towards a real token without a
//! SHA-256 preimage; the final equality check is constant-time as well
//! ([`TokenDigest`]'s `PartialEq`).

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use super::Principal;

pub use meshdns_proto::token_digest::{MIN_TOKEN_LEN, TokenDigest};

/// Why a token file was not taken; names the line where one is at fault.
/// The token itself is never repeated.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The cause is part of the message: it ends up in a flag's error.
    #[error(transparent)]
    Read(#[from] crate::bounded::ReadError),
    #[error("it is not UTF-8")]
    NotUtf8,
    #[error("line {line}: want `<token> cluster:<name>` or `<token> reader:<name>`")]
    Shape { line: usize },
    #[error("line {line}: the second field is not cluster:<name> or reader:<name>")]
    Principal { line: usize },
    #[error("line {line}: tokens must be at least {MIN_TOKEN_LEN} characters")]
    Short { line: usize },
    #[error("line {line}: the token of line {first} is listed again")]
    Duplicate { line: usize, first: usize },
    #[error("it lists no token; refusing to revoke every credential (remove --token-file instead)")]
    Empty,
}

/// Parses `cluster:<name>` / `reader:<name>`.
fn principal(text: &str) -> Option<Principal> {
    match text.split_once(':')? {
        ("cluster", name) if !name.is_empty() => Some(Principal::Cluster(name.to_owned())),
        ("reader", name) if !name.is_empty() => Some(Principal::Reader(name.to_owned())),
        _ => None,
    }
}

/// Parses a token file: `<token> cluster:<name>` or `<token> reader:<name>`
/// per line, `#` comments. The error names the first bad line.
pub fn parse_tokens(text: &str) -> Result<Vec<(TokenDigest, Principal)>, TokenFileError> {
    let mut tokens = Vec::new();
    let mut lines: HashMap<TokenDigest, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(token), Some(who), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenFileError::Shape { line: number });
        };
        let who = principal(who).ok_or(TokenFileError::Principal { line: number })?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenFileError::Short { line: number });
        }
        let digest = TokenDigest::of(token);
        if let Some(first) = lines.insert(digest, number) {
            return Err(TokenFileError::Duplicate {
                line: number,
                first,
            });
        }
        tokens.push((digest, who));
    }
    Ok(tokens)
}

/// One token: who it names, and the cancellation of its streams.
#[derive(Debug)]
struct Entry {
    principal: Principal,
    revoked: CancellationToken,
}

/// The live token table.
#[derive(Debug, Default)]
pub struct TokenTable {
    entries: HashMap<TokenDigest, Entry>,
}

impl TokenTable {
    /// A table of freshly issued tokens.
    pub fn new(tokens: Vec<(TokenDigest, Principal)>) -> Self {
        TokenTable::default().successor(tokens).0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Who `token` names, and what ends its streams.
    pub fn lookup(&self, token: &str) -> Option<(Principal, CancellationToken)> {
        self.entries
            .get(&TokenDigest::of(token))
            .map(|e| (e.principal.clone(), e.revoked.clone()))
    }

    /// The table that replaces this one with `tokens`: a token that still
    /// names the same principal keeps its streams; the returned
    /// cancellations belong to tokens that are gone or name someone else
    /// now. Cancel them after the new table is in place, so a reconnect
    /// cannot find the old entry.
    pub fn successor(
        &self,
        tokens: Vec<(TokenDigest, Principal)>,
    ) -> (TokenTable, Vec<CancellationToken>) {
        let mut entries = HashMap::with_capacity(tokens.len());
        for (digest, principal) in tokens {
            let revoked = match self.entries.get(&digest) {
                Some(old) if old.principal == principal => old.revoked.clone(),
                _ => CancellationToken::new(),
            };
            entries.insert(digest, Entry { principal, revoked });
        }
        let revoked = self
            .entries
            .iter()
            .filter(|(digest, old)| {
                entries
                    .get(*digest)
                    .is_none_or(|new| new.principal != old.principal)
            })
            .map(|(_, old)| old.revoked.clone())
            .collect();
        (TokenTable { entries }, revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "abcdefghijklmnop1";
    const B: &str = "abcdefghijklmnop2";

    fn table(text: &str) -> TokenTable {
        TokenTable::new(parse_tokens(text).unwrap())
    }

    #[test]
    fn token_files() {
        let t = table(&format!("# fleet\n{A} cluster:east-1\n{B} reader:status\n"));
        assert_eq!(
            t.lookup(A).map(|e| e.0),
            Some(Principal::Cluster("east-1".into()))
        );
        assert_eq!(
            t.lookup(B).map(|e| e.0),
            Some(Principal::Reader("status".into()))
        );
        assert!(t.lookup("abcdefghijklmnop3").is_none());
        for (text, want) in [
            ("short cluster:x", "line 1: tokens must be"),
            ("\nabcdefghijklmnop1 admin:x", "line 2: the second field"),
            ("abcdefghijklmnop1", "line 1: want"),
            ("abcdefghijklmnop1 cluster:a b", "line 1: want"),
            (
                "abcdefghijklmnop1 cluster:a\nabcdefghijklmnop1 reader:b",
                "line 2: the token of line 1",
            ),
        ] {
            let error = parse_tokens(text).unwrap_err().to_string();
            assert!(error.starts_with(want), "{text:?}: {error}");
            assert!(!error.contains("abcdefghijklmnop1"), "{error}");
        }
    }

    #[test]
    fn a_reload_revokes_only_what_changed() {
        let old = table(&format!("{A} cluster:east-1\n{B} cluster:west-1\n"));
        let (a, b) = (old.lookup(A).unwrap().1, old.lookup(B).unwrap().1);
        // A stays; B now names another cluster.
        let (new, revoked) =
            old.successor(parse_tokens(&format!("{A} cluster:east-1\n{B} cluster:x\n")).unwrap());
        for token in revoked {
            token.cancel();
        }
        assert!(!a.is_cancelled() && b.is_cancelled());
        assert!(!new.lookup(B).unwrap().1.is_cancelled());
        // A removed.
        let (_, revoked) = new.successor(parse_tokens(&format!("{B} cluster:x\n")).unwrap());
        for token in revoked {
            token.cancel();
        }
        assert!(a.is_cancelled());
    }

    #[test]
    fn digests_compare_by_value() {
        assert_eq!(TokenDigest::of(A), TokenDigest::of(A));
        assert_ne!(TokenDigest::of(A), TokenDigest::of(B));
        assert_eq!(format!("{:?}", TokenDigest::of(A)), "TokenDigest(..)");
    }
}
