//! Latency percentiles of a bench's samples, in milliseconds.

use std::time::Duration;

/// The `q` quantile (0 to 1) of `sorted`, in milliseconds; 0 when empty.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `n=… p50=…ms p99=…ms max=…ms`, the line the fan-out and load benches
/// print (benches/*.sh read it).
pub fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        times.len(),
        quantile_ms(&times, 0.5),
        quantile_ms(&times, 0.99),
        quantile_ms(&times, 1.0)
    )
}

/// `p50 … ms, p99 … ms, max … ms`, the form the capacity and scale benches
/// print.
pub fn spread(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quantile_ms(times, 0.5),
        quantile_ms(times, 0.99),
        quantile_ms(times, 1.0)
    )
}
