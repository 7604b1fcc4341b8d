//! The server's endpoints over HTTP (reqwest), and the classification of every way a
//! request fails into the machine's [`Failure`] (answers through
//! [`classify_answer`](super::classify_answer)). The bearer token is attached here, at send
//! time; request bodies are compressed here when the server accepts it
//! ([`super::compression`]).

use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tidesync_core::sync::Failure;
use tidesync_protocol::{
    CheckedChange, PullRequest, PullResponse, PushRequest, PushResponse, RawChange, SpaceName,
};

use super::compression::{Compression, CODING};
use super::sse::SseParser;

/// The server's endpoints, over one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
    compression: Compression,
}

impl Http {
    /// Endpoints under `base`; `compression` asks for compressed responses and compresses
    /// requests the server accepts compressed.
    pub(crate) fn new(base: &str, timeout: Duration, compression: bool) -> Result<Http, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "server_url {base:?} must start with http:// or https://"
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .gzip(compression)
            .zstd(compression)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http {
            client,
            base,
            timeout,
            compression: Compression::new(compression),
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
        self.compression.observe(response.headers());
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
        let json = serde_json::to_vec(body)
            .map_err(|e| Failure::Network(format!("cannot encode the request: {e}")))?;
        let response = match self.compression.encode(&json) {
            None => self.send_post(path, token, json, None).await?,
            Some(compressed) => {
                let response = self
                    .send_post(path, token, compressed, Some(CODING))
                    .await?;
                if response.status() == reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    // The server took back what it advertised (restarted with compression
                    // off, or behind a proxy that refuses codings): the same request, plain,
                    // at once.
                    self.compression.refused();
                    self.send_post(path, token, json, None).await?
                } else {
                    response
                }
            }
        };
        self.compression.observe(response.headers());
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

    async fn send_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        coding: Option<&'static str>,
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(coding) = coding {
            request = request.header(reqwest::header::CONTENT_ENCODING, coding);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.body(body).send().await.map_err(classify_transport)
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
        self.compression.observe(response.headers());
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};
    use tidesync_protocol::ClientId;
    use tidesync_server::auth::Grants;
    use tidesync_server::storage::sqlite::SqliteStorage;
    use tidesync_server::{EmbeddedServer, Limits, MergeRules};

    /// A push of `n` puts, far over the compression threshold.
    fn push(n: u64) -> PushRequest {
        let mutations = (1..=n)
            .map(|i| tidesync_protocol::Mutation {
                seq: i,
                tx: i,
                key: tidesync_protocol::RecordKey::parse("s", "todos", &format!("t{i}"))
                    .expect("key"),
                op: tidesync_protocol::Op::Put {
                    doc: serde_json::json!({"title": "the same title"})
                        .as_object()
                        .cloned()
                        .expect("object"),
                },
                hlc: tidesync_protocol::Hlc::new(1_700_000_000_000, 0).expect("hlc"),
                base_version: 0,
            })
            .collect();
        PushRequest {
            client_id: ClientId::new("c1").expect("client"),
            protocol: tidesync_protocol::PROTOCOL_VERSION,
            mutations,
            recover_from: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_compressed_body_refused_with_415_is_sent_again_plain_in_the_same_exchange() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = std::sync::Arc::new(
            SqliteStorage::open(&dir.path().join("server.db"), MergeRules::default())
                .expect("storage"),
        );
        let limits = Limits {
            compression: false,
            ..Limits::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = EmbeddedServer::start(listener, storage.clone(), limits).expect("server");
        let token = storage
            .create_token(&Grants {
                user: "alice".into(),
                read: Default::default(),
                write: [SpaceName::new("s").expect("space")].into_iter().collect(),
            })
            .expect("token");
        let http = Http::new(&server.url(), Duration::from_secs(10), true).expect("http");
        // Stale knowledge: the server once said it accepts zstd.
        let mut zstd = HeaderMap::new();
        zstd.insert(ACCEPT_ENCODING, HeaderValue::from_static("zstd, gzip"));
        http.compression.observe(&zstd);
        let request = push(50);
        let body = serde_json::to_vec(&request).expect("json");
        assert!(http.compression.encode(&body).is_some(), "would compress");

        // The server answers any compressed body 415: only the plain resend can be applied.
        let answer = http.push(Some(&token), &request).await.expect("applied");
        assert_eq!(answer.acked_through, 50);
        assert!(
            http.compression.encode(&body).is_none(),
            "the refusal and the plain answer turned it off"
        );
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .expect("joined")
            .expect("stopped");
    }
}
