//! Each manual fault does what it says, and only that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tidesync_testkit::{wait_until, CutMode, Fault, FaultEvent, FaultProxy};

use common::{reads_closed, Client, LineServer};

const WAIT: Duration = Duration::from_secs(5);
const CONNECT_DELAY: Duration = Duration::from_millis(150);

fn setup() -> (LineServer, FaultProxy) {
    let upstream = LineServer::start();
    let proxy = FaultProxy::start(upstream.addr).unwrap();
    (upstream, proxy)
}

#[test]
fn refuse_closes_new_connections_before_they_reach_the_server() {
    let (upstream, proxy) = setup();
    proxy.refuse(true);
    for i in 0..3 {
        let mut client = Client::connect(proxy.addr()).unwrap();
        assert_eq!(client.request(&format!("push {i}")).unwrap(), None);
    }
    assert_eq!(proxy.stats().refused, 3);
    assert_eq!(upstream.accepted(), 0);
    assert!(upstream.received().is_empty());

    proxy.refuse(false);
    let mut client = Client::connect(proxy.addr()).unwrap();
    assert_eq!(
        client.request("push 3").unwrap().as_deref(),
        Some("ok:push 3")
    );
    assert_eq!(upstream.received(), ["push 3"]);
}

#[test]
fn offline_makes_connects_fail_and_online_listens_on_the_same_port_again() {
    let (_upstream, proxy) = setup();
    let addr = proxy.addr();
    proxy.offline(true);
    assert!(
        wait_until(WAIT, || TcpStream::connect(addr)
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)),
        "connects to an offline proxy must be refused"
    );

    proxy.offline(false);
    assert!(wait_until(WAIT, || TcpStream::connect(addr).is_ok()));
    let mut client = Client::connect(addr).unwrap();
    assert_eq!(client.request("back").unwrap().as_deref(), Some("ok:back"));
}

#[test]
fn kill_all_closes_every_live_connection_and_new_ones_still_work() {
    let (upstream, proxy) = setup();
    let mut clients: Vec<Client> = (0..2)
        .map(|_| Client::connect(proxy.addr()).unwrap())
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(client.request(&format!("hello {i}")).unwrap().is_some());
    }
    assert!(wait_until(WAIT, || upstream.open() == 2));

    assert_eq!(proxy.kill_all(), 2);
    for client in &mut clients {
        assert_eq!(
            client.read_reply().unwrap(),
            None,
            "client must see the close"
        );
    }
    assert!(
        wait_until(WAIT, || upstream.open() == 0),
        "server side must close too"
    );
    assert!(wait_until(WAIT, || proxy.stats().active == 0));
    assert_eq!(proxy.stats().connections_killed, 2);
    let mut killed: Vec<u64> = proxy.events().iter().map(|e| e.connection).collect();
    killed.sort_unstable();
    assert_eq!(killed, [0, 1]);
    assert_eq!(proxy.kill_all(), 0, "nothing left to kill");

    let mut client = Client::connect(proxy.addr()).unwrap();
    assert!(client.request("after").unwrap().is_some());
}

#[test]
fn a_cut_response_was_processed_by_the_server_but_never_reaches_the_client() {
    let (upstream, proxy) = setup();
    proxy.cut_next_responses(1);

    let mut client = Client::connect(proxy.addr()).unwrap();
    client.send_raw(b"push 1\n").unwrap();
    assert!(
        client.read_rest().unwrap().is_empty(),
        "no response byte may arrive"
    );
    assert_eq!(
        upstream.received(),
        ["push 1"],
        "the server saw the whole request"
    );
    assert_eq!(
        proxy.events(),
        [FaultEvent {
            connection: 0,
            fault: Fault::ResponseCut {
                response: 0,
                forwarded: 0
            }
        }]
    );
    assert_eq!(proxy.faults().cut, CutMode::Next(0));

    let mut client = Client::connect(proxy.addr()).unwrap();
    assert_eq!(
        client.request("push 2").unwrap().as_deref(),
        Some("ok:push 2")
    );
    assert_eq!(proxy.stats().responses_cut, 1);
}

#[test]
fn cut_next_responses_counts_down_across_connections() {
    let (upstream, proxy) = setup();
    proxy.cut_next_responses(2);
    let outcomes: Vec<Option<String>> = (0..3)
        .map(|i| {
            let mut client = Client::connect(proxy.addr()).unwrap();
            client.request(&format!("push {i}")).unwrap()
        })
        .collect();
    assert_eq!(outcomes, [None, None, Some("ok:push 2".to_owned())]);
    assert_eq!(upstream.received(), ["push 0", "push 1", "push 2"]);
    assert_eq!(proxy.stats().responses_cut, 2);
}

#[test]
fn cut_after_k_bytes_forwards_exactly_k_bytes_of_the_response() {
    let (_upstream, proxy) = setup();
    proxy.cut_after_bytes(3);
    proxy.cut_next_responses(1);
    let mut client = Client::connect(proxy.addr()).unwrap();
    client.send_raw(b"push 1\n").unwrap();
    assert_eq!(client.read_rest().unwrap(), b"ok:");
    let cut = Fault::ResponseCut {
        response: 0,
        forwarded: 3,
    };
    assert_eq!(proxy.events()[0].fault, cut);
}

#[test]
fn on_a_kept_alive_connection_the_cut_hits_the_response_in_flight() {
    let (upstream, proxy) = setup();
    let mut client = Client::connect(proxy.addr()).unwrap();
    assert!(client.request("push 1").unwrap().is_some());
    proxy.cut_next_responses(1);
    assert_eq!(client.request("push 2").unwrap(), None);
    assert_eq!(upstream.received(), ["push 1", "push 2"]);
    let cut = Fault::ResponseCut {
        response: 1,
        forwarded: 0,
    };
    assert_eq!(proxy.events()[0].fault, cut);
}

#[test]
fn cutting_with_probability_one_cuts_everything_and_zero_nothing() {
    let (_upstream, proxy) = setup();
    proxy.cut_responses_with_probability(1.0);
    for i in 0..3 {
        let mut client = Client::connect(proxy.addr()).unwrap();
        assert_eq!(client.request(&format!("r{i}")).unwrap(), None);
    }
    proxy.cut_responses_with_probability(0.0);
    let mut client = Client::connect(proxy.addr()).unwrap();
    for i in 0..3 {
        assert!(client.request(&format!("s{i}")).unwrap().is_some());
    }
    assert_eq!(proxy.stats().responses_cut, 3);
}

#[test]
fn chunk_delay_applies_in_both_directions_and_connect_delay_once() {
    let (_upstream, proxy) = setup();
    let delay = Duration::from_millis(40);
    proxy.set_delay(delay, Duration::from_millis(10));
    let mut client = Client::connect(proxy.addr()).unwrap();
    let start = Instant::now();
    assert!(client.request("slow").unwrap().is_some());
    assert!(start.elapsed() >= 2 * delay, "took {:?}", start.elapsed());

    proxy.set_delay(Duration::ZERO, Duration::ZERO);
    proxy.set_connect_delay(CONNECT_DELAY);
    let start = Instant::now();
    let mut client = Client::connect(proxy.addr()).unwrap();
    assert!(client.request("late").unwrap().is_some());
    assert!(start.elapsed() >= CONNECT_DELAY);
    // The connection delay is paid once: the next exchange is quick again.
    let start = Instant::now();
    assert!(client.request("quick").unwrap().is_some());
    assert!(
        start.elapsed() < CONNECT_DELAY,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn dropping_the_proxy_closes_connections_and_joins_every_thread() {
    let (upstream, proxy) = setup();
    let addr = proxy.addr();
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut busy = Client::connect(addr).unwrap();
    assert!(busy.request("hello").unwrap().is_some());
    // A connection stuck in a long delay must not hold up the drop either.
    proxy.set_delay(Duration::from_secs(30), Duration::ZERO);
    busy.send_raw(b"stuck\n").unwrap();
    assert!(wait_until(WAIT, || proxy.stats().active == 2));

    // `Drop` joins every thread it started, so it returning at all is the proof; do it on
    // another thread so a regression fails the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(proxy);
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(WAIT).expect("dropping the proxy hung");

    assert!(reads_closed(&mut idle));
    assert_eq!(busy.read_reply().unwrap(), None);
    assert!(wait_until(WAIT, || upstream.open() == 0));
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener must be closed"
    );
}
