//! A fake upstream registry for fault tests: raw HTTP/1.1 on 127.0.0.1 over std threads, one
//! request per connection, its answers decided by a closure.
//!
//! ```ignore
//! let data = b"layer".to_vec();
//! let fake = FakeRegistry::start(move |req| match req.nth {
//!     0 => Reply::bytes(data.clone()).truncate(2),   // announce 5 bytes, send 2, close
//!     _ => Reply::bytes(data.clone()).ranged(req),   // 206 for `Range: bytes=N-`
//! });
//! assert_eq!(fake.count("GET", "/v2/x/blobs/sha256:…"), 2);
//! ```
//!
//! `GET /v2/` always answers 200; every other request goes to the closure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sha256_hex;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// How many requests with the same method and path came before this one.
    pub nth: usize,
}

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// N of a `Range: bytes=N-` header.
    pub fn range_from(&self) -> Option<u64> {
        let spec = self.header("range")?.strip_prefix("bytes=")?;
        spec.strip_suffix('-')?.parse().ok()
    }
}

/// An answer: status, headers and body, possibly lying about its length or sent slowly.
/// The connection is closed after every answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The `Content-Length` sent; `None` means the body's real length.
    announce: Option<usize>,
    /// Send `.0` bytes, then sleep `.1`, and so on.
    throttle: Option<(usize, Duration)>,
    /// Send no `Content-Length`: the body ends when the connection closes.
    close_delimited: bool,
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            announce: None,
            throttle: None,
            close_delimited: false,
        }
    }

    /// 200 with `body` as a blob.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            body: body.into(),
            ..Reply::status(200)
        }
        .header("Content-Type", "application/octet-stream")
    }

    /// 200 with a manifest: `Content-Type` and a correct `Docker-Content-Digest`.
    pub fn manifest(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        let body = body.into();
        let digest = sha256_hex(&body);
        Reply {
            body,
            ..Reply::status(200)
        }
        .header("Content-Type", content_type)
        .header("Docker-Content-Digest", &digest)
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends no `Content-Length` at all (a body delimited by the connection's close).
    pub fn close_delimited(mut self) -> Reply {
        self.close_delimited = true;
        self
    }

    /// Announces `len` as `Content-Length`, whatever the body's real length.
    pub fn announce(mut self, len: usize) -> Reply {
        self.announce = Some(len);
        self
    }

    /// Announces the full length but sends only the first `n` bytes, then closes.
    pub fn truncate(mut self, n: usize) -> Reply {
        self.announce = Some(self.announce.unwrap_or(self.body.len()));
        self.body.truncate(n);
        self
    }

    /// Sends `bytes` every `every`.
    pub fn throttle(mut self, bytes: usize, every: Duration) -> Reply {
        self.throttle = Some((bytes, every));
        self
    }

    /// Honours `Range: bytes=N-` of `req`: 206 with `Content-Range` and the rest of the body
    /// (416 past the end). Without such a header, the reply is unchanged.
    pub fn ranged(mut self, req: &Request) -> Reply {
        let Some(from) = req.range_from() else {
            return self;
        };
        let len = self.body.len();
        if from as usize >= len {
            return Reply::status(416).header("Content-Range", &format!("bytes */{len}"));
        }
        self.body.drain(..from as usize);
        self.status = 206;
        self.header("Content-Range", &format!("bytes {from}-{}/{len}", len - 1))
    }
}

/// The running fake; stops accepting when dropped.
pub struct FakeRegistry {
    /// Listening port.
    pub port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

impl FakeRegistry {
    /// Starts answering on a free port with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake registry");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (log, handler) = (log2.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, &log, &*handler));
            }
        });
        FakeRegistry { port, log, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Number of requests with `method` for `path` (no query string).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Reads one request head (GETs and HEADs carry no body); `None` if the peer sent garbage.
/// `nth` is left 0.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?);
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(Request {
        method,
        path,
        headers,
        nth: 0,
    })
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<Request>>, handler: &dyn Fn(&Request) -> Reply) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let Some(mut request) = read_request(&mut reader) else {
        return;
    };
    {
        let mut log = log.lock().unwrap();
        request.nth = log
            .iter()
            .filter(|r| r.method == request.method && r.path == request.path)
            .count();
        log.push(request.clone());
    }
    let reply = if request.path == "/v2/" || request.path == "/v2" {
        Reply::manifest("application/json", b"{}".to_vec())
    } else {
        handler(&request)
    };
    let _ = write_reply(&mut stream, &reply, request.method == "HEAD");
    // Close gracefully: FIN after the last byte, and read what the peer still sends, so that
    // the kernel does not answer with a reset that could discard bytes in flight.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = std::io::copy(&mut reader.take(1 << 20), &mut std::io::sink());
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, head_only: bool) -> std::io::Result<()> {
    let length = reply.announce.unwrap_or(reply.body.len());
    let mut head = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
    if !reply.close_delimited {
        head += &format!("Content-Length: {length}\r\n");
    }
    for (name, value) in &reply.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    if head_only {
        return stream.flush();
    }
    let (step, pause) = reply
        .throttle
        .unwrap_or((reply.body.len().max(1), Duration::ZERO));
    for chunk in reply.body.chunks(step) {
        stream.write_all(chunk)?;
        stream.flush()?;
        std::thread::sleep(pause);
    }
    Ok(())
}
