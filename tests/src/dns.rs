//! A strict DNS client on hickory-proto: replies must decode completely,
//! with no byte after the message, and carry the query's ID.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub use hickory_proto::op::Message as DnsMessage;
pub use hickory_proto::rr::RecordType as Type;

/// EDNS settings of a query.
#[derive(Debug, Clone, Copy)]
pub struct EdnsOpts {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

impl Default for EdnsOpts {
    fn default() -> Self {
        EdnsOpts {
            payload: 1232,
            version: 0,
            dnssec_ok: false,
        }
    }
}

/// One question and how to ask it.
#[derive(Debug, Clone)]
pub struct Ask {
    pub name: String,
    pub qtype: RecordType,
    pub class: DNSClass,
    pub tcp: bool,
    pub edns: Option<EdnsOpts>,
    /// Local address to send from (127.0.0.x), for askers of different clusters.
    pub source: Option<IpAddr>,
    /// An EDNS Client Subnet option: (address, source prefix).
    pub ecs: Option<(IpAddr, u8)>,
}

impl Ask {
    pub fn new(name: &str, qtype: RecordType) -> Self {
        Ask {
            name: name.to_owned(),
            qtype,
            class: DNSClass::IN,
            tcp: false,
            edns: Some(EdnsOpts::default()),
            source: None,
            ecs: None,
        }
    }
    pub fn ecs(mut self, subnet: &str) -> Self {
        let (addr, prefix) = subnet.split_once('/').unwrap();
        self.ecs = Some((addr.parse().unwrap(), prefix.parse().unwrap()));
        self
    }
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }
    pub fn no_edns(mut self) -> Self {
        self.edns = None;
        self
    }
    pub fn edns(mut self, edns: EdnsOpts) -> Self {
        self.edns = Some(edns);
        self
    }
    pub fn from(mut self, source: &str) -> Self {
        self.source = Some(source.parse().unwrap());
        self
    }
    pub fn class(mut self, class: DNSClass) -> Self {
        self.class = class;
        self
    }

    pub fn message(&self, id: u16) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        let mut q = Query::query(Name::from_ascii(&self.name).unwrap(), self.qtype);
        q.set_query_class(self.class);
        m.add_query(q);
        if let Some(opts) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(opts.payload);
            e.set_version(opts.version);
            e.set_dnssec_ok(opts.dnssec_ok);
            if let Some((addr, prefix)) = self.ecs {
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
            }
            m.edns = Some(e);
        }
        m
    }
}

/// Decodes a reply strictly: every byte must belong to the message.
pub fn strict(raw: &[u8]) -> Result<Message, String> {
    let mut decoder = BinDecoder::new(raw);
    let message = Message::read(&mut decoder).map_err(|e| format!("malformed reply: {e}"))?;
    if !decoder.is_empty() {
        return Err(format!(
            "{} trailing bytes after the message",
            decoder.len()
        ));
    }
    if message.metadata.message_type != MessageType::Response {
        return Err("reply is not a response".into());
    }
    Ok(message)
}

/// Sends raw bytes over UDP; the raw reply, or `None` after `wait`.
pub async fn raw_udp(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
        _ => None,
    }
}

/// Sends raw bytes over a TCP connection (length-prefixed); the raw reply.
pub async fn raw_tcp(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Asks and returns the strictly decoded reply and its size in bytes.
/// Panics when no reply comes within 3 s or the reply is not strictly valid.
pub async fn ask(server: SocketAddr, ask: &Ask) -> (Message, usize) {
    try_ask(server, ask, Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("no reply to {} {}", ask.name, ask.qtype))
}

/// Like [`ask`], but `None` when no reply comes within `wait` (a server
/// still starting). A malformed reply still panics.
pub async fn try_ask(server: SocketAddr, ask: &Ask, wait: Duration) -> Option<(Message, usize)> {
    let id: u16 = fastish_id();
    let packet = ask.message(id).to_vec().unwrap();
    let raw = if ask.tcp {
        tokio::time::timeout(wait, raw_tcp(server, &packet))
            .await
            .ok()?
            .ok()?
    } else {
        let local = SocketAddr::new(ask.source.unwrap_or("127.0.0.1".parse().unwrap()), 0);
        let socket = UdpSocket::bind(local).await.expect("bind query socket");
        socket.send_to(&packet, server).await.ok()?;
        let mut buf = vec![0u8; 65_535];
        let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf[..len].to_vec()
    };
    let message = strict(&raw).unwrap_or_else(|e| panic!("{} {}: {e}", ask.name, ask.qtype));
    assert_eq!(message.metadata.id, id, "reply ID matches the query");
    Some((message, raw.len()))
}

/// The reply, or `None` when none comes within 500 ms: for polling.
pub async fn poll(server: SocketAddr, a: &Ask) -> Option<Message> {
    try_ask(server, a, Duration::from_millis(500))
        .await
        .map(|(m, _)| m)
}

fn fastish_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1000);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Asks and returns just the reply.
pub async fn query(server: SocketAddr, a: &Ask) -> Message {
    ask(server, a).await.0
}

/// [`query`] for the SRV records of `name`, over UDP with EDNS.
pub async fn query_srv(server: SocketAddr, name: &str) -> Message {
    query(server, &Ask::new(name, RecordType::SRV)).await
}

/// The answer section's addresses, sorted, as text.
pub fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The answer section's SRV records as (port, target), sorted; panics on
/// any other record.
pub fn srv_targets(m: &Message) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.port, srv.target.to_ascii()),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    v.sort();
    v
}

/// One SRV answer, (port, target), for comparisons with [`srv_targets`].
pub fn srv(port: u16, target: &str) -> Vec<(u16, String)> {
    vec![(port, target.to_owned())]
}

/// The rcode, with extended (EDNS) bits merged.
pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// `ip` strings -> sorted vector, for comparisons with [`addresses`].
pub fn sorted(ips: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The ECS option echoed in a reply: (address, source prefix, scope prefix).
pub fn ecs_echo(m: &Message) -> Option<(IpAddr, u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}
