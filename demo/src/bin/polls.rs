//! Long polls of each kind, for async-inspect's on-CPU / blocked / preempted split:
//!
//!   inspect-polls spin    a task computing for 50 ms of CPU without yielding, 300 ms in: a long poll,
//!                         however long a loaded machine stretches it
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
    match scenario.as_str() {
        "spin" => {}
        // Started outside async code: creating a thread can block in the kernel (its stack's
        // mmap waits for the address space's lock), which inside a poll is a real long poll.
        "busy" => spin_threads(&stop),
        _ => usage(),
    }
    runtime.block_on(async {
        match scenario.as_str() {
            "spin" => drop(tokio::spawn(spin_worker())),
            _ => busy(exit_after_ms),
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

/// Burns `ms` of this thread's CPU time without yielding: CPU time, not wall time, so that a
/// loaded machine preempting the thread stretches the poll without shrinking its computation.
fn compute(ms: u64) {
    let until = thread_cpu_ns() + ms * 1_000_000;
    while thread_cpu_ns() < until {
        std::hint::spin_loop();
    }
}

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

async fn spin_worker() {
    // Later than the program's first polls, as a server's requests come: a probe names where
    // a poll computes once it has read the program's modules, from its first polls on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The defect: a long computation inside async code holds the worker thread.
    compute(50);
}

/// Four spinning threads outside tokio, on top of the two workers of `busy`.
fn spin_threads(stop: &Arc<AtomicBool>) {
    for _ in 0..4 {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
}

/// Two workers polling short tasks.
fn busy(for_ms: u64) {
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
