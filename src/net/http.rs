//! The outbound HTTP client of webhooks and HTTP checks, built on first use.

use std::sync::{Arc, OnceLock};

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
    use super::*;

    #[test]
    fn built_on_first_use_and_shared_by_clones() {
        let lazy = LazyClient::new(reqwest::Client::builder);
        let clone = lazy.clone();
        assert!(!lazy.is_built(), "built before use");
        assert!(clone.get().is_ok());
        assert!(lazy.is_built(), "clones share one client");
    }
}
