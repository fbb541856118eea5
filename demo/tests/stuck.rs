//! A test that hangs when `INSPECT_DEMO_STUCK_TEST` is set (and passes at once otherwise): what
//! `async-inspect test -- cargo test` is checked against.

use std::sync::Arc;

use tokio::sync::Mutex;

#[tokio::test]
async fn a_task_waits_for_a_lock_the_test_holds() {
    if std::env::var_os("INSPECT_DEMO_STUCK_TEST").is_none() {
        return;
    }
    let lock = Arc::new(Mutex::new(0u32));
    let _held = lock.lock().await;
    let contended = lock.clone();
    let waiter = tokio::spawn(async move { *contended.lock().await += 1 });
    waiter.await.expect("the waiter never finishes");
}
