//! Kubernetes label selectors (`app=web,tier!=db,env in (a,b),!legacy`),
//! parsed with the grammar kube-apiserver uses
//! (`k8s.io/apimachinery/pkg/labels`), so a selector the API server would
//! answer with 400 fails at start, naming the term, and matched against
//! label maps as the API server matches them. The API server filters
//! watches by selector itself; matching here is for filtering we do
//! client-side (with `--mcs`, Services are watched without the selector).
//!
//! The grammar: requirements separated by `,`; each is `KEY` (exists),
//! `!KEY` (does not exist), `KEY = VALUE`, `KEY == VALUE`, `KEY != VALUE`,
//! `KEY in (V, ...)`, `KEY notin (V, ...)`, `KEY > N` or `KEY < N`. A key is
//! a qualified name (`[prefix/]name`, the prefix a DNS subdomain), a value
//! a label value (empty allowed: `a=`, `a in ()`, `a in (x,,y)`).

use std::collections::BTreeMap;

/// What is wrong with a selector term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("found {found}, expected {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    #[error("{key:?} is not a label key: {why}")]
    BadKey { key: String, why: &'static str },
    #[error("{value:?} is not a label value: {why}")]
    BadValue { value: String, why: &'static str },
    #[error("{value:?} is not an integer (`>` and `<` compare integers)")]
    NotInteger { value: String },
}

/// A selector the API server would refuse: the term (1-based, as written)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("term {index} ({term:?}): {problem}")]
pub struct SelectorError {
    pub index: usize,
    pub term: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    NotExists,
    Greater,
    Less,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    /// A set: no duplicates. Exactly one for `=`, `!=`, `>` and `<`.
    values: Vec<String>,
}

/// A parsed label selector: every requirement must hold. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    End,
    Ident(&'a str),
    Open,
    Close,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
}

impl Tok<'_> {
    fn shown(&self) -> String {
        match self {
            Tok::End => "the end".into(),
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Not => "'!'".into(),
            Tok::Equals => "'='".into(),
            Tok::DoubleEquals => "'=='".into(),
            Tok::NotEquals => "'!='".into(),
            Tok::Greater => "'>'".into(),
            Tok::Less => "'<'".into(),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The tokens of `text`, each with its byte offset.
fn lex(text: &str) -> Vec<(usize, Tok<'_>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            out.push((i, Tok::End));
            return out;
        };
        let start = i;
        let next = bytes.get(i + 1).copied();
        let (tok, len) = match (b, next) {
            (b'!', Some(b'=')) => (Tok::NotEquals, 2),
            (b'=', Some(b'=')) => (Tok::DoubleEquals, 2),
            (b'!', _) => (Tok::Not, 1),
            (b'=', _) => (Tok::Equals, 1),
            (b'(', _) => (Tok::Open, 1),
            (b')', _) => (Tok::Close, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'>', _) => (Tok::Greater, 1),
            (b'<', _) => (Tok::Less, 1),
            _ => {
                let mut end = i;
                while end < bytes.len() && !is_space(bytes[end]) && !is_special(bytes[end]) {
                    end += 1;
                }
                // Specials and spaces are ASCII: `end` is a char boundary.
                (Tok::Ident(&text[i..end]), end - i)
            }
        };
        out.push((start, tok));
        i += len;
    }
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?`, at most 63 bytes (a label
/// value, and the name part of a key, which must also be non-empty).
fn name_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.len() > 63 {
        return Some("longer than 63 characters");
    }
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    match (b.first(), b.last()) {
        (None, _) => None,
        (Some(first), Some(last)) if !alnum(first) || !alnum(last) => {
            Some("must begin and end with a letter or digit")
        }
        _ if b
            .iter()
            .all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.')) =>
        {
            None
        }
        _ => Some("only letters, digits, '-', '_' and '.' are allowed"),
    }
}

/// A DNS subdomain (RFC 1123), at most 253 bytes.
fn subdomain_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > 253 {
        return Some("the prefix must be a DNS subdomain of 1 to 253 characters");
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if s.split('.').all(label_ok) {
        None
    } else {
        Some("the prefix must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')")
    }
}

fn check_key(key: &str) -> Result<(), Problem> {
    let bad = |why| {
        Err(Problem::BadKey {
            key: key.to_owned(),
            why,
        })
    };
    let (prefix, name) = match key.split_once('/') {
        Some((_, name)) if name.contains('/') => return bad("at most one '/'"),
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(why) = prefix.and_then(subdomain_problem) {
        return bad(why);
    }
    if name.is_empty() {
        return bad("the name part must not be empty");
    }
    match name_problem(name) {
        Some(why) => bad(why),
        None => Ok(()),
    }
}

fn check_value(value: &str) -> Result<(), Problem> {
    match name_problem(value) {
        Some(why) => Err(Problem::BadValue {
            value: value.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// A recursive descent over the tokens, as apimachinery's `Parser`.
struct Parser<'a> {
    tokens: Vec<(usize, Tok<'a>)>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Tok<'a> {
        self.tokens.get(self.at).map_or(Tok::End, |t| t.1)
    }

    fn next(&mut self) -> Tok<'a> {
        let tok = self.peek();
        self.at = (self.at + 1).min(self.tokens.len());
        tok
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(usize::MAX, |t| t.0)
    }

    fn requirement(&mut self) -> Result<Requirement, Problem> {
        let unexpected = |found: Tok<'_>, expected| Problem::Unexpected {
            found: found.shown(),
            expected,
        };
        let mut tok = self.next();
        let negated = tok == Tok::Not;
        if negated {
            tok = self.next();
        }
        let Tok::Ident(key) = tok else {
            return Err(unexpected(tok, "a label key"));
        };
        check_key(key)?;
        let alone = matches!(self.peek(), Tok::End | Tok::Comma);
        if negated || alone {
            let op = if negated { Op::NotExists } else { Op::Exists };
            return Ok(Requirement {
                key: key.to_owned(),
                op,
                values: Vec::new(),
            });
        }
        let op = match self.next() {
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::NotEquals => Op::NotEquals,
            Tok::Greater => Op::Greater,
            Tok::Less => Op::Less,
            Tok::Ident("in") => Op::In,
            Tok::Ident("notin") => Op::NotIn,
            other => {
                return Err(unexpected(
                    other,
                    "an operator: =, ==, !=, in, notin, > or <",
                ));
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.set()?,
            _ => vec![self.exact()?],
        };
        for v in &values {
            check_value(v)?;
            if matches!(op, Op::Greater | Op::Less) && v.parse::<i64>().is_err() {
                return Err(Problem::NotInteger { value: v.clone() });
            }
        }
        Ok(Requirement {
            key: key.to_owned(),
            op,
            values,
        })
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`: empty when nothing follows.
    fn exact(&mut self) -> Result<String, Problem> {
        match self.peek() {
            Tok::End | Tok::Comma => Ok(String::new()),
            Tok::Ident(v) => {
                self.next();
                Ok(v.to_owned())
            }
            other => Err(Problem::Unexpected {
                found: other.shown(),
                expected: "a value",
            }),
        }
    }

    /// `( v, ... )`: `()` is the empty value, as is a missing one in `(a,,b)`.
    fn set(&mut self) -> Result<Vec<String>, Problem> {
        let unexpected = |found: Tok<'_>, expected| Problem::Unexpected {
            found: found.shown(),
            expected,
        };
        let open = self.next();
        if open != Tok::Open {
            return Err(unexpected(open, "'(' (a set is written env in (a,b))"));
        }
        let mut values: Vec<String> = Vec::new();
        let mut add = |v: &str| {
            if !values.iter().any(|x| x == v) {
                values.push(v.to_owned());
            }
        };
        // Whether a value may come next (at the start and after a comma).
        let mut want_value = true;
        loop {
            match self.next() {
                Tok::Ident(v) if want_value => {
                    add(v);
                    want_value = false;
                }
                Tok::Comma => {
                    if want_value {
                        add("");
                    }
                    want_value = true;
                }
                Tok::Close => {
                    if want_value {
                        add("");
                    }
                    return Ok(values);
                }
                other if want_value => {
                    return Err(unexpected(other, "a value, ',' or ')'"));
                }
                other => return Err(unexpected(other, "',' or ')'")),
            }
        }
    }
}

impl Selector {
    /// Parses a selector as kube-apiserver does; the error names the term.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: lex(text),
            at: 0,
        };
        let mut requirements = Vec::new();
        let mut term_start = parser.offset();
        let fail =
            |parser: &Parser<'_>, start: usize, index: usize, problem: Problem| SelectorError {
                index,
                term: term_text(text, start, parser.offset()),
                problem,
            };
        if parser.peek() == Tok::End {
            return Ok(Selector::default());
        }
        loop {
            let index = requirements.len() + 1;
            let requirement = parser
                .requirement()
                .map_err(|p| fail(&parser, term_start, index, p))?;
            requirements.push(requirement);
            match parser.next() {
                Tok::End => break,
                Tok::Comma => {
                    term_start = parser.offset();
                    if !matches!(parser.peek(), Tok::Ident(_) | Tok::Not) {
                        let found = parser.peek().shown();
                        return Err(fail(
                            &parser,
                            term_start,
                            index + 1,
                            Problem::Unexpected {
                                found,
                                expected: "a requirement after ','",
                            },
                        ));
                    }
                }
                other => {
                    return Err(fail(
                        &parser,
                        term_start,
                        index,
                        Problem::Unexpected {
                            found: other.shown(),
                            expected: "',' or the end",
                        },
                    ));
                }
            }
        }
        Ok(Selector {
            requirements,
            text: text.trim().to_owned(),
        })
    }

    /// Whether `labels` satisfy every requirement, as the API server decides.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        self.requirements.iter().all(|r| {
            let has = |v: &str| r.values.iter().any(|x| x == v);
            let number = |v: &str| v.parse::<i64>().ok();
            match (r.op, get(&r.key)) {
                (Op::Exists, found) => found.is_some(),
                (Op::NotExists, found) => found.is_none(),
                (Op::Equals | Op::In, Some(v)) => has(v),
                (Op::NotEquals | Op::NotIn, Some(v)) => !has(v),
                (Op::NotEquals | Op::NotIn, None) => true,
                (Op::Greater | Op::Less, Some(v)) => match (number(v), number(&r.values[0])) {
                    (Some(label), Some(bound)) if r.op == Op::Greater => label > bound,
                    (Some(label), Some(bound)) => label < bound,
                    _ => false,
                },
                (Op::Equals | Op::In | Op::Greater | Op::Less, None) => false,
            }
        })
    }

    /// The selector as given, for the API server's `labelSelector`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The text of the term that starts at byte `start`: up to the error, or
/// to the next comma outside parentheses, whichever is further.
fn term_text(text: &str, start: usize, error_at: usize) -> String {
    let start = start.min(text.len());
    let mut depth = 0i32;
    let mut end = text.len();
    for (i, c) in text[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth <= 0 && start + i >= error_at.min(text.len()) => {
                end = start + i;
                break;
            }
            _ => {}
        }
    }
    text[start..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)], expected: bool) {
        let s = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
        assert_eq!(
            s.matches(Some(&labels(pairs))),
            expected,
            "{selector:?} on {pairs:?}"
        );
    }

    #[test]
    fn matching() {
        let export = "meshdns.io/export=true";
        check(export, &[("meshdns.io/export", "true")], true);
        check(export, &[("meshdns.io/export", "false")], false);
        check(export, &[], false);
        check("a==1,b!=2", &[("a", "1"), ("b", "3")], true);
        check("a==1,b!=2", &[("a", "1"), ("b", "2")], false);
        check("b!=2", &[], true);
        let set = "env in (prod, staging),!legacy";
        check(set, &[("env", "staging")], true);
        check(set, &[("env", "staging"), ("legacy", "")], false);
        check("env notin (dev)", &[], true);
        check("env notin (dev)", &[("env", "dev")], false);
        check("tier", &[("tier", "x")], true);
        check("tier", &[], false);
        check("", &[], true);
        // The empty value: `a=`, `a in ()`, `(x,,y)` hold the empty string.
        check("a=", &[("a", "")], true);
        check("a=", &[], false);
        check("env in ()", &[("env", "")], true);
        check("env in ()", &[("env", "prod")], false);
        check("env in (a,,b)", &[("env", "")], true);
        check("env notin ()", &[("env", "")], false);
        // Integers compare; a label that is not one never matches.
        check("gen>3", &[("gen", "10")], true);
        check("gen>3", &[("gen", "3")], false);
        check("gen<3", &[("gen", "-1")], true);
        check("gen<3", &[("gen", "x")], false);
        check("gen<3", &[], false);
        // Keywords are values where a value goes.
        check("a=in", &[("a", "in")], true);
        check("in in (notin)", &[("in", "notin")], true);
    }

    /// What kube-apiserver accepts (`Ok(terms)`) and answers with 400
    /// (`Err(term index)`), from apimachinery's grammar.
    #[test]
    fn grammar() {
        let table: &[(&str, Result<usize, usize>)] = &[
            ("", Ok(0)),
            ("   ", Ok(0)),
            ("a", Ok(1)),
            ("!a", Ok(1)),
            ("! a", Ok(1)),
            ("a=b", Ok(1)),
            ("a = b", Ok(1)),
            ("a==b", Ok(1)),
            ("a!=b", Ok(1)),
            ("a=", Ok(1)),
            ("a= ,b=c", Ok(2)),
            ("a in (b)", Ok(1)),
            ("a in(b,c)", Ok(1)),
            ("a notin (b, c)", Ok(1)),
            ("env in ()", Ok(1)),
            ("x in (foo,,baz),y,z notin ()", Ok(3)),
            ("a in (b,)", Ok(1)),
            ("a in (,b)", Ok(1)),
            ("x>1,z<5", Ok(2)),
            ("x>01", Ok(1)),
            ("meshdns.io/export=true", Ok(1)),
            ("example.com/a-b_c.d=V-1_x.y", Ok(1)),
            ("a=in", Ok(1)),
            ("in=a", Ok(1)),
            ("a,b,!c", Ok(3)),
            ("a\t=\nb", Ok(1)),
            // Refused.
            ("a=b=c", Err(1)),
            ("x==a==b", Err(1)),
            ("env in (a b)", Err(1)),
            ("env in a", Err(1)),
            ("env in (a", Err(1)),
            ("env in ((a))", Err(1)),
            ("a b=c", Err(1)),
            ("a b", Err(1)),
            ("!a=b", Err(1)),
            ("!", Err(1)),
            ("!!a", Err(1)),
            ("=b", Err(1)),
            ("a,", Err(2)),
            (",a", Err(1)),
            ("a,,b", Err(2)),
            ("x=a||y=b", Err(1)),
            ("a=b,c d", Err(2)),
            ("x<a", Err(1)),
            ("x>-1", Err(1)),
            ("x>", Err(1)),
            ("x>1.5", Err(1)),
            ("a=-b", Err(1)),
            ("a=b-", Err(1)),
            ("a=b c", Err(1)),
            ("-a=b", Err(1)),
            ("a/b/c=d", Err(1)),
            ("/a=b", Err(1)),
            ("a/=b", Err(1)),
            ("Example.com/a=b", Err(1)),
            ("ex_ample.com/a=b", Err(1)),
            ("a=b,c in (d e)", Err(2)),
            ("a=é", Err(1)),
            ("a in (b),c=(d)", Err(2)),
            ("a=b)", Err(1)),
            ("a in (b) c", Err(1)),
        ];
        let long_name = format!("{}=a", "k".repeat(64));
        let long_value = format!("a={}", "v".repeat(64));
        let longest = format!("{}={}", "k".repeat(63), "v".repeat(63));
        let mut all: Vec<(&str, Result<usize, usize>)> = table.to_vec();
        all.push((&long_name, Err(1)));
        all.push((&long_value, Err(1)));
        all.push((&longest, Ok(1)));
        for (text, expected) in all {
            let got = Selector::parse(text)
                .map(|s| s.requirements.len())
                .map_err(|e| e.index);
            assert_eq!(got, expected, "{text:?}: {:?}", Selector::parse(text));
        }
    }

    #[test]
    fn errors_name_the_term() {
        let e = Selector::parse("app=web,env in (a b),tier").unwrap_err();
        assert_eq!(e.index, 2);
        assert_eq!(e.term, "env in (a b)");
        assert_eq!(
            e.to_string(),
            "term 2 (\"env in (a b)\"): found \"b\", expected ',' or ')'"
        );
        let e = Selector::parse("a=b=c").unwrap_err();
        assert_eq!(e.term, "a=b=c");
        assert!(e.to_string().contains("found '='"), "{e}");
        let e = Selector::parse("team=a,_key!=x").unwrap_err();
        assert_eq!((e.index, e.term.as_str()), (2, "_key!=x"));
        assert!(e.to_string().contains("\"_key\" is not a label key"), "{e}");
    }
}
