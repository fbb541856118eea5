//! A process's sockets as the kernel lists them: fd -> inode from `/proc/PID/fd`, inode ->
//! addresses from the tables in `/proc/PID/net` (the process's own network namespace).

use std::{
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

/// How long the tables read stay good for sockets they list: a server with thousands of
/// parked connections would otherwise have its whole table read again for each.
const FRESH: Duration = Duration::from_secs(1);
/// How soon the tables are read again for a socket they did not list (one opened since).
const RETRY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub protocol: &'static str,
    pub local: String,
    /// None for a listening or unconnected socket.
    pub peer: Option<String>,
}

/// The tables last read, by socket inode.
struct Tables {
    pid: u32,
    read: Instant,
    by_inode: HashMap<String, Socket>,
}

thread_local! {
    static TABLES: RefCell<Option<Tables>> = const { RefCell::new(None) };
}

/// Socket `fd` of process `pid`, if it is one the kernel lists.
pub fn find(pid: u32, fd: i32) -> Option<Socket> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
    TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        let known = tables.as_ref().filter(|known| known.pid == pid);
        let age = known.map(|known| known.read.elapsed());
        let listed = known.is_some_and(|known| known.by_inode.contains_key(inode));
        let stale = age.is_none_or(|age| age > FRESH || (!listed && age > RETRY));
        if stale {
            *tables = Some(read(pid));
        }
        tables.as_ref()?.by_inode.get(inode).cloned()
    })
}

fn read(pid: u32) -> Tables {
    let table =
        |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
    let mut by_inode = HashMap::new();
    for (name, protocol) in [
        ("tcp", "TCP"),
        ("tcp6", "TCP"),
        ("udp", "UDP"),
        ("udp6", "UDP"),
    ] {
        by_inode.extend(inet(&table(name), protocol));
    }
    by_inode.extend(unix(&table("unix")));
    Tables {
        pid,
        read: Instant::now(),
        by_inode,
    }
}

/// The rows of a `/proc/net/tcp`-style table: `sl local rem st ... uid timeout inode`.
pub fn inet(table: &str, protocol: &'static str) -> Vec<(String, Socket)> {
    let row = |row: &str| {
        let columns: Vec<&str> = row.split_whitespace().collect();
        let peer = address(columns.get(2)?)?;
        let socket = Socket {
            protocol,
            local: address(columns.get(1)?)?.to_string(),
            peer: (!peer.ip().is_unspecified()).then(|| peer.to_string()),
        };
        Some(((*columns.get(9)?).to_owned(), socket))
    };
    table.lines().skip(1).filter_map(row).collect()
}

/// `0100007F:1B58`: the address as the kernel's 32-bit words in host order, then the port.
fn address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|word| {
            let hex = ip.get(word * 8..word * 8 + 8)?;
            Some(u32::from_str_radix(hex, 16).ok()?.to_le_bytes())
        })
        .collect();
    let bytes = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?))
}

/// The rows of `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode Path`.
pub fn unix(table: &str) -> Vec<(String, Socket)> {
    let row = |row: &str| {
        let columns: Vec<&str> = row.split_whitespace().collect();
        let socket = Socket {
            protocol: "Unix",
            local: columns
                .get(7)
                .map_or("an unnamed socket", |path| path)
                .to_owned(),
            peer: None,
        };
        Some(((*columns.get(6)?).to_owned(), socket))
    };
    table.lines().skip(1).filter_map(row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C3CA 0100007F:1B58 01 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 20 4 30 10 -1";

    fn lookup(rows: Vec<(String, Socket)>, inode: &str) -> Option<Socket> {
        rows.into_iter()
            .find(|(known, _)| known == inode)
            .map(|(_, socket)| socket)
    }

    #[test]
    fn kernel_tables_give_the_addresses() {
        assert_eq!(
            lookup(inet(TCP, "TCP"), "4712"),
            Some(Socket {
                protocol: "TCP",
                local: "127.0.0.1:50122".into(),
                peer: Some("127.0.0.1:7000".into()),
            })
        );
        assert_eq!(lookup(inet(TCP, "TCP"), "4711").and_then(|s| s.peer), None);
        let tcp6 = "header\n   0: 00000000000000000000000001000000:1F90 \
                    00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 99";
        assert_eq!(
            lookup(inet(tcp6, "TCP"), "99").map(|socket| socket.local),
            Some("[::1]:8080".into())
        );
        let unix_table = "Num RefCount Protocol Flags Type St Inode Path\n\
                          0000: 00000002 00000000 00010000 0001 01 555 /run/app.sock";
        assert_eq!(
            lookup(unix(unix_table), "555").map(|socket| socket.local),
            Some("/run/app.sock".into())
        );
    }
}
