//! `inspect-server-console`: inspect-server (demo/src/bin/server.rs, the same code) with
//! console-subscriber installed first, as a user of tokio-console would run it. Built with
//! `--cfg tokio_unstable`; `scripts/bench.sh server` measures it as the `console` variant.

#[path = "../../demo/src/bin/server.rs"]
mod server;

fn main() {
    console_subscriber::init();
    server::main();
}
