//! The fake API server's own label-selector parser: written apart from the
//! syncer's (a state machine over words and symbols, not a recursive
//! descent), so a bug in one shows up as a disagreement with the other or
//! with the grammar table below, which records what kube-apiserver
//! (`k8s.io/apimachinery/pkg/labels.Parse`) accepts and refuses.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Exists,
    Absent,
    OneOf(Vec<String>),
    NoneOf(Vec<String>),
    Above(i64),
    Below(i64),
}

/// A parsed selector: every (key, want) must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<(String, Want)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Word(String),
    Sym(&'static str),
}

fn pieces(text: &str) -> Vec<Piece> {
    const SYMS: [&str; 9] = ["!=", "==", "!", "=", "(", ")", ",", ">", "<"];
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if [' ', '\t', '\n', '\r'].contains(&c) {
            rest = &rest[1..];
            continue;
        }
        if let Some(sym) = SYMS.iter().find(|s| rest.starts_with(**s)) {
            out.push(Piece::Sym(sym));
            rest = &rest[sym.len()..];
            continue;
        }
        let end = rest
            .find(|c: char| " \t\n\r!=(),<>".contains(c))
            .unwrap_or(rest.len());
        out.push(Piece::Word(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    out
}

const NAME_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";

fn valid_name(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars().all(|c| NAME_CHARS.contains(c))
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
}

fn valid_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [name] => valid_name(name, false),
        [prefix, name] => {
            let dns_label = |l: &str| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            };
            prefix.len() <= 253 && prefix.split('.').all(dns_label) && valid_name(name, false)
        }
        _ => false,
    }
}

enum State {
    Start,
    /// After `!`.
    Negated,
    Key(String),
    /// `!key`: complete, only `,` or the end may follow.
    NegKey(String),
    /// After `=`, `==`, `!=`, `>` or `<`.
    Value(String, &'static str),
    /// After `in` / `notin`, before `(`.
    Open(String, bool),
    /// Inside the parentheses: values so far, whether a value may come.
    Set(String, bool, Vec<String>, bool),
    /// A requirement is complete.
    Done,
    /// After a `,` between requirements.
    Comma,
}

impl LabelSelector {
    /// Parses as kube-apiserver does; the error is its 400 message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut state = State::Start;
        let fail = |what: &str| Err(format!("unable to parse requirement: {what}"));
        let mut input = pieces(text).into_iter().map(Some).chain([None]);
        loop {
            let piece = input.next().flatten();
            state = match (state, piece) {
                (State::Start, None) => return Ok(LabelSelector { terms }),
                (State::Start | State::Comma, Some(Piece::Sym("!"))) => State::Negated,
                (State::Start | State::Comma | State::Negated, Some(Piece::Word(k)))
                    if !valid_key(&k) =>
                {
                    return fail(&format!("invalid label key {k:?}"));
                }
                (State::Negated, Some(Piece::Word(k))) => State::NegKey(k),
                (State::Start | State::Comma, Some(Piece::Word(k))) => State::Key(k),
                (State::NegKey(k), p @ (None | Some(Piece::Sym(",")))) => {
                    terms.push((k, Want::Absent));
                    if p.is_none() {
                        return Ok(LabelSelector { terms });
                    }
                    State::Comma
                }
                (State::Key(k), p @ (None | Some(Piece::Sym(",")))) => {
                    terms.push((k, Want::Exists));
                    if p.is_none() {
                        return Ok(LabelSelector { terms });
                    }
                    State::Comma
                }
                (State::Key(k), Some(Piece::Sym(op @ ("=" | "==" | "!=" | ">" | "<")))) => {
                    State::Value(k, op)
                }
                (State::Key(k), Some(Piece::Word(w))) if w == "in" || w == "notin" => {
                    State::Open(k, w == "in")
                }
                (State::Value(k, op), p) => {
                    let (value, next) = match p {
                        None => (String::new(), None),
                        Some(Piece::Sym(",")) => (String::new(), Some(State::Comma)),
                        Some(Piece::Word(w)) => (w, Some(State::Done)),
                        Some(other) => return fail(&format!("{other:?} where a value goes")),
                    };
                    if !valid_name(&value, true) {
                        return fail(&format!("invalid label value {value:?}"));
                    }
                    let want = match op {
                        "=" | "==" => Want::OneOf(vec![value]),
                        "!=" => Want::NoneOf(vec![value]),
                        _ => match value.parse::<i64>() {
                            Ok(n) if op == ">" => Want::Above(n),
                            Ok(n) => Want::Below(n),
                            Err(_) => return fail(&format!("{value:?} is not an integer")),
                        },
                    };
                    terms.push((k, want));
                    match next {
                        None => return Ok(LabelSelector { terms }),
                        Some(s) => s,
                    }
                }
                (State::Open(k, is_in), Some(Piece::Sym("("))) => {
                    State::Set(k, is_in, Vec::new(), true)
                }
                (State::Set(k, is_in, mut values, true), Some(Piece::Word(w))) => {
                    if !valid_name(&w, true) {
                        return fail(&format!("invalid label value {w:?}"));
                    }
                    values.push(w);
                    State::Set(k, is_in, values, false)
                }
                (State::Set(k, is_in, mut values, want), Some(Piece::Sym(","))) => {
                    if want {
                        values.push(String::new());
                    }
                    State::Set(k, is_in, values, true)
                }
                (State::Set(k, is_in, mut values, want), Some(Piece::Sym(")"))) => {
                    if want {
                        values.push(String::new());
                    }
                    terms.push((
                        k,
                        if is_in {
                            Want::OneOf(values)
                        } else {
                            Want::NoneOf(values)
                        },
                    ));
                    State::Done
                }
                (State::Negated, Some(Piece::Sym(_)) | None) => return fail("'!' needs a key"),
                (State::Done, None) => return Ok(LabelSelector { terms }),
                (State::Done, Some(Piece::Sym(","))) => State::Comma,
                (State::Comma, None) => return fail("nothing after ','"),
                (_, p) => return fail(&format!("unexpected {p:?}")),
            };
        }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|(k, want)| {
            let v = labels.get(k);
            match want {
                Want::Exists => v.is_some(),
                Want::Absent => v.is_none(),
                Want::OneOf(vs) => v.is_some_and(|v| vs.contains(v)),
                Want::NoneOf(vs) => v.is_none_or(|v| !vs.contains(v)),
                Want::Above(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Want::Below(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kube-apiserver accepts and answers with 400.
    const GRAMMAR: &[(&str, bool)] = &[
        ("", true),
        ("a", true),
        ("!a", true),
        ("a=b", true),
        ("a == b", true),
        ("a!=b", true),
        ("a=", true),
        ("a in (b, c)", true),
        ("a notin (b)", true),
        ("env in ()", true),
        ("x in (foo,,baz),y,z notin ()", true),
        ("x>1,z<5", true),
        ("meshdns.io/export=true", true),
        ("a=in", true),
        ("a=b=c", false),
        ("env in (a b)", false),
        ("env in a", false),
        ("a b=c", false),
        ("!a=b", false),
        ("a,", false),
        (",a", false),
        ("a,,b", false),
        ("x<a", false),
        ("x>-1", false),
        ("a=-b", false),
        ("a/b/c=d", false),
        ("Example.com/a=b", false),
        ("a=é", false),
        ("env in ((a))", false),
    ];

    #[test]
    fn grammar() {
        for (text, ok) in GRAMMAR {
            assert_eq!(
                LabelSelector::parse(text).is_ok(),
                *ok,
                "{text:?}: {:?}",
                LabelSelector::parse(text)
            );
        }
        let labels: BTreeMap<String, String> = [("env".to_owned(), String::new())].into();
        assert!(LabelSelector::parse("env in ()").unwrap().matches(&labels));
        assert!(
            !LabelSelector::parse("env notin (,)")
                .unwrap()
                .matches(&labels)
        );
    }

    /// The fake's parser and the syncer's agree on every selector built
    /// from these pieces (accept or refuse, and what matches), about
    /// 150,000 of them: either one's bug shows here.
    #[test]
    fn agrees_with_the_syncer() {
        use meshdns_syncer::source::selector::Selector;
        const PIECES: [&str; 16] = [
            "a", "b/c", "in", "notin", "=", "==", "!=", "!", "(", ")", ",", " ", ">", "1", "-x",
            "é",
        ];
        let label_sets: Vec<BTreeMap<String, String>> = [
            vec![],
            vec![("a", "")],
            vec![("a", "1")],
            vec![("a", "b/c"), ("in", "1")],
            vec![("a", "in"), ("notin", "a")],
            vec![("b/c", "2"), ("a", "notin")],
        ]
        .into_iter()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect();
        let mut checked = 0;
        let mut accepted = 0;
        let n = PIECES.len();
        for len in 1..=4u32 {
            for mut code in 0..n.pow(len) {
                let mut text = String::new();
                for _ in 0..len {
                    text.push_str(PIECES[code % n]);
                    text.push(' ');
                    code /= n;
                }
                for text in [text.clone(), text.replace(' ', "")] {
                    let ours = LabelSelector::parse(&text);
                    let theirs = Selector::parse(&text);
                    assert_eq!(
                        ours.is_ok(),
                        theirs.is_ok(),
                        "{text:?}: fake {ours:?}, syncer {theirs:?}"
                    );
                    if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                        accepted += 1;
                        for labels in &label_sets {
                            assert_eq!(
                                ours.matches(labels),
                                theirs.matches(Some(labels)),
                                "{text:?} on {labels:?}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 100_000 && accepted > 1_000,
            "{checked} {accepted}"
        );
    }
}
