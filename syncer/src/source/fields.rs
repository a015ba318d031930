//! The export fields every source reads from text — a port, the mode, the
//! affinity, the TTL, the weight, the failover order, the primary, the
//! min-healthy threshold, the export-to places — parsed one way, each error
//! naming its field.
//!
//! The file source ([`super::file`]) and the Kubernetes source
//! ([`super::kubernetes::objects`]) both call these, so a port or a policy
//! value means the same, and is refused with the same words, whichever
//! source it came from. A new source (or a new annotation) parses through
//! here too.

use std::num::NonZeroU16;

use meshdns_proto::InvalidField;
use meshdns_proto::error::Problem;
use meshdns_proto::model::traffic::{check_failover, parse_scopes};
use meshdns_proto::model::{
    Affinity, Bare, MAX_TTL_SECONDS, MAX_WEIGHT, MinHealthy, Mode, Port, PortName, Protocol, Scope,
};

/// A port from its parts. `field` is the port's own path (`ports[2]`); an
/// error names `ports[2].protocol`, `ports[2].port` or `ports[2].name`.
/// No protocol means TCP, as in a Kubernetes Service.
pub fn port(
    field: &str,
    name: Option<&str>,
    protocol: Option<&str>,
    number: i64,
) -> Result<Port, InvalidField> {
    let protocol = match protocol {
        None => Protocol::Tcp,
        Some(text) => Protocol::parse(text)
            .ok_or_else(|| InvalidField::new(format!("{field}.protocol"), Problem::BadProtocol))?,
    };
    let port = u16::try_from(number)
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or_else(|| {
            let problem = if number == 0 {
                Problem::ZeroPort
            } else {
                Problem::PortRange { value: number }
            };
            InvalidField::new(format!("{field}.port"), problem)
        })?;
    let name = match name {
        Some(n) => Some(PortName::new(n).map_err(|e| e.within(format!("{field}.name")))?),
        None => None,
    };
    Ok(Port {
        name,
        protocol,
        port,
    })
}

/// `endpoints` or `clusterip`.
pub fn mode(field: &str, value: &str) -> Result<Mode, InvalidField> {
    Mode::parse(value).ok_or_else(|| {
        InvalidField::new(
            field,
            Problem::BadLabelValue {
                value: value.to_owned(),
                why: "must be endpoints or clusterip",
            },
        )
    })
}

/// `nearest`, `node`, `cluster`, `zone`, `region`, `provider` or `none`.
pub fn affinity(field: &str, value: &str) -> Result<Affinity, InvalidField> {
    Affinity::parse(value).ok_or_else(|| {
        InvalidField::new(
            field,
            Problem::BadLabelValue {
                value: value.to_owned(),
                why: "must be nearest, node, cluster, zone, region, provider or none",
            },
        )
    })
}

/// A TTL written as text (an annotation): whole seconds, with or without
/// an `s`, up to [`MAX_TTL_SECONDS`].
pub fn ttl(field: &str, value: &str) -> Result<u32, InvalidField> {
    let seconds: u32 = value.trim_end_matches('s').parse().map_err(|_| {
        InvalidField::new(
            field,
            Problem::BadLabelValue {
                value: value.to_owned(),
                why: "must be a number of seconds",
            },
        )
    })?;
    if seconds > MAX_TTL_SECONDS {
        return Err(InvalidField::new(field, Problem::TtlRange(seconds)));
    }
    Ok(seconds)
}

/// An endpoint weight written as text (an annotation): a whole number
/// from 0 (only when nothing else is healthy) to [`MAX_WEIGHT`].
pub fn weight(field: &str, value: &str) -> Result<u32, InvalidField> {
    let number: u64 = value.parse().map_err(|_| {
        InvalidField::new(
            field,
            Problem::BadLabelValue {
                value: value.to_owned(),
                why: "must be a whole number (0: only when nothing else is healthy)",
            },
        )
    })?;
    weight_number(field, number)
}

/// An endpoint weight given as a number (a file, a registration).
pub fn weight_number(field: &str, number: u64) -> Result<u32, InvalidField> {
    u32::try_from(number)
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| {
            InvalidField::new(
                field,
                Problem::OutOfRange(format!(
                    "weight {number} is over the maximum of {MAX_WEIGHT}"
                )),
            )
        })
}

/// `e` from a list parser (its field `[2]`, or empty) seen from `field`:
/// `meshdns.io/failover[2]`.
fn at(field: &str, e: InvalidField) -> InvalidField {
    InvalidField::new(format!("{field}{}", e.field), e.problem)
}

/// `meshdns.io/failover`: regions (bare or `region:`) and `provider:`
/// places, in the order spill follows.
pub fn failover(field: &str, value: &str) -> Result<Box<[Scope]>, InvalidField> {
    let scopes = parse_scopes(value, Bare::Region).map_err(|e| at(field, e))?;
    check_failover(&scopes).map_err(|e| at(field, e))?;
    Ok(scopes.into_boxed_slice())
}

/// `meshdns.io/primary`: one region (bare or `region:`) or `provider:`.
pub fn primary(field: &str, value: &str) -> Result<Scope, InvalidField> {
    let scope = Scope::parse(value, Bare::Region).map_err(|e| at(field, e))?;
    if !scope.is_region_or_provider() {
        return Err(InvalidField::new(
            field,
            Problem::OutOfRange(format!(
                "{scope}: a primary is one region (us-east, region:us-east) or provider (provider:aws)"
            )),
        ));
    }
    Ok(scope)
}

/// `meshdns.io/min-healthy`: a count (`3`) or a percentage of the tier's
/// endpoints (`50%`).
pub fn min_healthy(field: &str, value: &str) -> Result<MinHealthy, InvalidField> {
    MinHealthy::parse(value).map_err(|e| at(field, e))
}

/// `meshdns.io/export-to`: clusters (bare or `cluster:`), `zone:`,
/// `region:` and `provider:` places; askers outside all of them get
/// NXDOMAIN. A value that names no place (`""`, `" , "`, `[]`, e.g. a
/// template that rendered empty) is refused: read as "everyone", it would
/// export to the whole fleet a Service meant for some askers only.
pub fn export_to(field: &str, value: &str) -> Result<Box<[Scope]>, InvalidField> {
    let scopes = parse_scopes(value, Bare::Cluster).map_err(|e| at(field, e))?;
    if scopes.is_empty() {
        return Err(InvalidField::new(
            field,
            Problem::OutOfRange(
                "names no place: give clusters, zone:, region: or provider: places, or remove it to export to every cluster".into(),
            ),
        ));
    }
    Ok(scopes.into_boxed_slice())
}

/// Whether a refused update may leave the last good export in place
/// (`last_good`: its export-to) while it is fixed: only when that export
/// reaches no asker the update's own export-to would keep out. `update` is
/// the update's export-to (empty: absent, everyone), `None` when it is bad
/// and so unknown. An update that adds or narrows export-to, or whose
/// export-to does not parse, withdraws the export instead: fail closed.
pub fn last_good_within(last_good: &[Scope], update: Option<&[Scope]>) -> bool {
    match update {
        None => false,
        Some([]) => true,
        Some(update) => !last_good.is_empty() && last_good.iter().all(|s| update.contains(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let check = |name, protocol, number, expected: Result<&str, &str>| {
            let got = port("ports[1]", name, protocol, number);
            match (got, expected) {
                (Ok(p), Ok(want)) => assert_eq!(p.to_string(), want),
                (Err(e), Err(want)) => assert_eq!(e.to_string(), want),
                (got, want) => panic!("{got:?} != {want:?}"),
            }
        };
        check(Some("http"), Some("TCP"), 80, Ok("http (80/TCP)"));
        check(None, None, 53, Ok("53/TCP"));
        check(None, Some("UDP"), 53, Ok("53/UDP"));
        check(
            None,
            Some("ICMP"),
            1,
            Err("ports[1].protocol: protocol must be TCP, UDP or SCTP"),
        );
        check(None, None, 0, Err("ports[1].port: port 0 is not a port"));
        check(
            None,
            None,
            70_000,
            Err("ports[1].port: port 70000 is out of range (1-65535)"),
        );
        check(
            None,
            None,
            -1,
            Err("ports[1].port: port -1 is out of range (1-65535)"),
        );
        assert!(
            port("ports[0]", Some("Bad_Name"), None, 80)
                .unwrap_err()
                .field
                .starts_with("ports[0].name")
        );
    }

    #[test]
    fn policy() {
        assert_eq!(mode("mode", "clusterip"), Ok(Mode::ClusterIp));
        assert_eq!(
            mode("mode", "x").unwrap_err().to_string(),
            "mode: \"x\" is not a valid label value: must be endpoints or clusterip"
        );
        assert_eq!(affinity("affinity", "zone"), Ok(Affinity::Zone));
        assert_eq!(
            affinity("a", "near").unwrap_err().to_string(),
            "a: \"near\" is not a valid label value: must be nearest, node, cluster, zone, region, provider or none"
        );
        assert_eq!(ttl("ttl", "30"), Ok(30));
        assert_eq!(ttl("ttl", "30s"), Ok(30));
        assert_eq!(
            ttl("ttl", "86401").unwrap_err().to_string(),
            "ttl: ttl 86401s is over the maximum of 86400s"
        );
        assert!(ttl("ttl", "soon").is_err());
    }

    #[test]
    fn weights() {
        assert_eq!(weight("w", "0"), Ok(0));
        assert_eq!(weight("w", "10000"), Ok(MAX_WEIGHT));
        assert_eq!(
            weight("w", "10001").unwrap_err().to_string(),
            "w: weight 10001 is over the maximum of 10000"
        );
        assert_eq!(
            weight("w", "1.5").unwrap_err().to_string(),
            "w: \"1.5\" is not a valid label value: must be a whole number (0: only when nothing else is healthy)"
        );
        assert!(weight("w", "-3").is_err());
        assert!(weight_number("w", u64::MAX).is_err());
    }

    #[test]
    fn scopes() {
        let shown = |scopes: &[Scope]| scopes.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            shown(&failover("f", "us-east,provider:aws , region:eu-west").unwrap()),
            ["region:us-east", "provider:aws", "region:eu-west"]
        );
        assert_eq!(
            failover("f", "us-east, zone:us-east-1a")
                .unwrap_err()
                .to_string(),
            "f[1]: zone:us-east-1a: a failover order names regions and providers only"
        );
        assert_eq!(failover("f", "cluster:east-1").unwrap_err().field, "f[0]");
        assert_eq!(failover("f", "us-east,us-east").unwrap_err().field, "f[1]");
        assert_eq!(
            primary("p", "us-east").unwrap().to_string(),
            "region:us-east"
        );
        assert_eq!(
            primary("p", "provider:aws").unwrap().to_string(),
            "provider:aws"
        );
        assert!(primary("p", "us-east,us-west").is_err());
        assert!(primary("p", "").is_err());
        assert_eq!(
            shown(
                &export_to("e", "east-1, zone:us-east-1a, region:us-west, provider:gcp").unwrap()
            ),
            [
                "cluster:east-1",
                "zone:us-east-1a",
                "region:us-west",
                "provider:gcp"
            ]
        );
        assert!(export_to("e", "galaxy:far").is_err());
        for empty in ["", " ", " , ", ","] {
            let e = export_to("meshdns.io/export-to", empty).unwrap_err();
            assert_eq!(e.field, "meshdns.io/export-to", "{empty:?}");
            assert!(e.to_string().contains("names no place"), "{e}");
        }
        let many = vec!["r"; 33].join(",");
        assert!(failover("f", &many).is_err(), "at most 32 scopes");
        assert_eq!(min_healthy("m", "3"), Ok(MinHealthy::Count(3)));
        assert_eq!(min_healthy("m", "50%"), Ok(MinHealthy::Percent(50)));
        assert!(min_healthy("m", "0%").is_err());
        assert!(min_healthy("m", "101%").is_err());
        assert!(min_healthy("m", "half").is_err());
    }

    /// A refused update keeps the last good export only when that reaches
    /// no asker the update would keep out.
    #[test]
    fn last_good_export_to_fails_closed() {
        let scopes = |v: &str| export_to("e", v).unwrap();
        let (west, both) = (scopes("region:us-west"), scopes("region:us-west, east-1"));
        let check = |last: &[Scope], update: Option<&[Scope]>, keep: bool| {
            assert_eq!(
                last_good_within(last, update),
                keep,
                "{last:?} -> {update:?}"
            );
        };
        check(&[], Some(&[]), true);
        check(&west, Some(&[]), true);
        check(&west, Some(&west), true);
        check(&west, Some(&both), true);
        check(&[], Some(&west), false);
        check(&both, Some(&west), false);
        check(&[], None, false);
        check(&west, None, false);
    }
}
