//! The server's endpoints over HTTP (reqwest), and the classification of every way a
//! request fails into the machine's [`Failure`] (answers through
//! [`classify_answer`](super::classify_answer)). The bearer token is attached here, at send
//! time.

use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tidesync_core::sync::Failure;
use tidesync_protocol::{
    CheckedChange, PullRequest, PullResponse, PushRequest, PushResponse, RawChange, SpaceName,
};

use super::sse::SseParser;

/// The server's endpoints, over one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Http {
    pub(crate) fn new(base: &str, timeout: Duration) -> Result<Http, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "server_url {base:?} must start with http:// or https://"
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http {
            client,
            base,
            timeout,
        })
    }

    /// `GET /healthz`.
    pub(crate) async fn probe(&self) -> Result<(), Failure> {
        let response = self
            .client
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(classify_transport)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(classify_status(response).await)
        }
    }

    pub(crate) async fn push(
        &self,
        token: Option<&str>,
        request: &PushRequest,
    ) -> Result<PushResponse, Failure> {
        self.post("/v1/push", token, request).await
    }

    pub(crate) async fn pull(
        &self,
        token: Option<&str>,
        request: &PullRequest,
    ) -> Result<PullResponse<CheckedChange>, Failure> {
        let page: PullResponse<RawChange> = self.post("/v1/pull", token, request).await?;
        // Checked here, on the network thread, so the sync thread only stores the page.
        super::check_page(page)
    }

    async fn post<T: serde::Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &T,
    ) -> Result<R, Failure> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(self.timeout)
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(classify_transport)?;
        if !response.status().is_success() {
            return Err(classify_status(response).await);
        }
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(classify_transport)?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::Server {
            status,
            message: format!("unreadable response body: {e}"),
        })
    }

    /// `GET /v1/events`: a stream of pokes (one item per poked space); ends when the
    /// connection does.
    pub(crate) async fn events(
        &self,
        token: Option<&str>,
        spaces: &[SpaceName],
    ) -> Result<futures::stream::BoxStream<'static, ()>, Failure> {
        let spaces = spaces
            .iter()
            .map(SpaceName::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let mut request = self
            .client
            .get(format!("{}/v1/events", self.base))
            .query(&[("spaces", spaces)]);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(classify_transport)?;
        if !response.status().is_success() {
            return Err(classify_status(response).await);
        }
        let mut parser = SseParser::default();
        let stream = response
            .bytes_stream()
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .flat_map(move |chunk| {
                let pokes = chunk.map(|bytes| parser.feed(&bytes)).unwrap_or(0);
                futures::stream::iter(std::iter::repeat_n((), pokes))
            });
        Ok(stream.boxed())
    }
}

fn classify_transport(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else {
        // Connect, reset, body cut mid-way, DNS, TLS: the server could not be reached.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        Failure::Network(message)
    }
}

async fn classify_status(response: reqwest::Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = response.bytes().await.unwrap_or_default();
    super::classify_answer(status, retry_after, &body)
}
