//! Talking to the Docker engine before testcontainers does: whether one
//! answers, and which API version it speaks.
//!
//! testcontainers 0.27 (bollard 0.20) addresses every call to API `/v1.52/`,
//! and an engine refuses versions newer than its own ("client version 1.52 is
//! too new"): Docker 28 and older, Debian bookworm's 20.10 (1.41). For those,
//! [`relay`] sits between the two and rewrites the version in each request
//! line down to the engine's. bollard has `negotiate_version`, but
//! testcontainers does not call it and keeps its client private.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the engine listens: `DOCKER_HOST` (`unix://` or `tcp://`), else the
/// default socket.
#[derive(Debug, Clone)]
pub(super) enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    pub(super) fn from_env() -> Self {
        match std::env::var("DOCKER_HOST") {
            Ok(h) if h.starts_with("tcp://") => Self::Tcp(h["tcp://".len()..].to_string()),
            Ok(h) if h.starts_with("unix://") => Self::Unix(h["unix://".len()..].into()),
            _ => Self::Unix("/var/run/docker.sock".into()),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Self::Unix(p) => format!("unix://{}", p.display()),
            Self::Tcp(a) => format!("tcp://{a}"),
        }
    }
}

/// An engine that answered, with the highest API version it accepts.
#[derive(Debug, Clone)]
pub(super) struct Engine {
    pub endpoint: Endpoint,
    pub api_version: (u32, u32),
}

/// The API version testcontainers' client asks for.
pub(super) const CLIENT_API_VERSION: (u32, u32) = (1, 52);

/// Asks the engine for its version (`GET /version`, unversioned); `Err` says
/// why no engine answered.
pub(super) fn probe(endpoint: &Endpoint) -> Result<Engine, String> {
    let request = b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n";
    let timeout = Some(Duration::from_secs(5));
    let mut reply = Vec::new();
    let io = match endpoint {
        Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut reply)
        }),
        Endpoint::Tcp(addr) => std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut reply)
        }),
    };
    io.map_err(|e| format!("{}: {e}", endpoint.describe()))?;
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let version: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| format!("{}: not a Docker engine ({e})", endpoint.describe()))?;
    let api = version["ApiVersion"].as_str().unwrap_or_default();
    let parsed = parse_version(api.as_bytes())
        .ok_or_else(|| format!("{}: unreadable ApiVersion {api:?}", endpoint.describe()))?;
    Ok(Engine {
        endpoint: endpoint.clone(),
        api_version: parsed,
    })
}

fn parse_version(v: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (major, minor) = s.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Serves the engine's API on a loopback port, rewriting request versions
/// newer than the engine's down to it. Runs on the current runtime for as
/// long as that lives.
pub(super) async fn relay(engine: Engine) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let engine = engine.clone();
            tokio::spawn(async move {
                let upstream: Box<dyn Stream> = match &engine.endpoint {
                    Endpoint::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return,
                    },
                    Endpoint::Tcp(a) => match tokio::net::TcpStream::connect(a).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return,
                    },
                };
                let (mut up_read, mut up_write) = tokio::io::split(upstream);
                let (mut down_read, mut down_write) = client.into_split();
                let version = engine.api_version;
                let requests = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = down_read.read(&mut buf).await?;
                        if n == 0 {
                            return up_write.shutdown().await;
                        }
                        let chunk = rewrite_versions(&buf[..n], version);
                        up_write.write_all(&chunk).await?;
                    }
                };
                let replies = tokio::io::copy(&mut up_read, &mut down_write);
                let _ = tokio::join!(requests, replies);
            });
        }
    });
    Ok(addr)
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Rewrites `METHOD /vX.Y/` at the start of a line to the engine's version
/// when X.Y is newer. A client writes each request head in one piece, so a
/// request line is never split across reads in practice.
fn rewrite_versions(chunk: &[u8], engine: (u32, u32)) -> Vec<u8> {
    const METHODS: [&[u8]; 5] = [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD "];
    let mut out = Vec::with_capacity(chunk.len());
    let mut line_start = true;
    let mut i = 0;
    while i < chunk.len() {
        if line_start {
            if let Some(m) = METHODS.iter().find(|m| chunk[i..].starts_with(m)) {
                let path = i + m.len();
                if chunk[path..].starts_with(b"/v") {
                    let digits = &chunk[path + 2..];
                    let end = digits
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                        .unwrap_or(digits.len());
                    if parse_version(&digits[..end]).is_some_and(|v| v > engine) {
                        out.extend_from_slice(&chunk[i..path]);
                        out.extend_from_slice(format!("/v{}.{}", engine.0, engine.1).as_bytes());
                        i = path + 2 + end;
                        line_start = false;
                        continue;
                    }
                }
            }
        }
        line_start = chunk[i] == b'\n';
        out.push(chunk[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_newer_versions_in_request_lines() {
        let req =
            b"POST /v1.52/containers/create HTTP/1.1\r\nHost: x\r\n\r\n{\"a\":\"GET /v1.52/\"}";
        let out = rewrite_versions(req, (1, 41));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\n\r\n{\"a\":\"GET /v1.52/\"}"
        );
        let same = b"GET /v1.40/version HTTP/1.1\r\n\r\n";
        assert_eq!(rewrite_versions(same, (1, 41)), same.to_vec());
    }
}
