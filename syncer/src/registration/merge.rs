//! How registered instances join the source's export set.
//!
//! - A service only registrations export: its ports are the instances'
//!   (they all register the same ones), mode `endpoints`, the default
//!   policy, and the instances' health check.
//! - A service the source (Kubernetes or file) also exports: the source
//!   keeps its ports, mode and policy, and its health check if it declares
//!   one (else the instances'); each instance is one more endpoint of it.
//!   An instance whose address a source endpoint already has is left out
//!   (and reported); a hostname already taken is dropped from the instance.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use meshdns_proto::model::{Endpoint, ExportSet, Mode, Policy, ServiceExport, ServiceKey};

use super::body::Registration;
use super::store::{InstanceKey, Live};

/// The source's set with the registrations added, and one line per
/// instance that could not join as registered.
pub fn merge(source: &ExportSet, live: &Live) -> (ExportSet, Vec<String>) {
    let mut problems = Vec::new();
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
                out.services.insert(service.clone(), Arc::new(export));
            }
            Err(e) => problems.push(format!("{service}: registrations left out: {e}")),
        }
    }
    (out, problems)
}

fn alone(
    service: &ServiceKey,
    instances: &[(&InstanceKey, &Arc<Registration>)],
) -> Result<ServiceExport, meshdns_proto::InvalidField> {
    let first = &instances[0].1;
    let endpoints = instances.iter().map(|(_, r)| r.endpoint.clone()).collect();
    let export = ServiceExport::new(
        service.clone(),
        first.ports.clone(),
        Mode::Endpoints,
        Vec::new(),
        endpoints,
        Policy::default(),
    )?;
    match &first.health_check {
        Some(check) => export.with_health_check(check.clone()),
        None => Ok(export),
    }
}

fn join(
    export: &ServiceExport,
    instances: &[(&InstanceKey, &Arc<Registration>)],
    problems: &mut Vec<String>,
) -> Result<ServiceExport, meshdns_proto::InvalidField> {
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
        export.policy(),
    )?;
    let check = export
        .health_check()
        .map(|c| (**c).clone())
        .or_else(|| instances[0].1.health_check.clone());
    match check {
        None => Ok(joined),
        Some(check) => joined.clone().with_health_check(check).or_else(|e| {
            problems.push(format!(
                "{}: the instances' health check does not fit the exported service: {e}",
                export.key()
            ));
            Ok(joined)
        }),
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
            Arc::new(body.validate(&key(service), bounds).unwrap()),
        )
    }

    fn source() -> ExportSet {
        let web = ServiceExport::new(
            key("web"),
            vec![Port {
                name: Some(PortName::new("http").unwrap()),
                protocol: Protocol::Tcp,
                port: NonZeroU16::new(80).unwrap(),
            }],
            Mode::Endpoints,
            vec![],
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
        let (set, problems) = merge(&source(), &live);
        let web = &set.services[&key("web")];
        // The source's port stays; vm-1 joins; vm-2 clashes with a pod.
        assert_eq!(web.ports()[0].port.get(), 80);
        assert_eq!(web.endpoints().len(), 2);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("vm-2"), "{problems:?}");
        // The instances' check names port 8080, which the source's web lacks.
        assert!(web.health_check().is_none());
        let billing = &set.services[&key("billing")];
        assert_eq!(billing.ports()[0].port.get(), 8080);
        assert_eq!(billing.health_check().unwrap().port().to_string(), "8080");
        assert_eq!(merge(&source(), &Live::new()).0, source());
    }
}
