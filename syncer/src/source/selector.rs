//! Kubernetes label selectors (`app=web,tier!=db,env in (a,b),!legacy`),
//! parsed once and matched against label maps. The API server filters
//! watches by selector itself; this is for filtering we do client-side
//! (Services named by a ServiceExport are watched without the selector).

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    text: String,
}

/// Splits at commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(format!("{whole:?}: {key:?} is not a label key"))
    }
}

fn values(list: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{whole:?}: a set needs parentheses, e.g. env in (a,b)"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    /// Parses the selector syntax `kubectl -l` takes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top(text)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(check_key(key.trim(), part)?)
            } else if let Some((key, list)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(key.trim(), part)?, values(list, part)?)
            } else if let Some((key, list)) = part.split_once(" in ") {
                Requirement::In(check_key(key.trim(), part)?, values(list, part)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(check_key(key.trim(), part)?, value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(check_key(key.trim(), part)?, value.trim().to_owned())
            } else {
                Requirement::Exists(check_key(part, part)?)
            };
            requirements.push(req);
        }
        Ok(Selector {
            requirements,
            text: text.trim().to_owned(),
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(selector: &str, labels: &[(&str, &str)], expected: bool) {
        let s = Selector::parse(selector).unwrap();
        let map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(s.matches(Some(&map)), expected, "{selector} on {labels:?}");
    }

    #[test]
    fn selectors() {
        check(
            "meshdns.io/export=true",
            &[("meshdns.io/export", "true")],
            true,
        );
        check(
            "meshdns.io/export=true",
            &[("meshdns.io/export", "false")],
            false,
        );
        check("meshdns.io/export=true", &[], false);
        check("a==1,b!=2", &[("a", "1"), ("b", "3")], true);
        check("a==1,b!=2", &[("a", "1"), ("b", "2")], false);
        check(
            "env in (prod, staging),!legacy",
            &[("env", "staging")],
            true,
        );
        check(
            "env in (prod, staging),!legacy",
            &[("env", "staging"), ("legacy", "")],
            false,
        );
        check("env notin (dev)", &[], true);
        check("tier", &[("tier", "x")], true);
        check("", &[], true);
        assert!(Selector::parse("env in prod").is_err());
        assert!(Selector::parse("a b=c").is_err());
    }
}
