//! Latency histograms: every command's latency in an HDR histogram
//! (nanoseconds, 3 significant digits, auto-resizing), serialised in the
//! HdrHistogram V2 format and base64 (the same bytes the Java and C
//! implementations read), so that runs from several hosts merge exactly:
//! the merge of two runs' histograms is the histogram of both runs.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Significant digits kept (0.1% relative error).
pub const SIGFIG: u8 = 3;

/// Latency percentiles of one point, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

/// Why a serialised histogram does not load.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    #[error("histogram is not base64: {0}")]
    Base64(String),
    #[error("histogram does not decode (HdrHistogram V2): {0}")]
    Decode(String),
}

/// A latency histogram in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl PartialEq for Latency {
    fn eq(&self, other: &Latency) -> bool {
        self.h == other.h
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency::with_sigfig(SIGFIG)
    }

    /// An empty histogram with `sigfig` significant digits (per-second
    /// histograms use 2: a tenth of the memory).
    pub fn with_sigfig(sigfig: u8) -> Latency {
        let mut h = Histogram::new(sigfig).expect("1..=5 significant digits");
        h.auto(true);
        Latency { h }
    }

    /// Records one latency in nanoseconds (0 counts as 1).
    pub fn record_ns(&mut self, ns: u64) {
        // Auto-resize makes every value fit; saturate on the impossible.
        let _ = self.h.record(ns.max(1));
    }

    /// Commands recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
    }

    /// The value at percentile `p` (0..=100), microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_percentile(p) as f64 / 1000.0
    }

    /// Mean, microseconds.
    pub fn mean_us(&self) -> f64 {
        if self.h.is_empty() {
            0.0
        } else {
            self.h.mean() / 1000.0
        }
    }

    /// The summary figures.
    pub fn stats(&self) -> LatencyStats {
        if self.h.is_empty() {
            return LatencyStats::default();
        }
        LatencyStats {
            min: self.h.min() as f64 / 1000.0,
            mean: self.mean_us(),
            p50: self.percentile_us(50.0),
            p90: self.percentile_us(90.0),
            p99: self.percentile_us(99.0),
            p99_9: self.percentile_us(99.9),
            p99_99: self.percentile_us(99.99),
            max: self.h.max() as f64 / 1000.0,
        }
    }

    /// `(latency µs, cumulative percent)` at each recorded value, for a CDF.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.h.len().max(1) as f64;
        let mut seen = 0u64;
        self.h
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (
                    v.value_iterated_to() as f64 / 1000.0,
                    seen as f64 * 100.0 / total,
                )
            })
            .collect()
    }

    /// HdrHistogram V2, base64 (standard alphabet, padded).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.h, &mut bytes)
            .expect("serialising into memory");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The reverse of [`Latency::encode`].
    pub fn decode(text: &str) -> Result<Latency, HistError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| HistError::Base64(e.to_string()))?;
        let mut h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| HistError::Decode(format!("{e:?}")))?;
        h.auto(true);
        Ok(Latency { h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges_exactly() {
        let values: Vec<u64> = (0..10_000u64)
            .map(|i| 20_000 + (i * 7919) % 3_000_000)
            .collect();
        let (mut a, mut b, mut all) = (Latency::new(), Latency::new(), Latency::new());
        for (i, &v) in values.iter().enumerate() {
            if i % 2 == 0 {
                a.record_ns(v)
            } else {
                b.record_ns(v)
            }
            all.record_ns(v);
        }
        let (a, b) = (
            Latency::decode(&a.encode()).unwrap(),
            Latency::decode(&b.encode()).unwrap(),
        );
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.count(), 10_000);
        assert_eq!(m.stats(), all.stats());
        assert_eq!(m.encode(), all.encode());
        assert!(Latency::decode("not base64!").is_err());
        assert!(Latency::decode("AAAA").is_err());
    }
}
