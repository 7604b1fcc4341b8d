//! The per-request cost of authentication: a bearer JWT verified with a cached key (HS256,
//! RS256, ES256, and RS256 from a JWKS URL already fetched) against an API token looked up
//! in SQLite storage (SHA-256 of the token, one indexed read on a reader connection) — in
//! one run, interleaved round by round, printed with ratios.
//!
//! Each measures `AppState::authenticate`, what every request's `Auth` extractor calls:
//! for a JWT the header parse, the key lookup, the signature, `exp`/`nbf`/`iss`/`aud` and the
//! claims mapped to grants; for an API token the hash, the lookup and the stored grants
//! parsed. Requests are sequential, so the figure is the latency one request pays.
//!
//! `cargo bench -p tidesync-server --bench auth` (`BENCH_AUTH_CALLS` calls per round,
//! default 2,000; 7 rounds).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::{info_row, median};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tidesync_server::auth::jwt::{JwtAlgorithm, JwtConfig, JwtVerifier};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::{AppState, Limits, MergeRules};

const ROUNDS: usize = 7;
const SECRET: &str = "a-bench-secret-of-at-least-32-bytes!";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    std::fs::read(path).expect("test key fixture")
}

fn token(algorithm: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.into());
    let claims = json!({
        "sub": "alice", "iss": "https://issuer.bench", "aud": "authenticated",
        "exp": now + 3600, "iat": now, "role": "authenticated",
        "email": "alice@example.com", "spaces": ["team:red", "team:blue"]
    });
    encode(&header, &claims, key).expect("sign")
}

fn config(algorithm: JwtAlgorithm) -> JwtConfig {
    let mut config = JwtConfig::new(algorithm);
    config.issuer = Some("https://issuer.bench".into());
    config.audience = Some("authenticated".into());
    config.spaces = vec!["user:{sub}".into()];
    config.spaces_claim = Some("spaces".into());
    config
}

/// A state over `storage` accepting JWTs per `config`.
fn state(storage: &Arc<SqliteStorage>, config: &JwtConfig) -> AppState {
    let verifier = JwtVerifier::new(config).expect("valid config");
    AppState::new(storage.clone(), Limits::default()).with_jwt(verifier)
}

/// Serves `jwks` on a loopback port; returns its URL.
async fn serve_jwks(jwks: serde_json::Value) -> String {
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// One round: `calls` sequential authentications of `bearer`; seconds per call.
async fn round(state: &AppState, bearer: &str, calls: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        let grants: Grants = state.authenticate(bearer).await.expect("accepted");
        std::hint::black_box(grants);
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn main() {
    let calls: usize = std::env::var("BENCH_AUTH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(calls));
}

async fn run(calls: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(
        SqliteStorage::open(&dir.path().join("server.db"), MergeRules::default()).expect("open"),
    );
    // A realistic token table: the looked-up token among 10,000 others.
    let grants = Grants {
        user: "alice".into(),
        read: Default::default(),
        write: [tidesync_protocol::SpaceName::new("user:alice").expect("space")]
            .into_iter()
            .collect(),
    };
    for _ in 0..9_999 {
        storage.create_token(&grants).expect("token");
    }
    let api_token = storage.create_token(&grants).expect("token");

    let hs_key = EncodingKey::from_secret(SECRET.as_bytes()).expect("secret");
    let rsa_key = EncodingKey::from_rsa_pem(&fixture("rsa_a.key.pem")).expect("rsa");
    let ec_key = EncodingKey::from_ec_pem(&fixture("ec_a.key.pem")).expect("ec");
    let pem_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");

    let mut hs = config(JwtAlgorithm::HS256);
    hs.secret = Some(SECRET.into());
    let mut rs = config(JwtAlgorithm::RS256);
    rs.public_key_file = Some(pem_dir.join("rsa_a.pub.pem"));
    let mut es = config(JwtAlgorithm::ES256);
    es.public_key_file = Some(pem_dir.join("ec_a.pub.pem"));
    let mut jwk_a = Jwk::from_encoding_key(&rsa_key, Algorithm::RS256).expect("jwk");
    jwk_a.common.key_id = Some("key-a".into());
    let mut jwk_b = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(&fixture("rsa_b.key.pem")).expect("rsa"),
        Algorithm::RS256,
    )
    .expect("jwk");
    jwk_b.common.key_id = Some("key-b".into());
    let jwks = serde_json::to_value(JwkSet {
        keys: vec![jwk_b, jwk_a],
    })
    .expect("jwks");
    let mut remote = config(JwtAlgorithm::RS256);
    remote.jwks_url = Some(serve_jwks(jwks).await);
    let remote_state = state(&storage, &remote);
    let fetched = remote_state
        .jwt()
        .expect("jwt")
        .fetch_keys()
        .await
        .expect("JWKS fetched");
    assert_eq!(fetched, 2);

    let cases: Vec<(&str, AppState, String)> = vec![
        (
            "API token lookup (SQLite, 10k tokens)",
            AppState::new(storage.clone(), Limits::default()),
            api_token,
        ),
        (
            "JWT HS256 (secret)",
            state(&storage, &hs),
            token(Algorithm::HS256, &hs_key, "k"),
        ),
        (
            "JWT RS256 (PEM public key, 2048-bit)",
            state(&storage, &rs),
            token(Algorithm::RS256, &rsa_key, "k"),
        ),
        (
            "JWT RS256 (JWKS URL, cached, kid 2 of 2)",
            remote_state,
            token(Algorithm::RS256, &rsa_key, "key-a"),
        ),
        (
            "JWT ES256 (PEM public key, P-256)",
            state(&storage, &es),
            token(Algorithm::ES256, &ec_key, "k"),
        ),
    ];
    // Warm-up: readers opened, caches filled, code paged in.
    for (_, state, bearer) in &cases {
        round(state, bearer, calls / 10 + 1).await;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, state, bearer)) in cases.iter().enumerate() {
            times[i].push(round(state, bearer, calls).await);
        }
    }
    let baselines = &times[0];
    println!(
        "tidesync-server auth benchmark: one request's authentication (medians of {ROUNDS} \
         rounds × {calls} calls; ratios against the API token lookup, per round)\n"
    );
    println!("| benchmark                                                |   measured |       baseline | ratio | target    | result |");
    println!("|----------------------------------------------------------|------------|----------------|-------|-----------|--------|");
    let baseline = median(baselines.clone());
    for ((name, _, _), measured) in cases.iter().zip(&times) {
        let ratios = measured
            .iter()
            .zip(baselines)
            .map(|(m, b)| m / b)
            .collect::<Vec<_>>();
        info_row(
            name,
            format!("{:.1} µs", median(measured.clone()) * 1e6),
            format!("{:.1} µs token", baseline * 1e6),
            median(ratios),
        );
    }
}
