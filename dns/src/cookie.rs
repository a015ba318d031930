//! DNS Cookies (RFC 7873) with the interoperable server cookie of
//! RFC 9018: what a query's COOKIE option says, and the option to answer
//! it with.
//!
//! A server cookie is 16 bytes: version 1, three reserved zero bytes, a
//! 32-bit timestamp (seconds, serial arithmetic) and SipHash-2-4 over the
//! client cookie, those 8 bytes and the client's address, keyed with the
//! server secret. Replicas behind one address that share the secret
//! (`--cookie-secret-file`) accept each other's cookies. Checking one is a
//! hash over at most 36 bytes on the stack: no allocation, no lock, so the
//! UDP fast path can do it.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a client cookie.
pub const CLIENT_LEN: usize = 8;
/// Length of the server cookies this server makes (RFC 9018).
pub const SERVER_LEN: usize = 16;
/// Length of the COOKIE option data in every reply: client + server cookie.
pub const REPLY_LEN: usize = CLIENT_LEN + SERVER_LEN;
/// The RFC 9018 server cookie version.
const VERSION: u8 = 1;
/// A server cookie older than this is not valid (RFC 9018 §4.3: one hour).
const MAX_AGE: u32 = 3600;
/// A server cookie from further ahead than this is not valid (five minutes).
const MAX_AHEAD: u32 = 300;
/// A valid server cookie older than this is replaced by a fresh one.
const REFRESH_AGE: u32 = 1800;

/// A COOKIE option whose length is neither 8 (client cookie only) nor
/// 16 to 40 (client and server cookie): the query gets FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cookie option of {0} bytes (a client cookie is 8, with a server cookie 16 to 40)")]
pub struct Malformed(pub usize);

/// A server secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: expected 32 hexadecimal digits (a 128-bit secret), found {found} characters")]
    Length { path: String, found: usize },
    #[error("{path}: not hexadecimal")]
    NotHex { path: String },
}

/// How a reply answers a query's COOKIE option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The option data to send back: the client cookie, then a server cookie.
    pub data: [u8; REPLY_LEN],
    /// The query presented a valid server cookie of ours: its source
    /// address is proven (it saw an earlier reply), so rate limiting
    /// leaves it alone.
    pub verified: bool,
}

/// Where a cookie's timestamp comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    System,
    /// A fixed time (unix seconds): tests compare two answer paths.
    Fixed(u32),
}

/// The server secret and clock; fixed at start.
#[derive(Clone)]
pub struct Cookies {
    k0: u64,
    k1: u64,
    clock: Clock,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Cookies")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// Cookies with this 128-bit secret.
    pub fn new(secret: [u8; 16]) -> Self {
        let (k0, k1) = secret.split_at(8);
        Cookies {
            k0: u64::from_le_bytes(k0.try_into().unwrap_or_default()),
            k1: u64::from_le_bytes(k1.try_into().unwrap_or_default()),
            clock: Clock::System,
        }
    }

    /// Cookies with a random secret: two outputs of a SipHash keyed from
    /// the operating system's random source (std's `RandomState`).
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        let keys = std::hash::RandomState::new();
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&keys.hash_one(0x636f_6f6b_6965_u64).to_le_bytes());
        secret[8..].copy_from_slice(&keys.hash_one(0x7365_6372_6574_u64).to_le_bytes());
        Self::new(secret)
    }

    /// Cookies with the secret in `path`: 32 hexadecimal digits, as
    /// `openssl rand -hex 16` writes them (surrounding whitespace ignored).
    pub fn from_file(path: &std::path::Path) -> Result<Self, SecretError> {
        let name = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| SecretError::Read {
            path: name(),
            error,
        })?;
        Self::from_hex(text.trim()).map_err(|e| match e {
            HexError::Length(found) => SecretError::Length {
                path: name(),
                found,
            },
            HexError::NotHex => SecretError::NotHex { path: name() },
        })
    }

    fn from_hex(text: &str) -> Result<Self, HexError> {
        if text.len() != 32 {
            return Err(HexError::Length(text.chars().count()));
        }
        let mut secret = [0u8; 16];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = text
                .get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(HexError::NotHex)?;
        }
        Ok(Self::new(secret))
    }

    /// The same secret with the clock stopped at `unix_seconds` (tests).
    pub fn at_time(mut self, unix_seconds: u32) -> Self {
        self.clock = Clock::Fixed(unix_seconds);
        self
    }

    fn now(&self) -> u32 {
        match self.clock {
            Clock::Fixed(t) => t,
            // Serial arithmetic: the low 32 bits are what the wire carries.
            #[allow(clippy::cast_possible_truncation)]
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
        }
    }

    /// Answers a COOKIE option's `data` from `client`: RFC 7873 §5.2.
    /// A client cookie alone, or with a server cookie that is not a valid
    /// one of ours (another server's, expired, forged), gets a fresh
    /// server cookie; a valid one is echoed (or refreshed when older than
    /// half an hour) and marks the query verified.
    pub fn answer(&self, data: &[u8], client: IpAddr) -> Result<Answer, Malformed> {
        let len = data.len();
        if len != CLIENT_LEN && !(16..=40).contains(&len) {
            return Err(Malformed(len));
        }
        let mut reply = [0u8; REPLY_LEN];
        reply[..CLIENT_LEN].copy_from_slice(&data[..CLIENT_LEN]);
        let now = self.now();
        let verified = match self.age(data, client, now) {
            Some(age) if age <= REFRESH_AGE => {
                reply[CLIENT_LEN..].copy_from_slice(&data[CLIENT_LEN..]);
                return Ok(Answer {
                    data: reply,
                    verified: true,
                });
            }
            Some(_) => true,
            None => false,
        };
        reply[CLIENT_LEN..CLIENT_LEN + 4].copy_from_slice(&[VERSION, 0, 0, 0]);
        reply[CLIENT_LEN + 4..CLIENT_LEN + 8].copy_from_slice(&now.to_be_bytes());
        let hash = self.hash(&reply[..CLIENT_LEN + 8], client);
        reply[CLIENT_LEN + 8..].copy_from_slice(&hash.to_le_bytes());
        Ok(Answer {
            data: reply,
            verified,
        })
    }

    /// The age in seconds of `data`'s server cookie if it is a valid one
    /// of ours for `client`.
    fn age(&self, data: &[u8], client: IpAddr, now: u32) -> Option<u32> {
        if data.len() != REPLY_LEN || data[CLIENT_LEN..CLIENT_LEN + 4] != [VERSION, 0, 0, 0] {
            return None;
        }
        let stamp = u32::from_be_bytes(data[CLIENT_LEN + 4..CLIENT_LEN + 8].try_into().ok()?);
        let age = now.wrapping_sub(stamp);
        // Serial arithmetic: a "negative" age is a stamp from the future.
        let fresh = if (age as i32) < 0 {
            age.wrapping_neg() <= MAX_AHEAD
        } else {
            age <= MAX_AGE
        };
        let hash = self.hash(&data[..CLIENT_LEN + 8], client).to_le_bytes();
        (fresh && constant_time_eq(&hash, &data[CLIENT_LEN + 8..])).then_some(if (age as i32) < 0 {
            0
        } else {
            age
        })
    }

    /// SipHash-2-4 of the cookie prefix (client cookie, version,
    /// reserved, timestamp) and the client's address.
    fn hash(&self, prefix: &[u8], client: IpAddr) -> u64 {
        let mut input = [0u8; CLIENT_LEN + 8 + 16];
        input[..prefix.len()].copy_from_slice(prefix);
        let len = match client.to_canonical() {
            IpAddr::V4(v4) => {
                input[prefix.len()..prefix.len() + 4].copy_from_slice(&v4.octets());
                prefix.len() + 4
            }
            IpAddr::V6(v6) => {
                input[prefix.len()..].copy_from_slice(&v6.octets());
                prefix.len() + 16
            }
        };
        siphash24(self.k0, self.k1, &input[..len])
    }
}

#[derive(Debug)]
enum HexError {
    Length(usize),
    NotHex,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SipHash-2-4 (Aumasson and Bernstein), the hash RFC 9018 names.
fn siphash24(k0: u64, k1: u64, message: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = message.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(u64::from_le_bytes(word), &mut v);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    // SipHash: the length's low byte.
    last[7] = message.len().to_le_bytes()[0];
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    // The answer-path lints of this module are for its code, not its tests.
    #![allow(
        clippy::unwrap_used,
        clippy::cast_possible_truncation,
        clippy::expect_used
    )]

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn siphash_reference_vector() {
        // The SipHash paper's test vector: key 00..0f, message 00..0e.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k0, k1, &message), 0xa129_ca61_49be_45e5);
    }

    /// RFC 9018 appendix A.1: a server learns a client cookie and makes
    /// its server cookie.
    #[test]
    fn rfc9018_server_cookie() {
        let cookies = Cookies::from_hex("e5e973e5a6b2a43f48e7dc849e37bfcf")
            .unwrap()
            .at_time(1_559_731_985);
        let answer = cookies
            .answer(&hex("2464c4abcf10c957"), "198.51.100.100".parse().unwrap())
            .unwrap();
        assert_eq!(
            answer.data.to_vec(),
            hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
        );
        assert!(!answer.verified);
    }

    #[test]
    fn rules() {
        let client: IpAddr = "2001:db8::53".parse().unwrap();
        let cookies = Cookies::new([7; 16]).at_time(1_000_000);
        // Lengths.
        for len in [0, 1, 7, 9, 15, 41, 100] {
            assert_eq!(
                cookies.answer(&vec![1; len], client),
                Err(Malformed(len)),
                "{len}"
            );
        }
        // Client cookie only: a server cookie that verifies next time.
        let first = cookies.answer(&[1; 8], client).unwrap();
        assert!(!first.verified);
        let again = cookies.answer(&first.data, client).unwrap();
        assert!(again.verified);
        assert_eq!(again.data, first.data, "a fresh valid cookie is echoed");
        // Another address, a flipped bit, another secret: not ours.
        assert!(
            !cookies
                .answer(&first.data, "2001:db8::54".parse().unwrap())
                .unwrap()
                .verified
        );
        let mut forged = first.data;
        forged[REPLY_LEN - 1] ^= 1;
        let fixed = cookies.answer(&forged, client).unwrap();
        assert!(!fixed.verified);
        assert_eq!(fixed.data, first.data, "a bad cookie gets a fresh one");
        assert!(
            !Cookies::new([8; 16])
                .at_time(1_000_000)
                .answer(&first.data, client)
                .unwrap()
                .verified
        );
        // Age: refreshed after half an hour, invalid after an hour and
        // from more than five minutes ahead.
        let later = |dt: i64| {
            Cookies::new([7; 16])
                .at_time((1_000_000 + dt) as u32)
                .answer(&first.data, client)
                .unwrap()
        };
        assert_eq!(later(1800).data, first.data);
        let refreshed = later(1801);
        assert!(refreshed.verified);
        assert_ne!(refreshed.data, first.data);
        assert!(later(3600).verified);
        assert!(!later(3601).verified);
        assert!(later(-300).verified);
        assert!(!later(-301).verified);
        // Somebody else's longer server cookie: a fresh one of ours.
        let mut theirs = [9u8; 40];
        theirs[..8].copy_from_slice(&[1; 8]);
        let answer = cookies.answer(&theirs, client).unwrap();
        assert!(!answer.verified);
        assert_eq!(answer.data, first.data);
    }

    #[test]
    fn secret_file() {
        let dir = std::env::temp_dir().join(format!("meshdns-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "e5e973e5a6b2a43f48e7dc849e37bfcf\n").unwrap();
        assert!(Cookies::from_file(&path).is_ok());
        std::fs::write(&path, "e5e973e5").unwrap();
        let e = Cookies::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("32 hexadecimal digits"), "{e}");
        std::fs::write(&path, "z5e973e5a6b2a43f48e7dc849e37bfcf").unwrap();
        assert!(matches!(
            Cookies::from_file(&path),
            Err(SecretError::NotHex { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
