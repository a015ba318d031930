//! Query name -> what it asks for. Pure: no registry, no DNS types beyond
//! the labels, so every name form is a table test.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::net::IpAddr;

/// How names under a served domain are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<svc>.<ns>.global`.
    Global,
    /// The MCS layout: `<svc>.<ns>.svc.clusterset.local`.
    Mcs,
    /// `in-addr.arpa`: PTR for exported IPv4 addresses.
    ReverseV4,
    /// `ip6.arpa`: PTR for exported IPv6 addresses.
    ReverseV6,
}

/// A served domain, such as `global` or `clusterset.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lowercase labels, left to right (`["clusterset", "local"]`).
    pub labels: Vec<String>,
    pub layout: Layout,
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
        let layout = match trimmed.as_str() {
            "clusterset.local" => Layout::Mcs,
            "in-addr.arpa" | "ip6.arpa" | "arpa" => {
                return Err(format!("{trimmed} is served with --reverse, not --domain"));
            }
            _ => Layout::Global,
        };
        Ok(Domain { labels, layout })
    }

    /// The reverse zones `--reverse` serves.
    pub fn reverse() -> [Domain; 2] {
        [
            Domain {
                labels: vec!["in-addr".into(), "arpa".into()],
                layout: Layout::ReverseV4,
            },
            Domain {
                labels: vec!["ip6".into(), "arpa".into()],
                layout: Layout::ReverseV6,
            },
        ]
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
        if self.layout == Layout::Mcs {
            "svc."
        } else {
            ""
        }
    }

    /// Whether names of services live here (not a reverse zone).
    pub fn is_forward(&self) -> bool {
        matches!(self.layout, Layout::Global | Layout::Mcs)
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
    /// `dns-version.clusterset.local`: the MCS schema version (TXT).
    DnsVersion,
    /// A name in a reverse zone: the address, or the labels of a partial
    /// one (an empty non-terminal while an exported address lies below).
    Reverse(Reverse),
    /// Inside the domain but of no form that can exist: NXDOMAIN.
    Nothing,
}

/// A reverse-zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverse {
    Address(IpAddr),
    /// The addresses from `.0` to `.1` (inclusive) lie below this name.
    Prefix(IpAddr, IpAddr),
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
    match domain.layout {
        Layout::Global => {}
        Layout::Mcs => match rest.split_last() {
            None => return Some((index, QName::Apex)),
            Some((&"svc", [])) => return Some((index, QName::McsRoot)),
            Some((&"svc", inner)) => rest = inner,
            Some((&"dns-version", [])) => return Some((index, QName::DnsVersion)),
            Some(_) => return Some((index, QName::Nothing)),
        },
        Layout::ReverseV4 | Layout::ReverseV6 => {
            if rest.is_empty() {
                return Some((index, QName::Apex));
            }
            let name = reverse(rest, domain.layout == Layout::ReverseV6)
                .map_or(QName::Nothing, QName::Reverse);
            return Some((index, name));
        }
    }
    Some((index, classify(rest)))
}

/// Reads a reverse name (labels left of `in-addr.arpa` / `ip6.arpa`):
/// the address, or the range below a partial name. `None` if malformed.
fn reverse(rest: &[&str], v6: bool) -> Option<Reverse> {
    let (width, digits) = if v6 { (4u32, 32usize) } else { (8, 4) };
    if rest.len() > digits {
        return None;
    }
    let mut value: u128 = 0;
    // Most significant first: the rightmost label.
    for label in rest.iter().rev() {
        let digit = if v6 {
            (label.len() == 1)
                .then(|| u8::from_str_radix(label, 16).ok())
                .flatten()?
        } else {
            // Decimal without leading zeros, 0-255.
            let ok = !label.is_empty()
                && label.len() <= 3
                && (label.len() == 1 || !label.starts_with('0'));
            ok.then(|| label.parse::<u8>().ok()).flatten()?
        };
        value = (value << width) | u128::from(digit);
    }
    let missing = u32::try_from(digits - rest.len()).ok()? * width;
    let low = value << missing;
    let high = low | ((1u128 << missing) - 1);
    let address = |v: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(v))
        } else {
            // At most 32 bits were read for IPv4.
            #[allow(clippy::cast_possible_truncation)]
            IpAddr::V4(std::net::Ipv4Addr::from(v as u32))
        }
    };
    Some(if missing == 0 {
        Reverse::Address(address(low))
    } else {
        Reverse::Prefix(address(low), address(high))
    })
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
    // The answer-path lints of this module are for its code, not its tests.
    #![allow(clippy::cast_possible_truncation, clippy::expect_used)]

    use super::*;

    fn domains() -> Vec<Domain> {
        let mut d = vec![
            Domain::parse("global").unwrap(),
            Domain::parse("clusterset.local.").unwrap(),
        ];
        d.extend(Domain::reverse());
        d
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
        check("dns-version.clusterset.local", Some((1, DnsVersion)));
        check(
            "dns-version.global",
            Some((0, Namespace { ns: "dns-version" })),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        check(
            "11.0.1.10.in-addr.arpa",
            Some((2, Reverse(super::Reverse::Address(ip("10.1.0.11"))))),
        );
        check("in-addr.arpa", Some((2, Apex)));
        check(
            "1.10.in-addr.arpa",
            Some((
                2,
                Reverse(super::Reverse::Prefix(ip("10.1.0.0"), ip("10.1.255.255"))),
            )),
        );
        check("011.0.1.10.in-addr.arpa", Some((2, Nothing)));
        check("256.0.1.10.in-addr.arpa", Some((2, Nothing)));
        check("1.1.0.1.10.in-addr.arpa", Some((2, Nothing)));
        check(
            "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            Some((3, Reverse(super::Reverse::Address(ip("fd00::11"))))),
        );
        check(
            "d.f.ip6.arpa",
            Some((
                3,
                Reverse(super::Reverse::Prefix(
                    ip("fd00::"),
                    ip("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                )),
            )),
        );
        check("g.f.ip6.arpa", Some((3, Nothing)));
        check("10.f.ip6.arpa", Some((3, Nothing)));
        check("local", None);
    }

    #[test]
    fn domain_parse() {
        assert_eq!(Domain::parse("Global.").unwrap().fqdn(), "global.");
        assert!(Domain::parse("").is_err());
        assert!(Domain::parse("a..b").is_err());
        assert_eq!(
            Domain::parse("clusterset.local").unwrap().layout,
            Layout::Mcs
        );
        assert!(Domain::parse("in-addr.arpa").is_err());
    }
}
