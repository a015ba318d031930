//! The name server identifier (RFC 5001): `--nsid` read as text or as
//! hex after `0x`. A query asks with an empty NSID option; the answer's
//! OPT carries ours (after COOKIE and ECS, on both paths).

/// The EDNS option code of NSID.
pub const OPTION_NSID: u16 = 3;

/// The longest NSID accepted: it rides in every reply that asks for it,
/// so it is kept small.
pub const MAX_LEN: usize = 128;

/// An `--nsid` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNsid {
    #[error("empty")]
    Empty,
    #[error("{0} bytes, more than {MAX_LEN}")]
    TooLong(usize),
    #[error("after 0x, an even number of hexadecimal digits is expected")]
    NotHex,
}

/// `--nsid`: `0x` and hex digits for raw bytes, else the text's bytes.
pub fn parse(text: &str) -> Result<Vec<u8>, InvalidNsid> {
    let bytes = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return Err(InvalidNsid::NotHex);
            }
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| InvalidNsid::NotHex)?
        }
        None => text.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(InvalidNsid::Empty);
    }
    if bytes.len() > MAX_LEN {
        return Err(InvalidNsid::TooLong(bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_hex() {
        assert_eq!(parse("replica-1"), Ok(b"replica-1".to_vec()));
        assert_eq!(parse("0x6d0a"), Ok(vec![0x6d, 0x0a]));
        assert_eq!(parse("0x6"), Err(InvalidNsid::NotHex));
        assert_eq!(parse("0xzz"), Err(InvalidNsid::NotHex));
        assert_eq!(parse(""), Err(InvalidNsid::Empty));
        assert_eq!(parse(&"x".repeat(129)), Err(InvalidNsid::TooLong(129)));
    }
}
