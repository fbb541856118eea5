//! A tokio program whose task crashes the process, so tests can check that async-inspect says
//! how a launched program ended:
//!
//!   inspect-crash [segv|abort|exec]
//!
//! It prints `ready`, then its task `inspect_crash::crash_soon` sleeps briefly and raises SIGSEGV
//! (a write to an address Linux never maps) or, with `abort`, SIGABRT (`std::process::abort`);
//! with `exec` it replaces itself with `sleep 5` after three seconds (same pid, another program).

use std::time::Duration;

fn main() {
    let how = std::env::args().nth(1).unwrap_or_else(|| "segv".to_owned());
    if !["segv", "abort", "exec"].contains(&how.as_str()) {
        eprintln!("usage: inspect-crash [segv|abort|exec]");
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
    // Time for a probe to attach by pid before the program becomes another.
    let wait_ms = if how == "exec" { 3000 } else { 100 };
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    if how == "abort" {
        std::process::abort();
    }
    if how == "exec" {
        use std::os::unix::process::CommandExt as _;
        let error = std::process::Command::new("sleep").arg("5").exec();
        panic!("cannot exec sleep: {error}");
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
