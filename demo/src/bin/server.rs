//! A small tokio request/response server, for the benchmark (`scripts/bench.sh server`):
//! `inspect-server [--port PORT] [--fanout N]`.
//!
//! It listens on 127.0.0.1:PORT (0, the default, picks a free port) and prints
//! `listening on 127.0.0.1:NNNN` on stdout. A client sends requests of 64 bytes and gets a reply
//! of 64 bytes to each. One task per connection, spawned per accept, like a typical server. With
//! `--fanout N`, each request also spawns N short tasks, each yielding once and returning a number,
//! and joins them before replying: the spawn-heavy shape. `inspect-load` drives it.
//!
//! demo-console/ builds this same file with console-subscriber (tokio-console's instrumentation),
//! so everything but the arguments' parsing sits in `serve`. (A binary of its own, so that the
//! demo's code, which tests read symbol by symbol, stays as it is.)

use std::io::Write;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The size of a request and of a reply, in bytes.
pub const MESSAGE_BYTES: usize = 64;

const USAGE: &str = "usage: inspect-server [--port PORT] [--fanout N]";

pub struct Options {
    /// 0: the system picks a free port.
    pub port: u16,
    /// Tasks spawned and joined per request.
    pub fanout: u32,
}

impl Options {
    /// The options from the command line; exits with status 2 on a bad one.
    pub fn from_args() -> Options {
        let mut options = Options { port: 0, fanout: 0 };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let value = args.next();
            match (arg.as_str(), value.as_deref()) {
                ("--port", Some(value)) if value.parse::<u16>().is_ok() => {
                    options.port = value.parse().unwrap_or_default();
                }
                ("--fanout", Some(value)) if value.parse::<u32>().is_ok() => {
                    options.fanout = value.parse().unwrap_or_default();
                }
                _ => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            }
        }
        options
    }
}

#[tokio::main]
pub async fn main() {
    serve(Options::from_args()).await;
}

/// Accepts connections until the process is killed, a task for each.
pub async fn serve(options: Options) {
    let listener = match TcpListener::bind(("127.0.0.1", options.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "inspect-server: cannot listen on 127.0.0.1:{}: {error}",
                options.port
            );
            std::process::exit(1);
        }
    };
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {address}");
    let _ = std::io::stdout().flush();
    let fanout = options.fanout;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, fanout));
            }
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                eprintln!("inspect-server: accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the requests on one connection until the client closes it.
async fn connection(mut stream: TcpStream, fanout: u32) {
    let _ = stream.set_nodelay(true);
    let mut request = [0u8; MESSAGE_BYTES];
    loop {
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let reply = respond(&request, fanout).await;
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The reply: the request, its last 8 bytes replaced by the sum of the fan-out tasks' results.
async fn respond(request: &[u8; MESSAGE_BYTES], fanout: u32) -> [u8; MESSAGE_BYTES] {
    let mut sum: u64 = 0;
    if fanout > 0 {
        let seed = u64::from(request[0]);
        let handles: Vec<_> = (0..fanout)
            .map(|index| tokio::spawn(fanout_work(seed + u64::from(index))))
            .collect();
        for handle in handles {
            sum = sum.wrapping_add(handle.await.unwrap_or(0));
        }
    }
    let mut reply = *request;
    reply[MESSAGE_BYTES - 8..].copy_from_slice(&sum.to_le_bytes());
    reply
}

/// A fan-out task's trivial bit of work.
async fn fanout_work(seed: u64) -> u64 {
    tokio::task::yield_now().await;
    seed.wrapping_mul(2_654_435_761)
}
