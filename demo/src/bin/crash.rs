//! A tokio program whose task crashes the process, so tests can check that async-inspect says
//! how a launched program ended:
//!
//!   inspect-crash [segv|abort]
//!
//! It prints `ready`, then its task `inspect_crash::crash_soon` sleeps briefly and raises SIGSEGV
//! (a write to an address Linux never maps) or, with `abort`, SIGABRT (`std::process::abort`).

use std::time::Duration;

fn main() {
    let how = std::env::args().nth(1).unwrap_or_else(|| "segv".to_owned());
    if how != "segv" && how != "abort" {
        eprintln!("usage: inspect-crash [segv|abort]");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("inspect-crash: ready, pid {}", std::process::id());
        let _ = tokio::spawn(crash_soon(how)).await;
    });
    unreachable!("the task crashed the process");
}

async fn crash_soon(how: String) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if how == "abort" {
        std::process::abort();
    }
    segfault();
}

fn segfault() {
    // No libc in the demo: a write into the first page, which Linux never maps (vm.mmap_min_addr).
    // std's SIGSEGV handler only handles stack overflows; it restores the default action for
    // anything else, so the process dies of SIGSEGV.
    let unmapped = std::ptr::without_provenance_mut::<u8>(16);
    // SAFETY: none: crashing is what this program is for. Volatile, so it stays a real write.
    unsafe { unmapped.write_volatile(1) };
}
