//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 response with a correct content-length.
pub fn http(status_line: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A loopback server that answers every connection with `response` (sent as is), after
/// reading the request.
pub async fn canned(response: impl Into<String>) -> SocketAddr {
    let response: Arc<str> = response.into().into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}
