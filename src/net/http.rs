//! The outbound HTTP client of webhooks and HTTP checks, built on first use.

use std::sync::{Arc, OnceLock};

/// A shared `reqwest::Client`, built the first time it is needed: building one loads the
/// system's root certificates (about 100 KB per client), which an agent without webhooks
/// or HTTP checks never uses. Clones share the client.
#[derive(Clone)]
pub struct LazyClient {
    client: Arc<OnceLock<reqwest::Client>>,
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

    /// The client, built now if it was not yet.
    pub fn get(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            super::tls::install_crypto_provider();
            (self.builder)().build().unwrap_or_default()
        })
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
    use super::*;

    #[test]
    fn built_on_first_use_and_shared_by_clones() {
        let lazy = LazyClient::new(reqwest::Client::builder);
        let clone = lazy.clone();
        assert!(!lazy.is_built(), "built before use");
        let _ = clone.get();
        assert!(lazy.is_built(), "clones share one client");
    }
}
