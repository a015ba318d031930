//! The UDP sockets' receive buffer (`--udp-receive-buffer`).
//!
//! Queries queue in the socket while its worker is busy: a burst, or a
//! reconnect storm when the registry's writer and the gRPC streams share
//! the CPU with the workers. What does not fit is dropped by the kernel,
//! unanswered, and the asker's resolver waits out its timeout. The
//! kernel's default (`net.core.rmem_default`, about 208 KiB: some 270
//! queries) is too small for a busy authoritative server, so each socket
//! asks for more: with SO_RCVBUFFORCE when the process may
//! (CAP_NET_ADMIN), else with SO_RCVBUF, which `net.core.rmem_max` caps.

use std::os::fd::AsFd;

use nix::sys::socket::{setsockopt, sockopt};

/// The default: about 5,000 queries' room (a query's datagram costs the
/// kernel some 768 bytes of buffer), 25 ms of work at 200,000 queries/s.
pub const DEFAULT: usize = 4 * 1024 * 1024;

/// The largest that may be asked for.
pub const MAX: usize = 256 * 1024 * 1024;

/// Asks for `bytes` of receive buffer on `socket`; returns what the
/// kernel granted, in the same units as `bytes` (Linux reports twice the
/// usable size, for its bookkeeping; this halves it back). 0 leaves the
/// kernel's default.
pub fn set(socket: &impl AsFd, bytes: usize) -> std::io::Result<usize> {
    let asked = bytes.min(MAX);
    if asked > 0 {
        // The forced form needs CAP_NET_ADMIN; without it, the capped one.
        if setsockopt(socket, sockopt::RcvBufForce, &asked).is_err() {
            setsockopt(socket, sockopt::RcvBuf, &asked)?;
        }
    }
    Ok(granted(socket)?)
}

/// What the kernel grants `socket` now, halved back to what was asked.
fn granted(socket: &impl AsFd) -> nix::Result<usize> {
    nix::sys::socket::getsockopt(socket, sockopt::RcvBuf).map(|b| b / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn a_socket_gets_what_was_asked_or_what_the_kernel_allows() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = granted(&socket).unwrap();
        let asked = 2 * 1024 * 1024;
        let got = set(&socket, asked).unwrap();
        assert_eq!(got, granted(&socket).unwrap());
        // Forced (root with CAP_NET_ADMIN) it is all of it; otherwise
        // net.core.rmem_max caps it, and it is at least that.
        assert!(
            got >= asked.min(rmem_max()),
            "granted {got}, rmem_max {}",
            rmem_max()
        );
        assert!(got >= before.min(asked), "never less than before");
    }

    #[test]
    fn zero_keeps_the_kernels_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = granted(&socket).unwrap();
        assert_eq!(set(&socket, 0).unwrap(), before);
    }
}
