//! Delay proxies: every node-to-node gRPC connection passes through one, so a link's latency and
//! jitter can be changed at run time (the user-space stand-in for `tc netem delay`).
//!
//! When the target does not accept connections (the node is dead), the proxy stops listening,
//! so callers see a refused connection, as they would dialing the dead node directly.
//!
//! Each chunk read from one side is delivered to the other after `delay ± jitter`, never before
//! an earlier chunk (TCP order is kept), so jitter reorders nothing, as with netem's default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Delay settings of one link, changed while connections run.
#[derive(Debug, Default)]
pub struct LinkDelay {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
    seed: AtomicU64,
}

impl LinkDelay {
    pub fn set(&self, delay: Duration, jitter: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        self.jitter_ms.store(jitter.as_millis() as u64, Ordering::Relaxed);
    }

    fn next(&self) -> Duration {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        let jitter = self.jitter_ms.load(Ordering::Relaxed);
        if delay == 0 && jitter == 0 {
            return Duration::ZERO;
        }
        // xorshift: cheap, and good enough to spread delays.
        let mut x = self.seed.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let spread = if jitter == 0 { 0 } else { x % (2 * jitter + 1) };
        Duration::from_millis((delay + spread).saturating_sub(jitter))
    }
}

/// A proxy listening on `listen`, forwarding every connection to `target`.
pub struct Proxy {
    pub delay: Arc<LinkDelay>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let delay = Arc::new(LinkDelay::default());
        let link = delay.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut listener = Some(listener);
            loop {
                // Reap finished connections so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
                let Some(open) = &listener else {
                    // The target is down: stay closed (callers get "connection refused", as they
                    // would from a dead node) until it accepts connections again.
                    let probe = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(target)).await;
                    if matches!(probe, Ok(Ok(_))) {
                        listener = TcpListener::bind(listen).await.ok();
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                };
                let Ok((inbound, _)) = open.accept().await else { continue };
                let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await;
                match connect {
                    Ok(Ok(outbound)) => {
                        conns.spawn(relay(inbound, outbound, link.clone()));
                    }
                    _ => listener = None,
                }
            }
        });
        Ok(Proxy { delay, task })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relay.
        self.task.abort();
    }
}

async fn relay(a: TcpStream, b: TcpStream, link: Arc<LinkDelay>) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::select! {
        _ = pump(ar, bw, link.clone()) => {}
        _ = pump(br, aw, link) => {}
    }
}

/// Copy one direction, holding each chunk until its delivery time.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, link: Arc<LinkDelay>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = (Instant::now() + link.next()).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_jitter_band() {
        let link = LinkDelay::default();
        assert_eq!(link.next(), Duration::ZERO);
        link.set(Duration::from_millis(50), Duration::from_millis(20));
        for _ in 0..1000 {
            let d = link.next().as_millis();
            assert!((30..=70).contains(&d), "{d}");
        }
    }

    #[tokio::test]
    async fn relays_both_ways_with_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = free.local_addr().unwrap();
        drop(free);
        let proxy = Proxy::start(listen, target).await.unwrap();
        proxy.delay.set(Duration::from_millis(100), Duration::ZERO);
        let start = std::time::Instant::now();
        let mut c = TcpStream::connect(listen).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        assert!(start.elapsed() >= Duration::from_millis(200), "one delay each way");
    }
}
