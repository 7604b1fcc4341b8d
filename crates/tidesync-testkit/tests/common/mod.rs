//! Small std-only upstreams and clients for testing the proxy.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a test client waits for a reply before the test fails instead of hanging.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// An upstream that echoes every byte back until the client half-closes.
pub fn echo_server() -> SocketAddr {
    serve(|mut stream| {
        let mut reader = match stream.try_clone() {
            Ok(r) => r,
            Err(_) => return,
        };
        let _ = io::copy(&mut reader, &mut stream);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    })
}

/// An HTTP-like upstream: each `\n`-terminated line is a request; it is recorded, then
/// answered with `ok:<line>\n`. Bytes left without a newline at EOF are recorded as partial.
#[derive(Debug, Clone)]
pub struct LineServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    partials: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl LineServer {
    pub fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let partials = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let addr = {
            let (received, partials) = (received.clone(), partials.clone());
            let (accepted, open) = (accepted.clone(), open.clone());
            serve(move |stream| {
                accepted.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                answer_lines(stream, &received, &partials);
                open.fetch_sub(1, Ordering::SeqCst);
            })
        };
        Self {
            addr,
            received,
            partials,
            accepted,
            open,
        }
    }

    /// Complete requests the server processed, in order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Truncated requests the server saw before the connection closed.
    pub fn partials(&self) -> Vec<String> {
        self.partials.lock().unwrap().clone()
    }

    /// Connections the server accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the server still has open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn answer_lines(stream: TcpStream, received: &Mutex<Vec<String>>, partials: &Mutex<Vec<String>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => {
                partials.lock().unwrap().push(line);
                return;
            }
            Ok(_) => {
                let line = line.trim_end().to_owned();
                received.lock().unwrap().push(line.clone());
                if writer.write_all(format!("ok:{line}\n").as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Accepts forever on a loopback port, one thread per connection. The accept thread is
/// detached; it lives as long as the test binary.
fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// A line-protocol client connection.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request line and reads the reply: `Some(line)` for a full reply, `None`
    /// if the connection closed or reset first (what a cut or kill looks like).
    /// A read timeout is an error: the test would otherwise hang on a proxy bug.
    pub fn request(&mut self, line: &str) -> io::Result<Option<String>> {
        if self
            .writer
            .write_all(format!("{line}\n").as_bytes())
            .is_err()
        {
            return Ok(None);
        }
        self.read_reply()
    }

    /// Reads one reply line, see [`request`](Self::request).
    pub fn read_reply(&mut self) -> io::Result<Option<String>> {
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(_) if reply.ends_with('\n') => Ok(Some(reply.trim_end().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if is_timeout(&e) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Reads whatever arrives until EOF or reset, to see exactly what a cut let through.
    pub fn read_rest(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Err(e) if is_timeout(&e) => Err(e),
            _ => Ok(rest),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether the stream is closed: a read returns EOF or a reset within the client timeout.
pub fn reads_closed(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !is_timeout(&e),
    }
}
