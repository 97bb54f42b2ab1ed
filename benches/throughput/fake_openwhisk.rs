//! A fast fake OpenWhisk controller in a process of its own (the benchmark binary run
//! with [`SERVE_ARG`]), so its CPU is measured apart and it competes with the provider
//! only as a real controller on the same machine would.
//!
//! It answers every `POST /api/v1/namespaces/_/triggers/<name>` with 202 and an
//! activation id, and `GET` on a trigger with the trigger, over keep-alive HTTP/1.1,
//! without checking the credentials. For each
//! reading in a fire (the `body` of a message fire, or of each message of a batch fire)
//! it records the reading's sequence number, its send time and the fire's arrival time.
//! `GET /received` hands the records over and forgets them: a first line
//! `fires <n>`, then one line `<seq> <sent_us> <arrived_us>` per reading.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use test_support::{guarded_command, http_client};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;
use tokio::task::JoinSet;

use super::process::cpu_time;
use super::readings::{self, Delivery, Reading, Received, Sink};

/// The command-line argument that makes the benchmark binary serve as the fake.
pub const SERVE_ARG: &str = "--serve-fake-openwhisk";
/// Every trigger fire goes under this path.
const TRIGGERS_PATH: &str = "/api/v1/namespaces/_/triggers/";
/// How long the child may take to announce its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent keep-alive clients of [`FakeOpenWhisk::measure_ceiling`], as many as the
/// provider's default `FIRE_CONCURRENCY`.
pub const CEILING_CLIENTS: usize = 64;
/// Timeout of the benchmark's own requests to the fake (the ceiling's, `GET /received`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The fake's side: binds `127.0.0.1:0`, prints the port on stdout, serves until killed.
/// One thread: on a machine this small, waking a second one costs more than it gives.
pub fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let recorder = Arc::new(Recorder::default());
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let recorder = Arc::clone(&recorder);
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(Arc::clone(&recorder), request));
                // A client that goes away mid-request is no concern of the benchmark.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// What the fake has seen since the last `GET /received`.
#[derive(Default)]
struct Recorder {
    /// `fires` and the readings' lines, in the format of `GET /received`.
    since_taken: Mutex<(u64, String)>,
    activations: AtomicU64,
}

impl Recorder {
    /// Records a fire's readings, arrived at `arrived_us`.
    fn record(&self, fire: &[u8], arrived_us: u64) {
        let mut lines = String::new();
        for reading in readings_of(fire) {
            writeln!(lines, "{} {} {arrived_us}", reading.seq, reading.sent_us)
                .expect("write to a String");
        }
        let mut since_taken = self.since_taken.lock().unwrap();
        since_taken.0 += 1;
        since_taken.1.push_str(&lines);
    }

    fn take(&self) -> String {
        let (fires, lines) = std::mem::take(&mut *self.since_taken.lock().unwrap());
        format!("fires {fires}\n{lines}")
    }
}

/// The readings of a message fire or of a batch fire; none for anything else.
fn readings_of(fire: &[u8]) -> Vec<Reading> {
    /// Both fire shapes: a message fire has `body`, a batch fire has `messages`.
    #[derive(Deserialize)]
    struct Fire<'a> {
        #[serde(borrow)]
        body: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        messages: Vec<Message<'a>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        body: Cow<'a, str>,
    }
    let Ok(fire) = serde_json::from_slice::<Fire>(fire) else {
        return Vec::new();
    };
    fire.body
        .iter()
        .chain(fire.messages.iter().map(|message| &message.body))
        .filter_map(|body| Reading::parse(body.as_bytes()))
        .collect()
}

async fn answer(
    recorder: Arc<Recorder>,
    request: Request<Incoming>,
) -> hyper::Result<Response<String>> {
    let (parts, mut body) = request.into_parts();
    let trigger = parts.uri.path().strip_prefix(TRIGGERS_PATH);
    match (&parts.method, trigger) {
        (&Method::POST, Some(_)) => {}
        // The provider's start-up check that the trigger exists.
        (&Method::GET, Some(name)) => {
            return Ok(json(StatusCode::OK, trigger_json(name)));
        }
        (&Method::GET, None) if parts.uri.path() == "/received" => {
            return Ok(Response::new(recorder.take()));
        }
        _ => return Ok(json(StatusCode::NOT_FOUND, String::new())),
    }
    let mut fire = Vec::with_capacity(body.size_hint().lower() as usize);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            fire.extend_from_slice(&data);
        }
    }
    recorder.record(&fire, readings::unix_micros());
    let activation = recorder.activations.fetch_add(1, Ordering::Relaxed);
    let activation = format!(r#"{{"activationId":"{activation:032x}"}}"#);
    Ok(json(StatusCode::ACCEPTED, activation))
}

/// A response with a JSON body.
fn json(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// What OpenWhisk answers to `GET` on trigger `name`, which has one active rule.
fn trigger_json(name: &str) -> String {
    serde_json::json!({
        "namespace": "guest",
        "name": name,
        "version": "0.0.1",
        "publish": false,
        "parameters": [],
        "annotations": [],
        "limits": {},
        "rules": {"guest/r": {"action": {"path": "guest", "name": "a"}, "status": "active"}},
    })
    .to_string()
}

/// The benchmark's handle on the fake: its address, its pid, and what it received.
pub struct FakeOpenWhisk {
    port: u16,
    child: Child,
    http: reqwest::Client,
}

impl FakeOpenWhisk {
    /// Starts the fake (this binary with [`SERVE_ARG`]) and waits for its port.
    pub async fn start() -> anyhow::Result<FakeOpenWhisk> {
        let mut child = guarded_command(std::env::current_exe()?)
            .arg(SERVE_ARG)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the fake OpenWhisk")?;
        let stdout = child.stdout.take().context("the fake's stdout")?;
        let mut first_line = String::new();
        tokio::time::timeout(
            START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut first_line),
        )
        .await
        .context("the fake OpenWhisk announced no port")??;
        let port = first_line
            .trim()
            .parse()
            .with_context(|| format!("the fake OpenWhisk announced {first_line:?}"))?;
        Ok(FakeOpenWhisk {
            port,
            child,
            http: http_client(HTTP_TIMEOUT),
        })
    }

    /// `OW_API_HOST` for the provider.
    pub fn api_host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fires at the fake from [`CEILING_CLIENTS`] concurrent keep-alive clients in this
    /// process for `duration`; what it answered and what that cost it.
    pub async fn measure_ceiling(&self, duration: Duration) -> anyhow::Result<Ceiling> {
        let pid = self.pid().context("the fake OpenWhisk has exited")?;
        let url = format!("{}{TRIGGERS_PATH}t", self.api_host());
        let cpu_before = cpu_time(pid)?;
        let started = Instant::now();
        let mut clients = JoinSet::new();
        for client in 0..CEILING_CLIENTS as u64 {
            let (http, url) = (self.http.clone(), url.clone());
            clients.spawn(async move {
                let mut accepted = 0_u64;
                while started.elapsed() < duration {
                    let seq = client << 32 | accepted;
                    let response = http
                        .post(&url)
                        .basic_auth("u", Some("k"))
                        .header("content-type", "application/json")
                        .body(message_fire(seq))
                        .send()
                        .await?;
                    if response.status() != StatusCode::ACCEPTED {
                        bail!("the fake OpenWhisk answered {}", response.status());
                    }
                    response.bytes().await?;
                    accepted += 1;
                }
                anyhow::Ok(accepted)
            });
        }
        let mut accepted = 0;
        while let Some(client) = clients.join_next().await {
            accepted += client??;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_time(pid)? - cpu_before;
        self.take().await?;
        Ok(Ceiling {
            fires_per_sec: accepted as f64 / elapsed.as_secs_f64(),
            cpu_per_10k: cpu.as_secs_f64() / accepted as f64 * 10_000.0,
        })
    }
}

impl Sink for FakeOpenWhisk {
    async fn take(&self) -> anyhow::Result<Received> {
        let url = format!("{}/received", self.api_host());
        let text = self.http.get(url).send().await?.text().await?;
        let mut lines = text.lines();
        let carriers = lines
            .next()
            .and_then(|line| line.strip_prefix("fires "))
            .and_then(|fires| fires.parse().ok())
            .with_context(|| format!("the fake OpenWhisk sent {:.100}", text))?;
        let deliveries = lines
            .map(|line| {
                let mut numbers = line.split(' ').map(str::parse::<u64>);
                let mut next = || numbers.next().and_then(Result::ok);
                match (next(), next(), next()) {
                    (Some(seq), Some(sent_us), Some(arrived_us)) => Ok(Delivery {
                        seq,
                        sent_us,
                        arrived_us,
                    }),
                    _ => bail!("the fake OpenWhisk sent the line {line:?}"),
                }
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Received {
            carriers,
            deliveries,
        })
    }
}

/// What the fake sustains, measured by [`FakeOpenWhisk::measure_ceiling`].
pub struct Ceiling {
    pub fires_per_sec: f64,
    /// The fake's own CPU seconds per 10,000 fires.
    pub cpu_per_10k: f64,
}

/// A message fire as the provider sends it, carrying reading `seq`.
fn message_fire(seq: u64) -> String {
    serde_json::json!({
        "type": "message",
        "topic": "bench/sensors/t0",
        "body": readings::payload(seq, readings::unix_micros()),
        "qos": 1,
        "retain": false,
        "received_at": "2026-11-24T03:00:00.123Z",
    })
    .to_string()
}
