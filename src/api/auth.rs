//! Who may use the API: never a web page (cross-site requests are refused), and, when a
//! token is configured, only a caller presenting it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Browsers send `Origin` (and `Sec-Fetch-Site`) with every cross-site request, including
/// the "simple" POSTs no CORS preflight guards; the CLI, curl and scripts send neither. So a
/// web page the operator visits cannot make the agent leave or change its tags.
pub(super) async fn refuse_browsers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let cross_site = headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|site| site != "none" && site != "same-origin");
    if cross_site {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from web pages are refused (Origin or Sec-Fetch-Site header present)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Checks bearer tokens without revealing, through timing, how much of a guess was right.
pub(super) struct BearerToken {
    key: ring::hmac::Key,
    expected: ring::hmac::Tag,
}

impl BearerToken {
    pub(super) fn new(token: &str) -> std::io::Result<Self> {
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the API token must not be empty",
            ));
        }
        // Comparing MACs under a random key hides both the content and the length of the
        // token, which a plain constant-time byte comparison would leak.
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| std::io::Error::other("no randomness for the API token check"))?;
        let expected = ring::hmac::sign(&key, token.as_bytes());
        Ok(BearerToken { key, expected })
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, presented)) = value.as_bytes().split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ")
            && ring::hmac::verify(&self.key, presented, self.expected.as_ref()).is_ok()
    }
}

pub(super) async fn require_token(
    State(check): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    if check.accepts(request.headers()) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}
