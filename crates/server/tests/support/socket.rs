//! Watching a raw client socket for the server closing it (the protection and parking suites,
//! which talk HTTP/1.1 by hand to see exactly what the server does with a connection).

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Waits up to `within` for the server to close `stream`; true if it did.
pub(crate) async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    closed_before(stream, Instant::now() + within).await
}

/// Whether the server closes `stream` before `deadline`.
pub(crate) async fn closed_before(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // a response (e.g. 408) before the close
        }
    }
}
