//! JWT auth over real HTTP on loopback: tokens from an app's sign-in, verified with a secret
//! (HS256), a PEM public key (RS256, ES256) or a JWKS served by a small server on loopback
//! (rotated, refreshed, fetched again for an unknown `kid` at most once per interval); every
//! refusal a 401 with the code of its check and `WWW-Authenticate: Bearer
//! error="invalid_token"`; API tokens keep working next to JWTs.
//!
//! The key pairs are test-only fixtures (`tests/fixtures/jwt/README.md`).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use base64::Engine;
use common::{put, Store};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tidesync_server::auth::jwt::{JwtAlgorithm, JwtConfig, JwtVerifier};
use tidesync_server::{serve, AppState, Limits, MergeRules};
use tokio::sync::oneshot;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const AUDIENCE: &str = "authenticated";
const ISSUER: &str = "https://issuer.test/auth/v1";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims a provider would issue for `sub`: valid for an hour, with `iss` and `aud`.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600})
}

/// A signing key of the fixtures, with the algorithm and `kid` it signs with.
#[derive(Clone)]
struct Signer {
    algorithm: jsonwebtoken::Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl Signer {
    fn hs256() -> Signer {
        Signer {
            algorithm: jsonwebtoken::Algorithm::HS256,
            key: EncodingKey::from_secret(SECRET.as_bytes()).expect("secret"),
            kid: None,
        }
    }

    fn rsa(name: &str, kid: &str) -> Signer {
        let pem = read_fixture(&format!("{name}.key.pem"));
        Signer {
            algorithm: jsonwebtoken::Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&pem).expect("RSA fixture"),
            kid: Some(kid.into()),
        }
    }

    fn ec(name: &str, kid: &str) -> Signer {
        let pem = read_fixture(&format!("{name}.key.pem"));
        Signer {
            algorithm: jsonwebtoken::Algorithm::ES256,
            key: EncodingKey::from_ec_pem(&pem).expect("EC fixture"),
            kid: Some(kid.into()),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        encode(&header, claims, &self.key).expect("sign")
    }

    /// The public JWK of this key, with its kid.
    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).expect("jwk");
        jwk.common.key_id = self.kid.clone();
        jwk
    }
}

fn jwks(signers: &[&Signer]) -> Value {
    serde_json::to_value(JwkSet {
        keys: signers.iter().map(|s| s.jwk()).collect(),
    })
    .expect("jwks json")
}

/// A configuration with `iss` and `aud` checked, the user from `sub`, spaces
/// `user:{sub}` and the `spaces` claim.
fn config(algorithm: JwtAlgorithm) -> JwtConfig {
    let mut config = JwtConfig::new(algorithm);
    config.issuer = Some(ISSUER.into());
    config.audience = Some(AUDIENCE.into());
    config.spaces = vec!["user:{sub}".into()];
    config.spaces_claim = Some("spaces".into());
    config
}

fn hs256_config() -> JwtConfig {
    let mut config = config(JwtAlgorithm::HS256);
    config.secret = Some(SECRET.into());
    config
}

/// A JWKS endpoint on loopback whose document the test replaces, counting fetches.
struct JwksServer {
    url: String,
    document: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl JwksServer {
    async fn start(document: Value) -> JwksServer {
        JwksServer::start_on(0, document).await
    }

    async fn start_on(port: u16, document: Value) -> JwksServer {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let body = served.lock().expect("document").clone();
                counted.fetch_add(1, Ordering::SeqCst);
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        JwksServer {
            url,
            document,
            fetches,
            _stop: stop,
        }
    }

    fn serve(&self, document: Value) {
        *self.document.lock().expect("document") = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A tidesync server on loopback accepting JWTs per `config`, and API tokens.
struct Server {
    base: String,
    http: reqwest::Client,
    verifier: JwtVerifier,
    /// An API token for alice's space, next to the JWTs.
    api_token: String,
    _store: Store,
    _stop: oneshot::Sender<()>,
}

/// What a request was answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
    text: String,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// A JWT refusal: 401, its code, the RFC 6750 challenge, and nothing of the keys.
    fn assert_refused(&self, code: &str) {
        assert_eq!(self.status, 401, "{code}: {}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        assert_eq!(
            self.challenge.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{code}"
        );
        assert!(
            !self.text.contains(SECRET),
            "leaks the secret: {}",
            self.text
        );
        assert!(!self.text.contains("BEGIN"), "leaks a key: {}", self.text);
    }
}

impl Server {
    async fn start(config: JwtConfig) -> Server {
        let verifier = JwtVerifier::new(&config).expect("valid JWT config");
        Server::with_verifier(verifier).await
    }

    async fn with_verifier(verifier: JwtVerifier) -> Server {
        let store = Store::sqlite(MergeRules::default());
        let api_token = store.token("alice", &["user:alice"], &[]);
        let state =
            AppState::new(store.storage.clone(), Limits::default()).with_jwt(verifier.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server {
            base,
            http: reqwest::Client::new(),
            verifier,
            api_token,
            _store: store,
            _stop: stop,
        }
    }

    async fn post(&self, path: &str, bearer: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            challenge,
            body,
            text,
        }
    }

    /// A pull of `space` with `bearer`.
    async fn pull(&self, bearer: &str, space: &str) -> Answer {
        self.post(
            "/v1/pull",
            bearer,
            json!({"client_id": "reader", "protocol": 1, "cursor": {}, "spaces": [space]}),
        )
        .await
    }

    /// A push of one record into `space` with `bearer`.
    async fn push(&self, bearer: &str, client: &str, space: &str, id: &str) -> Answer {
        self.post(
            "/v1/push",
            bearer,
            json!({"client_id": client, "protocol": 1,
                   "mutations": [put(1, 1, space, "todos", id, json!({"title": id}))]}),
        )
        .await
    }

    /// Asserts `bearer` is accepted (a pull of `space` answers 200).
    async fn assert_accepted(&self, bearer: &str, space: &str) {
        let answer = self.pull(bearer, space).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_token_reads_and_writes_its_spaces_next_to_api_tokens() {
    let server = Server::start(hs256_config()).await;
    let token = Signer::hs256().sign(&json!({
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 3600,
        "spaces": ["team:red"]
    }));
    let pushed = server.push(&token, "phone", "user:alice", "t1").await;
    assert_eq!(pushed.status, 200, "{}", pushed.text);
    assert_eq!(
        pushed.body["results"][0]["outcome"], "applied",
        "{}",
        pushed.text
    );
    let pushed = server.push(&token, "phone2", "team:red", "t2").await;
    assert_eq!(pushed.status, 200, "{}", pushed.text);

    // The API token of the same user sees what the JWT wrote, and still works.
    let pulled = server.pull(&server.api_token, "user:alice").await;
    assert_eq!(pulled.status, 200, "{}", pulled.text);
    assert_eq!(pulled.body["changes"][0]["id"], "t1", "{}", pulled.text);
    let revoked = server.pull("tsk_not_a_token", "user:alice").await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.code(), "unauthorized");

    // A space the token does not grant: valid token, not allowed.
    let other = server.pull(&token, "user:bob").await;
    assert_eq!(other.status, 403, "{}", other.text);
    assert_eq!(other.code(), "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_token_verifies_with_a_pem_public_key() {
    let mut config = config(JwtAlgorithm::RS256);
    config.public_key_file = Some("rsa_a.pub.pem".into());
    let config = config.relative_to(&fixture(""));
    let server = Server::start(config).await;
    let signer = Signer::rsa("rsa_a", "any-kid");
    server
        .assert_accepted(&signer.sign(&claims("alice")), "user:alice")
        .await;
    // Another RSA key's signature does not verify.
    let other = Signer::rsa("rsa_b", "any-kid").sign(&claims("alice"));
    server
        .pull(&other, "user:alice")
        .await
        .assert_refused("invalid_signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_es256_token_verifies_with_a_pem_public_key_and_a_jwks_file() {
    let signer = Signer::ec("ec_a", "ec-1");
    let mut pem_config = config(JwtAlgorithm::ES256);
    pem_config.public_key_file = Some(fixture("ec_a.pub.pem"));
    let server = Server::start(pem_config).await;
    server
        .assert_accepted(&signer.sign(&claims("alice")), "user:alice")
        .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&signer]).to_string()).expect("write jwks");
    let mut jwks_config = config(JwtAlgorithm::ES256);
    jwks_config.jwks_file = Some(file);
    let server = Server::start(jwks_config).await;
    server
        .assert_accepted(&signer.sign(&claims("alice")), "user:alice")
        .await;
    let unknown = Signer::ec("ec_a", "ec-2").sign(&claims("alice"));
    server
        .pull(&unknown, "user:alice")
        .await
        .assert_refused("unknown_key_id");
}

fn jwks_url_config(url: &str) -> JwtConfig {
    let mut config = config(JwtAlgorithm::RS256);
    config.jwks_url = Some(url.into());
    config.jwks_min_refresh = Duration::ZERO;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_kid_through_a_jwks_url() {
    let a = Signer::rsa("rsa_a", "key-a");
    let b = Signer::rsa("rsa_b", "key-b");
    let jwks_server = JwksServer::start(jwks(&[&a])).await;
    let server = Server::start(jwks_url_config(&jwks_server.url)).await;
    assert_eq!(server.verifier.fetch_keys().await.expect("fetched"), 1);
    server
        .assert_accepted(&a.sign(&claims("alice")), "user:alice")
        .await;

    // The provider publishes key B and signs with it: the unknown kid fetches the set again.
    jwks_server.serve(jwks(&[&a, &b]));
    server
        .assert_accepted(&b.sign(&claims("alice")), "user:alice")
        .await;
    server
        .assert_accepted(&a.sign(&claims("alice")), "user:alice")
        .await;

    // The provider removes A; once the server fetched the set again, A is refused.
    jwks_server.serve(jwks(&[&b]));
    let made_up = Signer::rsa("rsa_a", "key-c").sign(&claims("alice"));
    server
        .pull(&made_up, "user:alice")
        .await
        .assert_refused("unknown_key_id");
    server
        .pull(&a.sign(&claims("alice")), "user:alice")
        .await
        .assert_refused("unknown_key_id");
    server
        .assert_accepted(&b.sign(&claims("alice")), "user:alice")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_set_is_fetched_again_once_older_than_jwks_refresh() {
    let a = Signer::rsa("rsa_a", "key-a");
    let b = Signer::rsa("rsa_b", "key-b");
    let jwks_server = JwksServer::start(jwks(&[&a, &b])).await;
    let mut config = jwks_url_config(&jwks_server.url);
    config.jwks_refresh = Duration::from_secs(1);
    let server = Server::start(config).await;
    let token_a = a.sign(&claims("alice"));
    server.assert_accepted(&token_a, "user:alice").await;
    jwks_server.serve(jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The request that finds the set stale starts a background fetch; soon after, A is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = server.pull(&token_a, "user:alice").await;
        if answer.status == 401 {
            answer.assert_refused("unknown_key_id");
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(tokio::time::Instant::now() < deadline, "A still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(jwks_server.fetches() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_fetch_the_set_at_most_once_per_interval() {
    let a = Signer::rsa("rsa_a", "key-a");
    let jwks_server = JwksServer::start(jwks(&[&a])).await;
    let mut config = jwks_url_config(&jwks_server.url);
    config.jwks_min_refresh = Duration::from_secs(3600);
    config.jwks_refresh = Duration::from_secs(7200);
    let server = Server::start(config).await;
    server
        .assert_accepted(&a.sign(&claims("alice")), "user:alice")
        .await;
    assert_eq!(jwks_server.fetches(), 1);
    let answers = futures::future::join_all((0..20).map(|i| {
        let token = Signer::rsa("rsa_a", &format!("made-up-{i}")).sign(&claims("alice"));
        let server = &server;
        async move { server.pull(&token, "user:alice").await }
    }))
    .await;
    for answer in answers {
        answer.assert_refused("unknown_key_id");
    }
    assert_eq!(
        jwks_server.fetches(),
        1,
        "made-up kids hammered the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_url_is_503_and_then_recovers() {
    let a = Signer::rsa("rsa_a", "key-a");
    // A port with nothing listening, then a JWKS server started on the same address.
    let port = tidesync_testkit::free_port().expect("a free port");
    let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
    let server = Server::start(jwks_url_config(&url)).await;
    let token = a.sign(&claims("alice"));
    let answer = server.pull(&token, "user:alice").await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.code(), "unavailable");
    assert!(!answer.text.contains(&url), "the URL is logged, not sent");
    assert!(server.verifier.fetch_keys().await.is_err());

    // The provider comes back: the next request fetches the set and is verified.
    let _jwks_server = JwksServer::start_on(port, jwks(&[&a])).await;
    server.assert_accepted(&token, "user:alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_check_is_refused_with_its_own_code() {
    let server = Server::start(hs256_config()).await;
    let hs = Signer::hs256();
    let sign = |patch: Value| {
        let mut claims = claims("alice");
        for (key, value) in patch.as_object().expect("object") {
            match value {
                Value::Null => claims.as_object_mut().expect("object").remove(key),
                value => claims
                    .as_object_mut()
                    .expect("object")
                    .insert(key.clone(), value.clone()),
            };
        }
        hs.sign(&claims)
    };
    let cases = [
        (sign(json!({"exp": now() - 120})), "token_expired"),
        (sign(json!({"exp": null})), "missing_claim"),
        (sign(json!({"nbf": now() + 600})), "token_not_yet_valid"),
        (sign(json!({"aud": "someone-else"})), "invalid_audience"),
        (sign(json!({"aud": null})), "missing_claim"),
        (sign(json!({"iss": "https://evil.test"})), "invalid_issuer"),
        (sign(json!({"sub": null})), "missing_claim"),
        (sign(json!({"sub": 42})), "invalid_claim"),
        (sign(json!({"sub": "auth0|42"})), "invalid_claim"),
        (sign(json!({"spaces": ["not a space"]})), "invalid_claim"),
        (sign(json!({"exp": "tomorrow"})), "missing_claim"),
        ("not-a-jwt".to_owned(), "malformed_token"),
        ("a.b.c".to_owned(), "malformed_token"),
        (
            Signer {
                key: EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes")
                    .expect("secret"),
                ..Signer::hs256()
            }
            .sign(&claims("alice")),
            "invalid_signature",
        ),
        (tampered(&sign(json!({}))), "invalid_signature"),
        (unsigned(&claims("alice")), "algorithm_not_allowed"),
        (
            Signer::rsa("rsa_a", "k").sign(&claims("alice")),
            "algorithm_not_allowed",
        ),
    ];
    for (token, code) in cases {
        server.pull(&token, "user:alice").await.assert_refused(code);
    }
    // Within the leeway (60 s): a token just expired, or valid in a moment, is accepted.
    server
        .assert_accepted(&sign(json!({"exp": now() - 20})), "user:alice")
        .await;
    server
        .assert_accepted(&sign(json!({"nbf": now() + 20})), "user:alice")
        .await;
    // An expired JWT refused on the event stream too.
    let response = server
        .http
        .get(format!("{}/v1/events?spaces=user:alice", server.base))
        .bearer_auth(sign(json!({"exp": now() - 120})))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_server_refuses_none_and_hs256_signed_with_its_public_key() {
    let mut config = config(JwtAlgorithm::RS256);
    config.public_key_file = Some(fixture("rsa_a.pub.pem"));
    let server = Server::start(config).await;
    // The classic confusion: the RSA public key (PEM bytes) used as an HMAC secret.
    let confused = Signer {
        algorithm: jsonwebtoken::Algorithm::HS256,
        key: EncodingKey::from_secret(&read_fixture("rsa_a.pub.pem")).expect("secret"),
        kid: None,
    }
    .sign(&claims("alice"));
    let answer = server.pull(&confused, "user:alice").await;
    answer.assert_refused("algorithm_not_allowed");
    assert!(answer.text.contains("HS256"), "{}", answer.text);
    server
        .pull(&unsigned(&claims("alice")), "user:alice")
        .await
        .assert_refused("algorithm_not_allowed");
    let rs = Signer::rsa("rsa_a", "k");
    server
        .pull(&tampered(&rs.sign(&claims("alice"))), "user:alice")
        .await
        .assert_refused("invalid_signature");
    server
        .assert_accepted(&rs.sign(&claims("alice")), "user:alice")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_accepts_a_jwt_and_pokes() {
    let server = Server::start(hs256_config()).await;
    let token = Signer::hs256().sign(&claims("alice"));
    let pushed = server.push(&token, "phone", "user:alice", "t1").await;
    assert_eq!(pushed.status, 200, "{}", pushed.text);
    let mut response = server
        .http
        .get(format!("{}/v1/events?spaces=user:alice", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let read = async {
        while !seen.contains("event: poke") {
            let chunk = response.chunk().await.expect("stream").expect("open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a poke in time");
    assert!(seen.contains("data: user:alice"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jwt_auth_a_jwt_is_told_so() {
    let store = Store::sqlite(MergeRules::default());
    let state = AppState::new(store.storage.clone(), Limits::default());
    let token = Signer::hs256().sign(&claims("alice"));
    let err = state.authenticate(&token).await.expect_err("refused");
    assert_eq!(err.status().as_u16(), 401);
    assert!(
        err.message().contains("no JWT auth configured"),
        "{}",
        err.message()
    );
}

/// The token with one character of its payload changed (`alice` becomes `alicf`).
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = engine.decode(parts[1]).expect("base64url");
    let forged = String::from_utf8(payload)
        .expect("utf-8")
        .replace("alice", "alicf");
    format!("{}.{}.{}", parts[0], engine.encode(forged), parts[2])
}

/// An `alg: none` token: no signature at all.
fn unsigned(claims: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
        engine.encode(claims.to_string())
    )
}
