//! HTTP both ways: the bounded server of the API and metrics listeners, and the outbound
//! client of webhooks and HTTP checks, built on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// What an HTTP listener may hold: a connection count and a header deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this is closed (an idle
    /// keep-alive connection too: hyper starts the clock when it waits for a request).
    pub header_timeout: Duration,
}

/// Connections an HTTP listener turned away.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Closed at the limit: a newcomer refused, or a connection that had sent no request
    /// closed to make room for it.
    pub refused: AtomicU64,
    /// Closed because no request headers came within `header_timeout`.
    pub header_timeouts: AtomicU64,
}

/// A connection being served: when it came, whether it has sent a request, how to end it.
struct OpenConnection {
    accepted: Instant,
    requested: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets open
/// requests finish (at most `drain`). Unlike `axum::serve`, idle and slow clients cannot
/// hold file descriptors for ever, and a flood of them cannot lock out real clients: at
/// the limit, the oldest connection that has not sent a request yet makes room for the
/// newcomer (a newcomer is refused only when every connection is in use).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let open: Arc<Mutex<HashMap<u64, OpenConnection>>> = Arc::default();
    let mut next_id: u64 = 0;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin, and say so
                    // once in a while rather than on every attempt.
                    if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::error!(error = %e, "HTTP accept failed");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let id = next_id;
        next_id += 1;
        let requested = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= limits.max_connections.max(1) {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                let idle = open
                    .iter()
                    .filter(|(_, c)| !c.requested.load(Ordering::Relaxed))
                    .min_by_key(|(_, c)| c.accepted)
                    .map(|(id, _)| *id);
                match idle.and_then(|id| open.remove(&id)) {
                    Some(oldest) => oldest.close.notify_one(),
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
            open.insert(
                id,
                OpenConnection {
                    accepted: Instant::now(),
                    requested: requested.clone(),
                    close: close.clone(),
                },
            );
        }
        let inner = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |request| {
            requested.store(true, Ordering::Relaxed);
            hyper::service::Service::call(&inner, request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let (stats, open) = (stats.clone(), open.clone());
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result
                        && e.is_timeout()
                    {
                        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                () = close.notified() => {}
            }
            open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// A shared `reqwest::Client`, built the first time it is needed: building one loads the
/// system's root certificates (about 100 KB per client), which an agent without webhooks
/// or HTTP checks never uses. Clones share the client.
#[derive(Clone)]
pub struct LazyClient {
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    builder: fn() -> reqwest::ClientBuilder,
}

impl LazyClient {
    /// A client that `builder` configures when it is first used.
    pub fn new(builder: fn() -> reqwest::ClientBuilder) -> LazyClient {
        LazyClient {
            client: Arc::new(OnceLock::new()),
            builder,
        }
    }

    /// The client, built now if it was not yet; the build error (kept, not retried: the
    /// settings are fixed) if it could not be built.
    pub fn get(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                super::tls::install_crypto_provider();
                (self.builder)()
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// True once the client has been built.
    pub fn is_built(&self) -> bool {
        self.client.get().is_some()
    }
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.is_built())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads until the server closes the connection; false if it stays open for 5 s.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn at_the_limit_idle_clients_make_room_and_silent_ones_time_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ServeStats::default());
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_millis(500),
        };
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    "slow"
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            stats.clone(),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        // Two clients that send no complete request (one silent, one slowloris) fill it.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A real client is served: the oldest idle connection gave way.
        assert!(get(addr, "/").await.ends_with("ok"));
        assert!(
            closed_by_server(&mut silent).await,
            "the oldest idle client was kept"
        );
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        // The slowloris sends no complete headers within the timeout: closed.
        assert!(
            closed_by_server(&mut slow).await,
            "the slow client was kept"
        );
        assert!(stats.header_timeouts.load(Ordering::Relaxed) >= 1);
        // Two requests in progress: a third connection is refused, not queued.
        let busy: Vec<_> = (0..2).map(|_| tokio::spawn(get(addr, "/slow"))).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_server(&mut third).await,
            "a third connection was kept"
        );
        for answer in busy {
            assert!(answer.await.unwrap().ends_with("slow"));
        }
        let _ = stop.send(());
        server.await.unwrap();
    }

    #[test]
    fn built_on_first_use_and_shared_by_clones() {
        let lazy = LazyClient::new(reqwest::Client::builder);
        let clone = lazy.clone();
        assert!(!lazy.is_built(), "built before use");
        assert!(clone.get().is_ok());
        assert!(lazy.is_built(), "clones share one client");
    }
}
