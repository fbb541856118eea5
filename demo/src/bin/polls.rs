//! Long polls of each kind, for async-inspect's on-CPU / blocked / preempted split:
//!
//!   inspect-polls spin    a task computing on CPU for 50 ms without yielding: a long poll
//!   inspect-polls busy    short polls (1 ms of CPU each) on a machine kept overloaded by
//!                         threads spinning outside tokio: the workers are preempted inside
//!                         polls, which is no defect of the program
//!
//! It prints `ready` once its tasks are running and exits after `--exit-after-ms` (default 1500).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let exit_after_ms = match (args.next().as_deref(), args.next().map(|ms| ms.parse())) {
        (Some("--exit-after-ms"), Some(Ok(ms))) => ms,
        (None, _) => 1500,
        _ => usage(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        match scenario.as_str() {
            "spin" => drop(tokio::spawn(spin_worker())),
            "busy" => busy(stop.clone(), exit_after_ms),
            _ => usage(),
        }
        println!("inspect-polls: ready, pid {}", std::process::id());
        tokio::time::sleep(Duration::from_millis(exit_after_ms)).await;
    });
    stop.store(true, Ordering::Relaxed);
}

fn usage() -> ! {
    eprintln!("usage: inspect-polls spin|busy [--exit-after-ms MS]");
    std::process::exit(2);
}

/// Burns the CPU for `ms` without yielding.
fn compute(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

async fn spin_worker() {
    tokio::task::yield_now().await;
    // The defect: a long computation inside async code holds the worker thread.
    compute(50);
}

/// Four spinning threads outside tokio on top of two workers polling short tasks.
fn busy(stop: Arc<AtomicBool>, for_ms: u64) {
    for _ in 0..4 {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    for _ in 0..4 {
        tokio::spawn(short_polls(for_ms.saturating_sub(200)));
    }
}

async fn short_polls(for_ms: u64) {
    let until = Instant::now() + Duration::from_millis(for_ms);
    while Instant::now() < until {
        compute(1);
        tokio::task::yield_now().await;
    }
}
