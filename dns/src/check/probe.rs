//! A minimal DNS client for `meshdns check`: one question out, the rcode,
//! flags and addresses of the reply back, over UDP or TCP. Written on the
//! wire directly (hickory types stay in `zone`), and strict: a reply with
//! another ID or question count, or one that runs past its end, is an
//! error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;

/// What a reply said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: u8,
    /// Authoritative Answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Records in the answer section.
    pub answers: usize,
    /// A and AAAA data of the answer section, sorted.
    pub addresses: Vec<IpAddr>,
}

impl Reply {
    pub fn rcode_name(&self) -> &'static str {
        match self.rcode {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "other",
        }
    }
}

/// A query for `name` (`qtype`, class IN) with RD set, so a recursive
/// resolver recurses; an authoritative server ignores it.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a domain name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    if out.len() > 12 + 255 + 4 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    Ok(out)
}

fn u16_at(p: &[u8], at: usize) -> Result<u16, String> {
    match p.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err("reply cut short".into()),
    }
}

/// The offset after the name at `at` (labels, or a compression pointer).
fn skip_name(p: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *p.get(at).ok_or("reply cut short")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l if l < 64 => at += 1 + usize::from(l),
            _ => return Err("bad label in reply".into()),
        }
    }
}

/// Reads the reply to query `id`.
pub fn parse(id: u16, p: &[u8]) -> Result<Reply, String> {
    if p.len() < 12 {
        return Err("reply shorter than a DNS header".into());
    }
    if u16_at(p, 0)? != id || p[2] & 0x80 == 0 {
        return Err("not a reply to this query".into());
    }
    let (qd, an) = (u16_at(p, 4)?, u16_at(p, 6)?);
    if qd != 1 {
        return Err(format!("reply has {qd} questions"));
    }
    let mut at = skip_name(p, 12)? + 4;
    let mut addresses = Vec::new();
    for _ in 0..an {
        at = skip_name(p, at)?;
        let rtype = u16_at(p, at)?;
        let rdlen = usize::from(u16_at(p, at + 8)?);
        let data = p.get(at + 10..at + 10 + rdlen).ok_or("reply cut short")?;
        match (rtype, rdlen) {
            (TYPE_A, 4) => addresses.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(data);
                addresses.push(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            _ => {}
        }
        at += 10 + rdlen;
    }
    addresses.sort();
    Ok(Reply {
        rcode: p[3] & 0x0f,
        aa: p[2] & 0x04 != 0,
        tc: p[2] & 0x02 != 0,
        answers: usize::from(an),
        addresses,
    })
}

/// Asks `server` over UDP; `Err` on no reply within `wait`.
pub async fn udp(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    wait: Duration,
) -> Result<Reply, String> {
    let id = fastrand::u16(..);
    let packet = query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "bind address")?
    } else {
        "[::]:0".parse().map_err(|_| "bind address")?
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("udp {server}: {e}"))?;
    let exchange = async {
        socket
            .send(&packet)
            .await
            .map_err(|e| format!("udp {server}: {e}"))?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| format!("udp {server}: {e}"))?;
            // Stray datagrams (an earlier query's late reply) are skipped.
            if let Ok(reply) = parse(id, &buf[..n]) {
                return Ok(reply);
            }
        }
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| format!("no reply from {server} over udp within {wait:?}"))?
}

/// Asks `server` over TCP; `Err` on no reply within `wait`.
pub async fn tcp(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    wait: Duration,
) -> Result<Reply, String> {
    let id = fastrand::u16(..);
    let packet = query(id, name, qtype)?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| format!("tcp {server}: {e}"))?;
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&packet);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("tcp {server}: {e}"))?;
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("tcp {server}: {e}"))?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| format!("tcp {server}: {e}"))?;
        parse(id, &reply)
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| format!("no reply from {server} over tcp within {wait:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_reply_with_compressed_names() {
        let mut reply = query(7, "web.shop.global", TYPE_A).unwrap();
        reply[2] = 0x85; // QR, AA, RD
        reply[7] = 2; // two answers
        for last in [11u8, 12] {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 1, 0, last]);
        }
        let parsed = parse(7, &reply).unwrap();
        assert_eq!(parsed.rcode, 0);
        assert!(parsed.aa && !parsed.tc);
        assert_eq!(
            parsed.addresses,
            ["10.1.0.11", "10.1.0.12"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert!(parse(8, &reply).is_err(), "another ID");
        assert!(parse(7, &reply[..reply.len() - 1]).is_err(), "cut short");
    }

    #[test]
    fn refuses_names_that_are_not() {
        assert!(query(1, "a..b", TYPE_A).is_err());
        assert!(query(1, &"a".repeat(64), TYPE_A).is_err());
    }
}
