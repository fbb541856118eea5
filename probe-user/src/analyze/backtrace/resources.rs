//! What exactly a task parked on I/O, a channel or a semaphore waits for: the socket (its fd,
//! and the addresses the kernel lists for it), how many senders an mpsc channel still has and
//! how many messages it holds, how many permits a semaphore has left. Everything is found by
//! DWARF field names, so a tokio that moves its fields loses the detail, not the backtrace.

use super::{Frame, Resource, Walker};
use crate::resolve::futures::{State, TypeInfo, TypeKind};

mod sockets;

/// How deep the search for a socket's fd goes: tokio's `TcpStream` keeps it 11 types down
/// (`PollEvented` -> `Option` -> mio's source -> std's socket -> `OwnedFd`).
const MAX_FD_DEPTH: usize = 16;

/// What the walk learnt of the thing the innermost future waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Detail {
    /// Says it all (`reading from 127.0.0.1:7000 ← 127.0.0.1:50122 (TCP, fd 9)`): replaces
    /// the generic `waiting for I/O readiness`.
    Socket(String),
    /// Adds to the leaf's words (`2 senders alive, 0 queued`).
    Counts(String),
}

impl Walker<'_> {
    /// The detail a recognised tokio async fn's `self` gives: the channel of an mpsc receiver
    /// or of a sender waiting for room, a tokio::net socket.
    pub(super) fn frame_detail(
        &self,
        address: u64,
        function: &str,
        state: &State,
    ) -> Option<Detail> {
        let mpsc = is_mpsc(function, "::recv") || is_mpsc(function, "::send");
        if !mpsc && !function.starts_with("tokio::net::") {
            return None;
        }
        let this = state.locals.iter().find(|local| local.name == "self")?;
        let (at, ty) = (address + this.offset, this.ty?);
        if mpsc {
            return self.channel_counts(at, ty).map(Detail::Counts);
        }
        self.socket_detail(at, ty, function)
    }

    /// The detail a leaf future under `frames` gives: the socket of an I/O future over a
    /// tokio::net type (`Read<TcpStream>`), the permits left of a `Semaphore` it acquires from
    /// (a Mutex's or RwLock's permits say no more than that it is held).
    pub(super) fn leaf_detail(
        &self,
        address: u64,
        ty: usize,
        info: &TypeInfo,
        frames: &[Frame],
    ) -> Option<Detail> {
        if let Some(Resource::Semaphore { .. }) = self.waited(address, info, frames) {
            // A sender waits for a free slot: its channel's counts, read at its frame, say
            // more than the slots' semaphore does.
            if frames
                .iter()
                .any(|frame| is_mpsc(&frame.function, "::send"))
            {
                return None;
            }
            let permits = self.read_path(address, ty, &["semaphore", "*", "permits"])?;
            return Some(Detail::Counts(counted(permits >> 1, "permit", "available")));
        }
        if info.name.contains("tokio::net::") {
            return self.socket_detail(address, ty, &info.name);
        }
        None
    }

    /// `2 senders alive, 0 queued`, from the channel behind the `&mut Receiver` or `&Sender`
    /// at `at` (both keep it as `chan.inner`).
    fn channel_counts(&self, at: u64, ty: usize) -> Option<String> {
        let (chan, chan_ty) = self.follow(
            at,
            ty,
            &["*", "chan", "inner", "ptr", "pointer", "*", "data"],
        )?;
        let senders = self.read_path(chan, chan_ty, &["tx_count"])?;
        let (semaphore, semaphore_ty) = self.follow(chan, chan_ty, &["semaphore"])?;
        let queued = self.queued(semaphore, semaphore_ty)?;
        Some(format!(
            "{}, {queued} queued",
            counted(senders, "sender", "alive")
        ))
    }

    /// How many messages a channel whose semaphore is at `at` holds. A bounded channel's
    /// semaphore has a permit per free slot; an unbounded one counts the messages in it. Both
    /// keep the count shifted past a "closed" bit.
    fn queued(&self, at: u64, ty: usize) -> Option<u64> {
        let Some(bound) = self.read_path(at, ty, &["bound"]) else {
            return Some(self.read_path(at, ty, &[])? >> 1);
        };
        let free = self.read_path(at, ty, &["semaphore", "permits"])? >> 1;
        Some(bound.saturating_sub(free))
    }

    /// The socket the tokio::net value at `at` (or behind the reference there) holds, with
    /// what `name` (a future's type or an async fn) does with it.
    fn socket_detail(&self, at: u64, ty: usize, name: &str) -> Option<Detail> {
        let fd = self.socket_fd(at, ty, true, 0)?;
        let verb = Verb::of(name);
        let pid = self.memory.pid()?;
        Some(Detail::Socket(match sockets::find(pid, fd) {
            Some(socket) => verb.describe(&socket, fd),
            None => format!("{} fd {fd}", verb.words()),
        }))
    }

    /// The fd of the first `OwnedFd` inside the value at `address`, following at most one
    /// reference (a `Read` future's `&mut TcpStream`): tokio's own pointers lead elsewhere.
    fn socket_fd(&self, address: u64, ty: usize, follow: bool, depth: usize) -> Option<i32> {
        if depth > MAX_FD_DEPTH {
            return None;
        }
        let info = self.types.get(ty).ok()?;
        if info.name.ends_with("OwnedFd") {
            let fd = self.read_path(address, ty, &["fd"])? as i32;
            return (fd >= 0).then_some(fd);
        }
        match &info.kind {
            TypeKind::Pointer { pointee } if follow => {
                let target = self.memory.read_u64(address)?;
                self.socket_fd(target, (*pointee)?, false, depth + 1)
            }
            TypeKind::Struct {
                variants: Some(_), ..
            } => {
                let active = self.active_variant(address, &info)?;
                self.socket_fd(address + active.offset, active.ty?, follow, depth + 1)
            }
            TypeKind::Struct { members, .. } => members.iter().find_map(|member| {
                self.socket_fd(address + member.offset, member.ty?, follow, depth + 1)
            }),
            _ => None,
        }
    }

    /// Where `path` leads from the value of type `ty` at `at`: field names, and `*` to go
    /// through a pointer.
    fn follow(&self, mut at: u64, mut ty: usize, path: &[&str]) -> Option<(u64, usize)> {
        for steps in path.split_inclusive(|step| *step == "*") {
            let (fields, deref) = match steps.split_last() {
                Some((&"*", fields)) => (fields, true),
                _ => (steps, false),
            };
            let (offset, field) = self.types.offset_of(ty, fields)?;
            (at, ty) = (at + offset, field);
            if deref {
                let TypeKind::Pointer { pointee } = self.types.get(ty).ok()?.kind else {
                    return None;
                };
                (at, ty) = (self.memory.read_u64(at)?, pointee?);
            }
        }
        Some((at, ty))
    }

    /// The unsigned number at the end of `path` (see [`Walker::follow`]).
    fn read_path(&self, at: u64, ty: usize, path: &[&str]) -> Option<u64> {
        let (at, ty) = self.follow(at, ty, path)?;
        self.read_uint(at, self.types.get(ty).ok()?.size)
    }
}

/// `1 sender alive`, `2 permits available`.
fn counted(count: u64, noun: &str, state: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{plural} {state}")
}

/// Which way a socket is used, from the name of what uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Accept,
    Read,
    Write,
    Other,
}

impl Verb {
    fn of(name: &str) -> Self {
        // The future's or function's own name, not its path or type parameters.
        let path = name.split('<').next().unwrap_or(name);
        let own = path.rsplit("::").next().unwrap_or(path).to_lowercase();
        let has = |words: &[&str]| words.iter().any(|word| own.contains(word));
        // `ready(interest)` reads or writes: which one is in a value, not in the name.
        if has(&["accept"]) {
            Self::Accept
        } else if own == "ready" {
            Self::Other
        } else if has(&["read", "recv", "peek"]) {
            Self::Read
        } else if has(&["write", "send", "flush", "shutdown"]) {
            Self::Write
        } else {
            Self::Other
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::Accept => "accepting on",
            Self::Read => "reading from",
            Self::Write => "writing to",
            Self::Other => "waiting on",
        }
    }

    /// `reading from 127.0.0.1:7000 ← 127.0.0.1:50122 (TCP, fd 9)`: the arrow shows which way
    /// the data goes (↔ where the name does not say).
    fn describe(self, socket: &sockets::Socket, fd: i32) -> String {
        let ends = match (&socket.peer, self) {
            (Some(peer), Self::Write) => format!("{} → {peer}", socket.local),
            (Some(peer), Self::Other) => format!("{} ↔ {peer}", socket.local),
            (Some(peer), _) => format!("{} ← {peer}", socket.local),
            (None, _) => socket.local.clone(),
        };
        format!("{} {ends} ({}, fd {fd})", self.words(), socket.protocol)
    }
}

/// Whether `function` is the mpsc channel's `verb` (`::recv`, `::send`), bounded or not.
fn is_mpsc(function: &str, verb: &str) -> bool {
    function.starts_with("tokio::sync::mpsc::") && function.ends_with(verb)
}

/// Frames get the walk's detail on their leaf; a `select!` or `join!` frame keeps its own
/// summary (its branches got theirs).
pub(super) fn apply(frames: &mut [Frame], detail: Option<Detail>) {
    let (Some(detail), Some(last)) = (detail, frames.last_mut()) else {
        return;
    };
    if last.function.ends_with('!') {
        return;
    }
    last.leaf = Some(match (detail, last.leaf.take()) {
        (Detail::Socket(text), _) | (Detail::Counts(text), None) => text.into(),
        (Detail::Counts(text), Some(leaf)) => format!("{leaf}: {text}").into(),
    });
}

#[cfg(test)]
mod tests {
    use super::{sockets::Socket, *};

    #[test]
    fn the_words_say_which_way_the_data_goes() {
        let socket = Socket {
            protocol: "TCP",
            local: "127.0.0.1:50122".into(),
            peer: Some("127.0.0.1:7000".into()),
        };
        let read = Verb::of("tokio::io::util::read::Read<tokio::net::tcp::stream::TcpStream>");
        assert_eq!(
            read.describe(&socket, 9),
            "reading from 127.0.0.1:50122 ← 127.0.0.1:7000 (TCP, fd 9)"
        );
        assert_eq!(
            Verb::of("tokio::io::util::write_all::WriteAll<tokio::net::tcp::stream::TcpStream>")
                .describe(&socket, 9),
            "writing to 127.0.0.1:50122 → 127.0.0.1:7000 (TCP, fd 9)"
        );
        assert_eq!(
            Verb::of("tokio::net::tcp::listener::TcpListener::accept"),
            Verb::Accept
        );
        assert_eq!(
            Verb::of("tokio::net::tcp::stream::TcpStream::ready"),
            Verb::Other
        );
        assert_eq!(
            Verb::of("tokio::net::tcp::stream::TcpStream::readable"),
            Verb::Read
        );
        assert_eq!(counted(1, "sender", "alive"), "1 sender alive");
        assert_eq!(counted(0, "permit", "available"), "0 permits available");
    }

    #[test]
    fn counts_add_to_the_leaf_a_socket_replaces_it() {
        let mut frames = vec![Frame {
            function: "tokio::future::poll_fn::PollFn<…>".into(),
            leaf: Some("waiting for an mpsc message".into()),
            ..Frame::default()
        }];
        apply(
            &mut frames,
            Some(Detail::Counts("2 senders alive, 0 queued".into())),
        );
        assert_eq!(
            frames[0].leaf.as_deref(),
            Some("waiting for an mpsc message: 2 senders alive, 0 queued")
        );
        apply(&mut frames, Some(Detail::Socket("reading from x".into())));
        assert_eq!(frames[0].leaf.as_deref(), Some("reading from x"));
    }
}
