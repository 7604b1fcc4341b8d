//! A server that answers with well-formed JSON describing an impossible record: the client
//! refuses the page (nothing stored, cursor unmoved), reports a server failure and retries
//! with backoff instead of storing half a record or stopping.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{key, open_client, view, wait_status};
use tidesync_client::FailureKind;

/// Serves every request on its own connection: `/healthz` is fine, `/v1/pull` returns one
/// change whose document has a field without a stamp, anything else is 404.
fn start_lying_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, body) = if request_line.starts_with("GET /healthz") {
                ("200 OK", "ok".to_owned())
            } else if request_line.starts_with("POST /v1/pull") {
                let stamp = "0000000000070001@server";
                let change = format!(
                    r#"{{"space":"user:alice","collection":"todos","id":"liar","version":1,"deleted":false,"doc":{{"title":"x","unstamped":1}},"stamps":{{"fields":{{"title":"{stamp}"}},"liveness":"{stamp}","cleared":"{stamp}"}}}}"#
                );
                (
                    "200 OK",
                    format!(
                        r#"{{"changes":[{change}],"cursor":{{"user:alice":1}},"has_more":false,"remaining":0,"acked_through":0}}"#
                    ),
                )
            } else {
                (
                    "404 Not Found",
                    r#"{"code":"not_found","message":"no"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn an_impossible_change_is_refused_reported_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = start_lying_server();
    let client = open_client(dir.path(), "a", &url, "tsk_any");
    let status = wait_status(&client, "a pull failure", Duration::from_secs(20), |s| {
        s.last_error
            .as_ref()
            .is_some_and(|e| e.message.contains("unstamped"))
    });
    let error = status.last_error.clone().expect("an error");
    assert_eq!(error.kind, FailureKind::Server, "{error:?}");
    assert!(error.message.contains("user:alice/todos/liar"), "{error:?}");
    assert!(
        status.next_retry_at_ms.is_some(),
        "retried with backoff: {status:?}"
    );
    assert!(!status.has_synced);
    assert_eq!(view(&client, &key("todos", "liar")), None);
    client.close();
}
