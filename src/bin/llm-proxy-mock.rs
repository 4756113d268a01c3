//! `llm-proxy-mock`: a scripted fake LLM upstream for the demo, the SDK check
//! and the benchmarks.
//!
//! It speaks just enough of the OpenAI Chat Completions API and the Anthropic
//! Messages API (JSON and SSE, plain answers and tool calls) for real clients
//! to accept its answers, with deterministic content, optional latency and
//! simulated outages. It deliberately does not use the `llm_proxy` library, so
//! a bug in the proxy's wire types cannot hide itself by also being here.
//!
//! Every response body is rendered up front on a `recv` thread; anything that
//! then has to wait (a `--delay-ms`, or any stream) is handed to a short-lived
//! thread with a small stack, so a thousand slow streams do not starve the
//! fixed set of `recv` threads.

use std::io::{self, Cursor, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use chunked_transfer::Encoder;
use serde_json::{Value, json};
use tiny_http::{HTTPVersion, Header, Method, Request, Response, Server};

const USAGE: &str = "\
llm-proxy-mock: a fake OpenAI / Anthropic upstream for demos, checks and benchmarks

USAGE:
    llm-proxy-mock [OPTIONS]

OPTIONS:
    --host ADDR               address to bind [default: 127.0.0.1]
    --port N                  port to bind, 0 picks a free one [default: 9001]
    --name NAME               name shown in answers and errors [default: mock]
    --delay-ms N              wait before sending the response headers of a
                              successful answer (JSON and stream) [default: 0]
    --stream-interval-ms N    pause between SSE events [default: 0]
    --stream-chunks N         content-delta events per stream, and words of a
                              text completion (up to its max_tokens) [default: 20]
    --fail-every N            every Nth request to a POST route answers 503
                              (529 on /v1/messages); 0 = never [default: 0]
    --fail-rate P             fail POST requests with probability P in 0..1 [default: 0]
    --api-key KEY             require `Authorization: Bearer KEY` (OpenAI routes)
                              or `x-api-key: KEY` (/v1/messages)
    --threads N               threads receiving requests [default: max(8, 2 x cores)]
    --responses-error-first CODE
                              every POST /responses fails with CODE (e.g.
                              insufficient_quota): a stream sends
                              response.created, response.in_progress, then an
                              `error` event with that code; JSON answers 429
    --cut-after N             every event stream stops after N events and the
                              connection closes without ending the body (no
                              [DONE], no response.completed, no last chunk)
    -h, --help                print this help

ROUTES:
    GET  /health               {\"status\":\"ok\"}
    GET  /v1/models            one model, `mock-model`
    POST /v1/chat/completions  OpenAI Chat Completions (stream, tools, include_usage)
    POST /v1/messages          Anthropic Messages (stream, tools)
    POST /v1/completions       OpenAI legacy Completions (prompt string, list or
                               tokens; n, echo, max_tokens, stream, include_usage)
    POST /v1/embeddings        OpenAI Embeddings (input string, list or tokens;
                               encoding_format float or base64, dimensions)
    POST /v1/responses         OpenAI Responses, native (JSON and stream, function
                               tools); also at /openai/v1/responses (Azure v1)
    GET  /v1/responses/ID      a response this mock made (ids resp_NAME_N), else
                               404; also at /openai/v1/responses/ID

Tools: a chat, messages or responses request that offers tools gets a call
of the first one, unless its input already ends with a tool result (OpenAI
`role: tool`, Anthropic `tool_result`, Responses `function_call_output`):
then it answers text quoting that result, so tool round trips finish.

On start it prints one line to stdout:
    llm-proxy-mock NAME listening on http://HOST:PORT
";

/// Target size in bytes of a plain (non-tool) non-streaming OpenAI body, so
/// benchmarks move a realistic, constant amount of data per request.
const TARGET_BODY_BYTES: usize = 1400;

/// Stack size of the per-response threads. They only sleep and write
/// pre-rendered bytes, so a small stack is plenty and keeps 1,000 concurrent
/// streams cheap.
const RESPONDER_STACK_BYTES: usize = 64 * 1024;

/// Arguments of the single tool call the mock always makes.
const TOOL_ARGUMENTS: &str = r#"{"location":"Paris"}"#;

/// Fragments of `TOOL_ARGUMENTS` as sent in a stream; clients must join them.
const TOOL_ARGUMENT_FRAGMENTS: [&str; 3] = [r#"{"location":"#, r#""Paris""#, "}"];

const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do \
eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis \
nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure \
dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. \
Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit \
anim id est laborum.";

/// Command-line options.
struct Opts {
    host: String,
    port: u16,
    name: String,
    delay: Duration,
    stream_interval: Duration,
    stream_chunks: usize,
    fail_every: u64,
    fail_rate: f64,
    api_key: Option<String>,
    threads: usize,
    /// `--responses-error-first`: the code every Responses request fails with.
    responses_error_first: Option<String>,
    /// `--cut-after`: events sent before a stream is cut.
    cut_after: Option<usize>,
}

impl Default for Opts {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(4, |n| n.get());
        Opts {
            host: "127.0.0.1".to_string(),
            port: 9001,
            name: "mock".to_string(),
            delay: Duration::ZERO,
            stream_interval: Duration::ZERO,
            stream_chunks: 20,
            fail_every: 0,
            fail_rate: 0.0,
            api_key: None,
            threads: (2 * cores).max(8),
            responses_error_first: None,
            cut_after: None,
        }
    }
}

/// What the command line asked for.
enum Cli {
    Run(Opts),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut opts = Opts::default();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Cli::Help);
        }
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--host" => opts.host = value()?,
            "--port" => opts.port = number(&flag, &value()?)?,
            "--name" => opts.name = value()?,
            "--delay-ms" => opts.delay = Duration::from_millis(number(&flag, &value()?)?),
            "--stream-interval-ms" => {
                opts.stream_interval = Duration::from_millis(number(&flag, &value()?)?)
            }
            "--stream-chunks" => opts.stream_chunks = number(&flag, &value()?)?,
            "--fail-every" => opts.fail_every = number(&flag, &value()?)?,
            "--fail-rate" => {
                let p: f64 = number(&flag, &value()?)?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("--fail-rate must be between 0 and 1, got {p}"));
                }
                opts.fail_rate = p;
            }
            "--api-key" => opts.api_key = Some(value()?),
            "--threads" => {
                opts.threads = number(&flag, &value()?)?;
                if opts.threads == 0 {
                    return Err("--threads must be at least 1".to_string());
                }
            }
            "--responses-error-first" => opts.responses_error_first = Some(value()?),
            "--cut-after" => opts.cut_after = Some(number(&flag, &value()?)?),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    Ok(Cli::Run(opts))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value `{value}`"))
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(opts)) => opts,
        Ok(Cli::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("llm-proxy-mock: {e} (see --help)");
            std::process::exit(2);
        }
    };

    let listener = match TcpListener::bind((opts.host.as_str(), opts.port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "llm-proxy-mock: cannot listen on {}:{}: {e}",
                opts.host, opts.port
            );
            std::process::exit(1);
        }
    };
    if let Err(e) = tune_listener(&listener) {
        eprintln!("llm-proxy-mock: warning: cannot tune the listening socket: {e}");
    }
    let server = match Server::from_listener(listener, None) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("llm-proxy-mock: cannot start the HTTP server: {e}");
            std::process::exit(1);
        }
    };
    let addr = match server.server_addr().to_ip() {
        Some(addr) => addr,
        None => {
            eprintln!("llm-proxy-mock: listener has no IP address");
            std::process::exit(1);
        }
    };
    // Scripts wait for this exact line and parse the port from it.
    let mut stdout = io::stdout().lock();
    let _ = writeln!(
        stdout,
        "llm-proxy-mock {} listening on http://{addr}",
        opts.name
    );
    let _ = stdout.flush();
    drop(stdout);

    let mock = Arc::new(Mock::new(opts));
    let workers: Vec<_> = (0..mock.opts.threads)
        .map(|_| {
            let (server, mock) = (Arc::clone(&server), Arc::clone(&mock));
            thread::spawn(move || {
                loop {
                    match server.recv() {
                        Ok(request) => mock.handle(request),
                        Err(e) => {
                            // Only happens when the accept loop itself has died.
                            eprintln!("llm-proxy-mock: stopped accepting connections: {e}");
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// Sets TCP_NODELAY and a deep accept backlog on the listening socket.
///
/// tiny_http never sets TCP_NODELAY and gives no access to accepted sockets.
/// Without it, Nagle's algorithm meets the client's delayed ACKs and holds
/// small SSE events back by up to 40 ms on a reused connection (measured).
/// Linux and the BSDs copy TCP_NODELAY from the listening socket to every
/// accepted one, so setting it once here is enough. std also listens with a
/// backlog of 128, which a burst of 1,000 benchmark connections overflows
/// (dropped SYNs cost a 1 s retransmit); calling `listen` again only resizes
/// the queue (the kernel caps it at `net.core.somaxconn`). std exposes neither
/// knob for a listener, hence the two libc calls.
#[cfg(unix)]
fn tune_listener(listener: &TcpListener) -> io::Result<()> {
    use std::ffi::{c_int, c_void};
    use std::os::fd::AsRawFd;

    // Same values on Linux, macOS and the BSDs.
    const IPPROTO_TCP: c_int = 6;
    const TCP_NODELAY: c_int = 1;
    const BACKLOG: c_int = 4096;
    unsafe extern "C" {
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
        fn listen(fd: c_int, backlog: c_int) -> c_int;
    }

    let fd = listener.as_raw_fd();
    let one: c_int = 1;
    // SAFETY: `fd` is a socket owned by `listener`, which outlives both calls;
    // `value` points to a live c_int and `len` is its size.
    let rc = unsafe {
        setsockopt(
            fd,
            IPPROTO_TCP,
            TCP_NODELAY,
            (&raw const one).cast(),
            size_of::<c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; `listen` on a listening socket only resizes its queue.
    if unsafe { listen(fd, BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn tune_listener(_listener: &TcpListener) -> io::Result<()> {
    Ok(())
}

/// Which wire format a chat route speaks.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

/// A fully rendered answer, ready to be written.
enum Reply {
    Json(u16, Vec<u8>),
    /// SSE frames, each already formatted (`data: ...\n\n`).
    Stream(Vec<String>),
    /// SSE frames, then the connection closes without ending the body
    /// (`--cut-after`).
    Cut(Vec<String>),
}

/// Shared state of the server.
struct Mock {
    opts: Opts,
    /// Requests seen so far on the generating routes (chat, messages,
    /// completions, embeddings); drives ids and `--fail-every`.
    requests: AtomicU64,
    /// xorshift64 state for `--fail-rate`.
    rng: AtomicU64,
}

impl Mock {
    fn new(opts: Opts) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Mock {
            opts,
            requests: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1), // xorshift must never hold 0
        }
    }

    /// Routes one request and answers it, either right here or, when the
    /// answer has to wait or stream, on a thread of its own.
    fn handle(&self, mut request: Request) {
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let reply = match (request.method(), path.as_str()) {
            (Method::Get, "/health") => Reply::Json(200, json_bytes(&json!({"status": "ok"}))),
            (Method::Get, "/v1/models") => {
                self.check_auth(&request, Api::OpenAi).unwrap_or_else(|| {
                    Reply::Json(
                        200,
                        json_bytes(&json!({
                            "object": "list",
                            "data": [{
                                "id": "mock-model",
                                "object": "model",
                                "created": 1_700_000_000,
                                "owned_by": self.opts.name,
                            }],
                        })),
                    )
                })
            }
            (Method::Post, "/v1/chat/completions") => self.chat(&mut request, Api::OpenAi),
            (Method::Post, "/v1/messages") => self.chat(&mut request, Api::Anthropic),
            (Method::Post, "/v1/completions") => self.completions(&mut request),
            (Method::Post, "/v1/embeddings") => self.embeddings(&mut request),
            (Method::Post, "/v1/responses" | "/openai/v1/responses") => {
                self.responses(&mut request)
            }
            (Method::Get, p) if response_id(p).is_some() => {
                let id = response_id(p).unwrap_or_default().to_string();
                self.check_auth(&request, Api::OpenAi)
                    .unwrap_or_else(|| self.retrieve(&id))
            }
            (method, _) => openai_error(
                404,
                &format!("Unknown request URL: {method} {path}"),
                "invalid_request_error",
                None,
                Some("unknown_url"),
            ),
        };

        let reply = match (reply, self.opts.cut_after) {
            (Reply::Stream(mut frames), Some(n)) => {
                frames.truncate(n);
                // What the client sends after this is never read: the
                // connection ends with the cut stream.
                request.stop_reading_ahead();
                Reply::Cut(frames)
            }
            (reply, _) => reply,
        };
        let waits = matches!(reply, Reply::Stream(_) | Reply::Cut(_))
            || (!self.opts.delay.is_zero() && matches!(reply, Reply::Json(200, _)));
        if !waits {
            send(request, reply, Duration::ZERO, Duration::ZERO);
            return;
        }
        let (delay, interval) = (self.opts.delay, self.opts.stream_interval);
        let spawned = thread::Builder::new()
            .stack_size(RESPONDER_STACK_BYTES)
            .spawn(move || send(request, reply, delay, interval));
        if let Err(e) = spawned {
            // The closure, and with it the request, is dropped; tiny_http
            // answers a dropped request with an empty 500.
            eprintln!("llm-proxy-mock: cannot spawn a responder thread: {e}");
        }
    }

    /// `Some(401 reply)` when `--api-key` is set and the request lacks it.
    fn check_auth(&self, request: &Request, api: Api) -> Option<Reply> {
        let key = self.opts.api_key.as_deref()?;
        let ok = match api {
            Api::OpenAi => header(request, "Authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|v| v == key),
            Api::Anthropic => header(request, "x-api-key").is_some_and(|v| v == key),
        };
        if ok {
            return None;
        }
        Some(match api {
            Api::OpenAi => openai_error(
                401,
                &format!("mock {}: incorrect API key provided", self.opts.name),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            Api::Anthropic => anthropic_error(401, "authentication_error", "invalid x-api-key"),
        })
    }

    /// Decides whether this chat request is a simulated outage.
    fn should_fail(&self, n: u64) -> bool {
        if self.opts.fail_every > 0 && n % self.opts.fail_every == 0 {
            return true;
        }
        self.opts.fail_rate > 0.0 && self.random_unit() < self.opts.fail_rate
    }

    /// Uniform number in [0, 1) from a lock-free xorshift64.
    fn random_unit(&self) -> f64 {
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prev = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            .unwrap_or(1);
        (step(prev) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// What every generating route does first: read the body (whatever
    /// happens next, so the connection stays usable), check the key, count
    /// the request, play a simulated outage, and parse a JSON object.
    /// Returns the request's number and body, or the reply to send instead.
    fn begin(&self, request: &mut Request, api: Api) -> Result<(u64, Value), Reply> {
        let mut body = Vec::new();
        let read = request.as_reader().read_to_end(&mut body);
        if let Some(reply) = self.check_auth(request, api) {
            return Err(reply);
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.should_fail(n) {
            let message = format!("mock {}: simulated outage", self.opts.name);
            return Err(match api {
                Api::OpenAi => openai_error(503, &message, "server_error", None, None),
                Api::Anthropic => anthropic_error(529, "overloaded_error", &message),
            });
        }
        let parsed = match read {
            Ok(_) => serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(body @ Value::Object(_)) => Ok((n, body)),
            Ok(_) => Err(bad_request(api, "request body must be a JSON object", None)),
            Err(e) => Err(bad_request(
                api,
                &format!("could not parse the JSON body: {e}"),
                None,
            )),
        }
    }

    fn chat(&self, request: &mut Request, api: Api) -> Reply {
        let (n, body) = match self.begin(request, api) {
            Ok(begun) => begun,
            Err(reply) => return reply,
        };
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return bad_request(api, "you must provide a `model` string", Some("model"));
        };
        let Some(messages) = body.get("messages").and_then(Value::as_array) else {
            return bad_request(api, "you must provide a `messages` array", Some("messages"));
        };
        // The real Anthropic API has no default for max_tokens; insisting on
        // it here catches a proxy that forgets to fill it in.
        if api == Api::Anthropic && !body.get("max_tokens").is_some_and(Value::is_u64) {
            return bad_request(api, "max_tokens: Field required", Some("max_tokens"));
        }

        let tool_result = last_tool_result(messages, api);
        let call = Call {
            n,
            name: &self.opts.name,
            model,
            created: unix_now(),
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            tool: match tool_result {
                Some(_) => None,
                None => first_tool_name(&body, api),
            },
            said: last_user_text(messages),
            told: system_text(&body, api),
            tool_result,
            prompt_tokens: (serde_json::to_string(messages).map_or(0, |s| s.len()) / 4).max(1),
            chunks: self.opts.stream_chunks,
        };
        match (api, call.stream) {
            (Api::OpenAi, false) => Reply::Json(200, call.openai_completion()),
            (Api::OpenAi, true) => Reply::Stream(call.openai_stream()),
            (Api::Anthropic, false) => Reply::Json(200, call.anthropic_message()),
            (Api::Anthropic, true) => Reply::Stream(call.anthropic_stream()),
        }
    }

    /// `POST /v1/completions`: legacy text completions, one choice per
    /// prompt and `n`, as JSON or a stream of `text_completion` chunks.
    fn completions(&self, request: &mut Request) -> Reply {
        let (n, body) = match self.begin(request, Api::OpenAi) {
            Ok(begun) => begun,
            Err(reply) => return reply,
        };
        match TextCompletion::parse(&body, &self.opts) {
            Ok(c) if c.stream => Reply::Stream(c.stream_frames(n, unix_now())),
            Ok(c) => Reply::Json(200, c.json(n, unix_now())),
            Err(BadParam(message, param)) => bad_request(Api::OpenAi, &message, param.as_deref()),
        }
    }

    /// `POST /v1/responses` (and Azure's `/openai/v1/responses`): a native
    /// Response, as JSON or as an event stream in the spec's order.
    fn responses(&self, request: &mut Request) -> Reply {
        let (n, body) = match self.begin(request, Api::OpenAi) {
            Ok(begun) => begun,
            Err(reply) => return reply,
        };
        let call = match ResponsesCall::parse(&body, n, &self.opts) {
            Ok(call) => call,
            Err(BadParam(message, param)) => {
                return bad_request(Api::OpenAi, &message, param.as_deref());
            }
        };
        match (&self.opts.responses_error_first, call.stream) {
            (Some(code), true) => Reply::Stream(call.error_first_stream(code)),
            (Some(code), false) => openai_error(
                429,
                &format!(
                    "mock {}: failing every response with {code}",
                    self.opts.name
                ),
                code,
                None,
                Some(code),
            ),
            (None, true) => Reply::Stream(call.stream_frames()),
            (None, false) => Reply::Json(200, json_bytes(&call.response("completed"))),
        }
    }

    /// `GET /v1/responses/{id}`: the mock stores nothing, but it can rebuild
    /// a plain text response for an id it minted (`resp_NAME_N`, N no more
    /// than the requests it has seen); any other id is 404, as OpenAI says.
    fn retrieve(&self, id: &str) -> Reply {
        let seen = self.requests.load(Ordering::Relaxed);
        let minted = id
            .strip_prefix("resp_")
            .and_then(|rest| rest.strip_prefix(self.opts.name.as_str()))
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| (1..=seen).contains(n));
        let Some(n) = minted else {
            return openai_error(
                404,
                &format!("No response found with id '{id}'."),
                "invalid_request_error",
                None,
                None,
            );
        };
        let body = json!({"model": "mock-model", "input": "retrieve"});
        match ResponsesCall::parse(&body, n, &self.opts) {
            Ok(call) => Reply::Json(200, json_bytes(&call.response("completed"))),
            Err(BadParam(message, param)) => bad_request(Api::OpenAi, &message, param.as_deref()),
        }
    }

    /// `POST /v1/embeddings`: a deterministic unit vector per input.
    fn embeddings(&self, request: &mut Request) -> Reply {
        let body = match self.begin(request, Api::OpenAi) {
            Ok((_, body)) => body,
            Err(reply) => return reply,
        };
        match Embeddings::parse(&body) {
            Ok(e) => Reply::Json(200, e.json()),
            Err(BadParam(message, param)) => bad_request(Api::OpenAi, &message, param.as_deref()),
        }
    }
}

/// Everything needed to render one successful chat answer.
struct Call<'a> {
    n: u64,
    name: &'a str,
    model: &'a str,
    created: u64,
    stream: bool,
    include_usage: bool,
    /// Name of the first tool offered, if any: the mock then calls it.
    tool: Option<String>,
    /// Start of the last user message, echoed back.
    said: String,
    /// Start of the tool result that ends the conversation, if it does:
    /// the answer is then text quoting it.
    tool_result: Option<String>,
    /// Start of the system prompt, if any: the answer quotes it too, so
    /// checks can see that instructions arrived.
    told: Option<String>,
    prompt_tokens: usize,
    chunks: usize,
}

impl Call<'_> {
    fn openai_id(&self) -> String {
        format!("chatcmpl-mock-{}", self.n)
    }

    fn greeting(&self) -> String {
        let mut greeting = match &self.tool_result {
            Some(result) => format!("Hello from {}! The tool said: \"{result}\". ", self.name),
            None => format!("Hello from {}! You said: \"{}\". ", self.name, self.said),
        };
        if let Some(told) = &self.told {
            greeting.push_str(&format!("You told me: \"{told}\". "));
        }
        greeting
    }

    /// Whether a stream quotes the greeting (a tool result or a system
    /// prompt to show); plain streams skip it and stay the benchmarks' size.
    fn quotes(&self) -> bool {
        self.tool_result.is_some() || self.told.is_some()
    }

    /// Content of the `i`th streamed delta: the words of the greeting and the
    /// lorem text, cycled, so the joined stream reads "Hello from NAME! ...".
    fn stream_piece(words: &[&str], i: usize) -> String {
        let word = words[i % words.len()];
        if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        }
    }

    fn stream_words(&self) -> Vec<String> {
        let text = match self.quotes() {
            // All of the quote, however many chunks that takes.
            true => format!("{}{LOREM}", self.greeting()),
            false => format!("Hello from {}! {LOREM}", self.name),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let count = match self.quotes() {
            true => self.chunks.max(self.greeting().split_whitespace().count()),
            false => self.chunks,
        };
        (0..count).map(|i| Self::stream_piece(&words, i)).collect()
    }

    fn openai_completion(&self) -> Vec<u8> {
        let (message, finish_reason, completion_tokens) = match &self.tool {
            Some(tool) => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "id": "call_mock_1",
                        "type": "function",
                        "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
                    }],
                }),
                "tool_calls",
                12,
            ),
            None => (Value::Null, "stop", 0),
        };
        let render = |message: Value, completion_tokens: usize| {
            json_bytes(&json!({
                "id": self.openai_id(),
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }],
                "usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": self.prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_mock",
            }))
        };
        if self.tool.is_some() {
            return render(message, completion_tokens);
        }

        // Pad the content with lorem text so the body is TARGET_BODY_BYTES.
        // The padding is plain ASCII (no JSON escapes), so each character
        // adds one byte; completion_tokens is estimated first so that its
        // digits are already counted.
        let text_message =
            |content: &str| json!({"role": "assistant", "content": content, "refusal": null});
        let greeting = self.greeting();
        let bare = render(text_message(&greeting), 0).len();
        let estimate = (greeting.len() + TARGET_BODY_BYTES.saturating_sub(bare)) / 4;
        let with_usage = render(text_message(&greeting), estimate).len();
        let padding = TARGET_BODY_BYTES.saturating_sub(with_usage);
        let content: String = greeting
            .chars()
            .chain(LOREM.chars().chain(" ".chars()).cycle().take(padding))
            .collect();
        render(text_message(&content), estimate)
    }

    fn openai_stream(&self) -> Vec<String> {
        let id = self.openai_id();
        let chunk = |delta: Value, finish_reason: Option<&str>| {
            sse_data(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "index": 0,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }],
            }))
        };

        let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        let completion_tokens = match &self.tool {
            Some(tool) => {
                frames.push(chunk(
                    json!({"tool_calls": [{
                        "index": 0,
                        "id": "call_mock_1",
                        "type": "function",
                        "function": {"name": tool, "arguments": ""},
                    }]}),
                    None,
                ));
                for fragment in TOOL_ARGUMENT_FRAGMENTS {
                    frames.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                        None,
                    ));
                }
                frames.push(chunk(json!({}), Some("tool_calls")));
                12
            }
            None => {
                for piece in self.stream_words() {
                    frames.push(chunk(json!({"content": piece}), None));
                }
                frames.push(chunk(json!({}), Some("stop")));
                self.chunks
            }
        };
        if self.include_usage {
            frames.push(sse_data(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_mock",
                "choices": [],
                "usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": self.prompt_tokens + completion_tokens,
                },
            })));
        }
        frames.push("data: [DONE]\n\n".to_string());
        frames
    }

    fn anthropic_message(&self) -> Vec<u8> {
        let (content, stop_reason) = match &self.tool {
            Some(tool) => (
                json!([{
                    "type": "tool_use",
                    "id": "toolu_mock_1",
                    "name": tool,
                    "input": {"location": "Paris"},
                }]),
                "tool_use",
            ),
            None => (
                json!([{"type": "text", "text": format!("{}{LOREM}", self.greeting())}]),
                "end_turn",
            ),
        };
        json_bytes(&json!({
            "id": format!("msg_mock_{}", self.n),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20},
        }))
    }

    fn anthropic_stream(&self) -> Vec<String> {
        let mut frames = vec![sse_event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_mock_{}", self.n),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            }),
        )];
        let block_start = |block: Value| {
            sse_event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": block}),
            )
        };
        let block_delta = |delta: Value| {
            sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            )
        };
        let stop_reason = match &self.tool {
            Some(tool) => {
                frames.push(block_start(json!({
                    "type": "tool_use", "id": "toolu_mock_1", "name": tool, "input": {},
                })));
                frames.push(sse_event("ping", &json!({"type": "ping"})));
                for fragment in TOOL_ARGUMENT_FRAGMENTS {
                    frames.push(block_delta(
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                    ));
                }
                "tool_use"
            }
            None => {
                frames.push(block_start(json!({"type": "text", "text": ""})));
                frames.push(sse_event("ping", &json!({"type": "ping"})));
                for piece in self.stream_words() {
                    frames.push(block_delta(json!({"type": "text_delta", "text": piece})));
                }
                "end_turn"
            }
        };
        frames.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        frames.push(sse_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": 20},
            }),
        ));
        frames.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        frames
    }
}

/// The response id in `/v1/responses/{id}` or `/openai/v1/responses/{id}`.
fn response_id(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/openai/v1/responses/"))?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// One native `POST /v1/responses`, parsed: everything needed to render its
/// Response object or its event stream.
struct ResponsesCall {
    id: String,
    name: String,
    created: u64,
    stream: bool,
    /// The function the mock calls: the first function tool offered, unless
    /// the input already ends with a `function_call_output`.
    tool: Option<String>,
    /// The answer's text when no tool is called.
    words: Vec<String>,
    input_tokens: usize,
    /// The request fields a Response echoes, already in the spec's shape.
    echo: serde_json::Map<String, Value>,
}

impl ResponsesCall {
    fn parse(body: &Value, n: u64, opts: &Opts) -> Result<ResponsesCall, BadParam> {
        let model = model_of(body)?;
        let input = body.get("input").unwrap_or(&Value::Null);
        let items: Vec<Value> = match input {
            Value::String(s) => vec![json!({"role": "user", "content": s})],
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            _ => {
                return Err(bad_param(
                    "input",
                    "'input' must be a string or an array of items",
                ));
            }
        };
        let tool_output = items.last().and_then(|item| {
            (item.get("type").and_then(Value::as_str) == Some("function_call_output")).then(|| {
                first_text(item.get("output"))
                    .chars()
                    .take(40)
                    .collect::<String>()
            })
        });
        let said: String = items
            .iter()
            .rev()
            .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))
            .map(|i| first_text(i.get("content")).chars().take(40).collect())
            .unwrap_or_default();
        let tools: Vec<Value> = match body.get("tools") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tools)) => tools.iter().map(normalise_tool).collect(),
            Some(_) => return Err(bad_param("tools", "'tools' must be an array")),
        };
        let first_function = tools
            .iter()
            .find(|t| t["type"] == "function")
            .and_then(|t| t["name"].as_str())
            .map(str::to_string);
        let tool = match tool_output {
            Some(_) => None,
            None => first_function,
        };
        let greeting = match &tool_output {
            Some(out) => format!("Hello from {}! The tool said: \"{out}\".", opts.name),
            None => format!("Hello from {}! You said: \"{said}\".", opts.name),
        };
        let told = match body.get("instructions") {
            Some(Value::String(i)) => {
                format!(
                    " You told me: \"{}\".",
                    i.chars().take(40).collect::<String>()
                )
            }
            _ => String::new(),
        };
        let text = format!("{greeting}{told} {LOREM}");
        let all: Vec<&str> = text.split_whitespace().collect();
        let count = opts
            .stream_chunks
            .max(format!("{greeting}{told}").split_whitespace().count());
        let words = (0..count).map(|i| Call::stream_piece(&all, i)).collect();

        let field = |name: &str, default: Value| match body.get(name) {
            None | Some(Value::Null) => default,
            Some(v) => v.clone(),
        };
        let mut echo = serde_json::Map::new();
        echo.insert("model".into(), json!(model));
        echo.insert("instructions".into(), field("instructions", Value::Null));
        echo.insert("tools".into(), json!(tools));
        echo.insert("tool_choice".into(), field("tool_choice", json!("auto")));
        echo.insert(
            "parallel_tool_calls".into(),
            field("parallel_tool_calls", json!(true)),
        );
        echo.insert("metadata".into(), field("metadata", json!({})));
        echo.insert("temperature".into(), field("temperature", json!(1.0)));
        echo.insert("top_p".into(), field("top_p", json!(1.0)));
        echo.insert(
            "max_output_tokens".into(),
            field("max_output_tokens", Value::Null),
        );
        echo.insert(
            "previous_response_id".into(),
            field("previous_response_id", Value::Null),
        );
        echo.insert(
            "reasoning".into(),
            json!({"effort": body.pointer("/reasoning/effort").cloned().unwrap_or(Value::Null),
                   "summary": null}),
        );
        echo.insert(
            "text".into(),
            json!({"format": body.pointer("/text/format").cloned()
                .unwrap_or_else(|| json!({"type": "text"})), "verbosity": "medium"}),
        );
        echo.insert("truncation".into(), field("truncation", json!("disabled")));
        echo.insert("store".into(), field("store", json!(true)));
        echo.insert("background".into(), json!(false));
        echo.insert("service_tier".into(), json!("default"));
        if let Some(user) = body.get("user").filter(|u| u.is_string()) {
            echo.insert("user".into(), user.clone());
        }
        Ok(ResponsesCall {
            id: format!("resp_{}_{n}", opts.name),
            name: opts.name.clone(),
            created: unix_now(),
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            tool,
            words,
            input_tokens: (input.to_string().len() / 4).max(1),
            echo,
        })
    }

    fn message_id(&self) -> String {
        format!("msg_{}", &self.id["resp_".len()..])
    }

    fn call_id(&self) -> String {
        format!("call_{}", &self.id["resp_".len()..])
    }

    fn function_id(&self) -> String {
        format!("fc_{}", &self.id["resp_".len()..])
    }

    fn output_tokens(&self) -> usize {
        match self.tool {
            Some(_) => 12,
            None => self.words.len(),
        }
    }

    /// The one output item, as it is when done (`status` completed), or as
    /// it is announced (`in_progress`, nothing in it yet).
    fn item(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match &self.tool {
            Some(name) => json!({
                "type": "function_call",
                "id": self.function_id(),
                "call_id": self.call_id(),
                "name": name,
                "arguments": if done { TOOL_ARGUMENTS } else { "" },
                "status": status,
            }),
            None => json!({
                "type": "message",
                "id": self.message_id(),
                "status": status,
                "role": "assistant",
                "content": if done { json!([self.text_part(&self.words.concat())]) } else { json!([]) },
            }),
        }
    }

    fn text_part(&self, text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    /// The Response object. `in_progress` has no output and no usage (the
    /// spec's `usage` is not nullable, so it is left out rather than null).
    fn response(&self, status: &str) -> Value {
        let done = status == "completed";
        let mut r = serde_json::Map::new();
        r.insert("id".into(), json!(self.id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created));
        r.insert("status".into(), json!(status));
        r.insert(
            "completed_at".into(),
            if done { json!(unix_now()) } else { Value::Null },
        );
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.extend(self.echo.clone());
        r.insert(
            "output".into(),
            if done {
                json!([self.item(true)])
            } else {
                json!([])
            },
        );
        if done {
            let out = self.output_tokens();
            r.insert(
                "usage".into(),
                json!({
                    "input_tokens": self.input_tokens,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens": out,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": self.input_tokens + out,
                }),
            );
        }
        Value::Object(r)
    }

    /// created, in_progress, the item's events, completed; `sequence_number`
    /// from 0 and `event:` lines, as OpenAI sends them.
    fn stream_frames(&self) -> Vec<String> {
        let mut events = self.prelude();
        events.push(
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": self.item(false)}),
        );
        match &self.tool {
            Some(name) => {
                let item_id = self.function_id();
                for fragment in TOOL_ARGUMENT_FRAGMENTS {
                    events.push(json!({"type": "response.function_call_arguments.delta",
                        "item_id": item_id, "output_index": 0, "delta": fragment}));
                }
                events.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item_id, "name": name, "output_index": 0,
                    "arguments": TOOL_ARGUMENTS}));
            }
            None => {
                let item_id = self.message_id();
                let at = |mut e: Value| {
                    e["item_id"] = json!(item_id);
                    e["output_index"] = json!(0);
                    e["content_index"] = json!(0);
                    e
                };
                events.push(at(json!({"type": "response.content_part.added",
                    "part": self.text_part("")})));
                for word in &self.words {
                    events.push(at(json!({"type": "response.output_text.delta",
                        "delta": word, "logprobs": []})));
                }
                let text = self.words.concat();
                events.push(at(json!({"type": "response.output_text.done",
                    "text": text, "logprobs": []})));
                events.push(at(json!({"type": "response.content_part.done",
                    "part": self.text_part(&text)})));
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": 0,
            "item": self.item(true)}),
        );
        events.push(json!({"type": "response.completed", "response": self.response("completed")}));
        numbered(events)
    }

    /// `--responses-error-first`: the prelude, then an `error` event, as
    /// OpenAI streams `insufficient_quota`.
    fn error_first_stream(&self, code: &str) -> Vec<String> {
        let mut events = self.prelude();
        events.push(json!({
            "type": "error",
            "code": code,
            "message": format!("mock {}: failing every response with {code}", self.name),
            "param": null,
        }));
        numbered(events)
    }

    fn prelude(&self) -> Vec<Value> {
        let r = self.response("in_progress");
        vec![
            json!({"type": "response.created", "response": r}),
            json!({"type": "response.in_progress", "response": r}),
        ]
    }
}

/// A function tool as a Response echoes it: `strict` and `parameters` are
/// required there (both nullable), and clients often leave them out.
fn normalise_tool(tool: &Value) -> Value {
    let mut tool = tool.clone();
    if let Some(t) = tool
        .as_object_mut()
        .filter(|t| t.get("type") == Some(&json!("function")))
    {
        t.entry("strict").or_insert(Value::Null);
        t.entry("parameters").or_insert(Value::Null);
        t.entry("description").or_insert(Value::Null);
    }
    tool
}

/// SSE frames with `event:` lines and `sequence_number` 0, 1, 2…
fn numbered(events: Vec<Value>) -> Vec<String> {
    events
        .into_iter()
        .enumerate()
        .map(|(seq, mut e)| {
            e["sequence_number"] = json!(seq);
            let ty = e["type"].as_str().unwrap_or_default().to_string();
            sse_event(&ty, &e)
        })
        .collect()
}

/// Writes a reply after `delay`, pausing `interval` between SSE events.
/// Write errors mean the client went away; there is nobody left to tell.
fn send(request: Request, reply: Reply, delay: Duration, interval: Duration) {
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    match reply {
        Reply::Json(status, body) => {
            let len = body.len();
            let response = Response::new(
                status.into(),
                vec![content_type("application/json")],
                Cursor::new(body),
                Some(len),
                None,
            );
            let _ = request.respond(response);
        }
        Reply::Stream(frames) => {
            let _ = write_stream(request, &frames, interval);
        }
        Reply::Cut(frames) => {
            let _ = write_cut_stream(request, &frames, interval);
        }
    }
}

/// Streams SSE frames with every event flushed on its own.
///
/// tiny_http's `Response` copies an unsized body through an 8 KiB buffer, so
/// events would reach the client in bursts. Instead the status line and
/// headers are written by hand on the raw connection writer, and each event
/// goes through chunked_transfer's encoder (a chunk per event; it writes
/// the last chunk when dropped) and is flushed through to the socket.
/// HTTP/1.0 clients get a close-delimited body instead of chunks.
fn write_stream(request: Request, frames: &[String], interval: Duration) -> io::Result<()> {
    let chunked = *request.http_version() >= HTTPVersion(1, 1);
    let close = !chunked
        || header(&request, "Connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    let mut out = request.into_writer();
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n",
    );
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()?;
    let pause = |i: usize| {
        if i > 0 && !interval.is_zero() {
            thread::sleep(interval);
        }
    };
    if chunked {
        // Borrowed, so that the last chunk, which the encoder writes when
        // dropped, can be flushed below.
        let mut body = Encoder::with_flush_after_write(&mut out);
        for (i, frame) in frames.iter().enumerate() {
            pause(i);
            body.write_all(frame.as_bytes())?;
            // The encoder's own flush does not reach the socket.
            body.get_mut().flush()?;
        }
    } else {
        for (i, frame) in frames.iter().enumerate() {
            pause(i);
            out.write_all(frame.as_bytes())?;
            out.flush()?;
        }
    }
    out.flush()
}

/// Like `write_stream`, but the body is never ended: chunks written by hand
/// (the encoder would write the last chunk when dropped), then the
/// connection closes, as an upstream that dies mid-stream does.
fn write_cut_stream(request: Request, frames: &[String], interval: Duration) -> io::Result<()> {
    let mut out = request.into_writer();
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 && !interval.is_zero() {
            thread::sleep(interval);
        }
        write!(out, "{:x}\r\n{frame}\r\n", frame.len())?;
        out.flush()?;
    }
    Ok(())
}

fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn content_type(value: &str) -> Header {
    Header::from_bytes("Content-Type", value).expect("static header is valid")
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value always serializes")
}

fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn sse_event(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

fn openai_error(
    status: u16,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Reply {
    Reply::Json(
        status,
        json_bytes(&json!({
            "error": {"message": message, "type": kind, "param": param, "code": code},
        })),
    )
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::Json(
        status,
        json_bytes(&json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
}

fn bad_request(api: Api, message: &str, param: Option<&str>) -> Reply {
    match api {
        Api::OpenAi => openai_error(400, message, "invalid_request_error", param, None),
        Api::Anthropic => anthropic_error(400, "invalid_request_error", message),
    }
}

/// Name of the first tool offered: `tools[0].function.name` for OpenAI,
/// `tools[0].name` for Anthropic. `None` when no tools are offered.
fn first_tool_name(body: &Value, api: Api) -> Option<String> {
    let first = body.get("tools")?.as_array()?.first()?;
    let name = match api {
        Api::OpenAi => first.pointer("/function/name"),
        Api::Anthropic => first.get("name"),
    };
    Some(name.and_then(Value::as_str).unwrap_or("tool").to_string())
}

/// First 40 characters of the last user message's text (string content or
/// the first text part of a content array).
fn last_user_text(messages: &[Value]) -> String {
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    let text = match last.get("content") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(parts)) => parts
            .iter()
            .find_map(|p| p.get("text").and_then(Value::as_str))
            .unwrap_or(""),
        _ => "",
    };
    text.chars().take(40).collect()
}

/// The text of the tool result that ends the conversation, if it does: an
/// OpenAI `role: tool` message, or an Anthropic user turn whose last block
/// is a `tool_result`. Its first 40 characters, as `last_user_text`.
fn last_tool_result(messages: &[Value], api: Api) -> Option<String> {
    let last = messages.last()?;
    let content = match api {
        Api::OpenAi if last.get("role").and_then(Value::as_str) == Some("tool") => {
            last.get("content")
        }
        Api::Anthropic if last.get("role").and_then(Value::as_str) == Some("user") => {
            let block = last.get("content")?.as_array()?.last()?;
            if block.get("type").and_then(Value::as_str) != Some("tool_result") {
                return None;
            }
            block.get("content")
        }
        _ => return None,
    };
    Some(first_text(content).chars().take(40).collect())
}

/// The first 40 characters of the system prompt: OpenAI's first `system` or
/// `developer` message, Anthropic's `system`.
fn system_text(body: &Value, api: Api) -> Option<String> {
    let content = match api {
        Api::OpenAi => body
            .get("messages")?
            .as_array()?
            .iter()
            .find(|m| {
                matches!(
                    m.get("role").and_then(Value::as_str),
                    Some("system" | "developer")
                )
            })?
            .get("content"),
        Api::Anthropic => body.get("system"),
    };
    let text = first_text(content);
    (!text.is_empty()).then(|| text.chars().take(40).collect())
}

/// A string, or the joined `text` of an array of parts.
fn first_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request the mock refuses with a 400: the message and the `param`.
#[derive(Debug)]
struct BadParam(String, Option<String>);

fn bad_param(param: &str, message: impl Into<String>) -> BadParam {
    BadParam(message.into(), Some(param.to_string()))
}

/// Most inputs (or prompts) in one request, as OpenAI allows.
const MAX_INPUTS: usize = 2048;
/// Embedding size when the request sets no `dimensions` (text-embedding-3-small's).
const DEFAULT_DIMENSIONS: usize = 1536;
/// Largest `dimensions` accepted (text-embedding-3-large's).
const MAX_DIMENSIONS: usize = 3072;
/// Most choices per prompt (`n`), as OpenAI allows.
const MAX_N: u64 = 128;
/// `max_tokens` of a completion when the request sets none (OpenAI's default).
const DEFAULT_COMPLETION_MAX_TOKENS: u64 = 16;

/// One text to embed or complete: a string, or already tokens.
#[derive(Debug, PartialEq)]
enum Text {
    Str(String),
    Tokens(Vec<i64>),
}

impl Text {
    /// A rough token count: four bytes a token for text, as OpenAI's docs say.
    fn tokens(&self) -> usize {
        match self {
            Text::Str(s) => s.len().div_ceil(4).max(1),
            Text::Tokens(t) => t.len(),
        }
    }

    /// FNV-1a of the text's kind and content: the seed of its embedding.
    fn seed(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        match self {
            Text::Str(s) => {
                eat(b"s");
                eat(s.as_bytes());
            }
            Text::Tokens(t) => {
                eat(b"t");
                for tok in t {
                    eat(&tok.to_le_bytes());
                }
            }
        }
        h
    }
}

/// `input` / `prompt`: a string, a list of strings, a list of tokens, or a
/// list of token lists.
fn parse_texts(v: &Value, param: &str) -> Result<Vec<Text>, BadParam> {
    let shape = || {
        bad_param(
            param,
            format!(
                "'{param}' must be a string, an array of strings, an array of integers or an array of integer arrays"
            ),
        )
    };
    let tokens = |items: &[Value]| -> Result<Vec<i64>, BadParam> {
        if items.is_empty() {
            return Err(bad_param(
                param,
                format!("'{param}' has an empty token array"),
            ));
        }
        items.iter().map(|t| t.as_i64().ok_or_else(shape)).collect()
    };
    let texts = match v {
        Value::String(s) => vec![Text::Str(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(bad_param(param, format!("'{param}' must not be empty")));
        }
        Value::Array(items) if items.len() > MAX_INPUTS => {
            return Err(bad_param(
                param,
                format!(
                    "'{param}' has {} items; at most {MAX_INPUTS} are allowed",
                    items.len()
                ),
            ));
        }
        Value::Array(items) if items[0].is_number() => vec![Text::Tokens(tokens(items)?)],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Text::Str(s.clone())),
                Value::Array(t) => Ok(Text::Tokens(tokens(t)?)),
                _ => Err(shape()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(shape()),
    };
    Ok(texts)
}

/// The request's `model`, which every route requires.
fn model_of(body: &Value) -> Result<String, BadParam> {
    body.get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad_param("model", "you must provide a `model` string"))
}

/// An optional integer field within `range`.
fn int_field(
    body: &Value,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, BadParam> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                bad_param(
                    name,
                    format!(
                        "'{name}' must be an integer from {} to {}, got {v}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// A parsed `POST /v1/embeddings`.
struct Embeddings {
    model: String,
    inputs: Vec<Text>,
    base64: bool,
    dimensions: usize,
}

impl Embeddings {
    fn parse(body: &Value) -> Result<Embeddings, BadParam> {
        let model = model_of(body)?;
        let input = body
            .get("input")
            .ok_or_else(|| bad_param("input", "you must provide an `input`"))?;
        let inputs = parse_texts(input, "input")?;
        if inputs.iter().any(|t| *t == Text::Str(String::new())) {
            return Err(bad_param("input", "'input' cannot be an empty string"));
        }
        let base64 = match body.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "float" => false,
            Some(Value::String(f)) if f == "base64" => true,
            Some(other) => {
                return Err(bad_param(
                    "encoding_format",
                    format!("'encoding_format' must be 'float' or 'base64', got {other}"),
                ));
            }
        };
        let dimensions = int_field(body, "dimensions", 1..=MAX_DIMENSIONS as u64)?
            .map_or(DEFAULT_DIMENSIONS, |d| d as usize);
        Ok(Embeddings {
            model,
            inputs,
            base64,
            dimensions,
        })
    }

    fn json(&self) -> Vec<u8> {
        let data: Vec<Value> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let vector = embedding(text.seed(), self.dimensions);
                let embedding = if self.base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(vector)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        let tokens: usize = self.inputs.iter().map(Text::tokens).sum();
        json_bytes(&json!({
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
    }
}

/// A unit vector of `dimensions` f32s, the same for the same seed.
fn embedding(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut x = seed | 1;
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|a| *a /= norm);
    }
    v
}

/// A parsed `POST /v1/completions`.
struct TextCompletion {
    model: String,
    name: String,
    prompts: Vec<Text>,
    n: usize,
    echo: bool,
    stream: bool,
    include_usage: bool,
    /// Words generated per choice.
    words: usize,
    /// `length` when `max_tokens` cut the text short, else `stop`.
    finish_reason: &'static str,
}

impl TextCompletion {
    fn parse(body: &Value, opts: &Opts) -> Result<TextCompletion, BadParam> {
        let model = model_of(body)?;
        let prompts = match body.get("prompt") {
            // OpenAI's default: the document separator.
            None | Some(Value::Null) => vec![Text::Str("<|endoftext|>".into())],
            Some(p) => parse_texts(p, "prompt")?,
        };
        let n = int_field(body, "n", 1..=MAX_N)?.unwrap_or(1) as usize;
        if int_field(body, "best_of", 0..=20)?.is_some_and(|b| b > 1) {
            return Err(bad_param("best_of", "the mock does not support 'best_of'"));
        }
        let echo = body.get("echo").and_then(Value::as_bool) == Some(true);
        if echo && prompts.iter().any(|p| matches!(p, Text::Tokens(_))) {
            return Err(bad_param(
                "echo",
                "the mock cannot echo token prompts (it has no tokenizer)",
            ));
        }
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let max_tokens = int_field(body, "max_tokens", 0..=u64::from(u32::MAX))?
            .unwrap_or(DEFAULT_COMPLETION_MAX_TOKENS);
        let wanted = opts.stream_chunks.max(1);
        let words = wanted.min(usize::try_from(max_tokens).unwrap_or(usize::MAX));
        Ok(TextCompletion {
            model,
            name: opts.name.clone(),
            prompts,
            n,
            echo,
            stream,
            include_usage,
            words,
            finish_reason: if words < wanted { "length" } else { "stop" },
        })
    }

    /// The generated words, each with its leading space but the first.
    fn pieces(&self) -> Vec<String> {
        let text = format!("Hello from {}! {LOREM}", self.name);
        let words: Vec<&str> = text.split_whitespace().collect();
        (0..self.words)
            .map(|i| Call::stream_piece(&words, i))
            .collect()
    }

    /// Choices in OpenAI's order: prompt by prompt, `n` for each.
    fn choices(&self) -> impl Iterator<Item = (usize, &Text)> {
        self.prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, self.n))
            .enumerate()
    }

    fn usage(&self) -> Value {
        let prompt: usize = self.prompts.iter().map(Text::tokens).sum();
        let completion = self.words * self.prompts.len() * self.n;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    fn object(&self, n: u64, created: u64, choices: Vec<Value>) -> Value {
        json!({
            "id": format!("cmpl-mock-{n}"),
            "object": "text_completion",
            "created": created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        })
    }

    fn json(&self, n: u64, created: u64) -> Vec<u8> {
        let text = self.pieces().concat();
        let choices = self
            .choices()
            .map(|(index, prompt)| {
                let text = match prompt {
                    Text::Str(p) if self.echo => format!("{p}{text}"),
                    _ => text.clone(),
                };
                json!({
                    "text": text,
                    "index": index,
                    "logprobs": null,
                    "finish_reason": self.finish_reason,
                })
            })
            .collect();
        let mut out = self.object(n, created, choices);
        out["usage"] = self.usage();
        json_bytes(&out)
    }

    /// Chunks choice by choice (an echo first), each choice ending with an
    /// empty text and its finish reason; then the usage chunk if asked for,
    /// then `[DONE]`.
    fn stream_frames(&self, n: u64, created: u64) -> Vec<String> {
        let chunk = |index: usize, text: &str, finish: Option<&str>| {
            sse_data(&self.object(
                n,
                created,
                vec![json!({
                    "text": text,
                    "index": index,
                    "logprobs": null,
                    "finish_reason": finish,
                })],
            ))
        };
        let pieces = self.pieces();
        let mut frames = Vec::new();
        for (index, prompt) in self.choices() {
            if let (Text::Str(p), true) = (prompt, self.echo) {
                frames.push(chunk(index, p, None));
            }
            for piece in &pieces {
                frames.push(chunk(index, piece, None));
            }
            frames.push(chunk(index, "", Some(self.finish_reason)));
        }
        if self.include_usage {
            let mut last = self.object(n, created, Vec::new());
            last["usage"] = self.usage();
            frames.push(sse_data(&last));
        }
        frames.push("data: [DONE]\n\n".to_string());
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Opts {
        Opts {
            stream_chunks: 5,
            ..Opts::default()
        }
    }

    fn embed(body: Value) -> Value {
        serde_json::from_slice(&Embeddings::parse(&body).unwrap().json()).unwrap()
    }

    fn refused(r: Result<impl Sized, BadParam>) -> (String, String) {
        match r {
            Ok(_) => panic!("accepted"),
            Err(BadParam(m, p)) => (m, p.unwrap_or_default()),
        }
    }

    #[test]
    fn embeddings_float_and_base64_carry_the_same_f32s() {
        let floats = embed(json!({"model": "e", "input": ["a", "b"], "dimensions": 8}));
        let b64 = embed(json!({"model": "e", "input": ["a", "b"], "dimensions": 8,
            "encoding_format": "base64"}));
        assert_eq!(floats["object"], "list");
        assert_eq!(floats["model"], "e");
        assert_eq!(
            floats["usage"],
            json!({"prompt_tokens": 2, "total_tokens": 2})
        );
        for i in 0..2 {
            let item = &floats["data"][i];
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            let v: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
            assert_eq!(v.len(), 8);
            let norm: f32 = v.iter().map(|a| a * a).sum();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
            let text = b64["data"][i]["embedding"].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            let decoded: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(decoded, v);
        }
        // Different inputs, different vectors; the same input, the same one.
        assert_ne!(
            floats["data"][0]["embedding"],
            floats["data"][1]["embedding"]
        );
        let again = embed(json!({"model": "e", "input": "a", "dimensions": 8}));
        assert_eq!(
            again["data"][0]["embedding"],
            floats["data"][0]["embedding"]
        );
    }

    #[test]
    fn embeddings_take_tokens_and_refuse_bad_input() {
        let out = embed(json!({"model": "e", "input": [1, 2, 3]}));
        assert_eq!(out["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["data"][0]["embedding"].as_array().unwrap().len(),
            DEFAULT_DIMENSIONS
        );
        assert_eq!(out["usage"]["prompt_tokens"], 3);
        let out = embed(json!({"model": "e", "input": [[1, 2], [3]]}));
        assert_eq!(out["data"].as_array().unwrap().len(), 2);
        assert_eq!(out["usage"]["prompt_tokens"], 3);
        for (body, param) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "e"}), "input"),
            (json!({"model": "e", "input": ""}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [[]]}), "input"),
            (json!({"model": "e", "input": [1, "x"]}), "input"),
            (json!({"model": "e", "input": {"a": 1}}), "input"),
            (
                json!({"model": "e", "input": vec!["x"; MAX_INPUTS + 1]}),
                "input",
            ),
            (
                json!({"model": "e", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "e", "input": "x", "dimensions": 1e9}),
                "dimensions",
            ),
            (
                json!({"model": "e", "input": "x", "encoding_format": "hex"}),
                "encoding_format",
            ),
        ] {
            assert_eq!(refused(Embeddings::parse(&body)).1, param, "{body}");
        }
    }

    fn complete(body: Value) -> Value {
        let c = TextCompletion::parse(&body, &opts()).unwrap();
        serde_json::from_slice(&c.json(7, 1)).unwrap()
    }

    #[test]
    fn completions_answer_each_prompt_n_times() {
        let out = complete(json!({"model": "i", "prompt": ["p", "q"], "n": 2, "max_tokens": 100}));
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["id"], "cmpl-mock-7");
        let choices = out["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 4);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["finish_reason"], "stop");
            assert_eq!(c["logprobs"], Value::Null);
            assert_eq!(c["text"], "Hello from mock! Lorem ipsum");
        }
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22})
        );
        // max_tokens cuts the text; echo puts the prompt first.
        let out = complete(json!({"model": "i", "prompt": "Say: ", "max_tokens": 2, "echo": true}));
        assert_eq!(out["choices"][0]["text"], "Say: Hello from");
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        for (body, param) in [
            (
                json!({"model": "i", "prompt": [1, 2], "echo": true}),
                "echo",
            ),
            (json!({"model": "i", "n": 0}), "n"),
            (json!({"model": "i", "best_of": 3}), "best_of"),
            (json!({"model": "i", "prompt": 5}), "prompt"),
            (json!({"prompt": "x"}), "model"),
        ] {
            assert_eq!(
                refused(TextCompletion::parse(&body, &opts())).1,
                param,
                "{body}"
            );
        }
    }

    fn events(frames: &[String]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| {
                let (event, data) = f.trim_end().split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(event, format!("event: {}", v["type"].as_str().unwrap()));
                v
            })
            .collect()
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn responses_stream_text_in_spec_order() {
        let body = json!({"model": "m", "input": "hi", "instructions": "be brief", "stream": true});
        let call = ResponsesCall::parse(&body, 4, &opts()).unwrap();
        let ev = events(&call.stream_frames());
        let t = types(&ev);
        assert_eq!(
            t[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert_eq!(
            t[t.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ][..]
        );
        for (i, e) in ev.iter().enumerate() {
            assert_eq!(e["sequence_number"], i);
        }
        let deltas: String = ev
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert!(
            deltas.starts_with("Hello from mock! You said: \"hi\". You told me: \"be brief\"."),
            "{deltas}"
        );
        let done = &ev.last().unwrap()["response"];
        assert_eq!(done["id"], "resp_mock_4");
        assert_eq!(done["output"][0]["content"][0]["text"], deltas);
        assert!(
            ev[0]["response"].get("usage").is_none(),
            "no usage: null in the prelude"
        );
        assert_eq!(done["usage"]["output_tokens"], json!(call.words.len()));
    }

    #[test]
    fn responses_call_the_tool_until_its_output_comes_back() {
        let tool = json!({"type": "function", "name": "get_weather"});
        let first = json!({"model": "m", "input": "weather?", "tools": [tool]});
        let call = ResponsesCall::parse(&first, 1, &opts()).unwrap();
        let r = call.response("completed");
        assert_eq!(r["output"][0]["type"], "function_call");
        assert_eq!(r["output"][0]["arguments"], TOOL_ARGUMENTS);
        assert_eq!(r["tools"][0]["strict"], Value::Null);
        assert!(r["tools"][0].get("parameters").is_some());
        let second = json!({"model": "m", "tools": [tool], "input": [
            {"role": "user", "content": "weather?"},
            r["output"][0],
            {"type": "function_call_output", "call_id": "call_mock_1", "output": "sunny"},
        ]});
        let r = ResponsesCall::parse(&second, 2, &opts())
            .unwrap()
            .response("completed");
        assert_eq!(r["output"][0]["type"], "message");
        let text = r["output"][0]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("The tool said: \"sunny\""), "{text}");
    }

    #[test]
    fn chat_and_messages_answer_text_after_a_tool_result() {
        let openai = [
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "tool", "tool_call_id": "c", "content": "sunny"}),
        ];
        assert_eq!(
            last_tool_result(&openai, Api::OpenAi).as_deref(),
            Some("sunny")
        );
        assert_eq!(last_tool_result(&openai[..1], Api::OpenAi), None);
        let anthropic = [json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "rain"}]},
        ]})];
        assert_eq!(
            last_tool_result(&anthropic, Api::Anthropic).as_deref(),
            Some("rain")
        );
        assert_eq!(last_tool_result(&openai, Api::Anthropic), None);
        let body = json!({"system": [{"type": "text", "text": "be brief"}]});
        assert_eq!(
            system_text(&body, Api::Anthropic).as_deref(),
            Some("be brief")
        );
    }

    #[test]
    fn completion_streams_end_each_choice_then_usage_then_done() {
        let c = TextCompletion::parse(
            &json!({"model": "i", "prompt": "x", "n": 2, "stream": true,
                "stream_options": {"include_usage": true}}),
            &opts(),
        )
        .unwrap();
        let frames = c.stream_frames(3, 1);
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap().trim()).unwrap())
            .collect();
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 10);
        for index in 0..2 {
            let mine: Vec<&Value> = chunks
                .iter()
                .filter(|c| c["choices"][0]["index"] == index)
                .collect();
            let text: String = mine
                .iter()
                .map(|c| c["choices"][0]["text"].as_str().unwrap())
                .collect();
            assert_eq!(text, "Hello from mock! Lorem ipsum");
            assert_eq!(mine.last().unwrap()["choices"][0]["finish_reason"], "stop");
            assert!(
                mine[..mine.len() - 1]
                    .iter()
                    .all(|c| c["choices"][0]["finish_reason"].is_null())
            );
        }
    }
}
