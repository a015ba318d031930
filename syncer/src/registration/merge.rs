//! How registered instances join the source's export set.
//!
//! - A service only registrations export: its ports are the instances'
//!   (they all register the same ones), mode `endpoints`, the default
//!   policy.
//! - A service the source (Kubernetes or file) also exports: the source
//!   keeps its ports, mode, policy and health check; each instance is one
//!   more endpoint of it. A `clusterip`-mode service refuses instances
//!   (they are not behind its ClusterIP).
//! - An instance's own health check applies to its endpoint only
//!   ([`EndpointChecks`]), never to the source's: a registrant cannot take
//!   a service's pods out of answers.
//!   An instance whose address a source endpoint already has is left out
//!   (and reported); a hostname already taken is dropped from the instance.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use meshdns_proto::model::{Endpoint, ExportSet, Mode, Policy, ServiceExport, ServiceKey};

use super::body::Registration;
use super::store::{InstanceKey, Live};
use crate::health::EndpointChecks;

/// The source's set with the registrations added, the instances' own
/// checks, and one line per instance that could not join as registered.
pub fn merge(source: &ExportSet, live: &Live) -> (ExportSet, EndpointChecks, Vec<String>) {
    let mut problems = Vec::new();
    let mut checks = EndpointChecks::new();
    let mut by_service: BTreeMap<&ServiceKey, Vec<(&InstanceKey, &Arc<Registration>)>> =
        BTreeMap::new();
    for (key, registration) in live {
        by_service
            .entry(&key.service)
            .or_default()
            .push((key, registration));
    }
    let mut out = source.clone();
    for (service, instances) in by_service {
        let merged = match source.services.get(service) {
            Some(export) => join(export, &instances, &mut problems),
            None => alone(service, &instances),
        };
        match merged {
            Ok(export) => {
                // The checks of the instances that joined, by address:
                // never one of the source's (a clash left the instance out).
                let pods: HashSet<_> = source
                    .services
                    .get(service)
                    .map(|e| {
                        e.endpoints()
                            .iter()
                            .flat_map(|e| e.addresses.iter())
                            .collect()
                    })
                    .unwrap_or_default();
                let joined: HashSet<_> = export
                    .endpoints()
                    .iter()
                    .filter_map(|e| e.addresses.first())
                    .filter(|a| !pods.contains(a))
                    .collect();
                for (_, registration) in &instances {
                    let address = registration.endpoint.addresses.first();
                    if let (Some(check), Some(address)) = (&registration.health_check, address)
                        && joined.contains(address)
                    {
                        checks
                            .entry(service.clone())
                            .or_default()
                            .insert(*address, Arc::new(check.clone()));
                    }
                }
                out.services.insert(service.clone(), Arc::new(export));
            }
            Err(e) => problems.push(format!("{service}: registrations left out: {e}")),
        }
    }
    (out, checks, problems)
}

fn alone(
    service: &ServiceKey,
    instances: &[(&InstanceKey, &Arc<Registration>)],
) -> Result<ServiceExport, meshdns_proto::InvalidField> {
    let first = &instances[0].1;
    let endpoints = instances.iter().map(|(_, r)| r.endpoint.clone()).collect();
    ServiceExport::new(
        service.clone(),
        first.ports.clone(),
        Mode::Endpoints,
        Vec::new(),
        endpoints,
        Policy::default(),
    )
}

fn join(
    export: &ServiceExport,
    instances: &[(&InstanceKey, &Arc<Registration>)],
    problems: &mut Vec<String>,
) -> Result<ServiceExport, meshdns_proto::InvalidField> {
    if export.mode() == Mode::ClusterIp {
        for (key, _) in instances {
            problems.push(format!(
                "{key}: {} is a clusterip-mode service; a registered instance is not behind its ClusterIP; instance left out",
                export.key()
            ));
        }
        return Ok(export.clone());
    }
    let mut addresses: HashSet<_> = export
        .endpoints()
        .iter()
        .flat_map(|e| e.addresses.iter().copied())
        .collect();
    let mut hostnames: HashSet<_> = export
        .endpoints()
        .iter()
        .filter_map(|e| e.hostname.clone())
        .collect();
    let mut endpoints: Vec<Endpoint> = export.endpoints().to_vec();
    for (key, registration) in instances {
        let mut endpoint = registration.endpoint.clone();
        if let Some(taken) = endpoint.addresses.iter().find(|a| addresses.contains(a)) {
            problems.push(format!(
                "{key}: {taken} is already an endpoint of the exported service; instance left out"
            ));
            continue;
        }
        if let Some(host) = &endpoint.hostname
            && !hostnames.insert(host.clone())
        {
            problems.push(format!(
                "{key}: hostname {host} is taken in the exported service; dropped"
            ));
            endpoint.hostname = None;
        }
        addresses.extend(endpoint.addresses.iter().copied());
        endpoints.push(endpoint);
    }
    let joined = ServiceExport::new(
        export.key().clone(),
        export.ports().to_vec(),
        export.mode(),
        export.cluster_ips().to_vec(),
        endpoints,
        export.policy().clone(),
    )?;
    // The source's own check (if any) stays the service's; the instances'
    // checks are per endpoint (see `merge`).
    match export.health_check() {
        None => Ok(joined),
        Some(check) => joined.with_health_check((**check).clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::body::{RegistrationBody, TtlBounds};
    use meshdns_proto::model::{
        Cluster, ClusterName, Hostname, Namespace, Port, PortName, Protocol, ServiceName,
    };
    use std::num::NonZeroU16;
    use std::time::Duration;

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: Namespace::new("shop").unwrap(),
            name: ServiceName::new(name).unwrap(),
        }
    }

    fn registration(
        service: &str,
        instance: &str,
        address: &str,
    ) -> (InstanceKey, Arc<Registration>) {
        let body: RegistrationBody = serde_json::from_value(serde_json::json!({
            "addresses": [address], "ports": [{"name": "http", "port": 8080}],
            "hostname": instance, "ttl_seconds": 30, "health_check": "tcp:8080",
        }))
        .unwrap();
        let bounds = TtlBounds {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        (
            InstanceKey {
                service: key(service),
                instance: Hostname::new(instance).unwrap(),
            },
            Arc::new(
                body.validate(&key(service), bounds, meshdns_proto::model::DEFAULT_WEIGHT)
                    .unwrap(),
            ),
        )
    }

    fn source() -> ExportSet {
        source_on(80, Mode::Endpoints)
    }

    fn source_on(port: u16, mode: Mode) -> ExportSet {
        let cluster_ips = match mode {
            Mode::ClusterIp => vec!["10.96.0.10".parse().unwrap()],
            Mode::Endpoints => vec![],
        };
        let web = ServiceExport::new(
            key("web"),
            vec![Port {
                name: Some(PortName::new("http").unwrap()),
                protocol: Protocol::Tcp,
                port: NonZeroU16::new(port).unwrap(),
            }],
            mode,
            cluster_ips,
            vec![Endpoint::ready("10.1.0.1".parse().unwrap())],
            Policy::default(),
        )
        .unwrap();
        ExportSet {
            cluster: Cluster {
                name: ClusterName::new("c1").unwrap(),
                region: None,
                zone: None,
                client_cidrs: vec![],
                version: String::new(),
                provider: None,
                nodes: vec![],
            },
            services: [(key("web"), Arc::new(web))].into_iter().collect(),
        }
    }

    #[test]
    fn registrations_add_endpoints_and_services() {
        let live: Live = [
            registration("web", "vm-1", "10.9.0.1"),
            registration("web", "vm-2", "10.1.0.1"),
            registration("billing", "vm-3", "10.9.0.3"),
        ]
        .into_iter()
        .collect();
        let (set, checks, problems) = merge(&source(), &live);
        let web = &set.services[&key("web")];
        // The source's port stays; vm-1 joins; vm-2 clashes with a pod.
        assert_eq!(web.ports()[0].port.get(), 80);
        assert_eq!(web.endpoints().len(), 2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("vm-2"), "{problems:?}");
        assert!(web.health_check().is_none());
        // Checks are per registered endpoint: vm-1's and vm-3's only.
        let web_checks = &checks[&key("web")];
        assert_eq!(web_checks.len(), 1);
        assert_eq!(
            web_checks[&"10.9.0.1".parse().unwrap()].port().to_string(),
            "8080"
        );
        let billing = &set.services[&key("billing")];
        assert_eq!(billing.ports()[0].port.get(), 8080);
        assert!(billing.health_check().is_none());
        assert_eq!(checks[&key("billing")].len(), 1);
        assert_eq!(merge(&source(), &Live::new()).0, source());
    }

    /// Finding 1: a registrant's check on the same port as the source's
    /// pods never becomes the service's check (which would put every pod
    /// under it).
    #[test]
    fn a_registrants_check_never_covers_the_sources_pods() {
        let live: Live = [registration("web", "vm-1", "10.9.0.1")]
            .into_iter()
            .collect();
        let (set, checks, problems) = merge(&source_on(8080, Mode::Endpoints), &live);
        assert!(problems.is_empty(), "{problems:?}");
        let web = &set.services[&key("web")];
        assert_eq!(web.endpoints().len(), 2);
        assert!(web.health_check().is_none(), "the pods stay unchecked");
        let pod: std::net::IpAddr = "10.1.0.1".parse().unwrap();
        assert!(!checks[&key("web")].contains_key(&pod));
        assert!(checks[&key("web")].contains_key(&"10.9.0.1".parse().unwrap()));
    }

    #[test]
    fn a_clusterip_service_takes_no_instance() {
        let live: Live = [registration("web", "vm-1", "10.9.0.1")]
            .into_iter()
            .collect();
        let source = source_on(8080, Mode::ClusterIp);
        let (set, checks, problems) = merge(&source, &live);
        assert_eq!(set, source);
        assert!(checks.is_empty());
        assert!(problems[0].contains("clusterip"), "{problems:?}");
    }
}
