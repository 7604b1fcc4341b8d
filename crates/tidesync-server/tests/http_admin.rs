//! The admin dashboard at `/admin`: off (404 saying how to turn it on) without an admin
//! token; refused (401) without it or with a wrong one; the login form's session cookie;
//! the seeded spaces, clients and rejections on the page; every value escaped; at most
//! `ROWS` of each kind.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;
use tidesync_server::admin::ROWS;

use common::{on_both_backends, put, Backend, Reply, TestServer};

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn admin_server(backend: Backend) -> Option<TestServer> {
    Some(TestServer::new_on(backend).await?.with_admin(ADMIN))
}

/// `GET path` with `Authorization: <authorization>` and `Cookie: <cookie>` when given.
async fn get(
    server: &TestServer,
    path: &str,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(value) = cookie {
        request = request.header(header::COOKIE, value);
    }
    server
        .send(request.body(Body::empty()).expect("request"))
        .await
}

/// The dashboard as the admin sees it.
async fn dashboard(server: &TestServer) -> String {
    let reply = get(server, "/admin", Some(&format!("Bearer {ADMIN}")), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    reply.text
}

/// `POST /admin/login` with `token` as the form.
async fn login(server: &TestServer, token: &str) -> Reply {
    let body = format!("token={}", token.replace('+', "%2B"));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/admin/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    server.send(request).await
}

/// A base_ahead rejection: a base version the space never had.
fn ahead(seq: u64, space: &str, id: &str) -> serde_json::Value {
    let mut m = put(
        seq,
        seq,
        space,
        "todos",
        id,
        json!({"title": "from the future"}),
    );
    m["base_version"] = json!(999);
    m
}

async fn off_without_an_admin_token_answers_404_saying_how_to_turn_it_on(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    for (method, path) in [
        (Method::GET, "/admin"),
        (Method::GET, "/admin/metrics.json"),
        (Method::POST, "/admin/login"),
        (Method::POST, "/admin/logout"),
    ] {
        let reply = server.call(method, path, Some(ADMIN), Body::empty()).await;
        reply.assert_error(404, "not_found");
        let message = reply.json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("TIDESYNC_ADMIN_TOKEN"),
            "{path}: {message}"
        );
        assert!(message.contains("[admin]"), "{path}: {message}");
    }
}

async fn refused_without_the_admin_token_or_with_a_wrong_one(backend: Backend) {
    let Some(server) = admin_server(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let reply = server
        .push(
            &alice,
            "phone",
            vec![put(1, 1, "user:alice", "todos", "t1", json!({}))],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // No credentials: the login form, and nothing of the data.
    let anonymous = get(&server, "/admin", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.text.contains("action=\"/admin/login\""),
        "{}",
        anonymous.text
    );
    assert!(!anonymous.text.contains("user:alice"), "{}", anonymous.text);
    assert!(anonymous.headers.contains_key(header::WWW_AUTHENTICATE));

    // Wrong credentials, including a user's API token and a near miss.
    let near_miss = format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]);
    let api_token = format!("Bearer {alice}");
    let wrong = [
        "Bearer wrong-admin-token-000000",
        near_miss.as_str(),
        api_token.as_str(),
        ADMIN,
        "Basic YWRtaW46YWRtaW4=",
    ];
    for authorization in wrong {
        let page = get(&server, "/admin", Some(authorization), None).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert!(!page.text.contains("user:alice"), "{authorization}");
        let metrics = get(&server, "/admin/metrics.json", Some(authorization), None).await;
        metrics.assert_error(401, "unauthorized");
    }
    get(&server, "/admin/metrics.json", None, None)
        .await
        .assert_error(401, "unauthorized");
    let forged = get(&server, "/admin", None, Some("tidesync_admin=0123abcd")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(!forged.text.contains("user:alice"));

    // A wrong token in the form opens no session.
    let refused = login(&server, "wrong-admin-token-000000").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    assert!(!refused.headers.contains_key(header::SET_COOKIE));
    assert!(
        refused.text.contains("not the admin token"),
        "{}",
        refused.text
    );

    // Wrong tokens count as authentication failures; a first visit without one does not.
    let metrics = get(&server, "/metrics", None, None).await;
    let failures = metrics
        .text
        .lines()
        .find_map(|l| l.strip_prefix("tidesync_auth_failures_total "))
        .expect("the counter");
    assert_eq!(
        failures,
        (wrong.len() * 2 + 1 + 1).to_string(),
        "{}",
        metrics.text
    );

    // The right one.
    assert!(dashboard(&server).await.contains("user:alice"));
}

async fn the_login_form_opens_a_strict_http_only_session_that_logout_ends(backend: Backend) {
    let Some(server) = admin_server(backend).await else {
        return;
    };
    let signed_in = login(&server, ADMIN).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.text
    );
    assert_eq!(signed_in.headers[header::LOCATION], "/admin");
    let set_cookie = signed_in.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(ADMIN), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();

    let page = get(&server, "/admin", None, Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Live rates"));
    let metrics = get(&server, "/admin/metrics.json", None, Some(&cookie)).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    for field in [
        "pushes",
        "pulls",
        "mutations_rejected",
        "at_ms",
        "open_event_streams",
    ] {
        assert!(metrics.json[field].is_u64(), "{field}: {}", metrics.text);
    }

    let request = Request::builder()
        .method(Method::POST)
        .uri("/admin/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .expect("request");
    let out = server.send(request).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .contains("Max-Age=0"));
    let after = get(&server, "/admin", None, Some(&cookie)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(after.text.contains("session ended"), "{}", after.text);
}

async fn the_page_shows_the_seeded_spaces_clients_and_rejections(backend: Backend) {
    let Some(server) = admin_server(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let bob = server.token("bob", &["team:rockets"], &[]);
    // Built in seq order: `put` stamps with the wall clock, so a delete built before the put
    // it deletes could carry an older stamp (when the millisecond ticks between them) and lose.
    let mut mutations = vec![
        put(1, 1, "user:alice", "todos", "t1", json!({"title": "milk"})),
        put(2, 2, "user:alice", "todos", "t2", json!({"title": "eggs"})),
        put(3, 3, "user:alice", "todos", "t3", json!({"title": "tea"})),
    ];
    let mut delete = put(4, 4, "user:alice", "todos", "t1", json!({}));
    delete["kind"] = json!("delete");
    delete.as_object_mut().expect("object").remove("doc");
    mutations.push(delete);
    mutations.push(ahead(5, "user:alice", "t4"));
    let reply = server.push(&alice, "alice-phone", mutations).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["results"][4]["outcome"], "rejected",
        "{}",
        reply.text
    );
    let reply = server
        .push(
            &bob,
            "bob-laptop",
            vec![put(
                1,
                1,
                "team:rockets",
                "todos",
                "r1",
                json!({"title": "launch"}),
            )],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    server.pull_all(&bob, &["team:rockets"]).await;

    let page = dashboard(&server).await;
    // Spaces, highest version first, with live and deleted records.
    let alice_row = "<td class=\"mono\">user:alice</td><td class=\"n\">4</td>\
                     <td class=\"n\">2</td><td class=\"n\">1</td>";
    let bob_row = "<td class=\"mono\">team:rockets</td><td class=\"n\">1</td>\
                   <td class=\"n\">1</td><td class=\"n\">0</td>";
    let (a, b) = (page.find(alice_row), page.find(bob_row));
    assert!(a.is_some() && b.is_some(), "{page}");
    assert!(a < b, "highest version first");
    assert!(page.contains("2 of 2 spaces"), "{page}");
    // Clients with owner, last seq and when this node saw them.
    assert!(
        page.contains("<td class=\"mono\">alice-phone</td><td>alice</td><td class=\"n\">5</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td class=\"mono\">bob-laptop</td><td>bob</td><td class=\"n\">1</td>"),
        "{page}"
    );
    assert!(page.contains("s ago (push)"), "{page}");
    assert!(page.contains("2 of 2 clients that pushed"), "{page}");
    // A client that only pulled has no stored row, but this node saw it.
    let puller: String = bob
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    assert!(
        page.contains(&format!(
            "<td class=\"mono\">{puller}</td><td>bob</td><td class=\"n\"><span class=\"empty\">none</span></td>"
        )),
        "{page}"
    );
    assert!(page.contains("s ago (pull)"), "{page}");
    // The rejection, with its reason.
    assert!(
        page.contains("<td class=\"code\">base_ahead</td>"),
        "{page}"
    );
    assert!(page.contains("base_version 999 is above"), "{page}");
    assert!(
        page.contains("<td class=\"mono nowrap\">alice-phone</td><td class=\"n\">5</td>"),
        "{page}"
    );
    // The live rates start from what the page was rendered with.
    assert!(page.contains("data-metric=\"pushes\""), "{page}");
    assert!(
        page.contains("<span data-total=\"pushes\">2</span> total"),
        "{page}"
    );
}

async fn every_value_on_the_page_is_escaped(backend: Backend) {
    let Some(server) = admin_server(backend).await else {
        return;
    };
    let hostile_user = r#"<script>alert("user")</script>"#;
    let token = server.token(hostile_user, &["user:x"], &[]);
    let reply = server
        .push(
            &token,
            "c1",
            vec![ahead(1, "user:x", "<img src=x onerror=alert(1)>")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // A stored reason carrying markup (as a future rule's message quoting a field could).
    server.execute(
        "INSERT INTO rejected (client_id, seq, code, message)
         VALUES ('c1', 0, 'rule_violation', '<b onclick=\"x\">bold</b> & ''quoted''')",
        "INSERT INTO ts_rejected (client_id, seq, code, message)
         VALUES ('c1', 0, 'rule_violation', '<b onclick=\"x\">bold</b> & ''quoted''')
         RETURNING 1",
    );
    let page = dashboard(&server).await;
    assert!(!page.contains(hostile_user), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&quot;user&quot;)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<b onclick"), "{page}");
    assert!(
        page.contains("&lt;b onclick=&quot;x&quot;&gt;bold&lt;/b&gt; &amp; &#39;quoted&#39;"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"empty\">stored</span>"),
        "{page}"
    );
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script"
    );
    let reply = get(&server, "/admin", Some(&format!("Bearer {ADMIN}")), None).await;
    let policy = reply.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'nonce-"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    // The nonce the policy names is the one on the page's style and script.
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce");
    assert!(reply.text.contains(&format!("<style nonce=\"{nonce}\">")));
    assert!(reply.text.contains(&format!("<script nonce=\"{nonce}\">")));
    assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY");
}

async fn the_page_shows_at_most_rows_of_each_kind(backend: Backend) {
    let Some(server) = admin_server(backend).await else {
        return;
    };
    let total = ROWS + 7;
    let spaces: Vec<String> = (0..total).map(|i| format!("s{i:03}")).collect();
    let names: Vec<&str> = spaces.iter().map(String::as_str).collect();
    let token = server.token("ops", &names, &[]);
    let mutations = names
        .iter()
        .enumerate()
        .map(|(i, space)| put(i as u64 + 1, i as u64 + 1, space, "todos", "x", json!({})))
        .collect();
    let reply = server.push(&token, "c-bulk", mutations).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for (i, space) in names.iter().enumerate() {
        let reply = server
            .push(
                &token,
                &format!("c{i:03}"),
                vec![put(1, 1, space, "todos", "y", json!({}))],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let page = dashboard(&server).await;
    assert!(
        page.contains(&format!("{ROWS} of {total} spaces")),
        "{page}"
    );
    assert!(
        page.contains(&format!("{ROWS} of {} clients that pushed", total + 1)),
        "{page}"
    );
    let section = |id: &str| {
        let start = page
            .find(&format!("<section id=\"{id}\""))
            .expect("section");
        let end = start + page[start..].find("</section>").expect("end");
        page[start..end].matches("<tr><td").count()
    };
    assert_eq!(section("spaces"), ROWS);
    assert_eq!(section("clients"), ROWS);
    // The clients seen last come first: the last one pushed is listed.
    assert!(
        page.contains(&format!("<td class=\"mono\">c{:03}</td>", total - 1)),
        "{page}"
    );
}

on_both_backends!(
    off_without_an_admin_token_answers_404_saying_how_to_turn_it_on,
    refused_without_the_admin_token_or_with_a_wrong_one,
    the_login_form_opens_a_strict_http_only_session_that_logout_ends,
    the_page_shows_the_seeded_spaces_clients_and_rejections,
    every_value_on_the_page_is_escaped,
    the_page_shows_at_most_rows_of_each_kind,
);
