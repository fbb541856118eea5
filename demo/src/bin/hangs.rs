//! Programs with one known defect each, and their healthy twins, for async-inspect's diagnosis:
//!
//!   inspect-hangs deadlock      two tasks take two tokio Mutexes in opposite order: stuck forever
//!   inspect-hangs ordered       the same tasks taking them in the same order: both finish
//!   inspect-hangs lost-waker    a future returns Pending without keeping the waker: stuck forever
//!   inspect-hangs kept-waker    the same future keeping it, woken by a thread: finishes
//!   inspect-hangs blocking      std::thread::sleep inside async: blocks a worker for 300 ms
//!   inspect-hangs self-wake     a future that wakes itself 500 times before finishing
//!   inspect-hangs shutdown      one task aborted at an await, two parked when main returns and
//!                               the runtime shuts down (the only scenario that drops it)
//!   inspect-hangs select        a task parked in a select! between a oneshot and an mpsc channel,
//!                               no timeout; another racing a oneshot against a 60 s sleep
//!   inspect-hangs join          a task in a join! of two futures, one done, one waiting forever
//!   inspect-hangs timeout       a task waiting for a oneshot inside tokio::time::timeout(60 s)
//!   inspect-hangs impl-method   a struct's async method spawned as a task, which spawns an async
//!                               block; both wait forever (after a tokio::fs call: a blocking task
//!                               of tokio's own)
//!   inspect-hangs socket-read   a task reading a TcpStream whose peer, a local listener, never
//!                               writes, another accepting on a listener nobody connects to;
//!                               no timeout (prints the sockets' fds and addresses first)
//!   inspect-hangs mpsc-senders  a task awaiting an mpsc receiver whose two senders live on and
//!                               never send, one awaiting an unbounded receiver with one such
//!                               sender; another acquiring a Semaphore with no permits left;
//!                               one sending into a full channel whose receiver never reads
//!   inspect-hangs folded        `deadlock` between two async fns with the same body (a transfer
//!                               each way), which the compiler folds into one function
//!
//! It prints `ready` once its tasks are running and exits by itself after `--exit-after-ms`
//! (default 3000), with status 0; the stuck scenarios never finish their tasks.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex as StdMutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::sync::Mutex;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let mut exit_after_ms = 3000;
    while let Some(arg) = args.next() {
        match (
            arg.as_str(),
            args.next().and_then(|value| value.parse().ok()),
        ) {
            ("--exit-after-ms", Some(ms)) => exit_after_ms = ms,
            _ => usage(),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match scenario.as_str() {
            "deadlock" => locks(true).await,
            "ordered" => locks(false).await,
            "lost-waker" => wakers(false).await,
            "kept-waker" => wakers(true).await,
            "blocking" => blocking().await,
            "self-wake" => self_wake().await,
            "shutdown" => shutdown().await,
            "select" => select().await,
            "join" => join().await,
            "timeout" => timeout().await,
            "impl-method" => impl_method().await,
            "socket-read" => socket_read().await,
            "mpsc-senders" => mpsc_senders().await,
            "folded" => folded().await,
            _ => usage(),
        }
        tokio::time::sleep(Duration::from_millis(exit_after_ms)).await;
    });
    if scenario == "shutdown" {
        // A normal end: the runtime cancels the tasks still parked.
        drop(runtime);
        return;
    }
    // Exit with stuck tasks still stuck (dropping the runtime would cancel them).
    std::process::exit(0);
}

fn usage() -> ! {
    eprintln!(
        "usage: inspect-hangs deadlock|ordered|lost-waker|kept-waker|blocking|self-wake|shutdown|\
         select|join|timeout|impl-method|socket-read|mpsc-senders|folded [--exit-after-ms MS]"
    );
    std::process::exit(2);
}

fn ready() {
    println!("inspect-hangs: ready, pid {}", std::process::id());
}

async fn locks(opposite: bool) {
    let first = Arc::new(Mutex::new(0u32));
    let second = Arc::new(Mutex::new(0u32));
    let a = tokio::spawn(lock_both(first.clone(), second.clone()));
    let b = if opposite {
        tokio::spawn(lock_both(second, first))
    } else {
        tokio::spawn(lock_both(first, second))
    };
    ready();
    if !opposite {
        let _ = (a.await, b.await);
    }
}

/// Takes `outer`, and while holding it, `inner`.
async fn lock_both(outer: Arc<Mutex<u32>>, inner: Arc<Mutex<u32>>) -> u32 {
    let mut held = outer.lock().await;
    // Long enough for the other task to take its first lock too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut other = inner.lock().await;
    *held += 1;
    *other += 1;
    *held + *other
}

/// Two tasks of two types whose code is the same: each holds one account's lock and waits for
/// the other's.
async fn folded() {
    let savings = Arc::new(Mutex::new(10u32));
    let checking = Arc::new(Mutex::new(10u32));
    tokio::spawn(to_checking(savings.clone(), checking.clone()));
    tokio::spawn(to_savings(checking, savings));
    ready();
}

/// Moves one unit from `from` to `to`, holding `from` meanwhile.
async fn to_checking(from: Arc<Mutex<u32>>, to: Arc<Mutex<u32>>) -> u32 {
    let mut source = from.lock().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut target = to.lock().await;
    *source -= 1;
    *target += 1;
    *target
}

/// The same as `to_checking`, the other way: the compiler keeps one copy of the code.
async fn to_savings(from: Arc<Mutex<u32>>, to: Arc<Mutex<u32>>) -> u32 {
    let mut source = from.lock().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut target = to.lock().await;
    *source -= 1;
    *target += 1;
    *target
}

/// A hand-written future that is Pending once; `keep` decides whether it keeps the waker
/// (and has a thread wake it) or drops it on the floor.
struct OnceThenReady {
    polled: bool,
    keep: bool,
    slot: Arc<StdMutex<Option<Waker>>>,
}

impl Future for OnceThenReady {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            return Poll::Ready(());
        }
        self.polled = true;
        if self.keep {
            *self.slot.lock().expect("waker slot") = Some(cx.waker().clone());
            let slot = self.slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                if let Some(waker) = slot.lock().expect("waker slot").take() {
                    waker.wake();
                }
            });
        }
        // Without `keep`, the bug: Pending, and nobody can ever wake this task.
        Poll::Pending
    }
}

async fn wakers(keep: bool) {
    let handle = tokio::spawn(wait_once(keep));
    ready();
    if keep {
        let _ = handle.await;
    }
}

async fn wait_once(keep: bool) {
    OnceThenReady {
        polled: false,
        keep,
        slot: Arc::default(),
    }
    .await;
}

async fn blocking() {
    let handle = tokio::spawn(block_worker());
    ready();
    let _ = handle.await;
}

async fn block_worker() {
    tokio::task::yield_now().await;
    // The defect: a blocking call inside async code holds the worker thread.
    std::thread::sleep(Duration::from_millis(300));
}

/// Wakes itself from inside its own poll `remaining` times.
struct SelfWaking {
    remaining: u32,
}

impl Future for SelfWaking {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.remaining == 0 {
            return Poll::Ready(());
        }
        self.remaining -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

async fn self_wake() {
    let handle = tokio::spawn(spin());
    ready();
    let _ = handle.await;
}

async fn spin() {
    SelfWaking { remaining: 500 }.await;
}

async fn shutdown() {
    let aborted = tokio::spawn(parked_forever());
    for _ in 0..2 {
        tokio::spawn(parked_forever());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    aborted.abort();
    ready();
}

async fn parked_forever() {
    std::future::pending::<()>().await;
}

async fn select() {
    let (once_tx, once_rx) = tokio::sync::oneshot::channel::<u32>();
    let (many_tx, many_rx) = tokio::sync::mpsc::channel::<u32>(1);
    tokio::spawn(select_forever(once_rx, many_rx));
    let (late_tx, late_rx) = tokio::sync::oneshot::channel::<u32>();
    tokio::spawn(select_with_deadline(late_rx));
    // The senders live on and never send: the tasks wait for them, not for a closed channel.
    std::mem::forget((once_tx, many_tx, late_tx));
    ready();
}

async fn select_forever(
    once: tokio::sync::oneshot::Receiver<u32>,
    mut many: tokio::sync::mpsc::Receiver<u32>,
) -> u32 {
    tokio::select! { // select_forever
        value = once => value.unwrap_or(0),
        value = many.recv() => value.unwrap_or(0),
    }
}

async fn select_with_deadline(late: tokio::sync::oneshot::Receiver<u32>) -> u32 {
    tokio::select! { // select_with_deadline
        value = late => value.unwrap_or(0),
        () = tokio::time::sleep(Duration::from_secs(60)) => 0,
    }
}

async fn join() {
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    tokio::spawn(join_both(rx));
    std::mem::forget(tx);
    ready();
}

/// One branch done within 10 ms, the other never.
async fn join_both(never: tokio::sync::oneshot::Receiver<u32>) -> u32 {
    let ((), value) = tokio::join!(tokio::time::sleep(Duration::from_millis(10)), never);
    value.unwrap_or(0)
}

async fn timeout() {
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    tokio::spawn(wait_with_timeout(rx));
    std::mem::forget(tx);
    ready();
}

async fn wait_with_timeout(value: tokio::sync::oneshot::Receiver<u32>) -> u32 {
    match tokio::time::timeout(Duration::from_secs(60), value).await {
        Ok(Ok(value)) => value,
        _ => 0,
    }
}

/// A listener as servers write them: a struct whose async method is the task.
struct Listener {
    connections: tokio::sync::mpsc::Receiver<u32>,
}

impl Listener {
    async fn run(mut self) -> u32 {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        tokio::spawn(async move { rx.await.unwrap_or(0) });
        std::mem::forget(tx);
        self.connections.recv().await.unwrap_or(0)
    }
}

async fn impl_method() {
    // tokio runs file operations as blocking tasks of its own.
    let _ = tokio::fs::metadata("/").await;
    let (tx, connections) = tokio::sync::mpsc::channel(1);
    tokio::spawn(Listener { connections }.run());
    std::mem::forget(tx);
    ready();
}

async fn socket_read() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let stream = tokio::net::TcpStream::connect(listener.local_addr().expect("address"))
        .await
        .expect("connect");
    let (accepted, _) = listener.accept().await.expect("accept");
    // The test reads the addresses it expects the report to name from this line.
    println!(
        "inspect-hangs: socket fd {}, {} <- {}",
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        stream.local_addr().expect("local"),
        stream.peer_addr().expect("peer")
    );
    tokio::spawn(read_forever(stream));
    let idle = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    println!(
        "inspect-hangs: listener fd {}, {}",
        std::os::fd::AsRawFd::as_raw_fd(&idle),
        idle.local_addr().expect("address")
    );
    tokio::spawn(accept_forever(idle));
    // The listener's side stays open and silent: the read waits, not sees end of file.
    std::mem::forget((listener, accepted));
    ready();
}

async fn read_forever(mut stream: tokio::net::TcpStream) -> usize {
    let mut buffer = [0u8; 64];
    let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await; // read_forever
    read.unwrap_or(0)
}

/// Nobody connects.
async fn accept_forever(listener: tokio::net::TcpListener) -> bool {
    listener.accept().await.is_ok() // accept_forever
}

async fn mpsc_senders() {
    let (tx, rx) = tokio::sync::mpsc::channel::<u32>(4);
    tokio::spawn(receive_forever(rx));
    let (unbounded_tx, unbounded_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    tokio::spawn(receive_unbounded_forever(unbounded_rx));
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let taken = permits.clone().acquire_owned().await.expect("a permit");
    tokio::spawn(acquire_forever(permits));
    // A channel kept full (its receiver never reads), and a sender waiting for room in it.
    let (full_tx, full_rx) = tokio::sync::mpsc::channel::<u32>(1);
    full_tx.try_send(0).expect("room for one message");
    tokio::spawn(send_forever(full_tx.clone()));
    // Two senders alive that never send, and a permit never given back.
    std::mem::forget((tx.clone(), tx, unbounded_tx, taken, full_tx, full_rx));
    ready();
}

async fn receive_forever(mut rx: tokio::sync::mpsc::Receiver<u32>) -> u32 {
    rx.recv().await.unwrap_or(0) // receive_forever
}

async fn receive_unbounded_forever(mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
    rx.recv().await.unwrap_or(0) // receive_unbounded_forever
}

async fn send_forever(tx: tokio::sync::mpsc::Sender<u32>) -> bool {
    tx.send(1).await.is_ok() // send_forever
}

async fn acquire_forever(permits: Arc<tokio::sync::Semaphore>) -> bool {
    permits.acquire().await.is_ok() // acquire_forever
}
