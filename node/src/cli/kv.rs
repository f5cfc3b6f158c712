//! `ferrokv kv get|put|delete|list`: a thin client for the `/v1/kv` API.
//!
//! Human output is meant for terminals and shell pipelines (`get` prints the
//! raw value and nothing else, so `ferrokv kv get cfg > cfg.bin` round-trips
//! binary data); `--json` output is stable and meant for scripts.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{ApiClient, ClientOpts, encode_path, print_json};

/// `ferrokv kv ...`: read and write keys.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    pub client: ClientOpts,

    #[command(subcommand)]
    pub command: KvCommand,
}

/// The `kv` sub-subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a key's value.
    Get(GetArgs),
    /// Create or replace a key.
    Put(PutArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// List keys (optionally under a prefix), in key order.
    List(ListArgs),
}

/// Read consistency requested from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Confirmed with a quorum; always sees the latest committed write.
    Linearizable,
    /// Served from the answering node's local state; may lag behind.
    Stale,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::Stale => "stale",
        }
    }
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Key to read (any UTF-8, may contain '/').
    pub key: String,

    /// Read consistency; the server default applies when omitted.
    #[arg(long, value_enum, env = "FERROKV_CONSISTENCY")]
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["value", "file"])))]
#[command(group(ArgGroup::new("condition").args(["if_revision", "if_absent"])))]
pub struct PutArgs {
    /// Key to write.
    pub key: String,

    /// Value to store (use --file for binary data or stdin).
    pub value: Option<String>,

    /// Read the value from PATH, or from stdin when PATH is '-'.
    #[arg(long, value_name = "PATH", env = "FERROKV_FILE")]
    pub file: Option<PathBuf>,

    /// Expire the key after this many seconds.
    #[arg(long, value_name = "SECONDS", env = "FERROKV_TTL",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: Option<u64>,

    /// Only write if the key's current mod revision is REV (compare-and-set).
    #[arg(long, value_name = "REV", env = "FERROKV_IF_REVISION")]
    pub if_revision: Option<u64>,

    /// Only write if the key does not exist yet.
    #[arg(long, env = "FERROKV_IF_ABSENT",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub if_absent: bool,

    /// Content type stored with the value and returned by `get`.
    #[arg(long, value_name = "CT", env = "FERROKV_CONTENT_TYPE")]
    pub content_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Key to delete.
    pub key: String,

    /// Only delete if the key's current mod revision is REV.
    #[arg(long, value_name = "REV", env = "FERROKV_IF_REVISION")]
    pub if_revision: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys starting with P.
    #[arg(long, value_name = "P", env = "FERROKV_PREFIX")]
    pub prefix: Option<String>,

    /// Page size (the server caps it).
    #[arg(long, value_name = "N", env = "FERROKV_LIMIT",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Start after this key (the `next_after` of a previous page).
    #[arg(long, value_name = "KEY", env = "FERROKV_AFTER")]
    pub after: Option<String>,

    /// Follow `next_after` until every matching key has been listed.
    #[arg(long, env = "FERROKV_ALL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub all: bool,

    /// Read consistency; the server default applies when omitted.
    #[arg(long, value_enum, env = "FERROKV_CONSISTENCY")]
    pub consistency: Option<Consistency>,
}

/// Runs `ferrokv kv ...`.
pub async fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client.endpoint)?;
    let json = args.client.json;
    match args.command {
        KvCommand::Get(a) => get(&api, a, json).await,
        KvCommand::Put(a) => put(&api, a, json).await,
        KvCommand::Delete(a) => delete(&api, a, json).await,
        KvCommand::List(a) => list(&api, a, json).await,
    }
}

/// `/v1/kv/{key}` with the key percent-encoded. Empty keys would hit the
/// collection route instead, so they are refused here.
fn key_path(key: &str) -> anyhow::Result<String> {
    if key.is_empty() {
        bail!("key must not be empty");
    }
    // URL parsing removes `.`/`..` segments (even percent-encoded ones), so
    // `a/../b` would silently address `b`; refuse rather than touch the
    // wrong key.
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        bail!("key {key:?} cannot be addressed over HTTP: it has a '.' or '..' path segment");
    }
    Ok(format!("/v1/kv/{}", encode_path(key)))
}

/// `If-Match` value for a compare-and-set on mod revision.
fn if_match(rev: u64) -> String {
    format!("\"{rev}\"")
}

// ---------------------------------------------------------------- get

/// Metadata of one key as returned by `GET /v1/kv/{key}` headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct ValueMeta {
    revision: Option<u64>,
    version: Option<u64>,
    content_type: Option<String>,
    ttl: Option<u64>,
}

async fn get(api: &ApiClient, args: GetArgs, json: bool) -> anyhow::Result<()> {
    let mut req = api.request(Method::GET, &key_path(&args.key)?)?;
    if let Some(c) = args.consistency {
        req = req.query(&[("consistency", c.as_str())]);
    }
    let resp = api.send(req).await?;
    let meta = meta_from_headers(resp.headers());
    let value = resp.bytes().await.context("reading value")?;
    if json {
        print_json(&get_output(&args.key, &value, &meta))
    } else {
        // Raw bytes, no trailing newline: the output *is* the value.
        let mut out = std::io::stdout().lock();
        out.write_all(&value).context("writing value to stdout")?;
        out.flush().context("writing value to stdout")
    }
}

fn meta_from_headers(headers: &HeaderMap) -> ValueMeta {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
    ValueMeta {
        revision: text(header::ETAG.as_str()).and_then(parse_etag),
        version: number("x-ferrokv-version"),
        content_type: text(header::CONTENT_TYPE.as_str()).map(str::to_owned),
        ttl: number("x-ferrokv-ttl"),
    }
}

/// `"12"` (or weak `W/"12"`) -> 12.
fn parse_etag(etag: &str) -> Option<u64> {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// `get --json` output; a struct (not a map) so fields print in this order.
#[derive(Debug, Serialize)]
struct GetOutput<'a> {
    key: &'a str,
    value: String,
    /// Present (as `"base64"`) only when the value is not valid UTF-8,
    /// the same convention as list items.
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    revision: Option<u64>,
    version: Option<u64>,
    content_type: Option<&'a str>,
    ttl: Option<u64>,
}

fn get_output<'a>(key: &'a str, value: &[u8], meta: &'a ValueMeta) -> GetOutput<'a> {
    let (value, encoding) = match std::str::from_utf8(value) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (BASE64.encode(value), Some("base64")),
    };
    GetOutput {
        key,
        value,
        encoding,
        revision: meta.revision,
        version: meta.version,
        content_type: meta.content_type.as_deref(),
        ttl: meta.ttl,
    }
}

// ---------------------------------------------------------------- put

#[derive(Debug, Deserialize, Serialize)]
struct PutResponse {
    key: String,
    revision: u64,
    version: u64,
}

/// `put --json` output: the server's answer plus whether the key is new.
#[derive(Debug, Serialize)]
struct PutOutput<'a> {
    #[serde(flatten)]
    response: &'a PutResponse,
    created: bool,
}

async fn put(api: &ApiClient, args: PutArgs, json: bool) -> anyhow::Result<()> {
    let body = read_put_value(&args)?;
    let mut req = api.request(Method::PUT, &key_path(&args.key)?)?.body(body);
    if let Some(ttl) = args.ttl {
        req = req.query(&[("ttl", ttl)]);
    }
    if let Some(rev) = args.if_revision {
        req = req.header(header::IF_MATCH, if_match(rev));
    }
    if args.if_absent {
        req = req.header(header::IF_NONE_MATCH, "*");
    }
    if let Some(ct) = &args.content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let resp = api.send(req).await?;
    let created = resp.status() == StatusCode::CREATED;
    let url = resp.url().clone();
    let bytes = resp.bytes().await.context("reading put response")?;
    let put: PutResponse = serde_json::from_slice(&bytes).with_context(|| format!("invalid JSON from {url}"))?;
    if json {
        print_json(&PutOutput { response: &put, created })
    } else {
        println!("{}", format_put(&put, created));
        Ok(())
    }
}

/// The bytes to store: the positional VALUE, a file, or stdin for `-`.
fn read_put_value(args: &PutArgs) -> anyhow::Result<Vec<u8>> {
    match (&args.value, &args.file) {
        (Some(v), _) => Ok(v.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().lock().read_to_end(&mut buf).context("reading value from stdin")?;
            Ok(buf)
        }
        (None, Some(path)) => std::fs::read(path).with_context(|| format!("reading value from {}", path.display())),
        // clap's required `source` group makes this unreachable in practice.
        (None, None) => bail!("give a VALUE or --file PATH"),
    }
}

fn format_put(put: &PutResponse, created: bool) -> String {
    let what = if created { "created" } else { "replaced" };
    format!("OK {what} key={} revision={} version={}", escape_human(&put.key), put.revision, put.version)
}

// ---------------------------------------------------------------- delete

async fn delete(api: &ApiClient, args: DeleteArgs, json: bool) -> anyhow::Result<()> {
    let mut req = api.request(Method::DELETE, &key_path(&args.key)?)?;
    if let Some(rev) = args.if_revision {
        req = req.header(header::IF_MATCH, if_match(rev));
    }
    api.send(req).await?;
    if json {
        print_json(&json!({ "key": args.key, "deleted": true }))
    } else {
        println!("OK deleted key={}", escape_human(&args.key));
        Ok(())
    }
}

// ---------------------------------------------------------------- list

/// One page of `GET /v1/kv`.
#[derive(Debug, Deserialize)]
struct ListPage {
    items: Vec<Value>,
    #[serde(default)]
    next_after: Option<String>,
}

/// The fields of a list item that the human format needs. Items are kept as
/// raw JSON for `--json` so fields added by the server pass through.
#[derive(Debug, Deserialize)]
struct ListItem {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    ttl: Option<u64>,
}

async fn list(api: &ApiClient, args: ListArgs, json: bool) -> anyhow::Result<()> {
    let mut after = args.after.clone();
    let mut items = Vec::new();
    loop {
        let page = fetch_page(api, &args, after.as_deref()).await?;
        if !json {
            // Stream pages to the terminal instead of buffering everything.
            print_items(&page.items)?;
        } else {
            items.extend(page.items);
        }
        match page.next_after {
            Some(next) if args.all => {
                // A server that does not advance would make us loop forever.
                if after.as_deref() == Some(next.as_str()) {
                    bail!("server returned the same page cursor {next:?} twice");
                }
                after = Some(next);
            }
            Some(next) => {
                if !json {
                    eprintln!("(more keys: continue with --after {next:?} or use --all)");
                }
                break;
            }
            None => break,
        }
    }
    if json {
        print_json(&Value::Array(items))?;
    }
    Ok(())
}

async fn fetch_page(api: &ApiClient, args: &ListArgs, after: Option<&str>) -> anyhow::Result<ListPage> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(p) = &args.prefix {
        query.push(("prefix", p.clone()));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    if let Some(a) = after {
        query.push(("after", a.to_owned()));
    }
    if let Some(c) = args.consistency {
        query.push(("consistency", c.as_str().to_owned()));
    }
    let req = api.request(Method::GET, "/v1/kv")?.query(&query);
    api.send_json(req).await
}

fn print_items(items: &[Value]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for raw in items {
        let item: ListItem = serde_json::from_value(raw.clone()).context("unexpected list item from server")?;
        writeln!(out, "{}", format_list_line(&item)).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")
}

/// `key<TAB>value<TAB>rev=N[ ttl=S]`, always exactly one line.
fn format_list_line(item: &ListItem) -> String {
    let value = item.value.as_deref().unwrap_or_default();
    let value = match item.encoding.as_deref() {
        Some("base64") => format!("base64:{value}"),
        _ => escape_human(value),
    };
    let rev = item.revision.map_or_else(|| "-".to_owned(), |r| r.to_string());
    let mut line = format!("{}\t{value}\trev={rev}", escape_human(&item.key));
    if let Some(ttl) = item.ttl {
        line.push_str(&format!(" ttl={ttl}"));
    }
    line
}

/// Escapes backslashes and control characters (tabs, newlines, ...) so a
/// key or value can never break the one-line-per-key layout.
fn escape_human(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' || c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Stand-in for the real binary's top level.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kv: KvArgs,
    }

    fn parse(args: &[&str]) -> Result<KvArgs, clap::Error> {
        let mut argv = vec!["kv"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.kv)
    }

    #[test]
    fn get_defaults_and_flags() {
        let a = parse(&["get", "a/b"]).expect("parse");
        assert_eq!(a.client.endpoint, "http://127.0.0.1:8081");
        assert!(!a.client.json);
        let KvCommand::Get(g) = a.command else { panic!("not get") };
        assert_eq!(g.key, "a/b");
        assert_eq!(g.consistency, None);

        let a = parse(&["get", "k", "--consistency", "stale", "--json"]).expect("parse");
        assert!(a.client.json);
        let KvCommand::Get(g) = a.command else { panic!("not get") };
        assert_eq!(g.consistency, Some(Consistency::Stale));
        assert!(parse(&["get", "k", "--consistency", "eventual"]).is_err());
    }

    #[test]
    fn global_options_before_subcommand() {
        let a = parse(&["--endpoint", "http://x:1", "--json", "delete", "k"]).expect("parse");
        assert_eq!(a.client.endpoint, "http://x:1");
        assert!(a.client.json);
    }

    #[test]
    fn put_requires_exactly_one_source() {
        assert!(parse(&["put", "k"]).is_err());
        assert!(parse(&["put", "k", "v", "--file", "f"]).is_err());
        let a = parse(&["put", "k", "--file", "-", "--ttl", "30"]).expect("parse");
        let KvCommand::Put(p) = a.command else { panic!("not put") };
        assert_eq!(p.file, Some(PathBuf::from("-")));
        assert_eq!(p.ttl, Some(30));
    }

    #[test]
    fn put_conditions_conflict() {
        assert!(parse(&["put", "k", "v", "--if-revision", "3", "--if-absent"]).is_err());
        let a = parse(&["put", "k", "v", "--if-revision", "3", "--content-type", "text/plain"]).expect("parse");
        let KvCommand::Put(p) = a.command else { panic!("not put") };
        assert_eq!(p.if_revision, Some(3));
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert!(parse(&["put", "k", "v", "--ttl", "0"]).is_err());
    }

    #[test]
    fn list_flags() {
        let a = parse(&["list", "--prefix", "a/", "--limit", "2", "--after", "a/1", "--all"]).expect("parse");
        let KvCommand::List(l) = a.command else { panic!("not list") };
        assert_eq!(l.prefix.as_deref(), Some("a/"));
        assert_eq!(l.limit, Some(2));
        assert_eq!(l.after.as_deref(), Some("a/1"));
        assert!(l.all);
        assert!(parse(&["list", "--limit", "0"]).is_err());
    }

    #[test]
    fn key_path_encodes_and_rejects_empty() {
        assert_eq!(key_path("a b/c").expect("path"), "/v1/kv/a%20b/c");
        assert!(key_path("").is_err());
        assert!(key_path("a/../b").is_err());
        assert!(key_path("..").is_err());
        assert!(key_path("a/./b").is_err());
        assert_eq!(key_path("a..b/.c/...").expect("path"), "/v1/kv/a..b/.c/...");
    }

    #[test]
    fn etag_parsing() {
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("W/\"7\""), Some(7));
        assert_eq!(parse_etag("12"), None);
        assert_eq!(parse_etag("\"x\""), None);
    }

    #[test]
    fn meta_from_response_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, "\"12\"".parse().expect("hv"));
        h.insert("x-ferrokv-version", "3".parse().expect("hv"));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("hv"));
        let m = meta_from_headers(&h);
        assert_eq!(
            m,
            ValueMeta { revision: Some(12), version: Some(3), content_type: Some("text/plain".into()), ttl: None }
        );
    }

    #[test]
    fn get_json_text_and_binary() {
        let meta = ValueMeta { revision: Some(5), version: Some(2), content_type: None, ttl: Some(9) };
        let v = serde_json::to_value(get_output("k", b"hi", &meta)).expect("json");
        assert_eq!(v, json!({"key":"k","value":"hi","revision":5,"version":2,"content_type":null,"ttl":9}));
        let v = serde_json::to_value(get_output("k", &[0xff, 0x00], &meta)).expect("json");
        assert_eq!(v["value"], "/wA=");
        assert_eq!(v["encoding"], "base64");
    }

    #[test]
    fn put_human_output() {
        let p = PutResponse { key: "a".into(), revision: 12, version: 1 };
        assert_eq!(format_put(&p, true), "OK created key=a revision=12 version=1");
        assert_eq!(format_put(&p, false), "OK replaced key=a revision=12 version=1");
    }

    #[test]
    fn list_line_format() {
        let item: ListItem = serde_json::from_value(json!({
            "key": "a/1", "value": "x\ty\nz", "revision": 4, "create_revision": 4,
            "version": 1, "ttl": null, "content_type": "text/plain"
        }))
        .expect("item");
        assert_eq!(format_list_line(&item), "a/1\tx\\ty\\nz\trev=4");

        let item: ListItem = serde_json::from_value(json!({
            "key": "bin", "value": "/wA=", "encoding": "base64", "revision": 9, "ttl": 30
        }))
        .expect("item");
        assert_eq!(format_list_line(&item), "bin\tbase64:/wA=\trev=9 ttl=30");
    }

    #[test]
    fn escape_human_is_one_line() {
        assert_eq!(escape_human("a\\b\r\n"), "a\\\\b\\r\\n");
        assert_eq!(escape_human("héllo"), "héllo");
    }
}
