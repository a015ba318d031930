//! Metrics of operations, off the answer path: propagation lag buckets,
//! certificate expiry (read from the files at scrape time), a follower's
//! link to its upstream, and the build version.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry as PromRegistry;

/// Upper bounds of `meshdns_propagation_seconds`: from a syncer's coalesce
/// window (50ms) to a minute.
pub const PROPAGATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// `meshdns_build_info{version}`: 1.
pub fn build_info(version: &'static str) -> Family<VersionLabels, Gauge> {
    let family = Family::<VersionLabels, Gauge>::default();
    family.get_or_create(&VersionLabels { version }).set(1);
    family
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

/// `meshdns_tls_certificate_expiry_timestamp_seconds{certificate}`: the
/// notAfter of each configured certificate file, read at each scrape (a
/// few hundred microseconds), so a rotated file shows without a restart.
/// A file that cannot be read or parsed is left out (its absence is what
/// the alert's `absent()` companion would catch; the server logs it at
/// start).
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    files: Arc<Mutex<Vec<(&'static str, PathBuf)>>>,
}

impl Certificates {
    pub fn set(&self, files: Vec<(&'static str, PathBuf)>) {
        if let Ok(mut held) = self.files.lock() {
            *held = files;
        }
    }
}

impl Collector for Certificates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let files = match self.files.lock() {
            Ok(files) => files.clone(),
            Err(_) => return Ok(()),
        };
        let read: Vec<(&'static str, i64)> = files
            .iter()
            .filter_map(|(role, path)| {
                meshdns_proto::certificate::file_not_after(path)
                    .map_err(|e| tracing::debug!(certificate = role, error = %e, "certificate expiry unreadable"))
                    .ok()
                    .map(|t| (*role, t))
            })
            .collect();
        if read.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of a TLS certificate this process uses, as a Unix time (certificate: server, client_ca, follow_client)",
            None,
            MetricType::Gauge,
        )?;
        for (certificate, not_after) in read {
            let labels = CertificateLabels { certificate };
            metric.encode_family(&labels)?.encode_gauge(&not_after)?;
        }
        Ok(())
    }
}

/// Seconds since the unix-ms time in `at`, as a gauge read at scrape.
#[derive(Debug, Clone, Default)]
struct AgeGauge {
    at: Arc<AtomicU64>,
}

impl TypedMetric for AgeGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for AgeGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let age_ms = unix_ms().saturating_sub(self.at.load(Ordering::Relaxed));
        encoder.encode_gauge(&(age_ms as f64 / 1000.0))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A follower's link to its upstream (`serve --follow`): whether its
/// Watch stream is up, how long since it last heard from the upstream,
/// how long it has been cut off, reconnects, and the answers it served
/// while cut off for longer than `--follow-stale-after`.
#[derive(Debug, Clone)]
pub struct FollowerMetrics {
    upstream: Arc<str>,
    connected: Gauge<i64, AtomicI64>,
    last_event: AgeGauge,
    link: Arc<Link>,
    reconnects: Counter,
    stale_answers: Counter,
}

/// What the follow loop and its staleness ticker share with the answer
/// path: atomics only.
#[derive(Debug)]
struct Link {
    /// When the stream was lost (or the process started, before the
    /// first stream), in Unix ms; 0 while the stream is up.
    lost_at: AtomicU64,
    /// Cut off for longer than `--follow-stale-after`; set by the follow
    /// loop's ticker, read by every answer.
    stale: AtomicBool,
}

impl Link {
    fn cut_off_ms(&self) -> u64 {
        match self.lost_at.load(Ordering::Relaxed) {
            0 => 0,
            at => unix_ms().saturating_sub(at),
        }
    }
}

/// `meshdns_follow_disconnected_seconds`, read at scrape.
#[derive(Debug, Clone)]
struct CutOffGauge(Arc<Link>);

impl TypedMetric for CutOffGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for CutOffGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.0.cut_off_ms() as f64 / 1000.0))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// `meshdns_follow_stale`: the flag answers are counted by.
#[derive(Debug, Clone)]
struct StaleGauge(Arc<Link>);

impl TypedMetric for StaleGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for StaleGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&i64::from(self.0.stale.load(Ordering::Relaxed)))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl FollowerMetrics {
    pub(super) fn register(registry: &mut PromRegistry, upstream: &str) -> Self {
        let connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "follow_upstream_connected",
            "1 while this follower holds a Watch stream to its upstream that has sent its state, else 0",
            connected.clone(),
        );
        // Nothing heard yet: the clock starts with the process.
        let last_event = AgeGauge {
            at: Arc::new(AtomicU64::new(unix_ms())),
        };
        registry.register(
            "follow_last_event_age_seconds",
            "Seconds since this follower's last event from its upstream (a change, or the state on connect); grows on a quiet fleet too",
            last_event.clone(),
        );
        let link = Arc::new(Link {
            lost_at: AtomicU64::new(unix_ms()),
            stale: AtomicBool::new(false),
        });
        registry.register(
            "follow_disconnected_seconds",
            "Seconds since this follower lost its upstream's Watch stream (since start, before the first); 0 while connected",
            CutOffGauge(link.clone()),
        );
        registry.register(
            "follow_stale",
            "1 while this follower has been cut off from its upstream for longer than --follow-stale-after: it answers from its last state",
            StaleGauge(link.clone()),
        );
        let reconnects = Counter::default();
        registry.register(
            "follow_reconnects",
            "Attempts to reopen the Watch stream after it was lost or refused",
            reconnects.clone(),
        );
        let stale_answers = Counter::default();
        registry.register(
            "follow_stale_answers",
            "DNS answers served while this follower was stale (meshdns_follow_stale 1)",
            stale_answers.clone(),
        );
        FollowerMetrics {
            upstream: upstream.into(),
            connected,
            last_event,
            link,
            reconnects,
            stale_answers,
        }
    }

    /// The Watch stream sent its whole state (`true`), or ended (`false`).
    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
        if connected {
            self.link.lost_at.store(0, Ordering::Relaxed);
            self.link.stale.store(false, Ordering::Relaxed);
        } else {
            // Keep the first loss: a failed reconnect does not restart the clock.
            let _ = self.link.lost_at.compare_exchange(
                0,
                unix_ms().max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// An event came from the upstream.
    pub fn event(&self) {
        self.last_event.at.store(unix_ms(), Ordering::Relaxed);
    }

    /// Another attempt at the Watch stream after a loss.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Sets the stale flag from how long the stream has been lost;
    /// returns it.
    pub fn check_stale(&self, stale_after: Duration) -> bool {
        let stale = self.link.cut_off_ms() > stale_after.as_millis() as u64;
        self.link.stale.store(stale, Ordering::Relaxed);
        stale
    }

    /// One DNS answer served (the answer path's hook): counted when stale.
    /// An atomic load, and an atomic add when stale.
    #[inline]
    pub fn answered(&self) {
        if self.link.stale.load(Ordering::Relaxed) {
            self.stale_answers.inc();
        }
    }

    /// What `/readyz` and `ListClusters` report of the link.
    pub fn view(&self) -> FollowerView {
        FollowerView {
            upstream: self.upstream.to_string(),
            connected: self.connected.get() == 1,
            last_event_unix_ms: self.last_event.at.load(Ordering::Relaxed),
            disconnected: Duration::from_millis(self.link.cut_off_ms()),
            stale: self.link.stale.load(Ordering::Relaxed),
        }
    }
}

/// A follower's link to its upstream, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    pub upstream: String,
    pub connected: bool,
    pub last_event_unix_ms: u64,
    /// How long the stream has been lost; zero while connected.
    pub disconnected: Duration,
    /// Cut off for longer than `--follow-stale-after`.
    pub stale: bool,
}

/// One cluster as the per-cluster gauges show it.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    pub name: String,
    pub live: bool,
    pub connected: bool,
    pub last_heartbeat_unix_ms: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

/// `meshdns_cluster_live`, `meshdns_cluster_connected` and
/// `meshdns_cluster_heartbeat_age_seconds`, per cluster the registry knows
/// (bounded by the fleet; a purged cluster's series end). Set from the
/// registry's cluster list at each scrape.
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    rows: Arc<Mutex<Vec<ClusterRow>>>,
}

impl ClusterGauges {
    pub fn set(&self, rows: Vec<ClusterRow>) {
        if let Ok(mut held) = self.rows.lock() {
            *held = rows;
        }
    }
}

impl Collector for ClusterGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = match self.rows.lock() {
            Ok(rows) => rows.clone(),
            Err(_) => return Ok(()),
        };
        if rows.is_empty() {
            return Ok(());
        }
        type Flag = (&'static str, &'static str, fn(&ClusterRow) -> bool);
        let flags: [Flag; 2] = [
            (
                "cluster_live",
                "1 while the cluster is live (heard from within --cluster-ttl, its Snapshot accepted), 0 while stale",
                |r| r.live,
            ),
            (
                "cluster_connected",
                "1 while an Export stream from the cluster is open (on a follower: as its upstream says)",
                |r| r.connected,
            ),
        ];
        for (name, help, flag) in flags {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &rows {
                let labels = ClusterLabels {
                    cluster: row.name.clone(),
                };
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&i64::from(flag(row)))?;
            }
        }
        let now = unix_ms();
        let mut metric = encoder.encode_descriptor(
            "cluster_heartbeat_age_seconds",
            "Seconds since the last message from the cluster",
            None,
            MetricType::Gauge,
        )?;
        for row in &rows {
            let labels = ClusterLabels {
                cluster: row.name.clone(),
            };
            let age = now.saturating_sub(row.last_heartbeat_unix_ms) as f64 / 1000.0;
            metric.encode_family(&labels)?.encode_gauge(&age)?;
        }
        Ok(())
    }
}
