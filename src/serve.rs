//! The agent's listeners: the API and metrics over HTTP (on a thread and runtime of their
//! own: a flood of HTTP clients then costs that thread, not the SWIM loop's probes and
//! acks) and HAProxy agent checks. Bound before the agent starts, so a port in use is
//! reported at once; served when the agent hands over its handle ([`crate::agent::Serve`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::agent::handle::AgentHandle;
use crate::api::Limits;
use crate::config::AgentConfig;
use crate::net::http::ServeStats;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API listener.
    #[error("cannot listen for the API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The read-only metrics listener.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The HAProxy agent-check listener.
    #[error("cannot listen for HAProxy agent checks on {addr}: {source}")]
    Haproxy {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// The bound listeners, not yet served.
pub struct Listeners {
    api: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    /// The HAProxy agent-check listener and its `max_failed_fraction`.
    haproxy: Option<(std::net::TcpListener, f64)>,
    token: Option<String>,
    limits: Limits,
    stats: [Arc<ServeStats>; 2],
}

impl Listeners {
    /// Binds every listener `config` asks for.
    pub fn bind(config: &AgentConfig) -> Result<Listeners, ServeError> {
        let addr = config.api.listen;
        let api = bind(addr).map_err(|source| ServeError::Api { addr, source })?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(bind(addr).map_err(|source| ServeError::Metrics { addr, source })?),
            None => None,
        };
        let haproxy = match &config.haproxy_agent {
            Some(haproxy) => {
                let addr = haproxy.listen;
                let listener = bind(addr).map_err(|source| ServeError::Haproxy { addr, source })?;
                Some((listener, haproxy.max_failed_fraction))
            }
            None => None,
        };
        if config.api.token.is_none() && !config.api.listen.ip().is_loopback() {
            warn!(
                api = %config.api.listen,
                "the API listens beyond loopback without a token: anyone who reaches it can \
                 make this agent leave; set [api] token or listen on 127.0.0.1"
            );
        }
        Ok(Listeners {
            api,
            metrics,
            haproxy,
            token: config.api.token.clone(),
            limits: Limits {
                max_connections: config.api.max_connections,
                header_timeout: config.api.header_timeout,
            },
            stats: Default::default(),
        })
    }
}

/// Binds a TCP listener for a tokio runtime to take over.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serving listeners: dropped, the HTTP servers drain and stop.
struct Serving {
    _api: oneshot::Sender<()>,
    _metrics: oneshot::Sender<()>,
}

impl crate::agent::Serve for Listeners {
    fn stats(&self) -> [Arc<ServeStats>; 2] {
        self.stats.clone()
    }

    fn serve(self: Box<Self>, handle: AgentHandle) -> std::io::Result<Box<dyn Send>> {
        let Listeners {
            api,
            metrics,
            haproxy,
            token,
            limits,
            stats,
        } = *self;
        if let Some((listener, max_failed_fraction)) = haproxy {
            // On the agent's runtime: an agent check is one short question.
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(crate::haproxy::serve(
                listener,
                handle.clone(),
                max_failed_fraction,
            ));
        }
        let (api_shutdown, api_stop) = oneshot::channel::<()>();
        let (metrics_shutdown, metrics_stop) = oneshot::channel::<()>();
        let http = Http {
            api,
            metrics,
            handle,
            token,
            limits,
            stats,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("swimd-http".into())
            .spawn(move || runtime.block_on(http.serve(api_stop, metrics_stop)))?;
        Ok(Box::new(Serving {
            _api: api_shutdown,
            _metrics: metrics_shutdown,
        }))
    }
}

/// The API and metrics listeners, served on the HTTP thread.
struct Http {
    api: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    handle: AgentHandle,
    token: Option<String>,
    limits: Limits,
    stats: [Arc<ServeStats>; 2],
}

impl Http {
    async fn serve(self, api_stop: oneshot::Receiver<()>, metrics_stop: oneshot::Receiver<()>) {
        let Http {
            api,
            metrics,
            handle,
            token,
            limits,
            stats: [api_stats, metrics_stats],
        } = self;
        let metrics = async {
            let Some(listener) = metrics else { return };
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let router = crate::api::read_only_router(handle.clone());
                    let stop = async move {
                        let _ = metrics_stop.await;
                    };
                    let drain = Duration::from_secs(1);
                    crate::net::http::serve(listener, router, limits, metrics_stats, stop, drain)
                        .await;
                }
                Err(e) => error!(error = %e, "metrics listener stopped"),
            }
        };
        let api = async {
            let stop = async move {
                let _ = api_stop.await;
            };
            let served = match tokio::net::TcpListener::from_std(api) {
                Ok(listener) => {
                    crate::api::serve(listener, handle.clone(), token, limits, api_stats, stop)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                error!(error = %e, "API server stopped");
            }
        };
        tokio::join!(api, metrics);
    }
}
