//! `TCP_NODELAY` on the store's PostgreSQL connections.
//!
//! sqlx 0.9.0 does not set it (upstream issue transact-rs/sqlx#4335; its fix is merged
//! but not in a release). Without it, Nagle's algorithm holds back the last,
//! partial TCP segment of a statement that spans several until the server has
//! acknowledged the ones before, and the server delays that acknowledgement (40 ms on
//! Linux) because it is still waiting for the rest of the message. Every statement larger
//! than one segment (64 KiB on loopback, ~1.4 KB across a network) could then wait
//! ~40 ms: the firing batch's multi-row inserts then take 27–34 ms each on PostgreSQL,
//! with both CPUs mostly idle and the server `idle in transaction`, on `ClientRead`.
//!
//! sqlx does not hand out its socket, so when a connection opens this module asks the
//! server which client port it sees (`inet_client_port()`), finds this process's TCP
//! socket with that local port and the server's port as its peer, and sets the option
//! there. Behind NAT or a connection pooler the ports differ and nothing is found; a
//! warning says so once, and the service works, with the delays.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::AnyConnection;

/// What [`set_on`] did for one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum NoDelay {
    /// The option is now set on the connection's socket.
    Set,
    /// Not a TCP connection (a Unix socket): no Nagle, nothing to do.
    NotTcp,
    /// No socket of this process has the ports the server sees (NAT, a pooler), or
    /// setting the option failed.
    NotFound,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Sets `TCP_NODELAY` on the socket of the freshly opened PostgreSQL connection `conn`.
pub async fn set_on(conn: &mut AnyConnection) -> Result<NoDelay, sqlx::Error> {
    let (client, server) = ports_seen_by_server(conn).await?;
    let (Some(client), Some(server)) = (client, server) else {
        return Ok(NoDelay::NotTcp);
    };
    let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server)) else {
        return Ok(NoDelay::NotFound);
    };
    let results = for_each_socket(client, server, |s| s.set_tcp_nodelay(true));
    if results.iter().any(Result::is_ok) {
        return Ok(NoDelay::Set);
    }
    if !WARNED.swap(true, Ordering::Relaxed) {
        let why = match results.into_iter().find_map(Result::err) {
            Some(e) => format!("setting it failed: {e}"),
            None => "no socket of this process has the ports the server sees (NAT or a \
                     connection pooler between them, or no /proc/self/fd to look in)"
                .to_string(),
        };
        tracing::warn!(
            client_port = client,
            server_port = server,
            "cannot set TCP_NODELAY on the PostgreSQL connections: {why}; statements larger \
             than one TCP segment may wait ~40 ms for the server's delayed acknowledgement"
        );
    }
    Ok(NoDelay::NotFound)
}

/// The client's and the server's port of `conn` as the server sees them (`None` over a
/// Unix socket).
async fn ports_seen_by_server(
    conn: &mut AnyConnection,
) -> Result<(Option<i32>, Option<i32>), sqlx::Error> {
    sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
        .fetch_one(&mut *conn)
        .await
}

/// `TCP_NODELAY` of this process's TCP socket(s) from `local_port` to `peer_port`.
#[cfg(test)]
fn nodelay_of(local_port: u16, peer_port: u16) -> Vec<bool> {
    for_each_socket(local_port, peer_port, |s| {
        s.tcp_nodelay().expect("read TCP_NODELAY")
    })
}

/// Runs `f` on every TCP socket of this process whose local port is `local_port` and
/// whose peer's port is `peer_port`; returns what it returned, in no particular order.
#[cfg(target_os = "linux")]
fn for_each_socket<T>(
    local_port: u16,
    peer_port: u16,
    mut f: impl FnMut(&socket2::SockRef<'_>) -> T,
) -> Vec<T> {
    use std::os::fd::{BorrowedFd, RawFd};

    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `raw` was an open socket of this process when listed, and the borrow
        // lives only for these few system calls. If another thread closed it meanwhile
        // the calls fail with EBADF; if the number was reused at once, the ports below
        // (those of a connection that is open, the one being set up) will not match.
        // Nothing here closes, reads or writes the descriptor.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let sock = socket2::SockRef::from(&fd);
        let port = |a: std::io::Result<socket2::SockAddr>| {
            a.ok().and_then(|a| a.as_socket()).map(|a| a.port())
        };
        if port(sock.local_addr()) == Some(local_port) && port(sock.peer_addr()) == Some(peer_port)
        {
            out.push(f(&sock));
        }
    }
    out
}

/// Elsewhere the descriptors cannot be listed: nothing is found.
#[cfg(not(target_os = "linux"))]
fn for_each_socket<T>(
    _local_port: u16,
    _peer_port: u16,
    _f: impl FnMut(&socket2::SockRef<'_>) -> T,
) -> Vec<T> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::Store;

    async fn ports(conn: &mut AnyConnection) -> (u16, u16) {
        match ports_seen_by_server(conn).await.expect("ports") {
            (Some(c), Some(s)) => (c as u16, s as u16),
            other => panic!("the test connects over TCP; the server saw {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_stores_postgres_connections_send_without_delay() {
        let Ok(url) = std::env::var("DUEHOOK_TEST_POSTGRES_URL") else {
            eprintln!(
                "skipped: DUEHOOK_TEST_POSTGRES_URL is not set, so this PostgreSQL test did not run (.ci/run sets it)"
            );
            return;
        };
        sqlx::any::install_default_drivers();
        // The control: a connection sqlx opens by itself has Nagle on. When this fails,
        // sqlx sets TCP_NODELAY again and this module can go.
        let mut plain = AnyConnection::connect(&url).await.expect("connect");
        let (c, s) = ports(&mut plain).await;
        assert_eq!(
            nodelay_of(c, s),
            vec![false],
            "a connection opened by sqlx alone (ports {c} -> {s})"
        );
        // Every connection of the store's pool, two held at once so both are opened.
        let store = Store::connect(&url, 2).await.expect("store");
        let mut a = store.pool().acquire().await.expect("first connection");
        let mut b = store.pool().acquire().await.expect("second connection");
        for conn in [&mut *a, &mut *b] {
            let (c, s) = ports(conn).await;
            assert_eq!(
                nodelay_of(c, s),
                vec![true],
                "the store's connection from port {c} to {s}"
            );
        }
        // And `set_on` turns it on for a connection opened without it.
        assert_eq!(set_on(&mut plain).await.expect("set"), NoDelay::Set);
        let (c, s) = ports(&mut plain).await;
        assert_eq!(nodelay_of(c, s), vec![true]);
        plain.close().await.expect("close");
    }
}
