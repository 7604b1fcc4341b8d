//! Without faults the proxy is invisible: every byte arrives, in order, both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tidesync_testkit::{wait_until, FaultProxy, ProxyStats};

use common::{echo_server, Client, LineServer, CLIENT_TIMEOUT};

const PAYLOAD: usize = 8 * 1024 * 1024;

/// Sends `payload` through an echo upstream and returns what came back.
fn echo_through(addr: std::net::SocketAddr, payload: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::with_capacity(PAYLOAD);
    (&stream).read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    echoed
}

#[test]
fn several_megabytes_pass_both_ways_intact_on_concurrent_connections() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..2u64)
        .map(|seed| {
            let mut p = vec![0; PAYLOAD];
            StdRng::seed_from_u64(seed).fill_bytes(&mut p);
            p
        })
        .collect();

    let addr = proxy.addr();
    let runs: Vec<_> = payloads
        .iter()
        .cloned()
        .map(|p| thread::spawn(move || echo_through(addr, p)))
        .collect();
    for (run, sent) in runs.into_iter().zip(&payloads) {
        let echoed = run.join().unwrap();
        assert_eq!(echoed.len(), sent.len());
        assert!(echoed == *sent, "echoed bytes differ from sent bytes");
    }

    assert!(wait_until(Duration::from_secs(5), || proxy.stats().closed == 2));
    let total = 2 * PAYLOAD as u64;
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            accepted: 2,
            closed: 2,
            bytes_to_upstream: total,
            bytes_to_client: total,
            ..ProxyStats::default()
        }
    );
    assert!(proxy.events().is_empty());
}

#[test]
fn stats_count_connections_and_bytes_of_each_exchange() {
    let upstream = LineServer::start();
    let proxy = FaultProxy::start(upstream.addr).unwrap();
    let mut client = Client::connect(proxy.addr()).unwrap();
    let mut sent = 0;
    let mut answered = 0;
    for req in ["a", "push 12", "pull from 7"] {
        let reply = client.request(req).unwrap().unwrap();
        assert_eq!(reply, format!("ok:{req}"));
        sent += req.len() + 1;
        answered += reply.len() + 1;
    }
    // Bytes are counted right after they are written on, so the client can see them first.
    let counted = || {
        let s = proxy.stats();
        s.bytes_to_upstream == sent as u64 && s.bytes_to_client == answered as u64
    };
    assert!(
        wait_until(Duration::from_secs(5), counted),
        "{:?}",
        proxy.stats()
    );
    let live = proxy.stats();
    assert_eq!((live.accepted, live.active, live.closed), (1, 1, 0));

    drop(client);
    assert!(wait_until(Duration::from_secs(5), || proxy.stats().closed == 1));
    assert_eq!(proxy.stats().active, 0);
    assert_eq!(upstream.received(), ["a", "push 12", "pull from 7"]);
}

#[test]
fn a_dead_upstream_is_counted_and_the_client_sees_a_close() {
    let port = tidesync_testkit::free_port().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).unwrap();
    let mut client = Client::connect(proxy.addr()).unwrap();
    assert_eq!(client.request("hello").unwrap(), None);
    assert!(wait_until(Duration::from_secs(5), || {
        proxy.stats().upstream_connect_failures == 1
    }));
}

#[test]
fn only_loopback_upstreams_are_accepted() {
    let err = FaultProxy::start(([192, 0, 2, 1], 80).into()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
