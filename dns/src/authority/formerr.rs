//! Malformed queries: the structure checks hickory's decoder does not
//! make, and the FORMERR that answers a query failing them — or failing
//! to decode at all — with its question and an OPT record whenever they
//! can be read (RFC 6891 §7: a FORMERR caused by an OPT problem carries
//! an OPT, else the resolver concludes we have no EDNS).
//!
//! A query is malformed when its section counts do not match its bytes
//! (records missing, or bytes left over), when it has an OPT record
//! outside the additional section, more than one, or one not owned by
//! the root (RFC 6891 §6.1.1), or an ECS option that is not well formed
//! ([`rules::ecs_option`]; RFC 7871 §6).

use super::rules::{self, EcsError, Rcode};

const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;

/// Why a query is answered FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the message ends inside its {0} section")]
    Truncated(&'static str),
    #[error("{0} bytes after the last record the counts announce")]
    Trailing(usize),
    #[error("an opt record in the {0} section")]
    OptSection(&'static str),
    #[error("more than one opt record")]
    TwoOpts,
    #[error("an opt record not owned by the root")]
    OptOwner,
    #[error(transparent)]
    Ecs(#[from] EcsError),
}

/// What could be read of a malformed query.
#[derive(Debug, Default, Clone, Copy)]
struct Salvage {
    /// Where the first question is in the packet, when it could be read
    /// and its name is not compressed.
    question: Option<(usize, usize)>,
    /// An OPT record was seen; its DO bit.
    opt: Option<bool>,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// The end of the name at `at`, and whether it was compressed.
fn skip_name(p: &[u8], mut at: usize) -> Option<(usize, bool)> {
    loop {
        let len = *p.get(at)?;
        match len {
            0 => return Some((at + 1, false)),
            l if l & 0xc0 == 0xc0 => {
                p.get(at + 1)?;
                return Some((at + 2, true));
            }
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// Walks the message; what it read either way.
fn walk(p: &[u8]) -> (Result<(), Malformed>, Salvage) {
    let mut salvage = Salvage::default();
    let result = walk_into(p, &mut salvage);
    (result, salvage)
}

fn walk_into(p: &[u8], salvage: &mut Salvage) -> Result<(), Malformed> {
    let count = |at| u16_at(p, at).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut at = 12;
    for i in 0..qd {
        let (end, compressed) = skip_name(p, at).ok_or(Malformed::Truncated("question"))?;
        if end + 4 > p.len() {
            return Err(Malformed::Truncated("question"));
        }
        if i == 0 && !compressed {
            salvage.question = Some((at, end + 4));
        }
        at = end + 4;
    }
    for (section, records) in [("answer", an), ("authority", ns), ("additional", ar)] {
        for _ in 0..records {
            let owner = at;
            let (end, _) = skip_name(p, at).ok_or(Malformed::Truncated(section))?;
            let rtype = u16_at(p, end).ok_or(Malformed::Truncated(section))?;
            let rdlen = usize::from(u16_at(p, end + 8).ok_or(Malformed::Truncated(section))?);
            let data = end + 10;
            if data + rdlen > p.len() {
                return Err(Malformed::Truncated(section));
            }
            at = data + rdlen;
            if rtype != TYPE_OPT {
                continue;
            }
            let first = salvage.opt.is_none();
            if first {
                salvage.opt = Some(p[end + 6] & 0x80 != 0);
            }
            if section != "additional" {
                return Err(Malformed::OptSection(section));
            }
            if !first {
                return Err(Malformed::TwoOpts);
            }
            if end != owner + 1 {
                return Err(Malformed::OptOwner);
            }
            options(&p[data..at])?;
        }
    }
    if at < p.len() {
        return Err(Malformed::Trailing(p.len() - at));
    }
    Ok(())
}

/// The OPT's options: an ECS one must be well formed.
fn options(mut data: &[u8]) -> Result<(), Malformed> {
    while !data.is_empty() {
        let (Some(code), Some(len)) = (u16_at(data, 0), u16_at(data, 2)) else {
            return Err(Malformed::Truncated("additional"));
        };
        let Some(option) = data.get(4..4 + usize::from(len)) else {
            return Err(Malformed::Truncated("additional"));
        };
        if code == OPTION_ECS {
            rules::ecs_option(option)?;
        }
        data = &data[4 + usize::from(len)..];
    }
    Ok(())
}

/// Checks what hickory's decoder does not (see the module doc).
pub fn check(packet: &[u8]) -> Result<(), Malformed> {
    walk(packet).0
}

/// The reply to a malformed query (at least a 12-byte header): FORMERR
/// (NOTIMP for another opcode), no AA, with the first question and an
/// OPT ([`rules::OPT_PAYLOAD`], the DO bit copied) when the query's could
/// be read.
pub fn reply(packet: &[u8]) -> (Vec<u8>, Rcode) {
    let (_, salvage) = walk(packet);
    let opcode = (packet[2] >> 3) & 0x0f;
    let rcode = if opcode == 0 {
        Rcode::FormErr
    } else {
        Rcode::NotImp
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&packet[..2]);
    out.extend_from_slice(&rules::header_flags([packet[2], packet[3]], false, rcode));
    out.extend_from_slice(&u16::from(salvage.question.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(salvage.opt.is_some()).to_be_bytes());
    if let Some((start, end)) = salvage.question {
        out.extend_from_slice(&packet[start..end]);
    }
    if let Some(dnssec_ok) = salvage.opt {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&rules::OPT_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    (out, rcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(extra: &[u8], ar: u8) -> Vec<u8> {
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, ar];
        p.extend_from_slice(b"\x03web\x04shop\x06global\x00\x00\x01\x00\x01");
        p.extend_from_slice(extra);
        p
    }

    fn opt(options: &[u8]) -> Vec<u8> {
        let mut o = vec![0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0];
        o.extend_from_slice(&[0, u8::try_from(options.len()).unwrap_or(u8::MAX)]);
        o.extend_from_slice(options);
        o
    }

    #[test]
    fn well_formed_queries_pass() {
        assert_eq!(check(&query(&[], 0)), Ok(()));
        assert_eq!(check(&query(&opt(&[]), 1)), Ok(()));
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2];
        assert_eq!(check(&query(&opt(&ecs), 1)), Ok(()));
    }

    #[test]
    fn each_fault_is_named() {
        let two = [opt(&[]), opt(&[])].concat();
        assert_eq!(check(&query(&two, 2)), Err(Malformed::TwoOpts));
        assert_eq!(check(&query(&opt(&[]), 0)), Err(Malformed::Trailing(11)));
        assert_eq!(
            check(&query(&[], 1)),
            Err(Malformed::Truncated("additional"))
        );
        let mut owned = vec![1, b'x', 0];
        owned.extend_from_slice(&opt(&[])[1..]);
        assert_eq!(check(&query(&owned, 1)), Err(Malformed::OptOwner));
        let unmasked = [0, 8, 0, 7, 0, 1, 23, 0, 10, 1, 3];
        assert_eq!(
            check(&query(&opt(&unmasked), 1)),
            Err(Malformed::Ecs(EcsError::Unmasked))
        );
        let family = [0, 8, 0, 4, 0, 3, 0, 0];
        assert_eq!(
            check(&query(&opt(&family), 1)),
            Err(Malformed::Ecs(EcsError::Family(3)))
        );
    }

    #[test]
    fn the_reply_keeps_question_and_opt() {
        let two = [opt(&[]), opt(&[])].concat();
        let (reply, rcode) = reply(&query(&two, 2));
        assert_eq!(rcode, Rcode::FormErr);
        assert_eq!(&reply[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(reply[3] & 0x0f, 1);
        // The question as sent, then an OPT with the DO bit copied.
        assert_eq!(&reply[12..12 + 21], &query(&[], 0)[12..]);
        assert_eq!(&reply[33..], &[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
}
