//! A registration as the API receives it (JSON) and as the state file
//! keeps it, and its validation into a [`Registration`]: the hub's rules
//! (names are DNS labels, ports valid, reserved addresses refused, at most
//! [`MAX_ADDRESSES_PER_ENDPOINT`] addresses) checked before anything is
//! stored, each error naming its field.

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use meshdns_proto::InvalidField;
use meshdns_proto::error::Problem;
use meshdns_proto::model::{
    Endpoint, HealthCheck, Hostname, LabelValue, MAX_ADDRESSES_PER_ENDPOINT, Mode, Policy, Port,
    PortName, Protocol, ServiceExport, ServiceKey, reserved_class,
};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use meshdns_proto::model::health_check::MIN_REGISTRANT_INTERVAL;

/// `PUT /v1/registrations/{namespace}/{service}/{instance}`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    /// The instance's addresses (IPv4 and/or IPv6).
    pub addresses: Vec<String>,
    pub ports: Vec<PortBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// How long the registration lives without a heartbeat.
    pub ttl_seconds: u64,
    /// The service's health check, in the `meshdns.io/health-check` syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// The instance's weight, 0 (only when nothing else is healthy) to
    /// 10,000; absent: 10, as a pod. A gateway weighs what stands behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u32,
    /// TCP (the default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub endpoint: Endpoint,
    pub ports: Vec<Port>,
    pub ttl: Duration,
    /// Resolved against `ports` (a named port is its number here).
    pub health_check: Option<HealthCheck>,
    /// Canonical, re-serialized from the validated fields (never the raw
    /// strings, so padding is not stored): what the state file and `GET`
    /// show.
    pub body: RegistrationBody,
    /// The registering token's owner id ([`owner_id`]); empty when
    /// restored from a state file that had none (any token in scope may
    /// then take it over by registering).
    pub owner: String,
}

/// A token's owner id: SHA-256 of a domain-separated token, hex. Not the
/// token table's digest, so a state file holding it does not hold that.
pub fn owner_id(token: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("meshdns-registration-owner\0{token}").as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// TTL bounds of `--registration-min-ttl` / `--registration-max-ttl`.
#[derive(Debug, Clone, Copy)]
pub struct TtlBounds {
    pub min: Duration,
    pub max: Duration,
}

fn invalid(field: impl Into<String>, problem: Problem) -> ApiError {
    ApiError::Invalid(InvalidField::new(field, problem))
}

fn port(i: usize, p: &PortBody) -> Result<Port, ApiError> {
    let field = format!("ports[{i}]");
    let number = u16::try_from(p.port)
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or_else(|| {
            let problem = if p.port == 0 {
                Problem::ZeroPort
            } else {
                Problem::PortRange {
                    value: i64::from(p.port),
                }
            };
            invalid(format!("{field}.port"), problem)
        })?;
    let protocol = match &p.protocol {
        None => Protocol::Tcp,
        Some(text) => Protocol::parse(text)
            .ok_or_else(|| invalid(format!("{field}.protocol"), Problem::BadProtocol))?,
    };
    let name = p
        .name
        .as_deref()
        .map(|n| PortName::new(n).map_err(|e| e.within(format!("{field}.name"))))
        .transpose()?;
    Ok(Port {
        name,
        protocol,
        port: number,
    })
}

impl RegistrationBody {
    /// Checks every field; `key` is the service it registers under, and
    /// `default_weight` (`--weight`) weighs an instance that gives none.
    pub fn validate(
        &self,
        key: &ServiceKey,
        ttl: TtlBounds,
        default_weight: u32,
    ) -> Result<Registration, ApiError> {
        if self.addresses.is_empty() {
            return Err(invalid("addresses", Problem::NoAddresses));
        }
        if self.addresses.len() > MAX_ADDRESSES_PER_ENDPOINT {
            return Err(ApiError::TooLarge {
                field: "addresses".into(),
                why: format!(
                    "{} addresses is over the limit of {MAX_ADDRESSES_PER_ENDPOINT}",
                    self.addresses.len()
                ),
            });
        }
        let mut addresses = Vec::with_capacity(self.addresses.len());
        for (i, text) in self.addresses.iter().enumerate() {
            let field = format!("addresses[{i}]");
            let address: IpAddr = text.trim().parse().map_err(|_| {
                invalid(
                    &field,
                    Problem::BadAddress {
                        value: text.clone(),
                    },
                )
            })?;
            // The hub's rule, the same function: no loopback, link-local,
            // multicast, unspecified or broadcast endpoint.
            if let Some(class) = reserved_class(address) {
                return Err(invalid(&field, Problem::ReservedAddress { address, class }));
            }
            addresses.push(address);
        }
        if self.ports.is_empty() {
            return Err(invalid("ports", Problem::NoPorts));
        }
        if self.ports.len() > meshdns_proto::model::MAX_PORTS {
            return Err(ApiError::TooLarge {
                field: "ports".into(),
                why: format!(
                    "{} ports is over the limit of {}",
                    self.ports.len(),
                    meshdns_proto::model::MAX_PORTS
                ),
            });
        }
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| port(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        let hostname = self
            .hostname
            .as_deref()
            .map(|h| Hostname::new(h).map_err(|e| e.within("hostname")))
            .transpose()?;
        let zone = self
            .zone
            .as_deref()
            .map(|z| LabelValue::new(z).map_err(|e| e.within("zone")))
            .transpose()?;
        let seconds = Duration::from_secs(self.ttl_seconds);
        if seconds < ttl.min || seconds > ttl.max {
            return Err(invalid(
                "ttl_seconds",
                Problem::OutOfRange(format!(
                    "{}s is outside {}s to {}s (--registration-min-ttl, --registration-max-ttl)",
                    self.ttl_seconds,
                    ttl.min.as_secs(),
                    ttl.max.as_secs()
                )),
            ));
        }
        let weight = match self.weight {
            None => default_weight,
            Some(w) => crate::source::fields::weight_number("weight", w)?,
        };
        let endpoint = Endpoint {
            addresses: addresses.into(),
            hostname,
            zone,
            weight,
            ..Endpoint::ready(IpAddr::from([0, 0, 0, 0]))
        };
        // The export this registration alone makes: the model's own
        // checks (duplicate ports or addresses) with their field names.
        let alone = ServiceExport::new(
            key.clone(),
            ports.clone(),
            Mode::Endpoints,
            Vec::new(),
            vec![endpoint.clone()],
            Policy::default(),
        )
        .map_err(|e| {
            let field = e.field.replace("endpoints[0].", "");
            InvalidField::new(field, e.problem)
        })?;
        let health_check = match &self.health_check {
            None => None,
            Some(text) => {
                let check = HealthCheck::parse(text).map_err(|e| e.within("health_check"))?;
                if check.interval < MIN_REGISTRANT_INTERVAL {
                    return Err(invalid(
                        "health_check.interval",
                        Problem::BadHealthCheck(format!(
                            "a registration's check runs at most once a {MIN_REGISTRANT_INTERVAL:?}"
                        )),
                    ));
                }
                let attached = alone
                    .with_health_check(check)
                    .map_err(|e| e.within("health_check"))?;
                attached.health_check().map(|c| (**c).clone())
            }
        };
        let body = RegistrationBody {
            addresses: endpoint.addresses.iter().map(|a| a.to_string()).collect(),
            ports: ports
                .iter()
                .map(|p| PortBody {
                    name: p.name.as_ref().map(|n| n.to_string()),
                    port: u32::from(p.port.get()),
                    protocol: (p.protocol != Protocol::Tcp).then(|| p.protocol.label().to_owned()),
                })
                .collect(),
            hostname: endpoint.hostname.as_ref().map(|h| h.to_string()),
            zone: endpoint.zone.as_ref().map(|z| z.to_string()),
            ttl_seconds: self.ttl_seconds,
            health_check: health_check.as_ref().map(|c| c.to_string()),
            weight: self.weight.map(|_| u64::from(weight)),
        };
        Ok(Registration {
            endpoint,
            ports,
            ttl: seconds,
            health_check,
            body,
            owner: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::DEFAULT_WEIGHT;

    fn key() -> ServiceKey {
        meshdns_proto::fixtures::key("shop", "web")
    }

    fn body() -> RegistrationBody {
        serde_json::from_value(serde_json::json!({
            "addresses": ["10.9.0.5"],
            "ports": [{"name": "http", "port": 8080}],
            "hostname": "vm-1",
            "zone": "z1",
            "ttl_seconds": 30,
            "health_check": "http:http/healthz rise=1",
        }))
        .unwrap()
    }

    const BOUNDS: TtlBounds = TtlBounds {
        min: Duration::from_secs(1),
        max: Duration::from_secs(3600),
    };

    fn field_of(edit: impl FnOnce(&mut RegistrationBody)) -> (u16, Option<String>) {
        let mut b = body();
        edit(&mut b);
        let err = b.validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap_err();
        (err.status().as_u16(), err.field().map(str::to_owned))
    }

    #[test]
    fn a_good_registration_resolves_its_check_port() {
        let reg = body().validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap();
        assert_eq!(reg.ttl, Duration::from_secs(30));
        assert_eq!(
            reg.endpoint.addresses[0],
            "10.9.0.5".parse::<IpAddr>().unwrap()
        );
        let check = reg.health_check.unwrap();
        assert_eq!(check.port().to_string(), "8080");
    }

    /// Finding 6: padding is not stored; the canonical body validates to
    /// the same registration.
    #[test]
    fn the_stored_body_is_canonical() {
        let mut padded = body();
        padded.addresses = vec!["  10.9.0.5 ".into()];
        padded.health_check = Some(format!("http:http/healthz{}rise=1", " ".repeat(200)));
        let reg = padded.validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap();
        assert_eq!(reg.body.addresses, vec!["10.9.0.5".to_owned()]);
        let check = reg.body.health_check.clone().unwrap();
        assert!(!check.contains("  "), "{check}");
        let again = reg.body.validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap();
        assert_eq!(again, reg);
        assert_eq!(
            body().validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap(),
            reg
        );
    }

    #[test]
    fn errors_name_the_field() {
        let f = |s: &str| Some(s.to_owned());
        assert_eq!(
            field_of(|b| b.addresses = vec!["127.0.0.1".into()]),
            (400, f("addresses[0]"))
        );
        assert_eq!(
            field_of(|b| b.addresses.push("169.254.169.254".into())),
            (400, f("addresses[1]"))
        );
        assert_eq!(
            field_of(|b| b.addresses.push("ff02::1".into())),
            (400, f("addresses[1]"))
        );
        assert_eq!(
            field_of(|b| b.addresses = vec!["ten".into()]),
            (400, f("addresses[0]"))
        );
        assert_eq!(
            field_of(|b| b.addresses.push("10.9.0.5".into())),
            (400, f("addresses[1]"))
        );
        assert_eq!(
            field_of(|b| b.addresses = vec!["10.0.0.1".into(); 17]),
            (413, f("addresses"))
        );
        assert_eq!(field_of(|b| b.ports[0].port = 0), (400, f("ports[0].port")));
        assert_eq!(
            field_of(|b| b.ports[0].port = 70000),
            (400, f("ports[0].port"))
        );
        assert_eq!(
            field_of(|b| b.ports[0].name = Some("HTTP".into())),
            (400, f("ports[0].name"))
        );
        assert_eq!(
            field_of(|b| b.ports[0].protocol = Some("icmp".into())),
            (400, f("ports[0].protocol"))
        );
        assert_eq!(field_of(|b| b.ports.clear()), (400, f("ports")));
        assert_eq!(
            field_of(|b| b.hostname = Some("vm_1".into())),
            (400, f("hostname"))
        );
        assert_eq!(field_of(|b| b.zone = Some("-z".into())), (400, f("zone")));
        assert_eq!(field_of(|b| b.ttl_seconds = 0), (400, f("ttl_seconds")));
        assert_eq!(field_of(|b| b.ttl_seconds = 7200), (400, f("ttl_seconds")));
        assert_eq!(
            field_of(|b| b.health_check = Some("tcp:9090".into())),
            (400, f("health_check.port"))
        );
        assert_eq!(
            field_of(|b| b.health_check = Some("tcp:8080 interval=100ms timeout=50ms".into())),
            (400, f("health_check.interval"))
        );
        assert_eq!(
            field_of(|b| b.health_check = Some("tcp:8080 host=10.0.0.1".into())),
            (400, f("health_check.host"))
        );
        assert_eq!(field_of(|b| b.weight = Some(10_001)), (400, f("weight")));
        assert_eq!(field_of(|b| b.weight = Some(u64::MAX)), (400, f("weight")));
    }

    /// A gateway registers with the weight of what stands behind it; an
    /// instance that says nothing weighs as a pod, and the state file
    /// keeps what it said.
    #[test]
    fn a_registration_carries_its_weight() {
        let reg = body().validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap();
        assert_eq!(reg.endpoint.weight, DEFAULT_WEIGHT);
        assert_eq!(reg.body.weight, None);
        let reg = body().validate(&key(), BOUNDS, 40).unwrap();
        assert_eq!(reg.endpoint.weight, 40, "--weight, when it says nothing");
        assert_eq!(reg.body.weight, None, "which the state file does not keep");
        let mut gateway = body();
        gateway.weight = Some(40);
        let reg = gateway.validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap();
        assert_eq!(reg.endpoint.weight, 40);
        assert_eq!(reg.body.weight, Some(40));
        assert_eq!(
            reg.body.validate(&key(), BOUNDS, DEFAULT_WEIGHT).unwrap(),
            reg
        );
        let mut drained = body();
        drained.weight = Some(0);
        assert_eq!(
            drained
                .validate(&key(), BOUNDS, DEFAULT_WEIGHT)
                .unwrap()
                .endpoint
                .weight,
            0
        );
        let json: RegistrationBody = serde_json::from_str(
            r#"{"addresses":["10.9.0.5"],"ports":[{"port":80}],"ttl_seconds":30,"weight":25}"#,
        )
        .unwrap();
        assert_eq!(
            json.validate(&key(), BOUNDS, DEFAULT_WEIGHT)
                .unwrap()
                .endpoint
                .weight,
            25
        );
    }
}
