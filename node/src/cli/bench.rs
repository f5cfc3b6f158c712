//! `ferrokv bench`: a closed-loop HTTP load generator for a ferrokv cluster.
//!
//! `--concurrency N` workers each run their own sequential request loop (the
//! next request leaves only when the previous one is answered) over their
//! own `reqwest::Client`, so every worker holds exactly one keep-alive
//! connection. Worker `i` talks to endpoint `i % E` of the `--endpoint` list,
//! which spreads the connections round-robin over the nodes.
//!
//! A run is: optional prefill (every key written once, so reads hit), a
//! warm-up whose requests are not recorded, then the measured window, which
//! ends after `--duration` (default 10 s), after `--ops` operations in total,
//! whichever comes first, or at Ctrl-C / SIGTERM (in-flight requests are then
//! abandoned and not recorded; the report is still printed). Requests still
//! in flight when the duration ends are completed and recorded.
//!
//! Being closed-loop, the offered load adapts to the server: a slow answer
//! delays the worker's next request instead of queueing more, so latencies
//! are per-request service times (no coordinated-omission correction) and
//! throughput is what N sequential clients achieve.
//!
//! ## Operations (`--mix put=50,get=50`, weights are relative)
//!
//! Keys are `bench/<i>` for `i` in `0..KEYS`, zero-padded to the width of
//! `KEYS - 1` (`--keys 10000` gives `bench/0000` ... `bench/9999`), drawn
//! uniformly.
//!
//! * `put`: `PUT /v1/kv/{key}` with a `--value-size` byte body.
//! * `get`: `GET /v1/kv/{key}?consistency=..`; 404 `key_not_found` is a miss.
//! * `cas`: `GET /v1/kv/{key}?consistency=linearizable`, then `PUT` with
//!   `If-Match: "<ETag revision>"`. A 404 on the read is a miss (no write is
//!   sent); a 412 `condition_failed` on the write is a conflict. Its latency
//!   covers both requests.
//! * `delete`: `DELETE /v1/kv/{key}`; 404 `key_not_found` is a miss.
//! * `list`: `GET /v1/kv?prefix=bench/&limit=100&consistency=..`.
//!
//! Every operation ends in exactly one outcome: success, miss, conflict or
//! error. Misses and conflicts are answers the server is allowed to give and
//! are never errors; anything else is an error and never a success: a
//! transport failure (`connect`, `timeout`, `body`, `transport`), an
//! unexpected status (`http_<status>:<code>` with the `code` of the JSON
//! error body, e.g. `http_503:no_quorum`, or `http_<status>` without one),
//! or `bad_etag` (a `cas` read whose answer has no usable `ETag`).
//! Redirects are not followed and no proxy is used. Latency percentiles
//! cover every measured operation whatever its outcome, so timeouts and
//! fast failures both show; read the error counts before the latencies.
//!
//! ## JSON report (`--json`)
//!
//! One object on stdout with stable field names:
//!
//! * `params`: `endpoints` (array), `concurrency`, `duration_secs` (null
//!   when only `--ops` bounds the run), `ops_limit` (null without `--ops`),
//!   `warmup_secs`, `keys`, `value_size`, `mix` (normalised, e.g.
//!   `"put=50,get=50"`), `consistency`, `prefill` (bool), `seed`,
//!   `max_error_rate`.
//! * `interrupted`: true when a signal stopped the run early.
//! * `prefill_secs`: time spent prefilling; null when there was no prefill.
//! * `warmup_ops`: operations finished during warm-up (counted nowhere else).
//! * `elapsed_secs`: length of the measured window.
//! * `error_rate`: `total.errors / total.ops` (0 when nothing was measured).
//! * `total`, and `by_op.put|get|cas|delete|list` for each operation in the
//!   mix, each with `ops`, `ops_per_sec`, `successes`, `successes_per_sec`,
//!   `misses`, `conflicts`, `errors`, `errors_by_kind` (kind -> count) and
//!   `latency_us` (`min`, `mean`, `p50`, `p90`, `p99`, `p99_9`, `max` in
//!   microseconds from an HDR histogram with 3 significant digits; null
//!   when `ops` is 0). `ops = successes + misses + conflicts + errors`.
//!
//! The exit status is non-zero when `error_rate` exceeds `--max-error-rate`
//! (default 1.0, i.e. never), or when that gate is set below 1.0 and no
//! operation was measured at all.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use reqwest::header::{ETAG, IF_MATCH};
use reqwest::{RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Like `eprintln!` but ignores write errors (a closed stderr must not
/// turn into a panic that loses the report).
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Upper bound for one request, including reading the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A worker has one request in flight, so one idle connection per endpoint
/// is all it reuses; a few more cost nothing.
const POOL_MAX_IDLE_PER_HOST: usize = 4;
/// Highest latency the histograms track exactly (60 s, above a `cas`'s two
/// request timeouts); longer ones are recorded as this value.
const LATENCY_MAX_US: u64 = 60_000_000;
/// HDR histogram precision.
const LATENCY_SIGFIGS: u8 = 3;
/// Every key the bench touches starts with this.
const KEY_PREFIX: &str = "bench/";
/// `limit` of a `list` operation.
const LIST_LIMIT: u32 = 100;
/// Attempts per key during prefill before the bench gives up.
const PREFILL_ATTEMPTS: u32 = 3;
/// Pause between prefill attempts of one key.
const PREFILL_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Upper bound on `--concurrency`: each worker owns a client and a socket.
const MAX_CONCURRENCY: u32 = 10_000;
/// Statistics shards shared by the workers (worker `i` uses shard `i % 16`).
const STATS_SHARDS: usize = 16;
/// Longest `--duration` or `--warmup` accepted: about 31 years.
const MAX_SECS: f64 = 1e9;
/// Weights of the default mix.
const DEFAULT_MIX: &str = "put=50,get=50";

/// `ferrokv bench`: drive load at a cluster and report throughput and latency.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of a node's HTTP API; repeat the flag or give a comma-separated
    /// list to spread the connections round-robin over several nodes.
    #[arg(
        long = "endpoint",
        value_name = "URL",
        env = "FERROKV_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8081"
    )]
    pub endpoints: Vec<String>,

    /// Number of workers; each sends one request at a time over its own connection.
    #[arg(long, value_name = "N", default_value_t = 16, env = "FERROKV_CONCURRENCY",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
    pub concurrency: u32,

    /// Length of the measured window in seconds (fractions allowed); 10 unless
    /// --ops is given. With both, the run stops at whichever is reached first.
    #[arg(long, value_name = "SECS", env = "FERROKV_DURATION", value_parser = parse_positive_secs)]
    pub duration: Option<Duration>,

    /// Total number of measured operations over all workers.
    #[arg(long, value_name = "N", env = "FERROKV_OPS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,

    /// Seconds of load before measuring starts; those requests are not recorded.
    #[arg(long, value_name = "SECS", default_value = "2", env = "FERROKV_WARMUP", value_parser = parse_secs)]
    pub warmup: Duration,

    /// Size of the key space: keys are bench/0 .. bench/<N-1>, zero-padded.
    #[arg(long, value_name = "N", default_value_t = 10_000, env = "FERROKV_KEYS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Bytes in every written value.
    #[arg(long, value_name = "BYTES", default_value_t = 256, env = "FERROKV_VALUE_SIZE")]
    pub value_size: usize,

    /// Operation weights, e.g. put=20,get=70,list=10 (operations: put, get,
    /// cas, delete, list; weights are relative whole numbers).
    #[arg(long, value_name = "OP=W,..", default_value = DEFAULT_MIX, env = "FERROKV_MIX", value_parser = Mix::parse)]
    pub mix: Mix,

    /// Read consistency of `get` and `list` (`cas` always reads linearizably).
    #[arg(long, value_enum, default_value_t = BenchConsistency::Linearizable, env = "FERROKV_CONSISTENCY")]
    pub consistency: BenchConsistency,

    /// Skip writing every key once before the run (done by default when the
    /// mix has get, cas or delete, so that they find their keys).
    #[arg(long, env = "FERROKV_NO_PREFILL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_prefill: bool,

    /// Print the report as one JSON object instead of a table.
    #[arg(long, env = "FERROKV_JSON",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,

    /// Seed of the operation/key generator (random when omitted; the report shows it).
    #[arg(long, env = "FERROKV_SEED")]
    pub seed: Option<u64>,

    /// Exit non-zero when errors / operations exceeds this fraction (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0, env = "FERROKV_MAX_ERROR_RATE",
          value_parser = parse_fraction)]
    pub max_error_rate: f64,
}

/// Read consistency requested for `get` and `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchConsistency {
    /// Confirmed with a quorum.
    Linearizable,
    /// Served from the answering node's local state.
    Stale,
}

impl BenchConsistency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::Stale => "stale",
        }
    }
}

/// `--duration`: a positive number of seconds.
fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    let d = parse_secs(text)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".to_owned());
    }
    Ok(d)
}

/// A non-negative number of seconds, fractions allowed (`0.5`), at most
/// [`MAX_SECS`] (so deadlines never overflow an `Instant`).
fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=MAX_SECS).contains(&secs) {
        return Err(format!("{text:?} is not a number of seconds from 0 to {MAX_SECS}"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid number of seconds"))
}

/// `--max-error-rate`: a fraction from 0 to 1.
fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}

// ---------------------------------------------------------------- operations and mix

/// One kind of benchmark operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Cas,
    Delete,
    List,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 5] = [Op::Put, Op::Get, Op::Cas, Op::Delete, Op::List];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Cas => "cas",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative weights of the operations, parsed from `put=50,get=50`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
    total: u64,
}

impl Mix {
    /// Parses `op=weight[,op=weight...]`. Every op may appear once; weights
    /// are whole numbers and at least one must be above 0.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut seen = [false; 5];
        let mut weights = [0u32; 5];
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty entry in mix {text:?}; expected op=weight[,op=weight...]"));
            }
            let Some((name, weight)) = part.split_once('=') else {
                return Err(format!("{part:?} is not op=weight (e.g. put=50)"));
            };
            let name = name.trim();
            let op = Op::from_name(name)
                .ok_or_else(|| format!("unknown operation {name:?}; use put, get, cas, delete or list"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("the weight of {op} must be a whole number, not {:?}", weight.trim()))?;
            if std::mem::replace(&mut seen[op.index()], true) {
                return Err(format!("{op} appears more than once in the mix"));
            }
            weights[op.index()] = weight;
        }
        let total = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err("the mix needs at least one operation with a weight above 0".to_owned());
        }
        Ok(Mix { weights, total })
    }

    /// The weight of `op` (0 when absent).
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The operations with a weight above 0, in report order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|&op| self.weight(op) > 0)
    }

    /// Whether the mix reads or removes existing keys (and so wants a prefill).
    pub fn needs_prefill(&self) -> bool {
        [Op::Get, Op::Cas, Op::Delete].into_iter().any(|op| self.weight(op) > 0)
    }

    /// Picks the operation for `draw`, which must be below the total weight.
    fn pick_at(&self, mut draw: u64) -> Op {
        for op in Op::ALL {
            let w = u64::from(self.weight(op));
            if draw < w {
                return op;
            }
            draw -= w;
        }
        // Only reachable with draw >= total; the last weighted op is as good as any.
        self.ops().last().unwrap_or(Op::Put)
    }

    /// Draws an operation with probability proportional to its weight.
    fn pick(&self, rng: &mut Rng) -> Op {
        self.pick_at(rng.below(self.total))
    }
}

impl fmt::Display for Mix {
    /// Normalised form: operations with weight > 0, in report order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}={}", self.weight(op))?;
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and good enough to pick keys and operations.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); Lemire's multiply-shift, bias < n / 2^64.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A seed for runs without `--seed`; printed in the report for reruns.
fn random_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// `bench/<i>` zero-padded to `width` digits.
fn key_name(index: u64, width: usize) -> String {
    format!("{KEY_PREFIX}{index:0width$}")
}

/// Digits of the largest key index, so all keys have the same length.
fn key_width(keys: u64) -> usize {
    keys.saturating_sub(1).to_string().len()
}

// ---------------------------------------------------------------- outcomes

/// How one operation ended. Exactly one per measured operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    /// The key did not exist (404 `key_not_found` on get, delete, cas read).
    Miss,
    /// A `cas` write lost the race (412 `condition_failed`).
    Conflict,
    /// Anything else; the string is the error kind.
    Error(String),
}

/// What a response is supposed to look like for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `PUT` without precondition: 200 or 201.
    Write,
    /// `GET` of a key: 200, or 404 `key_not_found` as a miss.
    Read,
    /// `PUT` with `If-Match`: 200 or 201, or 412 `condition_failed` as a conflict.
    CasWrite,
    /// `DELETE`: 204 (or 200), or 404 `key_not_found` as a miss.
    Delete,
    /// `GET /v1/kv`: 200.
    List,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

/// The `code` of a `{"error":{"code":..}}` body, if it is one and looks sane
/// (short snake_case, so a misbehaving server cannot flood the report).
fn error_code(body: &[u8]) -> Option<String> {
    let code = serde_json::from_slice::<ErrorEnvelope>(body).ok()?.error.code;
    let sane = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    sane.then_some(code)
}

/// Judges one response. Only the statuses listed in [`Expect`] are
/// anything but an error.
fn judge(expect: Expect, status: StatusCode, body: &[u8]) -> Outcome {
    let code = || error_code(body);
    let ok = match expect {
        Expect::Write | Expect::CasWrite => status == StatusCode::OK || status == StatusCode::CREATED,
        Expect::Read | Expect::List => status == StatusCode::OK,
        Expect::Delete => status == StatusCode::NO_CONTENT || status == StatusCode::OK,
    };
    if ok {
        return Outcome::Success;
    }
    let may_miss = matches!(expect, Expect::Read | Expect::Delete);
    if may_miss && status == StatusCode::NOT_FOUND && code().as_deref() == Some("key_not_found") {
        return Outcome::Miss;
    }
    if expect == Expect::CasWrite
        && status == StatusCode::PRECONDITION_FAILED
        && code().as_deref() == Some("condition_failed")
    {
        return Outcome::Conflict;
    }
    Outcome::Error(match code() {
        Some(code) => format!("http_{}:{code}", status.as_u16()),
        None => format!("http_{}", status.as_u16()),
    })
}

/// Error kind of a request that got no complete response.
fn transport_error(err: &reqwest::Error) -> Outcome {
    let kind = if err.is_connect() {
        "connect"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "transport"
    };
    Outcome::Error(kind.to_owned())
}

/// `"12"` -> 12 (a weak `W/` tag is not a usable `If-Match` and is refused).
fn parse_etag(etag: &str) -> Option<u64> {
    etag.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

// ---------------------------------------------------------------- workers

/// What a worker needs to issue requests: one client, one endpoint.
#[derive(Debug)]
struct Worker {
    http: reqwest::Client,
    /// Endpoint base URL without a trailing `/`.
    base: String,
    /// `?consistency=..` appended to `get`.
    read_query: String,
    list_url: String,
    value: Bytes,
    key_width: usize,
}

/// A complete response.
struct Reply {
    status: StatusCode,
    etag: Option<u64>,
    body: Bytes,
}

impl Worker {
    fn new(plan: &Plan, endpoint: &str, value: Bytes) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(plan.request_timeout))
            .timeout(plan.request_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("ferrokv-bench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building HTTP client")?;
        let consistency = plan.consistency.as_str();
        Ok(Worker {
            http,
            base: endpoint.to_owned(),
            read_query: format!("?consistency={consistency}"),
            list_url: format!("{endpoint}/v1/kv?prefix={KEY_PREFIX}&limit={LIST_LIMIT}&consistency={consistency}"),
            value,
            key_width: plan.key_width,
        })
    }

    fn key_url(&self, key: u64) -> String {
        format!("{}/v1/kv/{}", self.base, key_name(key, self.key_width))
    }

    /// Sends `req` and reads the whole body (needed anyway to reuse the connection).
    async fn call(&self, req: RequestBuilder) -> Result<Reply, Outcome> {
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).and_then(parse_etag);
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        Ok(Reply { status, etag, body })
    }

    async fn request(&self, req: RequestBuilder, expect: Expect) -> (Outcome, Option<u64>) {
        match self.call(req).await {
            Ok(reply) => (judge(expect, reply.status, &reply.body), reply.etag),
            Err(outcome) => (outcome, None),
        }
    }

    async fn put(&self, key: u64) -> Outcome {
        let req = self.http.put(self.key_url(key)).body(self.value.clone());
        self.request(req, Expect::Write).await.0
    }

    /// Runs one operation on key index `key`.
    async fn execute(&self, op: Op, key: u64) -> Outcome {
        match op {
            Op::Put => self.put(key).await,
            Op::Get => {
                let req = self.http.get(format!("{}{}", self.key_url(key), self.read_query));
                self.request(req, Expect::Read).await.0
            }
            Op::Cas => {
                let url = self.key_url(key);
                let read = self.http.get(format!("{url}?consistency=linearizable"));
                let revision = match self.request(read, Expect::Read).await {
                    (Outcome::Success, Some(rev)) => rev,
                    (Outcome::Success, None) => return Outcome::Error("bad_etag".to_owned()),
                    (other, _) => return other,
                };
                let write = self.http.put(url).header(IF_MATCH, format!("\"{revision}\"")).body(self.value.clone());
                self.request(write, Expect::CasWrite).await.0
            }
            Op::Delete => self.request(self.http.delete(self.key_url(key)), Expect::Delete).await.0,
            Op::List => self.request(self.http.get(&self.list_url), Expect::List).await.0,
        }
    }
}

// ---------------------------------------------------------------- statistics

/// Counts and latencies of one operation kind (or of all of them).
#[derive(Debug, Clone)]
struct OpStats {
    successes: u64,
    misses: u64,
    conflicts: u64,
    errors: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl OpStats {
    fn new() -> anyhow::Result<Self> {
        Ok(OpStats {
            successes: 0,
            misses: 0,
            conflicts: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_max(LATENCY_MAX_US, LATENCY_SIGFIGS).context("creating a histogram")?,
        })
    }

    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        self.latency_us.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn ops(&self) -> u64 {
        self.successes + self.misses + self.conflicts + self.error_count()
    }

    fn merge(&mut self, other: &OpStats) -> anyhow::Result<()> {
        self.successes += other.successes;
        self.misses += other.misses;
        self.conflicts += other.conflicts;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.latency_us.add(&other.latency_us).context("merging latency histograms")
    }
}

/// Per-operation statistics of one worker or of the whole run.
#[derive(Debug, Clone)]
struct Stats {
    by_op: [OpStats; 5],
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        let empty = OpStats::new()?;
        Ok(Stats { by_op: std::array::from_fn(|_| empty.clone()) })
    }

    fn record(&mut self, op: Op, outcome: Outcome, latency: Duration) {
        self.by_op[op.index()].record(outcome, latency);
    }

    fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        for (mine, theirs) in self.by_op.iter_mut().zip(&other.by_op) {
            mine.merge(theirs)?;
        }
        Ok(())
    }

    fn total(&self) -> anyhow::Result<OpStats> {
        let mut total = OpStats::new()?;
        for s in &self.by_op {
            total.merge(s)?;
        }
        Ok(total)
    }
}

// ---------------------------------------------------------------- report

/// The whole report; `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub struct Report {
    pub params: ReportParams,
    pub interrupted: bool,
    pub prefill_secs: Option<f64>,
    pub warmup_ops: u64,
    pub elapsed_secs: f64,
    pub error_rate: f64,
    pub total: OpReport,
    pub by_op: ByOp,
}

/// The parameters of the run, as used (defaults resolved).
#[derive(Debug, Clone, Serialize)]
pub struct ReportParams {
    pub endpoints: Vec<String>,
    pub concurrency: usize,
    pub duration_secs: Option<f64>,
    pub ops_limit: Option<u64>,
    pub warmup_secs: f64,
    pub keys: u64,
    pub value_size: usize,
    pub mix: String,
    pub consistency: &'static str,
    pub prefill: bool,
    pub seed: u64,
    pub max_error_rate: f64,
}

/// One row of the report: an operation kind, or the total.
#[derive(Debug, Serialize)]
pub struct OpReport {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub successes: u64,
    pub successes_per_sec: f64,
    pub misses: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub latency_us: Option<Latency>,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

/// Per-operation rows; only the operations of the mix are present.
#[derive(Debug, Default, Serialize)]
pub struct ByOp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put: Option<OpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub get: Option<OpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas: Option<OpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<OpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<OpReport>,
}

impl ByOp {
    fn slot(&mut self, op: Op) -> &mut Option<OpReport> {
        match op {
            Op::Put => &mut self.put,
            Op::Get => &mut self.get,
            Op::Cas => &mut self.cas,
            Op::Delete => &mut self.delete,
            Op::List => &mut self.list,
        }
    }

    fn rows(&self) -> impl Iterator<Item = (Op, &OpReport)> {
        let all = [&self.put, &self.get, &self.cas, &self.delete, &self.list];
        Op::ALL.into_iter().zip(all).filter_map(|(op, row)| row.as_ref().map(|r| (op, r)))
    }
}

/// Rounds a rate for display; keeps JSON free of 15-digit noise.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { round2(n as f64 / secs) } else { 0.0 }
}

impl OpReport {
    fn from_stats(s: &OpStats, secs: f64) -> Self {
        let ops = s.ops();
        let h = &s.latency_us;
        let latency = (!h.is_empty()).then(|| Latency {
            min: h.min(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        });
        OpReport {
            ops,
            ops_per_sec: per_sec(ops, secs),
            successes: s.successes,
            successes_per_sec: per_sec(s.successes, secs),
            misses: s.misses,
            conflicts: s.conflicts,
            errors: s.error_count(),
            errors_by_kind: s.errors.clone(),
            latency_us: latency,
        }
    }
}

/// How a run ended, besides its statistics.
#[derive(Debug, Clone, Copy, Default)]
struct RunInfo {
    interrupted: bool,
    prefill: Option<Duration>,
    warmup_ops: u64,
    elapsed: Duration,
}

impl Report {
    fn build(params: ReportParams, mix: &Mix, stats: &Stats, info: RunInfo) -> anyhow::Result<Report> {
        let secs = info.elapsed.as_secs_f64();
        let total = OpReport::from_stats(&stats.total()?, secs);
        let mut by_op = ByOp::default();
        for op in mix.ops() {
            *by_op.slot(op) = Some(OpReport::from_stats(&stats.by_op[op.index()], secs));
        }
        let error_rate = if total.ops > 0 { total.errors as f64 / total.ops as f64 } else { 0.0 };
        Ok(Report {
            params,
            interrupted: info.interrupted,
            prefill_secs: info.prefill.map(|d| round2(d.as_secs_f64())),
            warmup_ops: info.warmup_ops,
            elapsed_secs: (secs * 1000.0).round() / 1000.0,
            error_rate,
            total,
            by_op,
        })
    }

    /// The `--max-error-rate` gate.
    fn check_error_rate(&self) -> anyhow::Result<()> {
        let max = self.params.max_error_rate;
        if max < 1.0 && self.total.ops == 0 {
            bail!("no operation was measured, so --max-error-rate {max} cannot be checked");
        }
        if self.error_rate > max {
            bail!(
                "error rate {:.4} ({} of {} operations) exceeds --max-error-rate {max}",
                self.error_rate,
                self.total.errors,
                self.total.ops
            );
        }
        Ok(())
    }

    /// The human-readable report.
    fn render_text(&self) -> String {
        let p = &self.params;
        let mut out = String::new();
        let bound = match (p.duration_secs, p.ops_limit) {
            (Some(d), Some(n)) => format!("{d} s or {n} ops"),
            (Some(d), None) => format!("{d} s"),
            (None, Some(n)) => format!("{n} ops"),
            (None, None) => "-".to_owned(),
        };
        let prefill = match self.prefill_secs {
            Some(s) => format!("yes ({s:.2} s)"),
            None => "no".to_owned(),
        };
        let _ = writeln!(out, "endpoints    {}", p.endpoints.join(", "));
        let _ = writeln!(
            out,
            "workload     mix {}, {} keys, {} B values, {} reads, concurrency {}, seed {}",
            p.mix, p.keys, p.value_size, p.consistency, p.concurrency, p.seed
        );
        let _ = writeln!(
            out,
            "run          {bound}, warm-up {} s ({} ops not recorded), prefill {prefill}",
            p.warmup_secs, self.warmup_ops
        );
        let t = &self.total;
        let _ = writeln!(
            out,
            "measured     {} ops in {:.3} s: {:.1} ops/s, {:.1} successes/s, error rate {:.3}%{}",
            t.ops,
            self.elapsed_secs,
            t.ops_per_sec,
            t.successes_per_sec,
            self.error_rate * 100.0,
            if self.interrupted { "  (INTERRUPTED)" } else { "" }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<7}{:>10}{:>11}{:>10}{:>8}{:>10}{:>8}  {:>10}{:>10}{:>10}{:>10}{:>10}",
            "op",
            "ops",
            "ops/s",
            "success",
            "miss",
            "conflict",
            "error",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        let rows = self.by_op.rows().map(|(op, r)| (op.name(), r)).chain([("total", t)]);
        for (name, r) in rows {
            let lat = match r.latency_us {
                Some(l) => [l.p50, l.p90, l.p99, l.p99_9, l.max].map(|us| format!("{:.3}", us as f64 / 1000.0)),
                None => std::array::from_fn(|_| "-".to_owned()),
            };
            let _ = writeln!(
                out,
                "{:<7}{:>10}{:>11.1}{:>10}{:>8}{:>10}{:>8}  {:>10}{:>10}{:>10}{:>10}{:>10}",
                name,
                r.ops,
                r.ops_per_sec,
                r.successes,
                r.misses,
                r.conflicts,
                r.errors,
                lat[0],
                lat[1],
                lat[2],
                lat[3],
                lat[4]
            );
        }
        let errors: Vec<(&str, &String, u64)> = self
            .by_op
            .rows()
            .flat_map(|(op, r)| r.errors_by_kind.iter().map(move |(kind, n)| (op.name(), kind, *n)))
            .collect();
        if !errors.is_empty() {
            let width = errors.iter().map(|(_, kind, _)| kind.len()).max().unwrap_or(0);
            let _ = writeln!(out);
            let _ = writeln!(out, "errors");
            for (op, kind, n) in errors {
                let _ = writeln!(out, "  {op:<7}{kind:<width$}  {n:>10}");
            }
        }
        out
    }
}

// ---------------------------------------------------------------- running

/// Validated arguments with defaults resolved.
#[derive(Debug, Clone)]
struct Plan {
    endpoints: Vec<String>,
    concurrency: usize,
    duration: Option<Duration>,
    ops_limit: Option<u64>,
    warmup: Duration,
    keys: u64,
    key_width: usize,
    value_size: usize,
    mix: Mix,
    consistency: BenchConsistency,
    prefill: bool,
    seed: u64,
    max_error_rate: f64,
    request_timeout: Duration,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Plan> {
        let endpoints = args
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(normalize_endpoint)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            bail!("give at least one --endpoint");
        }
        let duration = match (args.duration, args.ops) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        Ok(Plan {
            endpoints,
            concurrency: args.concurrency as usize,
            duration,
            ops_limit: args.ops,
            warmup: args.warmup,
            keys: args.keys,
            key_width: key_width(args.keys),
            value_size: args.value_size,
            mix: args.mix.clone(),
            consistency: args.consistency,
            prefill: !args.no_prefill && args.mix.needs_prefill(),
            seed: args.seed.unwrap_or_else(random_seed),
            max_error_rate: args.max_error_rate,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    fn report_params(&self) -> ReportParams {
        ReportParams {
            endpoints: self.endpoints.clone(),
            concurrency: self.concurrency,
            duration_secs: self.duration.map(|d| d.as_secs_f64()),
            ops_limit: self.ops_limit,
            warmup_secs: self.warmup.as_secs_f64(),
            keys: self.keys,
            value_size: self.value_size,
            mix: self.mix.to_string(),
            consistency: self.consistency.as_str(),
            prefill: self.prefill,
            seed: self.seed,
            max_error_rate: self.max_error_rate,
        }
    }

    /// The value every write sends: printable, derived from the seed.
    fn value(&self) -> Bytes {
        let mut rng = Rng::new(self.seed ^ 0x5EED_0F7A_1E55);
        (0..self.value_size).map(|_| b'a' + rng.below(26) as u8).collect::<Vec<u8>>().into()
    }

    /// One worker per `--concurrency`, endpoints assigned round-robin.
    fn workers(&self) -> anyhow::Result<Vec<Arc<Worker>>> {
        let value = self.value();
        (0..self.concurrency)
            .map(|i| Worker::new(self, &self.endpoints[i % self.endpoints.len()], value.clone()).map(Arc::new))
            .collect()
    }
}

/// Checks an endpoint and strips its trailing `/`. Only plain http: the
/// client is built without TLS.
fn normalize_endpoint(endpoint: &str) -> anyhow::Result<String> {
    let url = super::client::parse_endpoint(endpoint)?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Runs `ferrokv bench`: prints the report (also after Ctrl-C) and fails
/// when the error rate is above `--max-error-rate`.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let (cancel_tx, cancel_rx) = watch::channel(false);
    // Installed before any request so an early Ctrl-C still gets a report.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let watcher = tokio::spawn(async move {
        let name = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        note!("received {name}, stopping");
        let _ = cancel_tx.send(true);
        // Keep the sender alive: a dropped sender also reads as "stop".
        std::future::pending::<()>().await;
    });
    if plan.concurrency < plan.endpoints.len() {
        note!(
            "note: --concurrency {} is below the number of endpoints ({}); some get no load",
            plan.concurrency,
            plan.endpoints.len()
        );
    }
    let result = execute(&plan, cancel_rx).await;
    watcher.abort();
    let report = result?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the JSON report")?;
        println!("{text}");
    } else {
        print!("{}", report.render_text());
    }
    report.check_error_rate()
}

/// Whether the run was cancelled (a dropped sender counts as cancelled).
fn cancelled(cancel: &watch::Receiver<bool>) -> bool {
    *cancel.borrow() || cancel.has_changed().is_err()
}

/// Prefill (unless skipped), warm-up and measurement; stops early when
/// `cancel` turns true.
async fn execute(plan: &Plan, cancel: watch::Receiver<bool>) -> anyhow::Result<Report> {
    let workers = plan.workers()?;
    let mut info = RunInfo::default();
    let mut stats = Stats::new()?;
    if plan.prefill {
        note!("prefilling {} keys over {} connections...", plan.keys, workers.len());
        let started = Instant::now();
        prefill(plan, &workers, &cancel).await?;
        info.prefill = Some(started.elapsed());
    }
    if !cancelled(&cancel) {
        let started = Instant::now();
        let shared = Arc::new(Schedule {
            measure_start: started + plan.warmup,
            end: plan.duration.map(|d| started + plan.warmup + d),
            ops_limit: plan.ops_limit,
            claimed: AtomicU64::new(0),
        });
        // Workers share a few statistics shards: one per worker would cost
        // ~140 KiB per histogram per worker, too much at high concurrency.
        let shards = (0..workers.len().min(STATS_SHARDS))
            .map(|_| Stats::new().map(Mutex::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shards = Arc::new(shards);
        let handles: Vec<JoinHandle<u64>> = workers
            .iter()
            .enumerate()
            .map(|(i, worker)| {
                let worker = Arc::clone(worker);
                let shared = Arc::clone(&shared);
                let shards = Arc::clone(&shards);
                let mix = plan.mix.clone();
                let keys = plan.keys;
                let rng = Rng::new(plan.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let shard = &shards[i % shards.len()];
                    work(&worker, &shared, &mix, keys, rng, cancel, shard).await
                })
            })
            .collect();
        for handle in handles {
            info.warmup_ops += handle.await.context("a bench worker failed")?;
        }
        info.elapsed = Instant::now().saturating_duration_since(shared.measure_start);
        for shard in shards.iter() {
            stats.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner))?;
        }
    }
    info.interrupted = cancelled(&cancel);
    Report::build(plan.report_params(), &plan.mix, &stats, info)
}

/// When measuring starts and stops; shared by all workers.
#[derive(Debug)]
struct Schedule {
    measure_start: Instant,
    end: Option<Instant>,
    ops_limit: Option<u64>,
    /// Measured operations started so far (for `--ops`).
    claimed: AtomicU64,
}

/// One worker's closed loop: records measured operations into `stats` and
/// returns how many operations it ran during warm-up.
async fn work(
    worker: &Worker,
    schedule: &Schedule,
    mix: &Mix,
    keys: u64,
    mut rng: Rng,
    mut cancel: watch::Receiver<bool>,
    stats: &Mutex<Stats>,
) -> u64 {
    let mut warmup_ops = 0;
    while !cancelled(&cancel) {
        let now = Instant::now();
        let measured = now >= schedule.measure_start;
        if measured {
            if schedule.end.is_some_and(|end| now >= end) {
                break;
            }
            if schedule.ops_limit.is_some_and(|limit| schedule.claimed.fetch_add(1, Ordering::Relaxed) >= limit) {
                break;
            }
        }
        let op = mix.pick(&mut rng);
        let key = rng.below(keys);
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            // Abandoned, not recorded: its outcome is unknown.
            _ = cancel.changed() => break,
            outcome = worker.execute(op, key) => outcome,
        };
        let latency = started.elapsed();
        if measured {
            stats.lock().unwrap_or_else(PoisonError::into_inner).record(op, outcome, latency);
        } else {
            warmup_ops += 1;
        }
    }
    warmup_ops
}

/// Writes every key once, spreading keys over all workers. A key that still
/// fails after [`PREFILL_ATTEMPTS`] aborts the bench: the run would
/// otherwise report misses that are really prefill failures.
async fn prefill(plan: &Plan, workers: &[Arc<Worker>], cancel: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let handles: Vec<JoinHandle<Result<(), String>>> = workers
        .iter()
        .map(|worker| {
            let (worker, next, failed, mut cancel) =
                (Arc::clone(worker), Arc::clone(&next), Arc::clone(&failed), cancel.clone());
            let (keys, width) = (plan.keys, plan.key_width);
            tokio::spawn(async move {
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= keys || failed.load(Ordering::Relaxed) || cancelled(&cancel) {
                        return Ok(());
                    }
                    let mut attempt = 1;
                    loop {
                        let outcome = tokio::select! {
                            biased;
                            _ = cancel.changed() => return Ok(()),
                            outcome = worker.put(key) => outcome,
                        };
                        match outcome {
                            Outcome::Success => break,
                            Outcome::Error(_) if attempt < PREFILL_ATTEMPTS => {
                                attempt += 1;
                                tokio::time::sleep(PREFILL_RETRY_PAUSE).await;
                            }
                            last => {
                                failed.store(true, Ordering::Relaxed);
                                let why = match last {
                                    Outcome::Error(kind) => kind,
                                    other => format!("{other:?}"),
                                };
                                let key = key_name(key, width);
                                return Err(format!("writing {key} failed {attempt} times, last with {why}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut first_error = None;
    for handle in handles {
        if let Err(e) = handle.await.context("a prefill worker failed")? {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(anyhow!("prefill failed: {e}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::{Value, json};

    /// Stand-in for the real binary's top level.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.bench)
    }

    fn plan(args: &[&str]) -> Plan {
        Plan::from_args(&parse(args).expect("parse")).expect("plan")
    }

    // ------------------------------------------------------------ flags

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("parse");
        assert_eq!(a.endpoints, ["http://127.0.0.1:8081"]);
        assert_eq!(a.concurrency, 16);
        assert_eq!((a.duration, a.ops), (None, None));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!((a.keys, a.value_size), (10_000, 256));
        assert_eq!(a.mix.to_string(), "put=50,get=50");
        assert_eq!(a.consistency, BenchConsistency::Linearizable);
        assert!(!a.no_prefill && !a.json);
        assert_eq!(a.max_error_rate, 1.0);
        let p = Plan::from_args(&a).expect("plan");
        assert_eq!(p.duration, Some(Duration::from_secs(10)));
        assert_eq!(p.ops_limit, None);
        assert!(p.prefill, "get in the default mix wants a prefill");
        assert_eq!(p.key_width, 4);
        assert_eq!(p.value().len(), 256);
    }

    #[test]
    fn endpoints_repeat_and_split_on_commas() {
        let p = plan(&["--endpoint", "http://a:1, http://b:2/", "--endpoint", "http://c:3/base/"]);
        assert_eq!(p.endpoints, ["http://a:1", "http://b:2", "http://c:3/base"]);
        for bad in ["https://a:1", "a:1", "127.0.0.1:8081", "http://a:1/?x=1", ","] {
            let args = parse(&["--endpoint", bad]).expect("parse");
            assert!(Plan::from_args(&args).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn workers_spread_round_robin() {
        let p = plan(&["--endpoint", "http://a:1,http://b:2", "--concurrency", "5"]);
        let bases: Vec<String> = p.workers().expect("workers").iter().map(|w| w.base.clone()).collect();
        assert_eq!(bases, ["http://a:1", "http://b:2", "http://a:1", "http://b:2", "http://a:1"]);
    }

    #[test]
    fn duration_and_ops() {
        let p = plan(&["--ops", "100"]);
        assert_eq!((p.duration, p.ops_limit), (None, Some(100)));
        let p = plan(&["--ops", "100", "--duration", "2.5"]);
        assert_eq!((p.duration, p.ops_limit), (Some(Duration::from_millis(2500)), Some(100)));
        let p = plan(&["--duration", "3", "--warmup", "0"]);
        assert_eq!((p.duration, p.ops_limit, p.warmup), (Some(Duration::from_secs(3)), None, Duration::ZERO));
    }

    #[test]
    fn flag_validation() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--duration", "abc"],
            &["--duration", "inf"],
            &["--duration", "NaN"],
            &["--duration", "1e10"],
            &["--warmup", "1e18"],
            &["--warmup", "-0.5"],
            &["--ops", "0"],
            &["--keys", "0"],
            &["--max-error-rate", "1.5"],
            &["--max-error-rate", "-0.1"],
            &["--consistency", "eventual"],
            &["--mix", "put=1,bogus=1"],
            &["--seed", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let a = parse(&["--consistency", "stale", "--max-error-rate", "0.01", "--seed", "9", "--json"]).expect("parse");
        assert_eq!(a.consistency, BenchConsistency::Stale);
        assert_eq!(a.max_error_rate, 0.01);
        assert_eq!(a.seed, Some(9));
        assert!(a.json);
        assert_eq!(plan(&["--seed", "9"]).seed, 9);
    }

    #[test]
    fn prefill_follows_the_mix() {
        assert!(!plan(&["--mix", "put=1,list=1"]).prefill);
        assert!(plan(&["--mix", "put=1,cas=1"]).prefill);
        assert!(plan(&["--mix", "delete=1"]).prefill);
        assert!(!plan(&["--mix", "get=1", "--no-prefill"]).prefill);
        assert!(!plan(&["--mix", "get=0,put=1"]).prefill, "a zero weight does not count");
    }

    // ------------------------------------------------------------ mix, keys, rng

    #[test]
    fn mix_parses_and_normalises() {
        let m = Mix::parse("put=50,get=50").expect("mix");
        assert_eq!((m.weight(Op::Put), m.weight(Op::Get), m.weight(Op::Cas)), (50, 50, 0));
        assert_eq!(m.to_string(), "put=50,get=50");
        let m = Mix::parse(" list = 1 , cas=3,delete=0, get=2").expect("mix");
        assert_eq!(m.to_string(), "get=2,cas=3,list=1");
        assert_eq!(m.ops().collect::<Vec<_>>(), [Op::Get, Op::Cas, Op::List]);
        let max = u32::MAX;
        let m = Mix::parse(&format!("put={max},get={max},cas={max},delete={max},list={max}")).expect("mix");
        assert_eq!(m.total, 5 * u64::from(max));
    }

    #[test]
    fn mix_errors() {
        let cases = [
            ("", "empty entry"),
            ("put=1,", "empty entry"),
            ("put", "not op=weight"),
            ("put=", "whole number"),
            ("put=x", "whole number"),
            ("put=-1", "whole number"),
            ("put=1.5", "whole number"),
            ("put=4294967296", "whole number"),
            ("scan=1", "unknown operation"),
            ("PUT=1", "unknown operation"),
            ("put=1,get=2,put=3", "more than once"),
            ("put=0,get=0", "above 0"),
        ];
        for (text, needle) in cases {
            let err = Mix::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn pick_at_covers_weights_in_order() {
        let m = Mix::parse("put=2,cas=1,list=3").expect("mix");
        let picks: Vec<Op> = (0..6).map(|d| m.pick_at(d)).collect();
        assert_eq!(picks, [Op::Put, Op::Put, Op::Cas, Op::List, Op::List, Op::List]);
    }

    #[test]
    fn operation_draws_follow_weights() {
        let m = Mix::parse("put=10,get=60,cas=20,delete=0,list=10").expect("mix");
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 5];
        let draws = 10_000;
        for _ in 0..draws {
            counts[m.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts.iter().sum::<u32>(), draws);
        for op in Op::ALL {
            let expected = f64::from(draws) * f64::from(m.weight(op)) / m.total as f64;
            let got = f64::from(counts[op.index()]);
            // 3 percentage points: more than 6 standard deviations for these weights.
            assert!((got - expected).abs() <= 300.0, "{op}: {got} draws, expected about {expected}");
        }
        assert_eq!(counts[Op::Delete.index()], 0);
    }

    #[test]
    fn key_draws_are_uniform_and_in_range() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 100];
        for _ in 0..10_000 {
            let k = rng.below(100);
            counts[usize::try_from(k).expect("small")] += 1;
        }
        // Expected 100 each, standard deviation about 10.
        assert!(counts.iter().all(|&c| (50..=150).contains(&c)), "{counts:?}");
        for n in [1, 2, 7, u64::MAX] {
            assert!((0..1000).all(|_| rng.below(n) < n));
        }
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(Rng::new(3).next_u64(), Rng::new(4).next_u64());
        assert_eq!(plan(&["--seed", "5"]).value(), plan(&["--seed", "5"]).value());
    }

    #[test]
    fn key_names() {
        assert_eq!(key_width(10_000), 4);
        assert_eq!(key_name(7, key_width(10_000)), "bench/0007");
        assert_eq!(key_name(9_999, key_width(10_000)), "bench/9999");
        assert_eq!(key_name(0, key_width(1)), "bench/0");
        assert_eq!((key_width(10), key_width(11)), (1, 2));
        assert_eq!(key_width(u64::MAX), 20);
    }

    // ------------------------------------------------------------ judging responses

    fn envelope(code: &str) -> Vec<u8> {
        json!({"error": {"code": code, "message": "m"}}).to_string().into_bytes()
    }

    #[test]
    fn judge_successes() {
        assert_eq!(judge(Expect::Write, StatusCode::CREATED, b"{}"), Outcome::Success);
        assert_eq!(judge(Expect::Write, StatusCode::OK, b"{}"), Outcome::Success);
        assert_eq!(judge(Expect::Read, StatusCode::OK, b"v"), Outcome::Success);
        assert_eq!(judge(Expect::Delete, StatusCode::NO_CONTENT, b""), Outcome::Success);
        assert_eq!(judge(Expect::List, StatusCode::OK, b"{}"), Outcome::Success);
        assert_eq!(judge(Expect::CasWrite, StatusCode::OK, b"{}"), Outcome::Success);
    }

    #[test]
    fn judge_misses_and_conflicts_need_the_right_code() {
        let missing = envelope("key_not_found");
        assert_eq!(judge(Expect::Read, StatusCode::NOT_FOUND, &missing), Outcome::Miss);
        assert_eq!(judge(Expect::Delete, StatusCode::NOT_FOUND, &missing), Outcome::Miss);
        let err = |k: &str| Outcome::Error(k.to_owned());
        // A 404 from a wrong route (or a proxy) is not a miss.
        assert_eq!(judge(Expect::Read, StatusCode::NOT_FOUND, &envelope("not_found")), err("http_404:not_found"));
        assert_eq!(judge(Expect::Read, StatusCode::NOT_FOUND, b"nope"), err("http_404"));
        // Writes and lists never miss.
        assert_eq!(judge(Expect::Write, StatusCode::NOT_FOUND, &missing), err("http_404:key_not_found"));
        assert_eq!(judge(Expect::List, StatusCode::NOT_FOUND, &missing), err("http_404:key_not_found"));
        let failed = envelope("condition_failed");
        assert_eq!(judge(Expect::CasWrite, StatusCode::PRECONDITION_FAILED, &failed), Outcome::Conflict);
        assert_eq!(judge(Expect::Write, StatusCode::PRECONDITION_FAILED, &failed), err("http_412:condition_failed"));
        assert_eq!(judge(Expect::CasWrite, StatusCode::PRECONDITION_FAILED, b""), err("http_412"));
    }

    #[test]
    fn judge_errors_by_kind() {
        let err = |k: &str| Outcome::Error(k.to_owned());
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(judge(Expect::Write, unavailable, &envelope("no_quorum")), err("http_503:no_quorum"));
        assert_eq!(judge(Expect::Read, StatusCode::INTERNAL_SERVER_ERROR, b"<html>"), err("http_500"));
        assert_eq!(judge(Expect::Read, StatusCode::NO_CONTENT, b""), err("http_204"));
        assert_eq!(judge(Expect::Delete, StatusCode::TEMPORARY_REDIRECT, b""), err("http_307"));
        // Codes that are not short snake_case are dropped rather than trusted.
        assert_eq!(judge(Expect::Read, unavailable, &envelope("Weird Code!")), err("http_503"));
        assert_eq!(judge(Expect::Read, unavailable, &envelope(&"a".repeat(65))), err("http_503"));
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag(" \"3\" "), Some(3));
        assert_eq!(parse_etag("W/\"7\""), None);
        assert_eq!(parse_etag("12"), None);
        assert_eq!(parse_etag("\"x\""), None);
    }

    // ------------------------------------------------------------ aggregation and report

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn build(args: &[&str], stats: &Stats, info: RunInfo) -> Report {
        let p = plan(args);
        Report::build(p.report_params(), &p.mix, stats, info).expect("report")
    }

    fn secs(n: u64) -> RunInfo {
        RunInfo { elapsed: Duration::from_secs(n), ..RunInfo::default() }
    }

    #[test]
    fn errors_are_never_successes() {
        let mut stats = Stats::new().expect("stats");
        for kind in ["timeout", "connect", "http_503:no_quorum", "http_503:no_quorum"] {
            stats.record(Op::Put, Outcome::Error(kind.to_owned()), ms(5));
        }
        let r = build(&["--mix", "put=1"], &stats, secs(2));
        assert_eq!((r.total.ops, r.total.successes, r.total.errors), (4, 0, 4));
        assert_eq!(r.total.successes_per_sec, 0.0);
        assert_eq!(r.total.ops_per_sec, 2.0);
        assert_eq!(r.error_rate, 1.0);
        let kinds: Vec<(&str, u64)> = r.total.errors_by_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(kinds, [("connect", 1), ("http_503:no_quorum", 2), ("timeout", 1)]);
        let put = r.by_op.put.as_ref().expect("put row");
        assert_eq!((put.successes, put.errors), (0, 4));
    }

    #[test]
    fn aggregation_adds_up() {
        let mut a = Stats::new().expect("stats");
        let mut b = Stats::new().expect("stats");
        a.record(Op::Put, Outcome::Success, ms(1));
        a.record(Op::Get, Outcome::Success, ms(2));
        a.record(Op::Get, Outcome::Miss, ms(3));
        b.record(Op::Cas, Outcome::Conflict, ms(4));
        b.record(Op::Cas, Outcome::Success, ms(5));
        b.record(Op::Get, Outcome::Error("timeout".to_owned()), ms(10_000));
        a.merge(&b).expect("merge");
        let r = build(&["--mix", "put=1,get=1,cas=1"], &a, secs(3));
        let t = &r.total;
        assert_eq!((t.ops, t.successes, t.misses, t.conflicts, t.errors), (6, 3, 1, 1, 1));
        assert_eq!(t.ops_per_sec, 2.0);
        assert_eq!(t.successes_per_sec, 1.0);
        assert!((r.error_rate - 1.0 / 6.0).abs() < 1e-12);
        let get = r.by_op.get.as_ref().expect("get");
        assert_eq!((get.ops, get.successes, get.misses, get.errors), (3, 1, 1, 1));
        let cas = r.by_op.cas.as_ref().expect("cas");
        assert_eq!((cas.ops, cas.successes, cas.conflicts), (2, 1, 1));
        let rows: u64 = r.by_op.rows().map(|(_, row)| row.ops).sum();
        assert_eq!(rows, t.ops);
        let lat = t.latency_us.expect("latency");
        assert!(lat.min >= 999 && lat.min <= 1001, "{lat:?}");
        assert!(lat.max >= 9_990_000 && lat.max <= 10_010_000, "{lat:?}");
        assert!(lat.p50 <= lat.p90 && lat.p90 <= lat.p99 && lat.p99 <= lat.p99_9 && lat.p99_9 <= lat.max);
    }

    #[test]
    fn latency_saturates_instead_of_failing() {
        let mut s = Stats::new().expect("stats");
        s.record(Op::Put, Outcome::Success, Duration::from_secs(3600));
        s.record(Op::Put, Outcome::Success, Duration::ZERO);
        let r = build(&["--mix", "put=1"], &s, secs(1));
        let lat = r.total.latency_us.expect("latency");
        assert_eq!(lat.min, 0);
        assert!(lat.max >= LATENCY_MAX_US && lat.max <= LATENCY_MAX_US + LATENCY_MAX_US / 1000);
    }

    fn keys_of(v: &Value) -> Vec<&str> {
        v.as_object().expect("object").keys().map(String::as_str).collect()
    }

    #[test]
    fn json_report_shape() {
        let mut stats = Stats::new().expect("stats");
        stats.record(Op::Put, Outcome::Success, ms(1));
        stats.record(Op::Get, Outcome::Miss, ms(1));
        let r = build(&["--mix", "put=3,get=1,list=0", "--ops", "5", "--seed", "1"], &stats, secs(1));
        let v = serde_json::to_value(&r).expect("json");
        let mut top = keys_of(&v);
        top.sort_unstable();
        assert_eq!(
            top,
            ["by_op", "elapsed_secs", "error_rate", "interrupted", "params", "prefill_secs", "total", "warmup_ops"]
        );
        let mut params = keys_of(&v["params"]);
        params.sort_unstable();
        assert_eq!(
            params,
            [
                "concurrency",
                "consistency",
                "duration_secs",
                "endpoints",
                "keys",
                "max_error_rate",
                "mix",
                "ops_limit",
                "prefill",
                "seed",
                "value_size",
                "warmup_secs"
            ]
        );
        assert_eq!(v["params"]["mix"], "put=3,get=1");
        assert_eq!(v["params"]["duration_secs"], Value::Null);
        assert_eq!(v["params"]["ops_limit"], 5);
        assert_eq!(v["params"]["consistency"], "linearizable");
        assert_eq!(v["params"]["endpoints"], json!(["http://127.0.0.1:8081"]));
        let mut total = keys_of(&v["total"]);
        total.sort_unstable();
        assert_eq!(
            total,
            [
                "conflicts",
                "errors",
                "errors_by_kind",
                "latency_us",
                "misses",
                "ops",
                "ops_per_sec",
                "successes",
                "successes_per_sec"
            ]
        );
        let mut latency = keys_of(&v["total"]["latency_us"]);
        latency.sort_unstable();
        assert_eq!(latency, ["max", "mean", "min", "p50", "p90", "p99", "p99_9"]);
        // Only the operations of the mix, in report order.
        let mut ops = keys_of(&v["by_op"]);
        ops.sort_unstable();
        assert_eq!(ops, ["get", "put"]);
        let text = serde_json::to_string(&r.by_op).expect("json");
        assert!(text.starts_with("{\"put\":") && text.contains("},\"get\":{"), "{text}");
        assert_eq!(v["by_op"]["get"]["misses"], 1);
        assert_eq!(v["by_op"]["get"]["errors_by_kind"], json!({}));
        assert_eq!(v["prefill_secs"], Value::Null);
        assert_eq!(v["interrupted"], false);
    }

    #[test]
    fn empty_run_has_null_latency_and_no_nan() {
        let r = build(&["--mix", "put=1"], &Stats::new().expect("stats"), RunInfo::default());
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["total"]["latency_us"], Value::Null);
        assert_eq!(v["by_op"]["put"]["latency_us"], Value::Null);
        assert_eq!(v["total"]["ops_per_sec"], 0.0);
        assert_eq!(v["error_rate"], 0.0);
        assert!(r.render_text().contains("total"));
    }

    #[test]
    fn error_rate_gate() {
        let mut stats = Stats::new().expect("stats");
        for _ in 0..9 {
            stats.record(Op::Put, Outcome::Success, ms(1));
        }
        stats.record(Op::Put, Outcome::Error("timeout".to_owned()), ms(1));
        let gate = |rate: &str, stats: &Stats| {
            build(&["--mix", "put=1", "--max-error-rate", rate], stats, secs(1)).check_error_rate()
        };
        assert!(gate("1", &stats).is_ok());
        assert!(gate("0.1", &stats).is_ok(), "exactly at the limit passes");
        let err = gate("0.05", &stats).expect_err("over the limit");
        assert!(err.to_string().contains("1 of 10 operations"), "{err}");
        assert!(gate("0", &stats).is_err());
        let empty = Stats::new().expect("stats");
        assert!(gate("1", &empty).is_ok());
        assert!(gate("0.5", &empty).is_err(), "a gate must not pass on nothing");
    }

    #[test]
    fn text_report_is_aligned() {
        let mut stats = Stats::new().expect("stats");
        stats.record(Op::Put, Outcome::Success, ms(1));
        stats.record(Op::Get, Outcome::Error("http_503:no_quorum".to_owned()), ms(2));
        let info = RunInfo { prefill: Some(ms(1500)), warmup_ops: 7, ..secs(1) };
        let text = build(&["--mix", "put=1,get=1", "--endpoint", "http://a:1,http://b:2"], &stats, info).render_text();
        assert!(text.contains("endpoints    http://a:1, http://b:2"), "{text}");
        assert!(text.contains("prefill yes (1.50 s)"), "{text}");
        assert!(text.contains("(7 ops not recorded)"), "{text}");
        let table: Vec<&str> =
            text.lines().skip_while(|l| !l.starts_with("op ")).take_while(|l| !l.is_empty()).collect();
        assert_eq!(table.len(), 4, "{text}");
        assert!(table.iter().all(|l| l.len() == table[0].len()), "{text}");
        assert!(table[1].starts_with("put ") && table[2].starts_with("get ") && table[3].starts_with("total "));
        assert!(text.contains("errors\n  get    http_503:no_quorum           1\n"), "{text}");
    }

    // ------------------------------------------------------------ end to end, against a fake server

    mod e2e {
        use std::collections::HashMap;
        use std::sync::Mutex;

        use axum::Router;
        use axum::extract::{Path, State};
        use axum::http::{HeaderMap, StatusCode as AxumStatus};
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;

        use super::*;

        /// An in-memory `/v1/kv` with just enough semantics for the bench,
        /// plus switches to make it misbehave.
        #[derive(Default)]
        struct Fake {
            data: Mutex<HashMap<String, u64>>,
            revision: AtomicU64,
            /// Requests seen, by method (`GET`, `PUT`, `DELETE`, `LIST`).
            seen: Mutex<BTreeMap<&'static str, u64>>,
            fail_reads: bool,
            fail_writes: bool,
            conflict_all: bool,
            read_delay: Duration,
        }

        impl Fake {
            fn count(&self, what: &'static str) {
                *self.seen.lock().expect("lock").entry(what).or_default() += 1;
            }

            fn seen(&self, what: &str) -> u64 {
                self.seen.lock().expect("lock").get(what).copied().unwrap_or(0)
            }
        }

        fn error(status: u16, code: &str) -> Response {
            let status = AxumStatus::from_u16(status).expect("status");
            let body = json!({"error": {"code": code, "message": "fake"}}).to_string();
            (status, [("content-type", "application/json")], body).into_response()
        }

        async fn get_key(State(f): State<Arc<Fake>>, Path(key): Path<String>) -> Response {
            f.count("GET");
            tokio::time::sleep(f.read_delay).await;
            if f.fail_reads {
                return error(503, "no_quorum");
            }
            let rev = f.data.lock().expect("lock").get(&key).copied();
            match rev {
                Some(rev) => (AxumStatus::OK, [("etag", format!("\"{rev}\""))], "value").into_response(),
                None => error(404, "key_not_found"),
            }
        }

        async fn put_key(State(f): State<Arc<Fake>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
            f.count("PUT");
            if f.fail_writes {
                return error(503, "no_quorum");
            }
            let wanted = headers.get("if-match").and_then(|v| v.to_str().ok()).and_then(parse_etag);
            let mut data = f.data.lock().expect("lock");
            if let Some(wanted) = wanted
                && (f.conflict_all || data.get(&key) != Some(&wanted))
            {
                return error(412, "condition_failed");
            }
            let rev = f.revision.fetch_add(1, Ordering::Relaxed) + 1;
            let created = data.insert(key.clone(), rev).is_none();
            let status = if created { AxumStatus::CREATED } else { AxumStatus::OK };
            (status, json!({"key": key, "revision": rev, "version": 1}).to_string()).into_response()
        }

        async fn delete_key(State(f): State<Arc<Fake>>, Path(key): Path<String>) -> Response {
            f.count("DELETE");
            match f.data.lock().expect("lock").remove(&key) {
                Some(_) => AxumStatus::NO_CONTENT.into_response(),
                None => error(404, "key_not_found"),
            }
        }

        async fn list(State(f): State<Arc<Fake>>) -> Response {
            f.count("LIST");
            (AxumStatus::OK, r#"{"items":[]}"#).into_response()
        }

        /// Serves `fake` on a loopback port; returns its endpoint URL.
        async fn serve(fake: Arc<Fake>) -> String {
            let app = Router::new()
                .route("/v1/kv", get(list))
                .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
                .with_state(fake);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }

        async fn run(endpoint: &str, args: &[&str]) -> Report {
            let mut argv = vec!["--endpoint", endpoint, "--warmup", "0", "--seed", "11"];
            argv.extend_from_slice(args);
            let (_tx, rx) = watch::channel(false);
            execute(&plan(&argv), rx).await.expect("run")
        }

        fn row(r: &Report, op: Op) -> &OpReport {
            let mut rows = r.by_op.rows();
            rows.find(|(o, _)| *o == op).map(|(_, row)| row).expect("row")
        }

        fn assert_adds_up(r: &Report) {
            for (op, row) in r.by_op.rows().map(|(op, row)| (op.name(), row)).chain([("total", &r.total)]) {
                assert_eq!(row.ops, row.successes + row.misses + row.conflicts + row.errors, "{op}");
                assert_eq!(row.errors, row.errors_by_kind.values().sum::<u64>(), "{op}");
            }
        }

        #[tokio::test]
        async fn full_mix_against_a_healthy_server() {
            let fake = Arc::new(Fake::default());
            let url = serve(Arc::clone(&fake)).await;
            let r = run(
                &url,
                &["--mix", "put=1,get=1,cas=1,delete=1,list=1", "--keys", "20", "--concurrency", "4", "--ops", "1000"],
            )
            .await;
            assert_adds_up(&r);
            assert_eq!(r.total.ops, 1000, "--ops is exact");
            assert_eq!(r.total.errors, 0, "{:?}", r.total.errors_by_kind);
            assert!(r.prefill_secs.is_some() && !r.interrupted);
            for op in Op::ALL {
                assert!(row(&r, op).ops > 0, "{op} never ran");
            }
            for op in [Op::Put, Op::Get, Op::Delete, Op::List] {
                assert_eq!(row(&r, op).conflicts, 0, "{op}");
            }
            for op in [Op::Put, Op::List] {
                assert_eq!(row(&r, op).misses, 0, "{op}");
            }
            // Prefill wrote all 20 keys; then every put and every cas write is one PUT.
            let cas = row(&r, Op::Cas);
            let cas_writes = cas.successes + cas.conflicts;
            assert_eq!(fake.seen("PUT"), 20 + row(&r, Op::Put).ops + cas_writes);
            assert_eq!(fake.seen("GET"), row(&r, Op::Get).ops + cas.ops);
            assert_eq!(fake.seen("DELETE"), row(&r, Op::Delete).ops);
            assert_eq!(fake.seen("LIST"), row(&r, Op::List).ops);
        }

        #[tokio::test]
        async fn more_workers_than_shards_lose_nothing() {
            let fake = Arc::new(Fake::default());
            let url = serve(Arc::clone(&fake)).await;
            let r = run(&url, &["--mix", "put=1", "--concurrency", "40", "--ops", "400"]).await;
            assert_eq!((r.total.ops, r.total.successes), (400, 400));
            assert_eq!(fake.seen("PUT"), 400);
        }

        #[tokio::test]
        async fn conflicts_are_counted_apart() {
            let fake = Arc::new(Fake { conflict_all: true, ..Fake::default() });
            let url = serve(fake).await;
            let r = run(&url, &["--mix", "cas=1", "--keys", "5", "--concurrency", "2", "--ops", "50"]).await;
            assert_adds_up(&r);
            let t = &r.total;
            assert_eq!((t.ops, t.conflicts, t.successes, t.errors), (50, 50, 0, 0));
            assert!(r.check_error_rate().is_ok());
        }

        #[tokio::test]
        async fn server_errors_are_errors() {
            let fake = Arc::new(Fake { fail_reads: true, ..Fake::default() });
            let url = serve(fake).await;
            let r = run(&url, &["--mix", "get=1", "--no-prefill", "--ops", "200", "--max-error-rate", "0.5"]).await;
            assert_adds_up(&r);
            assert_eq!((r.total.ops, r.total.successes, r.total.errors), (200, 0, 200));
            assert_eq!(r.total.errors_by_kind, BTreeMap::from([("http_503:no_quorum".to_owned(), 200)]));
            assert_eq!(r.total.successes_per_sec, 0.0);
            assert!(r.check_error_rate().is_err());
        }

        #[tokio::test]
        async fn missing_keys_are_misses_without_prefill() {
            let url = serve(Arc::new(Fake::default())).await;
            let r = run(&url, &["--mix", "get=1,delete=1,cas=1", "--no-prefill", "--ops", "300"]).await;
            assert_adds_up(&r);
            assert_eq!((r.total.ops, r.total.misses, r.total.errors), (300, 300, 0));
            assert!(r.prefill_secs.is_none());
        }

        #[tokio::test]
        async fn wrong_path_is_not_a_miss() {
            let url = serve(Arc::new(Fake::default())).await;
            let r = run(&format!("{url}/elsewhere"), &["--mix", "get=1", "--no-prefill", "--ops", "20"]).await;
            assert_eq!((r.total.misses, r.total.errors), (0, 20));
            assert_eq!(r.total.errors_by_kind, BTreeMap::from([("http_404".to_owned(), 20)]));
        }

        #[tokio::test]
        async fn timeouts_are_errors() {
            let fake = Arc::new(Fake { read_delay: Duration::from_secs(5), ..Fake::default() });
            let url = serve(fake).await;
            let mut p = plan(&["--endpoint", &url, "--mix", "get=1", "--no-prefill", "--ops", "4", "--warmup", "0"]);
            p.request_timeout = ms(200);
            let (_tx, rx) = watch::channel(false);
            let r = execute(&p, rx).await.expect("run");
            assert_eq!((r.total.ops, r.total.errors), (4, 4));
            assert_eq!(r.total.errors_by_kind, BTreeMap::from([("timeout".to_owned(), 4)]));
            assert!(r.total.latency_us.expect("latency").min >= 200_000);
        }

        #[tokio::test]
        async fn refused_connections_are_errors() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            drop(listener);
            let r = run(&url, &["--mix", "put=1,list=1", "--ops", "10"]).await;
            assert_eq!((r.total.ops, r.total.successes, r.total.errors), (10, 0, 10));
            assert_eq!(r.total.errors_by_kind, BTreeMap::from([("connect".to_owned(), 10)]));
        }

        #[tokio::test]
        async fn failed_prefill_aborts() {
            let url = serve(Arc::new(Fake { fail_writes: true, ..Fake::default() })).await;
            let args = ["--endpoint", url.as_str(), "--mix", "get=1", "--keys", "3", "--concurrency", "2"];
            let (_tx, rx) = watch::channel(false);
            let err = execute(&plan(&args), rx).await.expect_err("prefill must fail");
            let err = err.to_string();
            assert!(err.contains("prefill failed") && err.contains("http_503:no_quorum"), "{err}");
        }

        #[tokio::test]
        async fn warmup_is_not_recorded_and_nothing_is_lost() {
            let fake = Arc::new(Fake::default());
            let url = serve(Arc::clone(&fake)).await;
            let args = ["--endpoint", url.as_str(), "--mix", "put=1", "--concurrency", "2"];
            let args = [&args[..], &["--warmup", "0.2", "--duration", "0.3"]].concat();
            let (_tx, rx) = watch::channel(false);
            let r = execute(&plan(&args), rx).await.expect("run");
            assert!(r.warmup_ops > 0 && r.total.ops > 0);
            assert!((0.3..1.0).contains(&r.elapsed_secs), "{}", r.elapsed_secs);
            assert_eq!(fake.seen("PUT"), r.warmup_ops + r.total.ops, "every request is accounted for");
        }

        #[tokio::test]
        async fn cancel_stops_early_with_a_report() {
            let fake = Arc::new(Fake { read_delay: ms(20), ..Fake::default() });
            let url = serve(fake).await;
            let p = plan(&[
                "--endpoint",
                &url,
                "--mix",
                "put=1,get=1",
                "--keys",
                "10",
                "--duration",
                "30",
                "--warmup",
                "0",
            ]);
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                tokio::time::sleep(ms(300)).await;
                let _ = tx.send(true);
                // Keep the sender alive past the run.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            let started = Instant::now();
            let r = execute(&p, rx).await.expect("run");
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(r.interrupted);
            assert!(r.total.ops > 0);
            assert_adds_up(&r);
        }
    }
}
