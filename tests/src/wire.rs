//! DNS messages built byte by byte, for the packets a client library will
//! not write: wrong counts, other opcodes, malformed names and options.

/// A DNS header: ID, flags and the four section counts (question, answer,
/// authority, additional).
pub fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// A name in wire form, uncompressed; empty labels (a trailing dot) are
/// skipped.
pub fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).expect("a label of at most 255 bytes"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A question: name, type, class.
pub fn question(text: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut out = name(text);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out
}
