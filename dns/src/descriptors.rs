//! File descriptors against the connection caps. Every connection the hub
//! accepts is a descriptor, so `--max-tcp-connections`,
//! `--max-grpc-connections` and the admin port's cap bound what a flood of
//! connections can take only if the process may open that many and more.
//! An audit took every descriptor of a hub run under `ulimit -n 512` with
//! idle connections: DNS over TCP, gRPC and `/healthz` all stopped.
//!
//! At start the soft limit is raised to the hard one (as servers commonly
//! do: raising it needs no privilege) and, if that is still below what the
//! caps allow plus a margin for the hub's own files and sockets, the hub
//! says so once, naming the flags to lower or the limit to raise.

/// Descriptors kept for the hub's own use beside connections: listeners,
/// UDP sockets, the state, token, fleet and policy files, the runtime's.
pub const MARGIN: u64 = 256;

/// What to do with the soft limit `soft` under hard limit `hard` (`None`:
/// unlimited) for `needed` descriptors: the soft limit to set (if any) and
/// whether it still falls short.
pub fn plan(soft: Option<u64>, hard: Option<u64>, needed: u64) -> (Option<u64>, bool) {
    let raise = match (soft, hard) {
        (Some(s), Some(h)) if s < h => Some(h),
        // No hard limit: as many as needed (the kernel's nr_open still caps it).
        (Some(s), None) if s < needed => Some(needed),
        _ => None,
    };
    let effective = raise.or(soft);
    (raise, effective.is_some_and(|limit| limit < needed))
}

/// Raises the soft `RLIMIT_NOFILE` to its hard limit and warns when that
/// is below `connections` + [`MARGIN`]. Returns the limit in force
/// (`None`: unlimited).
pub fn raise_for(connections: u64) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = connections.saturating_add(MARGIN);
    let now = getrlimit(Resource::Nofile);
    let (raise, short) = plan(now.current, now.maximum, needed);
    let mut limit = now.current;
    if let Some(to) = raise {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(to),
                maximum: now.maximum,
            },
        ) {
            Ok(()) => limit = Some(to),
            Err(e) => tracing::warn!(error = %e, "could not raise the file-descriptor limit"),
        }
    }
    // Short as planned, or because the raise was refused.
    let short = short || limit.is_some_and(|l| l < needed);
    if short && let Some(limit) = limit {
        tracing::warn!(
            limit,
            needed,
            "the file-descriptor limit is below what the connection caps allow (--max-tcp-connections per DNS listener, --max-grpc-connections, 256 admin) plus {MARGIN} for the hub's own: a flood of connections can take every descriptor; raise `ulimit -n` (the hard limit) or lower those caps"
        );
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_and_a_shortfall_is_said() {
        // Raised to the hard limit, which is enough.
        assert_eq!(plan(Some(1024), Some(65536), 6000), (Some(65536), false));
        // Raised, still short.
        assert_eq!(plan(Some(512), Some(512), 6000), (None, true));
        assert_eq!(plan(Some(256), Some(4096), 6000), (Some(4096), true));
        // Unlimited either way: nothing to do, nothing short.
        assert_eq!(plan(None, None, 6000), (None, false));
        assert_eq!(plan(Some(100_000), None, 6000), (None, false));
        assert_eq!(plan(Some(1024), None, 6000), (Some(6000), false));
        // Already at the hard limit and enough.
        assert_eq!(plan(Some(8192), Some(8192), 6000), (None, false));
    }
}
