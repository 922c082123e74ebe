//! Latency samples and what is reported from them.

use std::time::Duration;

/// Latencies of one run, and how long it took.
#[derive(Debug, Default)]
pub struct Samples {
    micros: Vec<u32>,
    pub elapsed: Duration,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            micros: Vec::with_capacity(n),
            elapsed: Duration::ZERO,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds samples taken at the same time (concurrent clients).
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Adds samples taken after these (another round).
    pub fn append(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.elapsed += other.elapsed;
    }

    pub fn count(&self) -> usize {
        self.micros.len()
    }

    pub fn per_second(&self) -> f64 {
        self.micros.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() - 1) as f64 * q).round() as usize;
        f64::from(self.micros[i])
    }

    /// `req/s  p50  p99` as one line.
    pub fn line(&mut self, name: &str) -> String {
        let (p50, p99) = (self.quantile(0.5), self.quantile(0.99));
        format!(
            "{name:<28} {:>10.0} req/s   p50 {:>8.0} µs   p99 {:>8.0} µs   ({} requests)",
            self.per_second(),
            p50,
            p99,
            self.count()
        )
    }
}
