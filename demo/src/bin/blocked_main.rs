//! A `#[tokio::main]` program whose own body hangs: `main` holds a tokio Mutex while it waits
//! for a report from a task that needs that lock first. What async-inspect must show is `main`
//! itself, parked at its await and holding the lock, and not only the task it spawned.
//!
//!   inspect-blocked-main            hangs until killed
//!   inspect-blocked-main --healthy  lets go of the lock before it waits: exits at once

use std::sync::Arc;

use tokio::sync::{Mutex, oneshot};

#[tokio::main]
async fn main() {
    let healthy = std::env::args().skip(1).any(|arg| arg == "--healthy");
    let ledger = Arc::new(Mutex::new(vec![1u32, 2, 3]));
    let entries = ledger.lock().await;
    let (report, reported) = oneshot::channel();
    tokio::spawn(audit(ledger.clone(), report));
    if healthy {
        drop(entries);
    }
    println!("inspect-blocked-main: ready, pid {}", std::process::id());
    let audited = wait_for_audit(reported).await;
    println!("inspect-blocked-main: {audited} entries audited");
}

/// Counts the ledger's entries, once it gets the lock.
async fn audit(ledger: Arc<Mutex<Vec<u32>>>, report: oneshot::Sender<usize>) {
    let listed = ledger.lock().await;
    let _ = report.send(listed.len());
}

async fn wait_for_audit(reported: oneshot::Receiver<usize>) -> usize {
    reported.await.unwrap_or(0)
}
