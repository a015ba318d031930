//! The export fields every source reads from text — a port, the mode, the
//! affinity, the TTL — parsed one way, each error naming its field.
//!
//! The file source ([`super::file`]) and the Kubernetes source
//! ([`super::kubernetes::objects`]) both call these, so a port or a policy
//! value means the same, and is refused with the same words, whichever
//! source it came from. A new source (or a new annotation) parses through
//! here too.

use std::num::NonZeroU16;

use meshdns_proto::InvalidField;
use meshdns_proto::error::Problem;
use meshdns_proto::model::{Affinity, MAX_TTL_SECONDS, Mode, Port, PortName, Protocol};

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

/// `cluster`, `zone`, `region` or `none`.
pub fn affinity(field: &str, value: &str) -> Result<Affinity, InvalidField> {
    Affinity::parse(value).ok_or_else(|| {
        InvalidField::new(
            field,
            Problem::BadLabelValue {
                value: value.to_owned(),
                why: "must be cluster, zone, region or none",
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
            "a: \"near\" is not a valid label value: must be cluster, zone, region or none"
        );
        assert_eq!(ttl("ttl", "30"), Ok(30));
        assert_eq!(ttl("ttl", "30s"), Ok(30));
        assert_eq!(
            ttl("ttl", "86401").unwrap_err().to_string(),
            "ttl: ttl 86401s is over the maximum of 86400s"
        );
        assert!(ttl("ttl", "soon").is_err());
    }
}
