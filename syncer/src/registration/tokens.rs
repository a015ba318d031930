//! The registration API's bearer tokens (`--registration-token-file`):
//! kept only as SHA-256 digests, compared in constant time, each scoped to
//! the services it may register. The same idea as the hub's token table
//! (dns/src/auth/tokens.rs), for a different principal: a registrant.
//!
//! The file, one token a line (`#` starts a comment):
//!
//! ```text
//! <token> <namespace>/<service>[,<namespace>/<service>...]
//! ```
//!
//! where each side of a scope is a name, `*` (any) or a prefix ending in
//! `*` (`shop/web-*`). A token may only register, heartbeat, deregister
//! and list instances of services its scopes match.

use std::collections::HashMap;

pub use meshdns_proto::token_digest::{MIN_TOKEN_LEN, TokenDigest};

/// One side of a scope: a name, `*`, or `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(Pattern::Any);
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let valid = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        match (valid, prefix) {
            (false, _) => None,
            (true, true) => Some(Pattern::Prefix(body.to_owned())),
            (true, false) => Some(Pattern::Exact(body.to_owned())),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(name) => name == value,
            Pattern::Prefix(prefix) => value.starts_with(prefix.as_str()),
        }
    }
}

/// Which services a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<(Pattern, Pattern)>);

impl Scopes {
    pub fn allows(&self, namespace: &str, service: &str) -> bool {
        self.0
            .iter()
            .any(|(ns, svc)| ns.matches(namespace) && svc.matches(service))
    }
}

/// Why a token file was not taken; names the line at fault, never a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it is not UTF-8")]
    NotUtf8,
    #[error("line {line}: want `<token> <namespace>/<service>[,...]`")]
    Shape { line: usize },
    #[error("line {line}: scope {scope:?} is not <namespace>/<service> (names, `*` or `prefix*`)")]
    Scope { line: usize, scope: String },
    #[error("line {line}: tokens must be at least {MIN_TOKEN_LEN} characters")]
    Short { line: usize },
    #[error("line {line}: the token of line {first} is listed again")]
    Duplicate { line: usize, first: usize },
}

/// The parsed token file.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: HashMap<TokenDigest, Scopes>,
}

impl TokenTable {
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenFileError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TokenFileError::NotUtf8)?;
        let mut tokens = HashMap::new();
        let mut lines_of: HashMap<TokenDigest, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_whitespace();
            let (Some(token), Some(scopes), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(TokenFileError::Shape { line });
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(TokenFileError::Short { line });
            }
            let scopes = scopes
                .split(',')
                .map(|scope| {
                    scope
                        .split_once('/')
                        .and_then(|(ns, svc)| Some((Pattern::parse(ns)?, Pattern::parse(svc)?)))
                        .ok_or_else(|| TokenFileError::Scope {
                            line,
                            scope: scope.to_owned(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let digest = TokenDigest::of(token);
            if let Some(first) = lines_of.insert(digest, line) {
                return Err(TokenFileError::Duplicate { line, first });
            }
            tokens.insert(digest, Scopes(scopes));
        }
        Ok(TokenTable { tokens })
    }

    pub fn read(path: &std::path::Path) -> Result<(Self, Vec<u8>), TokenFileError> {
        let bytes = std::fs::read(path).map_err(TokenFileError::Read)?;
        Ok((Self::parse(&bytes)?, bytes))
    }

    /// The scopes of `token`, if it is one of ours.
    pub fn scopes(&self, token: &str) -> Option<&Scopes> {
        self.tokens.get(&TokenDigest::of(token))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_limit_what_a_token_may_register() {
        let table = TokenTable::parse(
            b"# registrants\n\
              aaaaaaaaaaaaaaaa-web shop/web\n\
              bbbbbbbbbbbbbbbb-ops shop/*,pay/api-*  # operators\n\
              \n",
        )
        .unwrap();
        assert_eq!(table.len(), 2);
        let web = table.scopes("aaaaaaaaaaaaaaaa-web").unwrap();
        assert!(web.allows("shop", "web"));
        assert!(!web.allows("shop", "db"));
        assert!(!web.allows("pay", "web"));
        let ops = table.scopes("bbbbbbbbbbbbbbbb-ops").unwrap();
        assert!(ops.allows("shop", "anything"));
        assert!(ops.allows("pay", "api-v2"));
        assert!(!ops.allows("pay", "db"));
        assert!(table.scopes("aaaaaaaaaaaaaaaa-wex").is_none());
        assert!(table.scopes("").is_none());
    }

    #[test]
    fn errors_name_the_line_and_never_the_token() {
        let err = |text: &str| TokenTable::parse(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err("short shop/web"),
            "line 1: tokens must be at least 16 characters"
        );
        assert!(err("\naaaaaaaaaaaaaaaa").starts_with("line 2: want"));
        assert!(err("aaaaaaaaaaaaaaaa shop").starts_with("line 1: scope \"shop\""));
        assert!(err("aaaaaaaaaaaaaaaa Shop/web").starts_with("line 1: scope"));
        assert!(err("aaaaaaaaaaaaaaaa shop/web extra").starts_with("line 1: want"));
        let dup = err("aaaaaaaaaaaaaaaa shop/web\naaaaaaaaaaaaaaaa shop/db");
        assert_eq!(dup, "line 2: the token of line 1 is listed again");
        assert!(!dup.contains("aaaa"));
    }
}
