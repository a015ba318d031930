//! The hub's bounds, applied at `PUT`: a registration the hub would refuse
//! (an address outside the fleet's endpoint ranges, a service over the
//! hub's endpoints limit or with too many zones) would make the hub refuse
//! the whole service, pods included; so the syncer refuses the one
//! registration instead, naming the field and the flag.

use std::collections::HashSet;

use ipnet::IpNet;
use meshdns_proto::error::Problem;
use meshdns_proto::model::{ExportSet, LabelValue, MAX_ZONES_PER_SERVICE, Mode, Port};

use super::body::Registration;
use super::error::ApiError;
use super::store::{InstanceKey, Live};

/// `--registration-cidrs`, `--registration-max-endpoints-per-service`;
/// zones per service are the model's [`MAX_ZONES_PER_SERVICE`].
#[derive(Debug, Clone)]
pub struct Bounds {
    /// The address ranges registrants may register (and so the only
    /// addresses a registrant's health check can reach).
    pub cidrs: Vec<IpNet>,
    pub max_endpoints: usize,
}

impl Bounds {
    /// The address's own check: inside `--registration-cidrs`.
    pub fn address(&self, registration: &Registration) -> Result<(), ApiError> {
        for (i, address) in registration.endpoint.addresses.iter().enumerate() {
            if !self.cidrs.iter().any(|net| net.contains(address)) {
                return Err(ApiError::Invalid(meshdns_proto::InvalidField::new(
                    format!("addresses[{i}]"),
                    Problem::OutOfRange(format!(
                        "{address} is outside the ranges registrants may register (--registration-cidrs)"
                    )),
                )));
            }
        }
        Ok(())
    }

    /// The whole service with `key` added as `registration`: still one the
    /// hub takes.
    pub fn service(
        &self,
        key: &InstanceKey,
        registration: &Registration,
        source: Option<&ExportSet>,
        live: &Live,
    ) -> Result<(), ApiError> {
        self.address(registration)?;
        let exported = source.and_then(|s| s.services.get(&key.service));
        if let Some(export) = exported
            && export.mode() == Mode::ClusterIp
        {
            return Err(ApiError::Conflict {
                field: "service".into(),
                why: format!(
                    "{} is exported in clusterip mode: a registered instance is not behind its ClusterIP",
                    key.service
                ),
            });
        }
        // The source keeps its ports (merge.rs): an instance registering
        // others would be answered on the source's, so it is told now.
        if let Some(export) = exported
            && registration.ports.iter().collect::<HashSet<_>>()
                != export.ports().iter().collect::<HashSet<_>>()
        {
            let names = |ports: &[Port]| {
                ports
                    .iter()
                    .map(|p| match &p.name {
                        Some(name) => format!("{name}:{}", p.port),
                        None => p.port.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ApiError::Conflict {
                field: "ports".into(),
                why: format!(
                    "{} is exported by the cluster with ports [{}]: an instance joins it on those, so it registers those (it registered [{}])",
                    key.service,
                    names(export.ports()),
                    names(&registration.ports)
                ),
            });
        }
        let siblings = live
            .iter()
            .filter(|(k, _)| k.service == key.service && k.instance != key.instance)
            .map(|(_, r)| &r.endpoint);
        let mut endpoints = 1;
        let mut zones: HashSet<&LabelValue> = HashSet::new();
        let pods = exported.map(|e| e.endpoints()).unwrap_or_default();
        for endpoint in pods.iter().chain(siblings) {
            endpoints += 1;
            zones.extend(endpoint.zone.as_ref());
        }
        if endpoints > self.max_endpoints {
            return Err(ApiError::TooLarge {
                field: "instance".into(),
                why: format!(
                    "{} would have {endpoints} endpoints, over the hub's limit of {} (--registration-max-endpoints-per-service)",
                    key.service, self.max_endpoints
                ),
            });
        }
        if let Some(zone) = &registration.endpoint.zone
            && !zones.contains(zone)
            && zones.len() >= MAX_ZONES_PER_SERVICE
        {
            return Err(ApiError::Conflict {
                field: "zone".into(),
                why: format!(
                    "{} already names {} zones, the most one service may have",
                    key.service,
                    zones.len()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::body::{RegistrationBody, TtlBounds};
    use meshdns_proto::model::{Hostname, Namespace, ServiceKey, ServiceName};
    use std::sync::Arc;
    use std::time::Duration;

    fn key(instance: &str) -> InstanceKey {
        InstanceKey {
            service: ServiceKey {
                namespace: Namespace::new("shop").unwrap(),
                name: ServiceName::new("web").unwrap(),
            },
            instance: Hostname::new(instance).unwrap(),
        }
    }

    /// A registration of `body` (JSON), validated.
    fn validated(body: serde_json::Value) -> Registration {
        let body: RegistrationBody = serde_json::from_value(body).unwrap();
        let ttl = TtlBounds {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        body.validate(&key("x").service, ttl, meshdns_proto::model::DEFAULT_WEIGHT)
            .unwrap()
    }

    fn reg(address: &str, zone: &str) -> Registration {
        validated(serde_json::json!({
            "addresses": [address], "ports": [{"port": 80}], "ttl_seconds": 10, "zone": zone,
        }))
    }

    /// Finding 10: zone spam would make the hub drop every registration of
    /// the service; the 65th zone is refused at PUT instead.
    #[test]
    fn zones_endpoints_and_ranges_are_bounded() {
        let bounds = Bounds {
            cidrs: vec!["10.9.0.0/16".parse().unwrap()],
            max_endpoints: 100,
        };
        let live: Live = (0..64)
            .map(|i| {
                let k = key(&format!("vm-{i}"));
                (k, Arc::new(reg(&format!("10.9.0.{i}"), &format!("z{i}"))))
            })
            .collect();
        let code = |r: Result<(), ApiError>| {
            let e = r.unwrap_err();
            (e.status().as_u16(), e.field().map(str::to_owned))
        };
        assert_eq!(
            code(bounds.service(&key("new"), &reg("10.9.1.1", "z64"), None, &live)),
            (409, Some("zone".into()))
        );
        assert!(
            bounds
                .service(&key("new"), &reg("10.9.1.1", "z3"), None, &live)
                .is_ok()
        );
        assert_eq!(
            code(bounds.service(&key("new"), &reg("10.8.0.1", "z3"), None, &live)),
            (400, Some("addresses[0]".into()))
        );
        let tight = Bounds {
            max_endpoints: 64,
            ..bounds
        };
        assert_eq!(
            code(tight.service(&key("new"), &reg("10.9.1.1", "z3"), None, &live)),
            (413, Some("instance".into()))
        );
        // Re-registering an existing instance does not count it twice.
        assert!(
            tight
                .service(&key("vm-3"), &reg("10.9.0.3", "z3"), None, &live)
                .is_ok()
        );
    }

    /// Audit finding: an instance that registered other ports than the
    /// source's service was accepted (201) and answered on the source's.
    #[test]
    fn an_instance_of_a_source_service_registers_its_ports() {
        let bounds = Bounds {
            cidrs: vec!["10.9.0.0/16".parse().unwrap()],
            max_endpoints: 100,
        };
        let with_ports = |ports: serde_json::Value| {
            validated(serde_json::json!({
                "addresses": ["10.9.0.5"], "ports": ports, "ttl_seconds": 10,
            }))
        };
        // The source's shop/web: http 80 and metrics 9090.
        let source_ports =
            serde_json::json!([{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]);
        let mut source = ExportSet {
            cluster: meshdns_proto::fixtures::cluster("east-1"),
            services: Default::default(),
        };
        let web = meshdns_proto::model::ServiceExport::new(
            key("x").service,
            with_ports(source_ports.clone()).ports,
            Mode::Endpoints,
            Vec::new(),
            vec![meshdns_proto::model::Endpoint::ready(
                "10.1.0.11".parse().unwrap(),
            )],
            meshdns_proto::model::Policy::default(),
        )
        .unwrap();
        source.services.insert(key("x").service, Arc::new(web));
        let live = Live::new();
        let err = bounds
            .service(
                &key("vm-1"),
                &with_ports(serde_json::json!([{"name": "http", "port": 9999}])),
                Some(&source),
                &live,
            )
            .unwrap_err();
        assert_eq!((err.status().as_u16(), err.field()), (409, Some("ports")));
        assert!(err.to_string().contains("http:80, metrics:9090"), "{err}");
        // The same ports, in another order: joins.
        let reordered =
            serde_json::json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 80}]);
        assert!(
            bounds
                .service(&key("vm-1"), &with_ports(reordered), Some(&source), &live)
                .is_ok()
        );
        // A service only registrations export takes the instances' own.
        assert!(
            bounds
                .service(
                    &key("vm-1"),
                    &with_ports(serde_json::json!([{"port": 9999}])),
                    None,
                    &live
                )
                .is_ok()
        );
    }
}
