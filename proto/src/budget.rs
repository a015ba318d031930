//! What a message costs once decoded, worked out from its wire bytes
//! before prost allocates anything.
//!
//! Protobuf is compact: an empty `ServiceExport` is two bytes on the wire
//! and a ~150-byte struct once decoded, so a 4 MiB message of empty
//! entries would become hundreds of MiB. [`export_request`] walks the wire form
//! against a static schema (which fields are repeated messages or
//! strings) and adds up what decoding would allocate; the codec refuses a
//! message whose estimate is over [`AMPLIFICATION`] times its size.
//! Real exports (an address, a zone, a node per endpoint) decode to 3–10
//! times their size.

use std::mem::size_of;

use crate::wire;

/// Most bytes a message may decode to, per byte of wire.
pub const AMPLIFICATION: usize = 16;
/// Allowance on top, so small messages (a Hello, a heartbeat) always pass.
pub const SLACK: usize = 64 * 1024;

/// A field's kind, as far as allocation goes.
#[derive(Clone, Copy)]
enum Kind {
    /// A string or bytes: its length on the heap.
    Text,
    /// A nested message, with the size of its struct.
    Message(&'static Schema, usize),
}

/// A message type: for each field number that allocates, its kind.
struct Schema {
    fields: &'static [(u32, Kind)],
}

const KEY: Schema = Schema {
    fields: &[(1, Kind::Text), (2, Kind::Text)],
};
const PORT: Schema = Schema {
    fields: &[(1, Kind::Text)],
};
const POLICY: Schema = Schema { fields: &[] };
const ENDPOINT: Schema = Schema {
    fields: &[
        (1, Kind::Text),
        (2, Kind::Text),
        (3, Kind::Text),
        (4, Kind::Text),
    ],
};
const SERVICE: Schema = Schema {
    fields: &[
        (1, Kind::Message(&KEY, size_of::<wire::ServiceKey>())),
        (2, Kind::Message(&PORT, size_of::<wire::Port>())),
        (4, Kind::Text),
        (5, Kind::Message(&ENDPOINT, size_of::<wire::Endpoint>())),
        (6, Kind::Message(&POLICY, size_of::<wire::Policy>())),
    ],
};
const HELLO: Schema = Schema {
    fields: &[
        (1, Kind::Text),
        (2, Kind::Text),
        (3, Kind::Text),
        (4, Kind::Text),
        (5, Kind::Text),
    ],
};
const SNAPSHOT: Schema = Schema {
    fields: &[(1, Kind::Message(&SERVICE, size_of::<wire::ServiceExport>()))],
};
const DELTA: Schema = Schema {
    fields: &[
        (1, Kind::Message(&SERVICE, size_of::<wire::ServiceExport>())),
        (2, Kind::Message(&KEY, size_of::<wire::ServiceKey>())),
    ],
};
const EXPORT_REQUEST: Schema = Schema {
    fields: &[
        (2, Kind::Message(&HELLO, size_of::<wire::Hello>())),
        (3, Kind::Message(&SNAPSHOT, size_of::<wire::Snapshot>())),
        (4, Kind::Message(&DELTA, size_of::<wire::Delta>())),
    ],
};

/// Every string decodes to a `String` (24 bytes) plus its bytes, held in
/// a vector slot or a struct field; counting the 24 for every one is the
/// conservative choice.
const STRING: usize = size_of::<String>();

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// What decoding `bytes` as `schema` would allocate; `None` when the
/// bytes are not protobuf this walk reads (truncated, groups, a bad
/// wire type): the codec refuses those.
fn walk(schema: &Schema, mut bytes: &[u8]) -> Option<usize> {
    let mut cost = 0usize;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let field = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let (value, rest) = (bytes.get(..len)?, bytes.get(len..)?);
                bytes = rest;
                let kind = schema.fields.iter().find(|(n, _)| *n == field);
                cost = cost.saturating_add(match kind {
                    Some((_, Kind::Text)) => STRING + len,
                    Some((_, Kind::Message(inner, size))) => size + walk(inner, value)?,
                    // Packed scalars or unknown fields: prost keeps
                    // neither beyond their bytes.
                    None => len,
                });
            }
            _ => return None,
        }
    }
    Some(cost)
}

/// What decoding an `ExportRequest` of these bytes would allocate.
pub fn export_request(bytes: &[u8]) -> Option<usize> {
    walk(&EXPORT_REQUEST, bytes).map(|c| c + size_of::<wire::ExportRequest>())
}

/// The most a message of `len` wire bytes may decode to.
pub fn allowed(len: usize) -> usize {
    len.saturating_mul(AMPLIFICATION).saturating_add(SLACK)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn endpoint(i: u32) -> wire::Endpoint {
        wire::Endpoint {
            addresses: vec![format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)],
            ready: true,
            ..Default::default()
        }
    }

    fn snapshot(services: Vec<wire::ServiceExport>) -> Vec<u8> {
        wire::ExportRequest {
            generation: 1,
            message: Some(wire::export_request::Message::Snapshot(wire::Snapshot {
                services,
                more: false,
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn real_exports_pass_even_with_bare_endpoints() {
        let service = wire::ServiceExport {
            key: Some(wire::ServiceKey {
                namespace: "shop".into(),
                name: "web".into(),
            }),
            ports: vec![wire::Port {
                name: "http".into(),
                protocol: 1,
                port: 80,
            }],
            endpoints: (0..10_000).map(endpoint).collect(),
            ..Default::default()
        };
        let bytes = snapshot(vec![service]);
        let cost = export_request(&bytes).unwrap();
        assert!(
            cost <= allowed(bytes.len()),
            "{cost} for {} bytes",
            bytes.len()
        );
    }

    #[test]
    fn empty_entries_are_over_budget() {
        let bytes = snapshot(vec![wire::ServiceExport::default(); 100_000]);
        let cost = export_request(&bytes).unwrap();
        assert!(
            cost > allowed(bytes.len()),
            "{cost} for {} bytes",
            bytes.len()
        );
        let empty_endpoints = wire::ServiceExport {
            endpoints: vec![wire::Endpoint::default(); 100_000],
            ..Default::default()
        };
        let bytes = snapshot(vec![empty_endpoints]);
        assert!(export_request(&bytes).unwrap() > allowed(bytes.len()));
        let empty_addresses = wire::ServiceExport {
            endpoints: vec![wire::Endpoint {
                addresses: vec![String::new(); 100_000],
                ..Default::default()
            }],
            ..Default::default()
        };
        // Empty strings cost 12 times their two bytes: under the bound,
        // which is what the bound is for.
        let bytes = snapshot(vec![empty_addresses]);
        let cost = export_request(&bytes).unwrap();
        assert!(cost > 10 * bytes.len() && cost <= allowed(bytes.len()));
    }

    #[test]
    fn the_estimate_is_at_least_what_is_allocated_per_entry() {
        let bytes = snapshot(vec![wire::ServiceExport::default(); 1000]);
        let cost = export_request(&bytes).unwrap();
        assert!(cost >= 1000 * size_of::<wire::ServiceExport>());
    }

    #[test]
    fn malformed_bytes_have_no_estimate() {
        assert_eq!(export_request(&[0x1a, 0xff]), None);
        assert_eq!(export_request(&[0x1a, 0x05, 0x0a]), None);
        assert_eq!(export_request(&[0x0f]), None);
        // A group (wire types 3 and 4), which prost would skip.
        assert_eq!(export_request(&[0x33, 0x34]), None);
        assert!(export_request(&[]).is_some());
    }
}
