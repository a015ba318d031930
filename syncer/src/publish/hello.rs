//! The Hello, kept under the registry's first-message limit
//! ([`FIRST_EXPORT_MESSAGE_BYTES`]): the nodes' addresses (for the opt-in
//! node tier) are what gives way, from the last node on, so a large
//! cluster still connects and exports, without a node tier for the nodes
//! left out.

use meshdns_proto::codec::FIRST_EXPORT_MESSAGE_BYTES;
use meshdns_proto::model::Cluster;
use meshdns_proto::wire;
use prost::Message;

/// Room for the request around the Hello: its generation and the tags.
const ENVELOPE_BYTES: usize = 32;
/// The Hello's field number of `nodes`.
const NODES_TAG: u32 = 7;

/// The Hello announcing `cluster`, and how many of its nodes were left
/// out to keep it under the limit.
pub fn hello(cluster: &Cluster) -> (wire::Hello, usize) {
    let mut hello = wire::Hello::from(cluster);
    let limit = FIRST_EXPORT_MESSAGE_BYTES - ENVELOPE_BYTES;
    if hello.encoded_len() <= limit {
        return (hello, 0);
    }
    let mut nodes = std::mem::take(&mut hello.nodes);
    let mut size = hello.encoded_len();
    let keep = nodes
        .iter()
        .take_while(|n| {
            size += prost::encoding::message::encoded_len(NODES_TAG, *n);
            size <= limit
        })
        .count();
    let left_out = nodes.len() - keep;
    nodes.truncate(keep);
    hello.nodes = nodes;
    (hello, left_out)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use meshdns_proto::model::{ClusterName, NodeAddresses, NodeName};

    use super::*;

    fn cluster(nodes: usize) -> Cluster {
        Cluster {
            name: ClusterName::new("east-1").unwrap(),
            region: None,
            zone: None,
            client_cidrs: Vec::new(),
            version: "0.1.0".into(),
            provider: None,
            nodes: (0..nodes)
                .map(|i| NodeAddresses {
                    name: NodeName::new(&format!("node-{i:05}")).unwrap(),
                    addresses: vec![IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8])],
                })
                .collect(),
        }
    }

    /// The figures README.md gives for how many nodes fit, one IPv4
    /// address each: about 1,150 with short names (`node-00042`), about
    /// 500 named as EKS names them (`ip-192-168-3-7.eu-central-1.compute.internal`).
    #[test]
    fn how_many_nodes_fit() {
        let fit = |name: &dyn Fn(usize) -> String| {
            let mut c = cluster(0);
            c.nodes = (0..5_000)
                .map(|i| NodeAddresses {
                    name: NodeName::new(&name(i)).unwrap(),
                    addresses: vec![IpAddr::from([192, 168, (i / 256) as u8, (i % 256) as u8])],
                })
                .collect();
            hello(&c).0.nodes.len()
        };
        let short = fit(&|i| format!("node-{i:05}"));
        let eks = fit(&|i| {
            format!(
                "ip-192-168-{}-{}.eu-central-1.compute.internal",
                i / 256,
                i % 256
            )
        });
        println!("{short} short names, {eks} EKS names");
        assert!((1_100..=1_200).contains(&short), "{short}");
        assert!((470..=550).contains(&eks), "{eks}");
    }

    #[test]
    fn nodes_give_way_to_the_first_message_limit() {
        let (small, left_out) = hello(&cluster(10));
        assert_eq!((small.nodes.len(), left_out), (10, 0));
        let (big, left_out) = hello(&cluster(5_000));
        let request = wire::ExportRequest {
            generation: u64::MAX,
            message: Some(wire::export_request::Message::Hello(big.clone())),
        };
        assert!(request.encoded_len() <= FIRST_EXPORT_MESSAGE_BYTES);
        assert_eq!(big.nodes.len() + left_out, 5_000);
        assert!(big.nodes.len() > 500, "as many as fit: {}", big.nodes.len());
        assert_eq!(big.nodes[0].name, "node-00000", "the first ones kept");
        // One more node would not have fit.
        let mut more = big.clone();
        more.nodes
            .push(wire::Hello::from(&cluster(5_000)).nodes[big.nodes.len()].clone());
        let request = wire::ExportRequest {
            generation: u64::MAX,
            message: Some(wire::export_request::Message::Hello(more)),
        };
        assert!(request.encoded_len() > FIRST_EXPORT_MESSAGE_BYTES - ENVELOPE_BYTES);
    }
}
