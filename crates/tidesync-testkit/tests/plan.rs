//! A seeded fault plan injects every kind of fault it is given, and the same seed injects
//! the same faults into the same connections and requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tidesync_testkit::{wait_until, Fault, FaultEvent, FaultPlan, FaultProxy, ProxyStats};

use common::{Client, LineServer};

const CONNECTIONS: usize = 40;

#[derive(Debug)]
struct Run {
    /// Per connection: the replies it got before its connection closed (two requests each).
    replies: Vec<Vec<String>>,
    events: Vec<FaultEvent>,
    stats: ProxyStats,
    received: Vec<String>,
    partials: Vec<String>,
}

/// A fixed sequential workload through a proxy running `FaultPlan::new(seed)`.
fn run(seed: u64) -> Run {
    let upstream = LineServer::start();
    let proxy = FaultProxy::start(upstream.addr).unwrap();
    proxy.set_plan(
        FaultPlan::new(seed)
            .refuse(0.15)
            .drop_mid_request(0.15)
            .cut(0.15)
            .delay(Duration::ZERO..Duration::from_millis(2)),
    );
    assert_eq!(proxy.plan_seed(), Some(seed));
    let replies = (0..CONNECTIONS)
        .map(|c| {
            let mut client = Client::connect(proxy.addr()).unwrap();
            let mut replies = Vec::new();
            for r in 0..2 {
                match client.request(&format!("req {c}.{r}")).unwrap() {
                    Some(reply) => replies.push(reply),
                    None => break,
                }
            }
            replies
        })
        .collect();
    // Let the last connection's threads (and the server's record of a partial) settle.
    let settled = || proxy.stats().active == 0 && upstream.open() == 0;
    assert!(wait_until(Duration::from_secs(5), settled));
    Run {
        replies,
        events: proxy.events(),
        stats: proxy.stats(),
        received: upstream.received(),
        partials: upstream.partials(),
    }
}

fn faults_of(run: &Run, connection: usize) -> Vec<Fault> {
    run.events
        .iter()
        .filter(|e| e.connection == connection as u64)
        .map(|e| e.fault)
        .collect()
}

#[test]
fn the_same_seed_injects_the_same_faults_and_another_seed_others() {
    let seed = 20240611;
    let first = run(seed);
    eprintln!("seed {seed}: {:?}", first.events);
    let again = run(seed);
    assert_eq!(first.events, again.events);
    assert_eq!(first.replies, again.replies);
    let faults = |s: ProxyStats| (s.accepted, s.refused, s.requests_dropped, s.responses_cut);
    assert_eq!(faults(first.stats), faults(again.stats));

    let other = run(seed + 1);
    assert_ne!(first.events, other.events);
}

#[test]
fn every_planned_fault_happens_and_matches_what_client_and_server_saw() {
    let run = run(7);
    let s = run.stats;
    assert!(
        s.refused > 0 && s.requests_dropped > 0 && s.responses_cut > 0,
        "{s:?}"
    );
    assert_eq!(
        run.events.len() as u64,
        s.refused + s.requests_dropped + s.responses_cut
    );
    assert_eq!(s.accepted, CONNECTIONS as u64);

    for (c, replies) in run.replies.iter().enumerate() {
        let req = |r: u64| format!("req {c}.{r}");
        match faults_of(&run, c)[..] {
            [] => {
                assert_eq!(
                    *replies,
                    [format!("ok:{}", req(0)), format!("ok:{}", req(1))]
                );
            }
            [Fault::Refused] => {
                assert!(replies.is_empty());
                assert!(!run
                    .received
                    .iter()
                    .any(|r| r.starts_with(&format!("req {c}."))));
            }
            [Fault::DroppedMidRequest { request, forwarded }] => {
                assert_eq!(replies.len() as u64, request);
                assert!(!run.received.contains(&req(request)));
                let partial = &req(request)[..forwarded];
                assert!(run.partials.iter().any(|p| p == partial), "{partial:?}");
            }
            [Fault::ResponseCut { response, .. }] => {
                assert_eq!(replies.len() as u64, response);
                assert!(run.received.contains(&req(response)), "server processed it");
            }
            ref other => panic!("connection {c}: unexpected faults {other:?}"),
        }
    }
}
