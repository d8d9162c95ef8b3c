//! Bandwidth limits: byte rates as operators write them (`32MiB/s`, `200Mbit/s`) and a token
//! bucket that holds a transfer to its rate.
//!
//! The bucket lends: a caller may take more than the bucket holds (a whole 4 MiB piece from a
//! 1 MiB/s bucket) and then waits until the debt is paid back. So any configured rate is
//! reachable whatever the size of the reads, while the average never exceeds it; the burst
//! (what an idle bucket saves up) is a fifth of a second of traffic.
//!
//! A [`Meter`] goes with one request (a manager task's fetch): the download that request
//! starts also takes from the meter's own bucket, counts its bytes by source there, and can be
//! stopped through it.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

/// A rate in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRate(u64);

/// Why a rate does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid rate {0:?}: write e.g. 32MiB/s, 200Mbit/s or 500KB/s")]
pub struct ByteRateError(String);

impl ByteRate {
    /// Bytes per second.
    pub fn bytes_per_sec(self) -> u64 {
        self.0
    }

    /// A rate of `bytes` per second (`None` for 0, which is no rate).
    pub fn from_bytes_per_sec(bytes: u64) -> Option<ByteRate> {
        (bytes > 0).then_some(ByteRate(bytes))
    }
}

impl FromStr for ByteRate {
    type Err = ByteRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteRateError(s.chars().take(40).collect());
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 = number.parse().map_err(|_| err())?;
        let factor: f64 = match unit.trim() {
            "" | "B" => 1.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "bit" => 1.0 / 8.0,
            "Kbit" | "kbit" => 1e3 / 8.0,
            "Mbit" => 1e6 / 8.0,
            "Gbit" => 1e9 / 8.0,
            _ => return Err(err()),
        };
        let rate = number * factor;
        if !rate.is_finite() || !(1.0..=1e13).contains(&rate) {
            return Err(err());
        }
        Ok(ByteRate(rate as u64))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B/s", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, as operators write it (`50GiB`, `500MB`, `4096`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = ByteRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.ends_with("/s") || t.ends_with("bit") {
            return Err(ByteRateError(t.chars().take(40).collect()));
        }
        // The same units as a rate, without the "/s".
        format!("{t}/s")
            .parse::<ByteRate>()
            .map(|r| ByteSize(r.bytes_per_sec()))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A token bucket shared by every transfer it limits.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket for `rate`.
    pub fn new(rate: ByteRate) -> TokenBucket {
        let rate = rate.bytes_per_sec() as f64;
        let burst = (rate / 5.0).max(64.0 * 1024.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `bytes` tokens, waiting as long as the rate requires. Cancel-safe: a cancelled
    /// wait still counts the bytes, as they were (or are being) transferred.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut state = self.state.lock().unwrap();
            let (tokens, last) = &mut *state;
            let now = Instant::now();
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
            *last = now;
            *tokens -= bytes as f64;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One requester's account of the downloads its requests start (see
/// [`crate::fetch::BlobRequest::meter`]): bytes received by source, an optional rate limit of
/// its own that those downloads take from in addition to the node's `--download-limit`, and a
/// stop.
///
/// Only downloads a metered request *starts* are metered: a request that joins a download
/// already running for someone else shares it as it is (its rate, its counts elsewhere), and
/// a blob already in the store costs nothing.
#[derive(Debug, Default)]
pub struct Meter {
    limit: Option<TokenBucket>,
    peer: AtomicU64,
    upstream: AtomicU64,
    stop: CancellationToken,
}

impl Meter {
    /// A meter, limited to `limit` if given.
    pub fn new(limit: Option<ByteRate>) -> Meter {
        Meter {
            limit: limit.map(TokenBucket::new),
            ..Meter::default()
        }
    }

    /// Waits for the meter's own limit to allow `bytes` more (cancel-safe, as
    /// [`TokenBucket::take`]).
    pub(crate) async fn take(&self, bytes: u64) {
        if let Some(b) = &self.limit {
            b.take(bytes).await;
        }
    }

    /// Counts `bytes` received from `source`.
    pub(crate) fn count(&self, source: crate::metrics::Source, bytes: u64) {
        use crate::metrics::Source;
        match source {
            Source::Peer => &self.peer,
            Source::Upstream | Source::Fallback => &self.upstream,
            Source::Cache => return,
        }
        .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes received from peers (seeds included).
    pub fn bytes_peer(&self) -> u64 {
        self.peer.load(Ordering::Relaxed)
    }

    /// Bytes received from the upstream, a standby mirror or a file origin.
    pub fn bytes_upstream(&self) -> u64 {
        self.upstream.load(Ordering::Relaxed)
    }

    /// Ends the downloads this meter's requests started, except those another request has
    /// joined meanwhile (they go on for it). Their waiters see them fail.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once [`Meter::stop`] was called.
    pub(crate) async fn stopped(&self) {
        self.stop.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = |s: &str| s.parse::<ByteRate>().map(ByteRate::bytes_per_sec);
        assert_eq!(r("32MiB/s").unwrap(), 32 << 20);
        assert_eq!(r("200Mbit/s").unwrap(), 25_000_000);
        assert_eq!(r("1.5GB/s").unwrap(), 1_500_000_000);
        assert_eq!(r("4096").unwrap(), 4096);
        assert_eq!(r(" 10 KiB/s ").unwrap(), 10240);
        for bad in [
            "",
            "fast",
            "-1MiB/s",
            "0",
            "1 parsec/s",
            "1e999MB/s",
            "MiB/s",
        ] {
            assert!(r(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("50GiB".parse::<ByteSize>().unwrap().0, 50 << 30);
        assert_eq!("500MB".parse::<ByteSize>().unwrap().0, 500_000_000);
        assert!("5MiB/s".parse::<ByteSize>().is_err());
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_and_is_reachable_with_large_takes() {
        let bucket = TokenBucket::new("1MiB/s".parse().unwrap());
        let start = Instant::now();
        // Ten 4 MiB pieces (larger than the burst) take 40 s less the initial burst.
        for _ in 0..10 {
            bucket.take(4 << 20).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((39.7..=40.0).contains(&secs), "{secs}");

        // Small reads reach the rate too.
        let start = Instant::now();
        for _ in 0..(10 << 10) {
            bucket.take(1024).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((9.9..=10.1).contains(&secs), "{secs}");

        // An idle bucket saves up at most a fifth of a second.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        bucket.take(3 << 20).await;
        let secs = start.elapsed().as_secs_f64();
        assert!((2.79..=2.81).contains(&secs), "{secs}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_meter_counts_by_source_and_limits() {
        use crate::metrics::Source;
        let meter = Meter::new(Some("1MiB/s".parse().unwrap()));
        let start = Instant::now();
        for source in [
            Source::Peer,
            Source::Upstream,
            Source::Fallback,
            Source::Cache,
        ] {
            meter.take(1 << 20).await;
            meter.count(source, 1 << 20);
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((3.7..=3.9).contains(&secs), "{secs}");
        assert_eq!(meter.bytes_peer(), 1 << 20);
        assert_eq!(meter.bytes_upstream(), 2 << 20);
        // Without a limit, nothing waits.
        let free = Meter::new(None);
        let start = Instant::now();
        free.take(1 << 30).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        free.stop();
        free.stopped().await;
    }
}
