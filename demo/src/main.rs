//! A tokio program whose behaviour is known in advance, so that what async-inspect reports about it
//! can be checked: README's first command runs the probe on it, and the integration tests assert on it.
//!
//! Tasks it spawns (names as async-inspect shows them):
//! - `inspect_demo::tick_loop`: sleeps `--ticks` times for `--tick-ms`, then finishes.
//! - `inspect_demo::lock_waiter`: waits for a tokio Mutex that `main` holds until exit: parked forever.
//! - `inspect_demo::blocking_hog`: blocks its worker thread for `--block-ms` inside a single poll.
//! - `inspect_demo::chain_a`: awaits `chain_b`, which awaits `chain_c`, which sleeps: a nested await chain.
//! - `inspect_demo::doomed_sleeper`: sleeps for an hour; `main` aborts it: cancelled.
//! - `inspect_demo::oneshot_waiter`: waits for a oneshot value `main` never sends.
//! - `inspect_demo::supervisor`: awaits the JoinHandle of `inspect_demo::long_sleeper`, which
//!   sleeps for an hour.
//! - with `--panic`, `inspect_demo::panicker`: panics in its first poll.
//!
//! `inspect-demo bench` is a poll-heavy workload for the overhead benchmark instead.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

struct Options {
    ticks: u32,
    tick_ms: u64,
    block_ms: u64,
    linger_ms: Option<u64>,
    current_thread: bool,
    panic: bool,
    bench: Option<Bench>,
}

struct Bench {
    tasks: u32,
    yields: u32,
}

const USAGE: &str = "usage: inspect-demo [--ticks N] [--tick-ms MS] [--block-ms MS] [--linger-ms MS] [--current-thread] [--panic]
       inspect-demo bench [--tasks N] [--yields N] [--current-thread]";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        ticks: 5,
        tick_ms: 100,
        block_ms: 300,
        linger_ms: None,
        current_thread: false,
        panic: false,
        bench: None,
    };
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("bench") {
        args.next();
        options.bench = Some(Bench {
            tasks: 64,
            yields: 20_000,
        });
    }
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: '{value}' is not a whole number"))
        };
        match (arg.as_str(), options.bench.as_mut()) {
            ("--ticks", _) => options.ticks = number("--ticks")? as u32,
            ("--tick-ms", _) => options.tick_ms = number("--tick-ms")?,
            ("--block-ms", _) => options.block_ms = number("--block-ms")?,
            ("--linger-ms", _) => options.linger_ms = Some(number("--linger-ms")?),
            ("--current-thread", _) => options.current_thread = true,
            ("--panic", None) => options.panic = true,
            ("--tasks", Some(bench)) => bench.tasks = number("--tasks")? as u32,
            ("--yields", Some(bench)) => bench.yields = number("--yields")? as u32,
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            (other, _) => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("inspect-demo: {message}");
            std::process::exit(2);
        }
    };
    let mut builder = if options.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match &options.bench {
        Some(bench) => runtime.block_on(run_bench(bench)),
        None => runtime.block_on(run_demo(&options)),
    }
}

async fn run_demo(options: &Options) {
    println!("inspect-demo: ready, pid {}", std::process::id());
    let lock = Arc::new(Mutex::new(0u64));
    // Held by main until it returns, so lock_waiter can never get it.
    let guard = lock.lock().await;

    let ticker = tokio::spawn(tick_loop(options.ticks, options.tick_ms));
    let waiter = tokio::spawn(lock_waiter(lock.clone()));
    let hog = tokio::spawn(blocking_hog(options.block_ms));
    let chain = tokio::spawn(chain_a(options.tick_ms));
    let doomed = tokio::spawn(doomed_sleeper());
    // Never sent: the receiver waits until the program exits.
    let (_never_sent, receiver) = tokio::sync::oneshot::channel::<u64>();
    let oneshot = tokio::spawn(oneshot_waiter(receiver));
    let supervisor = tokio::spawn(supervisor(tokio::spawn(long_sleeper())));
    if options.panic {
        let panicked = tokio::spawn(panicker()).await;
        assert!(panicked.is_err_and(|error| error.is_panic()));
    }

    tokio::task::yield_now().await;
    doomed.abort();
    let ticks = ticker.await.expect("tick_loop panicked");
    hog.await.expect("blocking_hog panicked");
    let depth = chain.await.expect("chain_a panicked");
    let linger = options.linger_ms.unwrap_or(options.tick_ms.max(100) * 2);
    tokio::time::sleep(Duration::from_millis(linger)).await;
    println!("inspect-demo: done: {ticks} ticks, chain depth {depth}, lock waiter still parked");
    // Exit with the guard held and lock_waiter still parked: releasing the lock would wake it,
    // and dropping the runtime would cancel it.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _still_held = (guard, waiter, oneshot, supervisor, _never_sent);
    std::process::exit(0);
}

async fn tick_loop(ticks: u32, tick_ms: u64) -> u32 {
    let mut done = 0;
    for _ in 0..ticks {
        tokio::time::sleep(Duration::from_millis(tick_ms)).await;
        done += 1;
    }
    done
}

async fn lock_waiter(lock: Arc<Mutex<u64>>) {
    let mut value = lock.lock().await;
    *value += 1;
}

async fn blocking_hog(block_ms: u64) {
    tokio::task::yield_now().await;
    // Deliberately wrong: blocks the worker thread inside a poll.
    std::thread::sleep(Duration::from_millis(block_ms));
}

async fn doomed_sleeper() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn oneshot_waiter(receiver: tokio::sync::oneshot::Receiver<u64>) -> Option<u64> {
    receiver.await.ok()
}

async fn long_sleeper() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn supervisor(sleeper: tokio::task::JoinHandle<()>) -> bool {
    sleeper.await.is_ok()
}

async fn panicker() {
    tokio::task::yield_now().await;
    panic!("inspect-demo: panicker panics on purpose (--panic)");
}

async fn chain_a(tick_ms: u64) -> u32 {
    chain_b(tick_ms).await + 1
}

async fn chain_b(tick_ms: u64) -> u32 {
    chain_c(tick_ms).await + 1
}

async fn chain_c(tick_ms: u64) -> u32 {
    tokio::time::sleep(Duration::from_millis(tick_ms * 3)).await;
    1
}

async fn run_bench(bench: &Bench) {
    let start = Instant::now();
    let handles: Vec<_> = (0..bench.tasks)
        .map(|_| tokio::spawn(yield_many(bench.yields)))
        .collect();
    let mut polls = 0u64;
    for handle in handles {
        polls += handle.await.expect("bench task panicked");
    }
    let elapsed = start.elapsed();
    println!(
        "bench: {} tasks, {polls} polls in {:.3} s",
        bench.tasks,
        elapsed.as_secs_f64()
    );
}

async fn yield_many(yields: u32) -> u64 {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    u64::from(yields) + 1
}
