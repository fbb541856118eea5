//! A closed-loop load generator for `inspect-server`, on loopback only:
//! `inspect-load --addr 127.0.0.1:PORT [--clients 20] [--duration 5s] [--max-requests N]
//! [--progress 100ms]`.
//!
//! Each client is a connection that sends a 64-byte request, waits for the 64-byte reply and sends
//! the next, until the duration is over or all the clients together have sent `--max-requests`.
//! It prints one line at the end:
//!
//! ```text
//! load: requests=N seconds=S p50_us=X p99_us=Y
//! ```
//!
//! With `--progress`, it also prints `progress: ms=T requests=N latencies=V:C,V:C,...` at that
//! interval: the requests answered in the first T ms, for a benchmark that splits one unbroken load
//! into slices, and the latencies of the replies received since the last report (C replies took
//! about V ns, V the middle of a histogram bucket), so that it can give percentiles of any run of
//! slices.
//!
//! `seconds` runs from when every client is connected to when the last one stops. The latencies go
//! into a fixed log-linear histogram (32 buckets per power of two: within 3%), one per client, so
//! the generator stays light: it runs on one thread (tokio's current-thread runtime), and it shares
//! the machine with the server it measures.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MESSAGE_BYTES: usize = 64;

const USAGE: &str = "usage: inspect-load --addr 127.0.0.1:PORT [--clients N] [--duration 5s] [--max-requests N] \
     [--progress 100ms]";

/// Bounds on the options, so that a typo does not become a load that never ends.
const MAX_CLIENTS: u32 = 1_000;
const MAX_DURATION: Duration = Duration::from_secs(3_600);
/// How long after the end a client may still wait for its last reply before the run fails.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
struct Options {
    addr: SocketAddr,
    clients: u32,
    duration: Duration,
    max_requests: u64,
    progress: Option<Duration>,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("inspect-load: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(drive(&options)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("inspect-load: {}: {error}", options.addr);
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut addr = None;
    let mut options = Options {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        clients: 20,
        duration: Duration::from_secs(5),
        max_requests: 10_000_000,
        progress: None,
    };
    let mut args = args.into_iter();
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        let bad = || format!("{name}: '{value}' is not valid");
        match name.as_str() {
            "--addr" => addr = Some(loopback_addr(&value)?),
            "--clients" => options.clients = value.parse().map_err(|_| bad())?,
            "--duration" => options.duration = parse_duration(&value).ok_or_else(bad)?,
            "--max-requests" => options.max_requests = value.parse().map_err(|_| bad())?,
            "--progress" => {
                let every = parse_duration(&value).filter(|every| !every.is_zero());
                options.progress = Some(every.ok_or_else(bad)?);
            }
            _ => return Err(format!("unknown argument '{name}'")),
        }
    }
    options.addr = addr.ok_or("--addr is required")?;
    if !(1..=MAX_CLIENTS).contains(&options.clients) {
        return Err(format!("--clients must be from 1 to {MAX_CLIENTS}"));
    }
    if options.duration.is_zero() || options.duration > MAX_DURATION {
        return Err(format!(
            "--duration must be above 0 and at most {}s",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(options)
}

/// `127.0.0.1:PORT`, and nothing else: this is a load generator, and it only loads this machine.
fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("--addr: '{text}' is not an address like 127.0.0.1:PORT"))?;
    if addr.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) || addr.port() == 0 {
        return Err(format!(
            "--addr: '{text}': only 127.0.0.1 and a port other than 0 are allowed"
        ));
    }
    Ok(addr)
}

/// `5s`, `1.5s`, `500ms` or `5` (seconds).
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(number) => (number, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let seconds = number.parse::<f64>().ok()? * scale;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Connects every client, runs them until the deadline or the budget, and returns the line to print.
async fn drive(options: &Options) -> std::io::Result<String> {
    let mut streams = Vec::with_capacity(options.clients as usize);
    for _ in 0..options.clients {
        let stream = TcpStream::connect(options.addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let budget = Arc::new(AtomicU64::new(options.max_requests));
    let answered = Arc::new(AtomicU64::new(0));
    // The latencies since the last progress report (the runtime has one thread: never contended).
    let recent = options
        .progress
        .map(|_| Arc::new(Mutex::new(Histogram::new())));
    let started = Instant::now();
    let deadline = started + options.duration;
    // One timer per client, not per request: a server that stops answering ends the run.
    let give_up = tokio::time::Instant::from_std(deadline + GRACE);
    let clients: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let counters = Counters {
                budget: budget.clone(),
                answered: answered.clone(),
                recent: recent.clone(),
            };
            let client = client(stream, deadline, counters);
            tokio::spawn(tokio::time::timeout_at(give_up, client))
        })
        .collect();
    let progress = options
        .progress
        .map(|every| tokio::spawn(report_progress(every, started, answered, recent)));
    let mut latencies = Histogram::new();
    for client in clients {
        let finished = client.await.map_err(std::io::Error::other)?;
        let no_reply = || {
            let after = GRACE.as_secs();
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply {after} s after the end"),
            )
        };
        latencies.merge(&finished.map_err(|_| no_reply())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(format!(
        "load: requests={} seconds={seconds:.3} p50_us={:.1} p99_us={:.1}",
        latencies.count(),
        latencies.quantile_ns(0.50) as f64 / 1e3,
        latencies.quantile_ns(0.99) as f64 / 1e3,
    ))
}

/// What the clients share.
struct Counters {
    /// Requests left to send.
    budget: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    /// With `--progress`: the latencies since the last report.
    recent: Option<Arc<Mutex<Histogram>>>,
}

/// One connection, request after request: returns its latencies.
async fn client(
    mut stream: TcpStream,
    deadline: Instant,
    counters: Counters,
) -> std::io::Result<Histogram> {
    let mut latencies = Histogram::new();
    let mut request = [0u8; MESSAGE_BYTES];
    let mut reply = [0u8; MESSAGE_BYTES];
    let mut sent = Instant::now();
    while sent < deadline && take_one(&counters.budget) {
        request[..8].copy_from_slice(&latencies.count().to_le_bytes());
        stream.write_all(&request).await?;
        stream.read_exact(&mut reply).await?;
        let received = Instant::now();
        let latency = (received - sent).as_nanos() as u64;
        latencies.record(latency);
        if let Some(recent) = &counters.recent {
            recent.lock().expect("not poisoned").record(latency);
        }
        counters.answered.fetch_add(1, Ordering::Relaxed);
        sent = received;
    }
    Ok(latencies)
}

/// Prints the requests answered so far and the latencies since the last report every `every`,
/// until aborted.
async fn report_progress(
    every: Duration,
    started: Instant,
    answered: Arc<AtomicU64>,
    recent: Option<Arc<Mutex<Histogram>>>,
) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::from_std(started + every), every);
    // A late report is followed by one a whole interval later, not by a burst of short ones.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let ms = started.elapsed().as_millis();
        let requests = answered.load(Ordering::Relaxed);
        let latencies = recent
            .as_ref()
            .map(|recent| {
                std::mem::replace(&mut *recent.lock().expect("not poisoned"), Histogram::new())
            })
            .map(|histogram| histogram.buckets())
            .unwrap_or_default();
        println!("progress: ms={ms} requests={requests} latencies={latencies}");
    }
}

/// Takes one request from the budget all clients share; false once it is spent.
fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

/// A log-linear histogram of nanoseconds: exact below 32, then 32 buckets per power of two.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB as usize;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < SUB {
            return value as usize;
        }
        let shift = 63 - value.leading_zeros() - SUB_BITS;
        let mantissa = value >> shift; // in [SUB, 2 * SUB)
        ((shift as u64 + 1) * SUB + (mantissa - SUB)) as usize
    }

    /// The values a bucket holds: `[low, high)`.
    fn bounds(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < SUB {
            return (index, index + 1);
        }
        let shift = index / SUB - 1;
        let mantissa = SUB + index % SUB;
        (mantissa << shift, (mantissa + 1).saturating_mul(1 << shift))
    }

    fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.total += other.total;
    }

    fn count(&self) -> u64 {
        self.total
    }

    /// `V:C,V:C,...`: C values in the bucket whose middle is V, for each bucket holding any.
    fn buckets(&self) -> String {
        let mut text = String::new();
        for (index, count) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let separator = if text.is_empty() { "" } else { "," };
            let _ = write!(text, "{separator}{}:{count}", Self::middle(index));
        }
        text
    }

    fn middle(index: usize) -> u64 {
        let (low, high) = Self::bounds(index);
        low + (high - low - 1) / 2
    }

    /// The middle of the bucket that holds the `q` quantile; 0 when empty.
    fn quantile_ns(&self, q: f64) -> u64 {
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank && *count > 0 {
                return Self::middle(index);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn buckets_hold_their_values() {
        for value in (0..5_000).chain([u64::MAX, 1 << 40, (1 << 40) - 1, 123_456_789]) {
            let (low, high) = Histogram::bounds(Histogram::index(value));
            assert!(
                low <= value && (value < high || high == u64::MAX),
                "{value}: {low}..{high}"
            );
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
        // Within 1/32 of the value.
        let (low, high) = Histogram::bounds(Histogram::index(1_000_000));
        assert!((high - low) * 32 <= 1_000_000);
    }

    #[test]
    fn quantiles() {
        let mut histogram = Histogram::new();
        assert_eq!(histogram.quantile_ns(0.5), 0);
        for value in 1..=100 {
            histogram.record(value * 1_000);
        }
        let mut other = Histogram::new();
        other.record(10_000_000);
        histogram.merge(&other);
        assert_eq!(histogram.count(), 101);
        let p50 = histogram.quantile_ns(0.5) as f64;
        assert!((p50 - 51_000.0).abs() < 51_000.0 * 0.04, "{p50}");
        let p99 = histogram.quantile_ns(0.99) as f64;
        assert!((p99 - 100_000.0).abs() < 100_000.0 * 0.04, "{p99}");
        assert!(histogram.quantile_ns(1.0) > 9_000_000);
    }

    #[test]
    fn buckets_list_the_values_held() {
        let mut histogram = Histogram::new();
        assert_eq!(histogram.buckets(), "");
        for value in [7, 7, 1_000_000, 1_000_100, 5_000_000] {
            histogram.record(value);
        }
        let buckets: Vec<(u64, u64)> = histogram
            .buckets()
            .split(',')
            .map(|pair| {
                let (value, count) = pair.split_once(':').unwrap();
                (value.parse().unwrap(), count.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), 3, "{buckets:?}");
        assert_eq!(buckets[0], (7, 2));
        assert_eq!(buckets[1].1, 2);
        assert!(
            buckets[1].0.abs_diff(1_000_000) < 1_000_000 / 32,
            "{buckets:?}"
        );
        assert!(
            buckets[2].0.abs_diff(5_000_000) < 5_000_000 / 32,
            "{buckets:?}"
        );
    }

    #[test]
    fn arguments() {
        let options =
            parse_args(args("--addr 127.0.0.1:4000 --clients 3 --duration 1.5s")).unwrap();
        assert_eq!(options.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(options.clients, 3);
        assert_eq!(options.duration, Duration::from_millis(1500));
        let options =
            parse_args(args("--max-requests 7 --addr 127.0.0.1:1 --duration 250ms")).unwrap();
        assert_eq!((options.max_requests, options.clients), (7, 20));
        assert_eq!(options.duration, Duration::from_millis(250));
        assert_eq!(options.progress, None);
        let options = parse_args(args("--addr 127.0.0.1:1 --progress 100ms")).unwrap();
        assert_eq!(options.progress, Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        for bad in [
            "",
            "--clients 3",
            "--addr 127.0.0.1:4000 --clients 0",
            "--addr 127.0.0.1:4000 --duration 0s",
            "--addr 127.0.0.1:4000 --duration 2h",
            "--addr 127.0.0.1:4000 --what 1",
            "--addr 127.0.0.1:4000 --clients",
            "--addr 127.0.0.1:4000 --progress 0ms",
        ] {
            assert!(parse_args(args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback() {
        for refused in [
            "10.0.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "127.0.0.2:80",
            "127.0.0.1:0",
            "localhost:80",
        ] {
            assert!(loopback_addr(refused).is_err(), "{refused}");
        }
        assert!(loopback_addr("127.0.0.1:8080").is_ok());
    }
}
