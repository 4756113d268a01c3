//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![allow(unused_imports, dead_code)] // llm-proxy: newer rustc warns on the 0.12.0 sources
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ClientWatch, ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // llm-proxy patch: the accept thread, joined by `stop_listening`.
    accept_thread: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

enum Message {
    Error(IoError),
    /// (llm-proxy patch: boxed, see `ClientConnection::build`.)
    NewRequest(Box<Request>),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Box<Request>> for Message {
    fn from(rq: Box<Request>) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// llm-proxy patch: limits the listener enforces itself.
#[derive(Clone)]
pub struct Limits {
    /// Open client connections at most (each has a thread while open). A
    /// connection beyond it is answered 503 and closed by the accept thread,
    /// without a thread of its own.
    pub max_connections: usize,
    /// A whole request head must arrive within this, from its first byte.
    pub header_timeout: Option<Duration>,
    /// Stack size of connection threads (0: std's default).
    pub stack_size: usize,
    /// The JSON body of an error tiny_http answers itself (400, 408, 414,
    /// 417, 431, 503, 505), from its status and message.
    pub error_body: fn(u16, &str) -> String,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: usize::MAX,
            header_timeout: None,
            stack_size: 0,
            error_body: |_, message| format!("{{\"error\":{:?}}}", message),
        }
    }
}

/// llm-proxy patch: accept errors after which the listener is useless (it
/// is closed, shut down or not a listening socket); any other error is
/// transient (no file descriptors or memory for now, an aborted handshake).
fn accept_error_is_fatal(e: &IoError) -> bool {
    matches!(e.raw_os_error(), Some(9 | 22 | 88 | 95)) // EBADF EINVAL ENOTSOCK EOPNOTSUPP
}

/// llm-proxy patch: tells `recv` that the accept thread has ended, however
/// it ended (a fatal accept error or a panic), unless the server was being
/// dropped; before, `recv` then waited for ever and the process lived on
/// without a listener.
struct AcceptThreadGuard {
    close: Arc<AtomicBool>,
    messages: Arc<MessagesQueue<Message>>,
    reason: Option<String>,
}

impl Drop for AcceptThreadGuard {
    fn drop(&mut self) {
        if self.close.load(Relaxed) {
            return;
        }
        let why = self
            .reason
            .take()
            .unwrap_or_else(|| "it panicked".to_string());
        log::error!("the accept thread stopped: {}", why);
        self.messages.push(Message::Error(IoError::new(
            IoErrorKind::Other,
            format!("the accept thread stopped: {}", why),
        )));
    }
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, Limits::default())
    }

    /// llm-proxy patch: `from_listener` with `Limits`.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let mut guard = AcceptThreadGuard {
            close: close_trigger.clone(),
            messages: messages.clone(),
            reason: None,
        };
        let accept_thread = thread::Builder::new().name("tiny-http-accept".into()).spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new(limits.max_connections, limits.stack_size);

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                let new_client = match server.accept() {
                    Ok((sock, _)) => {
                        use util::RefinedTcpStream;
                        let stop_handle = sock.try_clone().ok();
                        let (read_closable, write_closable) = match ssl {
                            None => RefinedTcpStream::new(sock),
                            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                            Some(ref ssl) => {
                                // trying to apply SSL over the connection
                                // if an error occurs, we just close the socket and resume listening
                                let sock = match ssl.accept(sock) {
                                    Ok(s) => s,
                                    Err(_) => continue,
                                };

                                RefinedTcpStream::new(sock)
                            }
                            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                            Some(ref _ssl) => unreachable!(),
                        };

                        // llm-proxy patch: the head deadline (`Deadline`).
                        let deadline = Arc::new(util::refined_tcp_stream::Deadline::default());
                        // llm-proxy patch: one more descriptor per connection,
                        // to stop its read-ahead (see
                        // `Request::stop_reading_ahead`) and to drain it
                        // without waiting when it is refused.
                        let stopper = Arc::new(util::refined_tcp_stream::Stopper::new(
                            stop_handle,
                        ));
                        // llm-proxy patch 15: where a parked connection
                        // goes back to.
                        stopper.set_resumer(tasks_pool.resumer());
                        let read_closable = read_closable.with_deadline(deadline.clone());
                        Ok(ClientConnection::new(
                            write_closable,
                            read_closable,
                            deadline,
                            stopper,
                            limits.clone(),
                        ))
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok(client) => {
                        let messages = inside_messages.clone();
                        tasks_pool.spawn(Box::new(ConnectionTask { client, messages }));
                    }

                    // llm-proxy patch: an accept error used to end the
                    // accept thread, and so the server, for good. A timeout
                    // (SO_RCVTIMEO on the listener, which accepted sockets
                    // inherit) is routine; running out of file descriptors
                    // or an aborted handshake is transient. Keep accepting.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    // llm-proxy patch: but a listener that is gone stays
                    // gone: end the thread (the guard tells `recv`).
                    Err(e) if accept_error_is_fatal(&e) => {
                        guard.reason = Some(format!("accept failed: {}", e));
                        break;
                    }
                    Err(e) => {
                        log::error!("Error accepting new client: {}", e);
                        thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                }
            }
            log::debug!("Terminating accept thread");
            drop(guard);
        })?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            accept_thread: std::sync::Mutex::new(Some(accept_thread)),
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(*rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(*rq)),
            None => Ok(None),
        }
    }

    /// llm-proxy patch: `recv_timeout`, the request left on the heap where
    /// its connection's thread built it (see `ClientConnection::build`), so
    /// that a handler does not hold ~600 bytes of it in its frames.
    pub fn recv_timeout_boxed(&self, timeout: Duration) -> IoResult<Option<Box<Request>>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// llm-proxy patch: `try_recv`, boxed as `recv_timeout_boxed`.
    pub fn try_recv_boxed(&self) -> IoResult<Option<Box<Request>>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(*rq)),
            None => Ok(None),
        }
    }

    /// llm-proxy patch: close the listening socket, so that a new connection
    /// is refused, while the connections already accepted live on: their
    /// requests still arrive through `recv`, and their responses are sent.
    /// Returns once the socket is closed (the accept thread has ended).
    pub fn stop_listening(&self) {
        self.close.store(true, Relaxed);
        self.wake_accept_thread();
        let handle = self
            .accept_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Connect briefly to ourselves so a blocked `accept` returns and the
    /// accept thread sees `close`.
    fn wake_accept_thread(&self) {
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => match addr.as_pathname() {
                Some(path) => std::os::unix::net::UnixStream::connect(path).map(Connection::from),
                None => return,
            },
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

/// The HTTPS side of `ConnectionTask::run`, in a frame of its own.
#[inline(never)]
fn run_secure(client: &mut ClientConnection, messages: &MessagesQueue<Message>) {
    let (sender, receiver) = mpsc::channel();
    for rq in client {
        messages.push(Box::new((*rq).with_notify_sender(sender.clone())).into());
        if receiver.recv().is_err() {
            return;
        }
    }
}

/// llm-proxy patch: a client connection as a task of the pool.
struct ConnectionTask {
    client: ClientConnection,
    messages: Arc<MessagesQueue<Message>>,
}

impl util::Task for ConnectionTask {
    fn run(mut self: Box<Self>) -> util::Ended {
        // llm-proxy patch: the connection stays in its box. Moved out (it is
        // ~1 KB with its buffers' state), it sat in this frame below every
        // read of the connection, and so did the HTTPS branch's channel:
        // with them, a connection thread's stack reached a third page
        // (resident for the thread's life) when it built a request.
        let ConnectionTask { client, messages } = &mut *self;
        // Synchronization is needed for HTTPS requests to avoid a deadlock
        if client.secure() {
            run_secure(client, messages);
        } else {
            for rq in client.by_ref() {
                messages.push(rq.into());
            }
        }
        // llm-proxy patch 15: the handler asked to park the connection
        // while its response is written: the task waits in the connection's
        // state and this thread goes back to the pool. If the response
        // ended meanwhile, the task is queued again at once.
        if !self.client.take_parked() {
            return util::Ended::Closed;
        }
        let stopper = self.client.stopper();
        if let Err(task) = stopper.park(self) {
            stopper.resume_now(task);
        }
        util::Ended::Parked
    }

    fn refuse(self: Box<Self>, status: u16, message: &str) {
        self.client.refuse(status, message);
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
