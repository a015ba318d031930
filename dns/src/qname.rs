//! Query name -> what it asks for. Pure: no registry, no DNS types beyond
//! the labels, so every name form is a table test.

/// A served domain, such as `global` or `clusterset.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lowercase labels, left to right (`["clusterset", "local"]`).
    pub labels: Vec<String>,
    /// The MCS layout: `<svc>.<ns>.svc.clusterset.local`.
    pub mcs: bool,
}

impl Domain {
    /// Parses `global` or `clusterset.local` (trailing dot optional). A
    /// domain named `clusterset.local` uses the MCS layout.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_end_matches('.').to_ascii_lowercase();
        if trimmed.is_empty() {
            return Err("the root cannot be served".into());
        }
        let labels: Vec<String> = trimmed.split('.').map(str::to_owned).collect();
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!("{text:?} is not a valid domain name"));
            }
        }
        let mcs = trimmed == "clusterset.local";
        Ok(Domain { labels, mcs })
    }

    /// `global.` — the name as it appears in records.
    pub fn fqdn(&self) -> String {
        let mut s = self.labels.join(".");
        s.push('.');
        s
    }

    /// The labels between a service key and the domain: `svc.` in the MCS
    /// layout, nothing otherwise.
    pub fn infix(&self) -> &'static str {
        if self.mcs { "svc." } else { "" }
    }
}

/// What a name inside a served domain refers to. Fields are lowercase labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QName<'a> {
    /// The domain itself: SOA and NS.
    Apex,
    /// `svc.clusterset.local`: an empty non-terminal while any service exists.
    McsRoot,
    /// `<ns>.global`: an empty non-terminal while the namespace has a service.
    Namespace { ns: &'a str },
    /// `<svc>.<ns>.global`.
    Service { ns: &'a str, svc: &'a str },
    /// `<cluster>.<svc>.<ns>.global`.
    Cluster {
        ns: &'a str,
        svc: &'a str,
        cluster: &'a str,
    },
    /// `<host>.<cluster>.<svc>.<ns>.global`.
    Host {
        ns: &'a str,
        svc: &'a str,
        cluster: &'a str,
        host: &'a str,
    },
    /// `_<proto>.<svc>.<ns>.global`: an empty non-terminal above SRV names.
    SrvProto {
        ns: &'a str,
        svc: &'a str,
        proto: &'a str,
    },
    /// `_<port>._<proto>.<svc>.<ns>.global`.
    Srv {
        ns: &'a str,
        svc: &'a str,
        proto: &'a str,
        port: &'a str,
    },
    /// Inside the domain but of no form that can exist: NXDOMAIN.
    Nothing,
}

/// Finds the served domain `labels` (lowercase, left to right) falls in,
/// the longest match winning, and what the name asks for. `None` when the
/// name is outside every served domain.
pub fn parse<'a>(labels: &[&'a str], domains: &[Domain]) -> Option<(usize, QName<'a>)> {
    let (index, domain) = domains
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.labels.len() <= labels.len()
                && labels[labels.len() - d.labels.len()..]
                    .iter()
                    .zip(&d.labels)
                    .all(|(a, b)| *a == b.as_str())
        })
        .max_by_key(|(_, d)| d.labels.len())?;
    let mut rest = &labels[..labels.len() - domain.labels.len()];
    if domain.mcs {
        match rest.split_last() {
            None => return Some((index, QName::Apex)),
            Some((&"svc", [])) => return Some((index, QName::McsRoot)),
            Some((&"svc", inner)) => rest = inner,
            Some(_) => return Some((index, QName::Nothing)),
        }
    }
    Some((index, classify(rest)))
}

/// `rest` is what stands left of the domain (and of `svc.` in MCS).
fn classify<'a>(rest: &[&'a str]) -> QName<'a> {
    let srv_label = |l: &'a str| l.strip_prefix('_').filter(|s| !s.is_empty());
    match *rest {
        [] => QName::Apex,
        [ns] => QName::Namespace { ns },
        [svc, ns] => QName::Service { ns, svc },
        [third, svc, ns] => match srv_label(third) {
            Some(proto) => QName::SrvProto { ns, svc, proto },
            None => QName::Cluster {
                ns,
                svc,
                cluster: third,
            },
        },
        [fourth, third, svc, ns] => match (srv_label(fourth), srv_label(third)) {
            (Some(port), Some(proto)) => QName::Srv {
                ns,
                svc,
                proto,
                port,
            },
            (None, None) => QName::Host {
                ns,
                svc,
                cluster: third,
                host: fourth,
            },
            _ => QName::Nothing,
        },
        _ => QName::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<Domain> {
        vec![
            Domain::parse("global").unwrap(),
            Domain::parse("clusterset.local.").unwrap(),
        ]
    }

    fn check(name: &str, expected: Option<(usize, QName<'_>)>) {
        let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
        assert_eq!(parse(&labels, &domains()), expected, "{name}");
    }

    #[test]
    fn names() {
        use QName::*;
        check("global", Some((0, Apex)));
        check("shop.global", Some((0, Namespace { ns: "shop" })));
        check(
            "web.shop.global",
            Some((
                0,
                Service {
                    ns: "shop",
                    svc: "web",
                },
            )),
        );
        check(
            "east-1.web.shop.global",
            Some((
                0,
                Cluster {
                    ns: "shop",
                    svc: "web",
                    cluster: "east-1",
                },
            )),
        );
        check(
            "web-0.east-1.web.shop.global",
            Some((
                0,
                Host {
                    ns: "shop",
                    svc: "web",
                    cluster: "east-1",
                    host: "web-0",
                },
            )),
        );
        check(
            "_http._tcp.web.shop.global",
            Some((
                0,
                Srv {
                    ns: "shop",
                    svc: "web",
                    proto: "tcp",
                    port: "http",
                },
            )),
        );
        check(
            "_tcp.web.shop.global",
            Some((
                0,
                SrvProto {
                    ns: "shop",
                    svc: "web",
                    proto: "tcp",
                },
            )),
        );
        check("_http.east-1.web.shop.global", Some((0, Nothing)));
        check("web-0._tcp.web.shop.global", Some((0, Nothing)));
        check(
            "_.web.shop.global",
            Some((
                0,
                Cluster {
                    ns: "shop",
                    svc: "web",
                    cluster: "_",
                },
            )),
        );
        check("a.b.c.d.e.global", Some((0, Nothing)));
        check("example.com", None);
        check("global.example", None);
        check("clusterset.local", Some((1, Apex)));
        check("svc.clusterset.local", Some((1, McsRoot)));
        check(
            "shop.svc.clusterset.local",
            Some((1, Namespace { ns: "shop" })),
        );
        check(
            "web.shop.svc.clusterset.local",
            Some((
                1,
                Service {
                    ns: "shop",
                    svc: "web",
                },
            )),
        );
        check(
            "web-0.east-1.web.shop.svc.clusterset.local",
            Some((
                1,
                Host {
                    ns: "shop",
                    svc: "web",
                    cluster: "east-1",
                    host: "web-0",
                },
            )),
        );
        check("web.shop.clusterset.local", Some((1, Nothing)));
        check("local", None);
    }

    #[test]
    fn domain_parse() {
        assert_eq!(Domain::parse("Global.").unwrap().fqdn(), "global.");
        assert!(Domain::parse("").is_err());
        assert!(Domain::parse("a..b").is_err());
        assert!(Domain::parse("clusterset.local").unwrap().mcs);
    }
}
