//! A crowd of tasks for the live view and the task tree: `inspect-crowd [--tasks N] [--secs S]`.
//! `inspect_crowd::spawner` spawns N `inspect_crowd::idle_worker`s that sleep until the program
//! exits, and `inspect_crowd::heartbeat` ticks ten times a second, for S seconds (default 60).
//! (A binary of its own, so that the demo's code, which tests read symbol by symbol, stays as
//! it is.)

use std::time::Duration;

fn main() {
    let mut tasks: u64 = 10_000;
    let mut secs: u64 = 60;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (
            arg.as_str(),
            args.next().and_then(|value| value.parse().ok()),
        ) {
            ("--tasks", Some(value)) => tasks = value,
            ("--secs", Some(value)) => secs = value,
            _ => {
                eprintln!("usage: inspect-crowd [--tasks N] [--secs S]");
                std::process::exit(2);
            }
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
        .block_on(async {
            println!("inspect-crowd: ready, pid {}", std::process::id());
            tokio::spawn(spawner(tasks))
                .await
                .expect("spawner panicked");
            let beating = tokio::spawn(heartbeat());
            tokio::time::sleep(Duration::from_secs(secs)).await;
            beating.abort();
        });
}

async fn spawner(count: u64) {
    for _ in 0..count {
        tokio::spawn(idle_worker());
    }
}

async fn idle_worker() {
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
}

async fn heartbeat() {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
    }
}
