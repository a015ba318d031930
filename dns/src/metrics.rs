//! Prometheus metrics (`/metrics`), with prometheus-client.
//!
//! The answer path only increments atomics: every (qtype, rcode) counter is
//! created up front, and answer latency goes to a lock-free histogram of
//! our own ([`LatencyHistogram`]) because prometheus-client's takes a mutex
//! per observation. Registry gauges are read from the registry at scrape
//! time.
//!
//! Operators' questions have their own modules: [`answers`] (which tier
//! and which clusters answers came from), [`ops`] (propagation lag,
//! certificate expiry, a follower's upstream).

mod answers;
mod budget;
mod conflicts;
mod ops;
mod policy;

pub use answers::{AnswerTier, MAX_SERVED, Served, ServedByCluster, TIERS};
pub use budget::BudgetMetrics;
pub use conflicts::ConflictGauges;
pub use ops::{Certificates, ClusterGauges, ClusterRow, FollowerMetrics, FollowerView, unix_ms};
pub use policy::PolicyMetrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry as PromRegistry;

use crate::registry::Registry;

/// Query types counted by name; the rest are `other`.
pub const QTYPES: [&str; 10] = [
    "A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "ANY", "other", "none",
];
/// Response codes counted by name; the rest are `other`.
pub const RCODES: [&str; 8] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "BADVERS", "other",
];

/// The index into [`QTYPES`] of a numeric query type (`None`: no question).
pub fn qtype_index(qtype: Option<u16>) -> usize {
    match qtype {
        Some(1) => 0,
        Some(28) => 1,
        Some(33) => 2,
        Some(12) => 3,
        Some(16) => 4,
        Some(6) => 5,
        Some(2) => 6,
        Some(255) => 7,
        Some(_) => 8,
        None => 9,
    }
}

/// The index into [`RCODES`] of a (possibly extended) response code.
pub fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0 => 0,
        3 => 1,
        5 => 2,
        1 => 3,
        4 => 4,
        2 => 5,
        16 => 6,
        _ => 7,
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Upper bounds of the latency buckets, in seconds: 10 µs to ~82 ms.
const LATENCY_BOUNDS: [f64; 14] = [
    0.00001, 0.00002, 0.00004, 0.00008, 0.00016, 0.00032, 0.00064, 0.00128, 0.00256, 0.00512,
    0.01024, 0.02048, 0.04096, 0.08192,
];

/// A histogram of durations on atomics: observing never blocks. Clones
/// share the counts.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram {
    inner: std::sync::Arc<LatencyCounts>,
}

#[derive(Debug, Default)]
struct LatencyCounts {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.inner.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.inner
            .sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, bound) in LATENCY_BOUNDS
            .iter()
            .chain([f64::INFINITY].iter())
            .enumerate()
        {
            let n = self.inner.buckets[i].load(Ordering::Relaxed);
            count += n;
            buckets.push((*bound, n));
        }
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Every metric meshdns serves.
#[derive(Debug)]
pub struct Metrics {
    registry: PromRegistry,
    queries: Vec<Vec<Counter>>,
    latency: LatencyHistogram,
    stale_answers: Counter,
    ecs_queries: Counter,
    export_events: Family<EventLabels, Counter>,
    watch_events: Family<EventLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    snapshot_build: Histogram,
    writer_batch: Histogram,
    clusters: Family<StateLabels, Gauge>,
    services: Gauge,
    endpoints: Gauge,
    export_streams: Gauge,
    // Credentials (auth.rs, admin.rs).
    token_file_reloads: Family<ResultLabels, Counter>,
    fleet_file_reloads: Family<ResultLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    tokens_revoked: Counter,
    streams_revoked: Counter,
    admin_denied: Family<ResultLabels, Counter>,
    /// DNS abuse controls: rate limiting, TCP per-source refusals.
    pub abuse: AbuseCounters,
    // What answers were made of (answers.rs).
    tiers: Vec<Counter>,
    /// Answers by serving cluster, indexed by cluster id.
    pub served: ServedByCluster,
    // Operations (ops.rs).
    propagation: Histogram,
    certificates: Certificates,
    cluster_gauges: ClusterGauges,
    /// Set when this replica follows another registry (`--follow`).
    pub follower: Option<FollowerMetrics>,
    /// The clusterset's conflicts (conflicts.rs).
    pub conflicts: ConflictGauges,
    /// The traffic policy: reloads, the policy in force (policy.rs).
    pub policy: PolicyMetrics,
    /// The Export byte budget (budget.rs).
    pub budget: BudgetMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Counters of the DNS abuse controls (RRL, TCP per-source cap, TCP
/// closes); atomics.
#[derive(Debug, Clone, Default)]
pub struct AbuseCounters {
    /// UDP responses over `--rrl-rate`, not sent.
    pub rrl_dropped: Counter,
    /// UDP responses over `--rrl-rate`, sent truncated (slipped).
    pub rrl_slipped: Counter,
    /// UDP responses exempt from RRL: the query had a valid server cookie.
    pub cookie_verified: Counter,
    /// TCP connections closed at once: over `--max-tcp-connections-per-source`.
    pub tcp_refused_per_source: Counter,
    /// gRPC connections open now (against `--max-grpc-connections`).
    pub grpc_connections: Gauge,
    /// gRPC connections closed at once: over `--max-grpc-connections-per-source`.
    pub grpc_refused_per_source: Counter,
    /// TCP connections the server closed, by reason ([`Self::tcp_closed`]).
    tcp_closed: Family<ReasonLabels, Counter>,
}

impl AbuseCounters {
    fn register(registry: &mut PromRegistry) -> Self {
        let counters = AbuseCounters::default();
        registry.register(
            "dns_rrl_dropped",
            "UDP responses over --rrl-rate for their source prefix, dropped",
            counters.rrl_dropped.clone(),
        );
        registry.register(
            "dns_rrl_slipped",
            "UDP responses over --rrl-rate for their source prefix, sent truncated (--rrl-slip)",
            counters.rrl_slipped.clone(),
        );
        registry.register(
            "dns_cookie_verified",
            "Queries with a valid server cookie (RFC 7873), exempt from rate limiting",
            counters.cookie_verified.clone(),
        );
        registry.register(
            "dns_tcp_refused_per_source",
            "DNS-over-TCP connections closed on accept: over --max-tcp-connections-per-source",
            counters.tcp_refused_per_source.clone(),
        );
        registry.register(
            "grpc_connections",
            "gRPC connections open now, at most --max-grpc-connections (more wait to be accepted)",
            counters.grpc_connections.clone(),
        );
        registry.register(
            "grpc_refused_per_source",
            "gRPC connections closed on accept: over --max-grpc-connections-per-source",
            counters.grpc_refused_per_source.clone(),
        );
        // Every reason shows from the first scrape, at 0.
        for reason in TCP_CLOSE_REASONS {
            let _ = counters.tcp_closed.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        registry.register(
            "dns_tcp_closed",
            "DNS-over-TCP connections closed by the server: idle (no answered query for --tcp-idle-timeout), lifetime (--max-tcp-connection-lifetime), slow_reader (replies not taken within --tcp-idle-timeout)",
            counters.tcp_closed.clone(),
        );
        counters
    }

    /// A TCP connection the server closed, for `reason` (one of
    /// [`TCP_CLOSE_REASONS`]); once per connection, not per query.
    pub fn tcp_closed(&self, reason: &'static str) {
        self.tcp_closed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Why the server closes a DNS-over-TCP connection.
pub const TCP_CLOSE_REASONS: [&str; 3] = ["idle", "lifetime", "slow_reader"];

/// What the answer path reports about one reply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub qtype: Option<u16>,
    pub rcode: u16,
    /// Answered from clusters that are all stale (fail open).
    pub fail_open: bool,
    /// The query carried an EDNS Client Subnet option.
    pub ecs: bool,
    /// The query carried a valid server cookie (RFC 7873): exempt from RRL.
    pub cookie: bool,
    /// The tier the answer's records came from; `None` for answers that
    /// are not a selection (negative, apex, a named cluster or host).
    pub tier: Option<AnswerTier>,
    /// The clusters whose endpoints the answer carried.
    pub served: Served,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("meshdns");
        let family: Family<QueryLabels, Counter> = Family::default();
        let queries = QTYPES
            .iter()
            .map(|qtype| {
                RCODES
                    .iter()
                    .map(|rcode| family.get_or_create_owned(&QueryLabels { qtype, rcode }))
                    .collect()
            })
            .collect();
        registry.register(
            "dns_queries",
            "DNS queries answered, by query type and response code",
            family,
        );
        let latency = LatencyHistogram::default();
        registry.register(
            "dns_answer_duration_seconds",
            "Time from a query's arrival to its answer being ready",
            latency.clone(),
        );
        let stale_answers = Counter::default();
        registry.register(
            "dns_stale_answers",
            "Answers served from stale clusters because every cluster holding the service was stale (fail open)",
            stale_answers.clone(),
        );
        let ecs_queries = Counter::default();
        registry.register(
            "dns_ecs_queries",
            "Queries carrying an EDNS Client Subnet option",
            ecs_queries.clone(),
        );
        let export_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "export_stream_events",
            "Export stream events: opened, closed, superseded, refused (bad Hello)",
            export_events.clone(),
        );
        let watch_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "watch_stream_events",
            "Watch stream events: opened, closed, over_limit (--max-watch-streams), stalled (cut off by --watch-stall-timeout), resynced (fell behind, sent a fresh Reset)",
            watch_events.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        // The fleet's policy refusals exist from the start (at 0), so an
        // alert's rate() sees their first increase; validation reasons
        // appear when they first happen.
        for reason in ["client_cidr", "not_allowed", "limit_services"] {
            let _ = refused.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        registry.register(
            "export_refused_items",
            "Export items refused, by reason",
            refused.clone(),
        );
        let snapshot_build = Histogram::new(exponential_buckets(0.00001, 4.0, 10));
        registry.register(
            "snapshot_build_duration_seconds",
            "Time to build and publish a registry snapshot",
            snapshot_build.clone(),
        );
        let writer_batch = Histogram::new(exponential_buckets(1.0, 4.0, 6));
        registry.register(
            "registry_writer_batch_size",
            "Writes the registry's writer applied under one publish",
            writer_batch.clone(),
        );
        let clusters = Family::<StateLabels, Gauge>::default();
        registry.register(
            "clusters",
            "Clusters known to the registry, by state",
            clusters.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "services",
            "Global services (namespace/name) served",
            services.clone(),
        );
        let endpoints = Gauge::default();
        registry.register(
            "endpoints",
            "Endpoints exported, all clusters",
            endpoints.clone(),
        );
        let export_streams = Gauge::default();
        registry.register(
            "export_streams",
            "Export streams open now",
            export_streams.clone(),
        );
        let token_file_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_file_reloads",
            "Token file contents read after a change: applied, or rejected (unreadable, unparsable or empty; the previous tokens kept)",
            token_file_reloads.clone(),
        );
        let fleet_file_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "fleet_file_reloads",
            "Fleet file (--clusters) contents read after a change: applied, or rejected (unreadable, over its 1 MiB cap or unparsable; the rules in force kept)",
            fleet_file_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate, key and client CA files read after a change: applied, or rejected (unreadable, unparsable, or a key that is not the certificate's; the current ones kept)",
            tls_reloads.clone(),
        );
        let tokens_revoked = Counter::default();
        registry.register(
            "tokens_revoked",
            "Bearer tokens revoked by a token file reload (removed, or naming another principal)",
            tokens_revoked.clone(),
        );
        let streams_revoked = Counter::default();
        registry.register(
            "streams_revoked",
            "Export and Watch streams ended because their credential was revoked or expired",
            streams_revoked.clone(),
        );
        let admin_denied = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admin_debug_denied",
            "/debug requests refused: unauthenticated (no or unknown token) or forbidden (not a reader)",
            admin_denied.clone(),
        );
        let abuse = AbuseCounters::register(&mut registry);
        let tier_family: Family<TierLabels, Counter> = Family::default();
        let tiers = TIERS
            .iter()
            .map(|tier| tier_family.get_or_create_owned(&TierLabels { tier }))
            .collect();
        registry.register(
            "dns_answers_by_tier",
            "Positive answers to a service name by the locality tier chosen: cluster, zone, region, any; unknown_asker (the asker maps to no cluster); fail_open (every cluster holding the service is stale)",
            tier_family,
        );
        let served = ServedByCluster::default();
        registry.register(
            "dns_answers_by_cluster",
            "Answers that carried at least one record from the cluster (label: serving cluster)",
            served.clone(),
        );
        let propagation = Histogram::new(ops::PROPAGATION_BUCKETS.iter().copied());
        registry.register(
            "propagation_seconds",
            "From a syncer seeing its source change to the change answering DNS here (syncer and hub clocks; Deltas from syncers that stamp them)",
            propagation.clone(),
        );
        let certificates = Certificates::default();
        registry.register_collector(Box::new(certificates.clone()));
        let cluster_gauges = ClusterGauges::default();
        registry.register_collector(Box::new(cluster_gauges.clone()));
        registry.register(
            "build_info",
            "The running version (value 1)",
            ops::build_info(env!("CARGO_PKG_VERSION")),
        );
        let conflicts = ConflictGauges::register(&mut registry);
        let policy = PolicyMetrics::register(&mut registry);
        let budget = BudgetMetrics::register(&mut registry);
        Metrics {
            budget,
            conflicts,
            policy,
            tiers,
            served,
            propagation,
            certificates,
            cluster_gauges,
            follower: None,
            abuse,
            registry,
            token_file_reloads,
            fleet_file_reloads,
            tls_reloads,
            tokens_revoked,
            streams_revoked,
            admin_denied,
            queries,
            latency,
            stale_answers,
            ecs_queries,
            export_events,
            watch_events,
            refused,
            snapshot_build,
            writer_batch,
            clusters,
            services,
            endpoints,
            export_streams,
        }
    }

    /// Records one answered query. Lock-free.
    pub fn answered(&self, outcome: &Outcome, elapsed: Duration) {
        self.queries[qtype_index(outcome.qtype)][rcode_index(outcome.rcode)].inc();
        self.latency.observe(elapsed);
        if outcome.fail_open {
            self.stale_answers.inc();
        }
        if outcome.ecs {
            self.ecs_queries.inc();
        }
        if outcome.cookie {
            self.abuse.cookie_verified.inc();
        }
        if let Some(tier) = outcome.tier {
            self.tiers[tier.index()].inc();
        }
        self.served.record(&outcome.served);
        if let Some(follower) = &self.follower {
            follower.answered();
        }
    }

    /// This replica follows `upstream`: it exposes its link to it
    /// (`meshdns_follow_*`). Before the metrics are shared.
    pub fn with_follower(mut self, upstream: &str) -> Self {
        self.follower = Some(FollowerMetrics::register(&mut self.registry, upstream));
        self
    }

    /// Certificates whose notAfter `/metrics` reports, by role (`server`,
    /// `client_ca`, `follow_client`): read from their files at each
    /// scrape, so a rotated certificate shows at once.
    pub fn with_certificates(self, files: Vec<(&'static str, std::path::PathBuf)>) -> Self {
        self.certificates.set(files);
        self
    }

    /// A change stamped by its syncer at `observed_unix_ms` answers DNS
    /// now. Unstamped changes (0: old syncers, restated Snapshots) are not
    /// counted; a syncer clock ahead of ours counts as 0.
    pub fn propagated(&self, observed_unix_ms: u64) {
        if observed_unix_ms == 0 {
            return;
        }
        let lag_ms = unix_ms().saturating_sub(observed_unix_ms);
        self.propagation.observe(lag_ms as f64 / 1000.0);
    }

    pub fn export_event(&self, event: &'static str) {
        self.export_events
            .get_or_create(&EventLabels { event })
            .inc();
    }

    pub fn watch_event(&self, event: &'static str) {
        self.watch_events
            .get_or_create(&EventLabels { event })
            .inc();
    }

    /// Counts a refused item under a short reason (the problem, without
    /// the values that make every message unique).
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A TLS files reload: `applied` or `rejected`.
    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A token file reload: `applied` or `rejected`.
    pub fn token_file_reload(&self, result: &'static str) {
        self.token_file_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A fleet file reload: `applied` or `rejected` (once per new
    /// content or new error, as it is logged).
    pub fn fleet_file_reload(&self, result: &'static str) {
        self.fleet_file_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn tokens_revoked(&self, count: u64) {
        self.tokens_revoked.inc_by(count);
    }

    /// A stream ended because its credential was revoked or expired.
    pub fn stream_revoked(&self) {
        self.streams_revoked.inc();
    }

    /// A refused `/debug` request: `unauthenticated` or `forbidden`.
    pub fn admin_denied(&self, result: &'static str) {
        self.admin_denied
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn snapshot_built(&self, elapsed: Duration) {
        self.snapshot_build.observe(elapsed.as_secs_f64());
    }

    /// One writer batch of `jobs` was applied and published.
    pub fn writer_batch(&self, jobs: usize) {
        self.writer_batch.observe(jobs as f64);
    }

    /// The Prometheus text exposition, with registry gauges read now.
    pub fn render(&self, registry: &Registry) -> String {
        let clusters = registry.clusters();
        let stale = clusters.iter().filter(|c| c.stale).count() as i64;
        self.clusters
            .get_or_create(&StateLabels { state: "live" })
            .set(clusters.len() as i64 - stale);
        self.clusters
            .get_or_create(&StateLabels { state: "stale" })
            .set(stale);
        self.export_streams
            .set(clusters.iter().filter(|c| c.connected).count() as i64);
        self.endpoints
            .set(clusters.iter().map(|c| c.endpoints as i64).sum());
        self.cluster_gauges.set(
            clusters
                .iter()
                .map(|c| ClusterRow {
                    name: c.cluster.name.to_string(),
                    live: !c.stale,
                    connected: c.connected,
                    last_heartbeat_unix_ms: c.last_heartbeat_unix_ms,
                })
                .collect(),
        );
        let snapshot = registry.snapshot();
        self.services.set(snapshot.len() as i64);
        self.policy.set(registry.policy());
        self.served.name_clusters(
            snapshot
                .locality
                .places()
                .map(|p| (p.id, p.name.to_string()))
                .collect(),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_is_cumulative_once() {
        let metrics = Metrics::new();
        let outcome = Outcome {
            qtype: Some(1),
            rcode: 0,
            fail_open: true,
            ecs: false,
            cookie: false,
            ..Outcome::default()
        };
        metrics.answered(&outcome, Duration::from_micros(5));
        metrics.answered(&outcome, Duration::from_micros(50));
        metrics.answered(
            &Outcome {
                rcode: 3,
                ..outcome
            },
            Duration::from_secs(1),
        );
        let text = metrics.render(&Registry::new(
            5,
            false,
            std::sync::Arc::new(Metrics::new()),
        ));
        assert!(
            text.contains("meshdns_dns_answer_duration_seconds_bucket{le=\"0.00001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshdns_dns_answer_duration_seconds_bucket{le=\"0.00008\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meshdns_dns_answer_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("meshdns_dns_answer_duration_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains("meshdns_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"} 1"),
            "{text}"
        );
        assert!(text.contains("meshdns_dns_stale_answers_total 3"), "{text}");
    }

    #[test]
    fn a_follower_counts_answers_only_while_stale() {
        let metrics = Metrics::new().with_follower("http://hub:7443");
        let registry = Registry::new(5, false, std::sync::Arc::new(Metrics::new()));
        let follower = metrics.follower.clone().unwrap();
        let outcome = Outcome::default();
        // Never connected, but not past --follow-stale-after yet.
        assert!(!follower.check_stale(Duration::from_secs(3600)));
        metrics.answered(&outcome, Duration::from_micros(5));
        // Cut off past the threshold (a millisecond at least, on the
        // millisecond clock): answers count as stale.
        std::thread::sleep(Duration::from_millis(5));
        assert!(follower.check_stale(Duration::ZERO));
        metrics.answered(&outcome, Duration::from_micros(5));
        metrics.answered(&outcome, Duration::from_micros(5));
        let text = metrics.render(&registry);
        assert!(text.contains("meshdns_follow_stale 1"), "{text}");
        assert!(
            text.contains("meshdns_follow_stale_answers_total 2"),
            "{text}"
        );
        // Connected again: fresh at once, and no longer counted.
        follower.set_connected(true);
        metrics.answered(&outcome, Duration::from_micros(5));
        let text = metrics.render(&registry);
        assert!(text.contains("meshdns_follow_stale 0"), "{text}");
        assert!(
            text.contains("meshdns_follow_stale_answers_total 2"),
            "{text}"
        );
        assert!(
            text.contains("meshdns_follow_disconnected_seconds 0.0"),
            "{text}"
        );
        let view = follower.view();
        assert!(view.connected && !view.stale && view.upstream == "http://hub:7443");
        // Lost again: the clock starts at the loss, and a failed retry
        // does not restart it.
        follower.set_connected(false);
        follower.reconnect();
        follower.set_connected(false);
        assert!(!follower.view().connected);
        assert!(
            metrics
                .render(&registry)
                .contains("meshdns_follow_reconnects_total 1")
        );
    }

    #[test]
    fn operators_metrics_render_per_cluster_and_per_tier() {
        use meshdns_proto::model::{Cluster, ClusterName};
        let metrics = std::sync::Arc::new(Metrics::new());
        let registry = Registry::new(5, false, metrics.clone());
        let session = registry
            .hello(
                Cluster {
                    name: ClusterName::new("east-1").unwrap(),
                    region: None,
                    zone: None,
                    client_cidrs: vec![],
                    version: "test".into(),
                    provider: None,
                    nodes: Vec::new(),
                },
                usize::MAX,
            )
            .0;
        registry
            .apply_snapshot(&session, vec![], &Default::default())
            .unwrap();
        let id = registry.snapshot().locality.places().next().unwrap().id;
        let mut served = Served::default();
        served.add(id);
        let outcome = Outcome {
            qtype: Some(1),
            tier: Some(AnswerTier::of(crate::select::Tier::Zone, true, false)),
            served,
            ..Outcome::default()
        };
        metrics.answered(&outcome, Duration::from_micros(5));
        metrics.propagated(unix_ms() - 30);
        metrics.propagated(0);
        let text = metrics.render(&registry);
        for line in [
            "meshdns_dns_answers_by_tier_total{tier=\"zone\"} 1",
            "meshdns_dns_answers_by_tier_total{tier=\"fail_open\"} 0",
            "meshdns_dns_answers_by_cluster_total{cluster=\"east-1\"} 1",
            "meshdns_cluster_live{cluster=\"east-1\"} 1",
            "meshdns_cluster_connected{cluster=\"east-1\"} 1",
            "meshdns_propagation_seconds_count 1",
            "meshdns_propagation_seconds_bucket{le=\"0.05\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains("meshdns_build_info{version=\""), "{text}");
        assert!(text.contains("meshdns_cluster_heartbeat_age_seconds{cluster=\"east-1\"}"));
        // Not a follower: no upstream link to report.
        assert!(!text.contains("meshdns_follow_"), "{text}");
        let follower = Metrics::new().with_follower("http://127.0.0.1:7443");
        let text = follower.render(&registry);
        assert!(
            text.contains("meshdns_follow_upstream_connected 0"),
            "{text}"
        );
    }
}
