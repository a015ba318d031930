//! A restart from `--state-file`: every saved cluster comes back by the
//! liveness rule that holds while running, *stale after `cluster_ttl` of
//! silence*, with the silence measured in wall-clock time across the
//! restart. The state file holds, per cluster, when the hub last heard
//! from it (Unix milliseconds) and whether it was stale then; a cluster
//! that was live and heard within `cluster_ttl` of now comes back live,
//! its deadline the rest of the ttl. Any other (stale when saved, silent
//! too long, no saved time, a saved time ahead of this clock) comes back
//! stale, served fail-open until its syncer reconnects and purged after
//! `stale_grace` if it never does. A live restored cluster's syncer
//! back with a Hello is heard from once (`registry/session.rs`), so its
//! Snapshot may wait its turn in the reconnect storm.
//!
//! A follower restores every cluster stale, as its upstream's next Reset
//! decides (it never judges liveness itself).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshdns_proto::model::{ClusterName, ServiceExport};
use tracing::warn;

use super::{MirroredCluster, Registry, State, unix_ms};

/// A saved time this far ahead of the clock is taken as now (clocks of
/// two processes on one host, or a step of NTP); further ahead, the clock
/// went back and the time is not trusted.
pub const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// The clocks and the ttl a restore judges saved clusters by.
#[derive(Debug, Clone, Copy)]
pub struct RestoreClock {
    /// `--cluster-ttl`.
    pub cluster_ttl: Duration,
    /// Now, on the clock liveness runs on.
    pub now: Instant,
    /// Now, on the wall clock the state file's times are on.
    pub now_unix_ms: u64,
}

impl RestoreClock {
    /// The clocks as they read now.
    pub fn now(cluster_ttl: Duration) -> Self {
        RestoreClock {
            cluster_ttl,
            now: Instant::now(),
            now_unix_ms: unix_ms(),
        }
    }
}

/// How one saved cluster comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Live and heard within the ttl: live, silent this long already.
    Live { silent: Duration },
    /// Stale when saved, never heard (a file without times), or silent
    /// for the ttl or longer.
    Stale,
    /// Heard "later than now" by more than [`CLOCK_SLACK`]: the clock went
    /// back, and the time says nothing.
    Future,
}

/// The verdict on a cluster saved `stale` and last heard at
/// `heard_unix_ms` (0: no time saved).
pub fn verdict(stale: bool, heard_unix_ms: u64, clock: &RestoreClock) -> Verdict {
    if heard_unix_ms == 0 {
        return Verdict::Stale;
    }
    let ahead = heard_unix_ms.saturating_sub(clock.now_unix_ms);
    if Duration::from_millis(ahead) > CLOCK_SLACK {
        return Verdict::Future;
    }
    let silent = Duration::from_millis(clock.now_unix_ms.saturating_sub(heard_unix_ms));
    if stale || silent >= clock.cluster_ttl {
        Verdict::Stale
    } else {
        Verdict::Live { silent }
    }
}

/// What a restore made of the saved clusters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoredLiveness {
    pub live: usize,
    pub stale: usize,
    /// Of the stale: saved with a time ahead of the clock.
    pub future: usize,
}

impl Registry {
    /// Loads saved clusters, each live or stale by `clock` (see the module
    /// doc); with no clock (a follower), every one stale. Stale ones are
    /// served fail-open until their syncers reconnect and purged after the
    /// grace period if they never do; live ones turn stale at their
    /// deadline unless heard from.
    pub fn restore(
        &self,
        clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>,
        clock: Option<RestoreClock>,
    ) -> RestoredLiveness {
        let mut summary = RestoredLiveness::default();
        // The live ones, and when they were last heard on the Instant clock.
        let mut heard: BTreeMap<ClusterName, Instant> = BTreeMap::new();
        let judged = clusters
            .into_iter()
            .map(|(m, services)| {
                let since = clock.and_then(|clock| {
                    match verdict(m.stale, m.last_heartbeat_unix_ms, &clock) {
                        // An Instant that far back does not exist (just
                        // after boot): stale, as before.
                        Verdict::Live { silent } => clock.now.checked_sub(silent),
                        Verdict::Future => {
                            summary.future += 1;
                            None
                        }
                        Verdict::Stale => None,
                    }
                });
                match since {
                    Some(at) => {
                        summary.live += 1;
                        heard.insert(m.cluster.name.clone(), at);
                    }
                    None => summary.stale += 1,
                }
                let restored = MirroredCluster {
                    stale: since.is_none(),
                    connected: false,
                    ..m
                };
                (restored, services)
            })
            .collect();
        self.write(|state, dirty| {
            Self::mirror_reset_in(state, dirty, judged);
            let State {
                clusters, claims, ..
            } = &mut *state;
            for (name, entry) in clusters.iter_mut() {
                // Owned by this registry again: Export sessions decide from now.
                entry.upstream_connected = None;
                // Silence counts from when it was last heard, not from now.
                if let Some(at) = heard.get(name) {
                    entry.last_seen = *at;
                }
                // Restored clusters hold their client CIDRs as before the
                // restart: a newcomer cannot claim them while they are stale.
                entry.cluster.client_cidrs.retain(|net| {
                    let free = claims.overlapping(net, name).is_none();
                    if free {
                        claims.insert(net, name);
                    }
                    free
                });
            }
        });
        if summary.future > 0 {
            warn!(
                clusters = summary.future,
                slack_ms = CLOCK_SLACK.as_millis() as u64,
                "the state file says clusters were heard from later than now: the clock went back; those clusters are restored stale"
            );
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use meshdns_proto::fixtures;
    use meshdns_proto::model::{Endpoint, Policy};

    use super::*;
    use crate::registry::Liveness;

    const TTL: Duration = Duration::from_secs(15);
    /// A wall clock well past any test's own.
    const NOW_MS: u64 = 1_900_000_000_000;

    fn clock() -> RestoreClock {
        RestoreClock {
            cluster_ttl: TTL,
            now: Instant::now(),
            now_unix_ms: NOW_MS,
        }
    }

    #[test]
    fn a_live_cluster_heard_within_the_ttl_is_live_and_nothing_else_is() {
        let c = clock();
        let ago = |ms: u64| NOW_MS - ms;
        assert_eq!(
            verdict(false, ago(4_000), &c),
            Verdict::Live {
                silent: Duration::from_secs(4)
            }
        );
        assert_eq!(
            verdict(false, ago(0), &c),
            Verdict::Live {
                silent: Duration::ZERO
            }
        );
        assert_eq!(
            verdict(false, ago(14_999), &c),
            Verdict::Live {
                silent: Duration::from_millis(14_999)
            }
        );
        // Silent for the ttl: stale, as the sweep would have made it.
        assert_eq!(verdict(false, ago(15_000), &c), Verdict::Stale);
        assert_eq!(verdict(false, ago(3_600_000), &c), Verdict::Stale);
        // Stale when saved stays stale, however recent.
        assert_eq!(verdict(true, ago(10), &c), Verdict::Stale);
        // No time saved (a file from before the times): stale, as before.
        assert_eq!(verdict(false, 0, &c), Verdict::Stale);
    }

    #[test]
    fn a_saved_time_ahead_of_the_clock_is_trusted_only_within_the_slack() {
        let c = clock();
        assert_eq!(
            verdict(false, NOW_MS + 800, &c),
            Verdict::Live {
                silent: Duration::ZERO
            }
        );
        assert_eq!(
            verdict(false, NOW_MS + 1_000, &c),
            Verdict::Live {
                silent: Duration::ZERO
            }
        );
        assert_eq!(verdict(false, NOW_MS + 1_001, &c), Verdict::Future);
        assert_eq!(verdict(false, NOW_MS + 86_400_000, &c), Verdict::Future);
        assert_eq!(verdict(true, NOW_MS + 86_400_000, &c), Verdict::Future);
    }

    fn saved(
        name: &str,
        stale: bool,
        heard_unix_ms: u64,
        octet: u8,
    ) -> (MirroredCluster, Vec<ServiceExport>) {
        let web = fixtures::http_export(
            fixtures::key("shop", "web"),
            vec![Endpoint::ready(std::net::IpAddr::from([10, octet, 0, 1]))],
            Policy::default(),
        );
        (
            MirroredCluster {
                cluster: fixtures::cluster(name),
                stale,
                connected: true,
                last_heartbeat_unix_ms: heard_unix_ms,
            },
            vec![web],
        )
    }

    fn registry() -> Registry {
        Registry::new(5, false, Arc::new(crate::metrics::Metrics::new()))
    }

    fn stale_of(registry: &Registry) -> BTreeMap<String, bool> {
        registry
            .clusters()
            .into_iter()
            .map(|c| (c.cluster.name.to_string(), c.stale))
            .collect()
    }

    /// Every answer's parts: (cluster, stale).
    fn parts(registry: &Registry) -> BTreeSet<(String, bool)> {
        let snapshot = registry.snapshot();
        snapshot
            .services()
            .flat_map(|v| {
                v.clusters
                    .iter()
                    .map(|p| (p.name().to_string(), p.stale()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn clusters_come_back_live_or_stale_by_their_silence() {
        let c = clock();
        let hub = registry();
        let summary = hub.restore(
            vec![
                saved("recent", false, NOW_MS - 2_000, 1),
                saved("old", false, NOW_MS - 20_000, 2),
                saved("was-stale", true, NOW_MS - 1_000, 3),
                saved("no-time", false, 0, 4),
                saved("ahead", false, NOW_MS + 60_000, 5),
            ],
            Some(c),
        );
        assert_eq!(
            summary,
            RestoredLiveness {
                live: 1,
                stale: 4,
                future: 1
            }
        );
        let expect: BTreeMap<String, bool> = [
            ("ahead", true),
            ("no-time", true),
            ("old", true),
            ("recent", false),
            ("was-stale", true),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
        assert_eq!(
            stale_of(&hub),
            expect,
            "ListClusters, readiness and metrics read this"
        );
        // Answers: the live cluster's part is live.
        assert!(parts(&hub).contains(&("recent".to_owned(), false)));
        assert!(parts(&hub).contains(&("old".to_owned(), true)));
        // The saved times are shown as they were.
        let heard: BTreeMap<String, u64> = hub
            .clusters()
            .into_iter()
            .map(|c| (c.cluster.name.to_string(), c.last_heartbeat_unix_ms))
            .collect();
        assert_eq!(heard["recent"], NOW_MS - 2_000);
    }

    #[test]
    fn without_a_clock_every_cluster_is_stale() {
        let hub = registry();
        let summary = hub.restore(vec![saved("recent", false, unix_ms(), 1)], None);
        assert_eq!(summary.live, 0);
        assert!(stale_of(&hub)["recent"]);
    }

    #[test]
    fn a_restored_live_cluster_goes_stale_one_ttl_after_it_was_last_heard() {
        let c = clock();
        let hub = registry();
        hub.restore(vec![saved("recent", false, NOW_MS - 5_000, 1)], Some(c));
        let liveness = Liveness {
            cluster_ttl: TTL,
            stale_grace: Duration::from_secs(3600),
        };
        // 9.9 s from now it has been silent 14.9 s: still live.
        hub.sweep(c.now + Duration::from_millis(9_900), liveness);
        assert!(!stale_of(&hub)["recent"]);
        // 10 s from now, 15 s: stale.
        hub.sweep(c.now + Duration::from_secs(10), liveness);
        assert!(stale_of(&hub)["recent"]);
        assert!(parts(&hub).contains(&("recent".to_owned(), true)));
    }

    /// A syncer back after the restart keeps its live cluster live from
    /// its Hello while its Snapshot waits in the storm: once, not at
    /// every reconnect.
    #[test]
    fn a_hello_for_a_live_restored_cluster_counts_once_as_a_sign_of_life() {
        let c = RestoreClock::now(TTL);
        let hub = registry();
        let heard = c.now_unix_ms - 14_000;
        hub.restore(vec![saved("a", false, heard, 1)], Some(c));
        let liveness = Liveness {
            cluster_ttl: TTL,
            stale_grace: Duration::from_secs(3600),
        };
        let (_first, _) = hub.hello(fixtures::cluster("a"), usize::MAX);
        let after_first = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        let (_second, _) = hub.hello(fixtures::cluster("a"), usize::MAX);
        // Without the Hello it would be stale 1 s after the restore.
        hub.sweep(c.now + Duration::from_secs(5), liveness);
        assert!(!stale_of(&hub)["a"], "the Hello was a sign of life");
        // The second Hello did not count: one ttl after the first, stale.
        hub.sweep(after_first + TTL + Duration::from_millis(50), liveness);
        assert!(stale_of(&hub)["a"], "a second Hello counted");
    }

    /// A syncer that reconnects to a live restored cluster with the same
    /// Snapshot changes no service view: the views are the restored ones.
    #[test]
    fn an_equal_snapshot_for_a_live_restored_cluster_builds_no_view() {
        let hub = registry();
        let now = unix_ms();
        let (a, b) = (
            saved("a", false, now - 1_000, 1),
            saved("b", false, now - 1_000, 2),
        );
        let exports = a.1.clone();
        hub.restore(vec![a, b], Some(RestoreClock::now(TTL)));
        let key = fixtures::key("shop", "web");
        let before = hub.snapshot().view(&key).cloned().unwrap();
        assert_eq!(before.clusters.len(), 2);
        let (session, _) = hub.hello(fixtures::cluster("a"), usize::MAX);
        hub.apply_snapshot(&session, exports, &BTreeSet::new())
            .unwrap();
        let after = hub.snapshot().view(&key).cloned().unwrap();
        assert!(Arc::ptr_eq(&before, &after), "the view was rebuilt");
        // A changed Snapshot is applied as usual.
        let changed = fixtures::http_export(
            key.clone(),
            vec![Endpoint::ready(std::net::IpAddr::from([10, 9, 9, 9]))],
            Policy::default(),
        );
        hub.apply_snapshot(&session, vec![changed], &BTreeSet::new())
            .unwrap();
        let rebuilt = hub.snapshot().view(&key).cloned().unwrap();
        assert!(!Arc::ptr_eq(&after, &rebuilt));
    }
}
