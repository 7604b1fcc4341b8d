use super::*;
use crate::sync::{Connectivity, Phase};

fn machine() -> SyncMachine {
    SyncMachine::new(SyncConfig::default(), 1)
}

/// Instructions without timers and statuses, for readable assertions.
fn work(out: &[Instruction]) -> Vec<Instruction> {
    out.iter()
        .filter(|i| !matches!(i, Instruction::SetTimer { .. } | Instruction::Status(_)))
        .cloned()
        .collect()
}

fn timer(out: &[Instruction]) -> Option<(u64, u64)> {
    out.iter().rev().find_map(|i| match i {
        Instruction::SetTimer { id, at_ms } => Some((*id, *at_ms)),
        _ => None,
    })
}

fn phases(out: &[Instruction]) -> Vec<Phase> {
    out.iter()
        .filter_map(|i| match i {
            Instruction::Status(s) => Some(s.phase),
            _ => None,
        })
        .collect()
}

/// Start, probe ok, push (nothing more), pull (nothing more): idle.
fn started_idle(m: &mut SyncMachine) {
    assert_eq!(work(&m.handle(0, Event::Start)), vec![Instruction::Probe]);
    assert_eq!(
        work(&m.handle(1, Event::ProbeDone(Ok(())))),
        vec![Instruction::OpenStream, Instruction::Push]
    );
    m.handle(2, Event::StreamOpened);
    assert_eq!(
        work(&m.handle(3, Event::PushDone(Ok(PushProgress { more: false })))),
        vec![Instruction::Pull]
    );
    assert_eq!(
        work(&m.handle(4, Event::PullDone(Ok(PullProgress { has_more: false })))),
        vec![]
    );
    assert_eq!(m.status().phase, Phase::Idle);
}

#[test]
fn a_start_probes_then_pushes_then_pulls_then_idles_with_statuses_on_change_only() {
    let mut m = machine();
    let mut seen = Vec::new();
    seen.extend(phases(&m.handle(0, Event::Start)));
    seen.extend(phases(&m.handle(1, Event::ProbeDone(Ok(())))));
    seen.extend(phases(&m.handle(2, Event::StreamOpened)));
    seen.extend(phases(
        &m.handle(3, Event::PushDone(Ok(PushProgress { more: true }))),
    ));
    seen.extend(phases(
        &m.handle(4, Event::PushDone(Ok(PushProgress { more: false }))),
    ));
    seen.extend(phases(
        &m.handle(5, Event::PullDone(Ok(PullProgress { has_more: true }))),
    ));
    seen.extend(phases(
        &m.handle(6, Event::PullDone(Ok(PullProgress { has_more: false }))),
    ));
    assert_eq!(
        seen,
        vec![
            Phase::Connecting,
            Phase::Uploading,
            Phase::Downloading,
            Phase::Idle
        ],
        "one status per change, none for repeated pushes or pages"
    );
    assert_eq!(m.status().connectivity, Connectivity::Online);
}

#[test]
fn local_writes_and_pokes_in_idle_start_work_at_once() {
    let mut m = machine();
    started_idle(&mut m);
    assert_eq!(
        work(&m.handle(10, Event::LocalWrite)),
        vec![Instruction::Push]
    );
    m.handle(11, Event::PushDone(Ok(PushProgress { more: false })));
    m.handle(12, Event::PullDone(Ok(PullProgress { has_more: false })));
    assert_eq!(work(&m.handle(13, Event::Poke)), vec![Instruction::Pull]);
}

#[test]
fn triggers_that_arrive_while_busy_are_not_lost() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    m.handle(11, Event::LocalWrite); // another write while the push is in flight
    m.handle(11, Event::Poke);
    // The push reports nothing more (its batch was computed before), yet the second write
    // and the poke still get their push and pull.
    assert_eq!(
        work(&m.handle(12, Event::PushDone(Ok(PushProgress { more: false })))),
        vec![Instruction::Push]
    );
    assert_eq!(
        work(&m.handle(13, Event::PushDone(Ok(PushProgress { more: false })))),
        vec![Instruction::Pull]
    );
    m.handle(14, Event::Poke);
    assert_eq!(
        work(&m.handle(15, Event::PullDone(Ok(PullProgress { has_more: false })))),
        vec![Instruction::Pull]
    );
}

#[test]
fn a_network_failure_is_one_offline_status_then_backoff_retries_without_spamming() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let out = m.handle(
        20,
        Event::PushDone(Err(Failure::Network("connection refused".into()))),
    );
    assert_eq!(work(&out), vec![Instruction::CloseStream]);
    let status = m.status();
    assert_eq!(status.connectivity, Connectivity::Offline);
    assert_eq!(status.phase, Phase::Backoff);
    assert_eq!(
        status.last_error.as_ref().map(|e| e.kind),
        Some(FailureKind::Network)
    );
    let (id, at) = timer(&out).expect("a retry timer");
    assert_eq!(status.next_retry_at_ms, Some(at));
    // Local writes while unreachable do not trigger requests.
    for t in 21..30 {
        assert_eq!(work(&m.handle(t, Event::LocalWrite)), vec![]);
    }
    // The timer probes first (cheap), then pushes the queued work.
    assert_eq!(
        work(&m.handle(at, Event::TimerFired(id))),
        vec![Instruction::Probe]
    );
    assert_eq!(
        work(&m.handle(at + 1, Event::ProbeDone(Ok(())))),
        vec![Instruction::OpenStream, Instruction::Push]
    );
    assert!(
        m.status().last_error.is_some(),
        "an answered probe is not the work succeeding"
    );
    m.handle(at + 2, Event::PushDone(Ok(PushProgress { more: false })));
    assert_eq!(m.status().last_error, None, "a success clears the error");
}

#[test]
fn backoff_grows_with_full_jitter_and_resets_after_success() {
    let config = SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 100,
            cap_ms: 10_000,
        },
        ..SyncConfig::default()
    };
    let mut m = SyncMachine::new(config, 9);
    m.handle(0, Event::Start);
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..12 {
        let out = m.handle(now, Event::ProbeDone(Err(Failure::Timeout)));
        let (id, at) = timer(&out).expect("timer");
        delays.push(at - now);
        now = at;
        m.handle(now, Event::TimerFired(id));
    }
    for (attempt, d) in delays.iter().enumerate() {
        assert!(
            *d <= (100u64 << attempt).min(10_000),
            "attempt {attempt}: {d}"
        );
    }
    assert!(
        delays[8..].iter().any(|d| *d > 1_000),
        "delays grow: {delays:?}"
    );
    m.handle(now, Event::ProbeDone(Ok(())));
    m.handle(now, Event::PushDone(Ok(PushProgress { more: true })));
    let out = m.handle(now + 1, Event::PushDone(Err(Failure::Timeout)));
    let (_, at) = timer(&out).expect("timer");
    assert!(
        at - (now + 1) <= 100,
        "the first failure after a success waits at most the base"
    );
}

#[test]
fn rate_limits_respect_retry_after() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let out = m.handle(
        20,
        Event::PushDone(Err(Failure::RateLimited {
            retry_after_ms: Some(30_000),
        })),
    );
    let (_, at) = timer(&out).expect("timer");
    assert!(at >= 20 + 30_000);
    assert_eq!(m.status().connectivity, Connectivity::Online);
}

#[test]
fn a_401_refreshes_the_token_once_then_surfaces() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let out = m.handle(11, Event::PushDone(Err(Failure::Unauthorized)));
    assert_eq!(work(&out), vec![Instruction::RefreshToken]);
    assert_eq!(m.status().phase, Phase::Authenticating);
    assert_eq!(
        work(&m.handle(12, Event::TokenRefreshed(true))),
        vec![Instruction::Push],
        "the same push again"
    );
    let out = m.handle(13, Event::PushDone(Err(Failure::Unauthorized)));
    assert_eq!(work(&out), vec![], "no second refresh for the same attempt");
    let status = m.status();
    assert_eq!(status.last_error.map(|e| e.kind), Some(FailureKind::Auth));
    assert_eq!(
        status.next_retry_at_ms,
        Some(13 + SyncConfig::default().backoff.cap_ms)
    );
}

#[test]
fn a_refused_request_surfaces_and_never_loops() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let refused = Failure::Refused {
        status: 409,
        code: "seq_gap".into(),
        message: "gap".into(),
    };
    let out = m.handle(11, Event::PushDone(Err(refused)));
    assert_eq!(
        m.status().last_error.map(|e| e.kind),
        Some(FailureKind::Refused)
    );
    let (_, at) = timer(&out).expect("timer");
    assert_eq!(
        at,
        11 + SyncConfig::default().backoff.cap_ms,
        "waits the cap"
    );
    for t in 12..50 {
        assert_eq!(
            work(&m.handle(t, Event::LocalWrite)),
            vec![],
            "writes do not retrigger a refused push"
        );
        assert_eq!(work(&m.handle(t, Event::Poke)), vec![]);
    }
    assert_eq!(
        work(&m.handle(60, Event::SyncNow)),
        vec![Instruction::Probe],
        "the app can force a retry"
    );
}

#[test]
fn a_server_that_forgot_history_is_recovered_from_once_not_in_a_loop() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let forgot = || Failure::ServerForgot { last_seq: 3 };
    let out = m.handle(11, Event::PushDone(Err(forgot())));
    assert_eq!(
        work(&out),
        vec![
            Instruction::ForgetServerHistory { last_seq: 3 },
            Instruction::ResetCursor,
            Instruction::Push
        ],
        "re-send what is held at once, then download again"
    );
    assert_eq!(m.status().last_error, None, "not an error of this client");
    // The recovery push is refused the same way: a server that does not take it.
    let out = m.handle(12, Event::PushDone(Err(forgot())));
    assert_eq!(work(&out), vec![]);
    assert_eq!(
        m.status().last_error.map(|e| (e.kind, e.code)),
        Some((FailureKind::Refused, Some("seq_gap".into())))
    );
    // After a push succeeds, a later loss is recovered from again.
    m.handle(70_000, Event::SyncNow);
    m.handle(70_001, Event::ProbeDone(Ok(())));
    m.handle(70_002, Event::PushDone(Ok(PushProgress { more: false })));
    m.handle(
        70_003,
        Event::PullDone(Ok(PullProgress { has_more: false })),
    );
    m.handle(70_004, Event::LocalWrite);
    let out = m.handle(70_005, Event::PushDone(Err(forgot())));
    assert_eq!(
        work(&out)[0],
        Instruction::ForgetServerHistory { last_seq: 3 }
    );
}

#[test]
fn a_cursor_reset_rebootstraps() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::Poke);
    let out = m.handle(11, Event::PullDone(Err(Failure::CursorReset)));
    assert_eq!(
        work(&out),
        vec![Instruction::ResetCursor, Instruction::Pull]
    );
}

#[test]
fn the_offline_hint_stops_traffic_until_the_online_hint() {
    let mut m = machine();
    started_idle(&mut m);
    let out = m.handle(10, Event::NetworkHint(Reachability::Offline));
    assert_eq!(work(&out), vec![Instruction::CloseStream]);
    assert_eq!(m.status().phase, Phase::Offline);
    assert_eq!(m.status().connectivity, Connectivity::Offline);
    for t in 11..20 {
        assert_eq!(work(&m.handle(t, Event::LocalWrite)), vec![]);
    }
    assert_eq!(
        work(&m.handle(30, Event::NetworkHint(Reachability::Online))),
        vec![Instruction::Probe]
    );
    assert_eq!(
        work(&m.handle(31, Event::ProbeDone(Ok(())))),
        vec![Instruction::OpenStream, Instruction::Push]
    );
}

#[test]
fn a_failed_probe_while_the_app_says_offline_stays_offline() {
    let mut m = machine();
    started_idle(&mut m);
    let out = m.handle(10, Event::NetworkHint(Reachability::Offline));
    let (id, at) = timer(&out).expect("slow safety probe");
    assert_eq!(at, 10 + SyncConfig::default().offline_probe_ms);
    m.handle(at, Event::TimerFired(id));
    m.handle(
        at + 1,
        Event::ProbeDone(Err(Failure::Network("down".into()))),
    );
    assert_eq!(m.status().phase, Phase::Offline);
}

#[test]
fn pause_stops_everything_and_resume_catches_up() {
    let mut m = machine();
    started_idle(&mut m);
    assert_eq!(
        work(&m.handle(10, Event::Pause)),
        vec![Instruction::CloseStream]
    );
    assert_eq!(work(&m.handle(11, Event::LocalWrite)), vec![]);
    assert_eq!(work(&m.handle(12, Event::TimerFired(99))), vec![]);
    assert_eq!(m.status().phase, Phase::Paused);
    assert_eq!(work(&m.handle(13, Event::Resume)), vec![Instruction::Probe]);
    assert_eq!(
        work(&m.handle(14, Event::ProbeDone(Ok(())))),
        vec![Instruction::OpenStream, Instruction::Push]
    );
}

#[test]
fn late_results_and_stale_timers_change_nothing() {
    let mut m = machine();
    started_idle(&mut m);
    let before = m.status();
    assert_eq!(
        m.handle(10, Event::PushDone(Ok(PushProgress { more: false }))),
        vec![]
    );
    assert_eq!(m.handle(10, Event::TimerFired(0)), vec![]);
    assert_eq!(m.status(), before);
}

#[test]
fn idle_polls_sooner_without_the_event_stream() {
    let mut m = machine();
    started_idle(&mut m);
    let out = m.handle(100, Event::StreamClosed);
    let (id, at) = timer(&out).expect("poll timer");
    assert_eq!(at, 100 + SyncConfig::default().stream_retry_ms);
    assert_eq!(
        work(&m.handle(at, Event::TimerFired(id))),
        vec![Instruction::OpenStream, Instruction::Pull]
    );
}

#[test]
fn the_same_seed_and_events_replay_the_same_instructions() {
    let script = |seed| {
        let mut m = SyncMachine::new(SyncConfig::default(), seed);
        let mut all = Vec::new();
        all.extend(m.handle(0, Event::Start));
        for t in 1..20 {
            all.extend(m.handle(t * 1000, Event::ProbeDone(Err(Failure::Timeout))));
            let id = m.timer_id;
            all.extend(m.handle(t * 1000 + 500, Event::TimerFired(id)));
        }
        all
    };
    assert_eq!(script(5), script(5));
    assert_ne!(script(5), script(6));
}

#[test]
fn an_offline_hint_while_paused_is_remembered_at_resume() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::Pause);
    m.handle(11, Event::NetworkHint(Reachability::Offline));
    assert_eq!(work(&m.handle(12, Event::Resume)), vec![]);
    assert_eq!(m.status().phase, Phase::Offline);
    assert_eq!(
        work(&m.handle(13, Event::NetworkHint(Reachability::Online))),
        vec![Instruction::Probe]
    );
}

#[test]
fn a_server_answering_probes_but_failing_pushes_backs_off_exponentially() {
    let config = SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 100,
            cap_ms: 100_000,
        },
        ..SyncConfig::default()
    };
    let mut m = SyncMachine::new(config, 3);
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let mut now = 10;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let failure = Failure::Server {
            status: 500,
            message: "boom".into(),
        };
        let out = m.handle(now, Event::PushDone(Err(failure)));
        let (id, at) = timer(&out).expect("a retry timer");
        delays.push(at - now);
        now = at;
        assert_eq!(
            work(&m.handle(now, Event::TimerFired(id))),
            vec![Instruction::Probe]
        );
        m.handle(now, Event::ProbeDone(Ok(())));
        assert_eq!(m.status().phase, Phase::Uploading);
    }
    assert!(
        delays[6..].iter().any(|d| *d > 1_000),
        "the delay grows although every probe succeeds: {delays:?}"
    );
}

#[test]
fn a_local_store_failure_is_its_own_kind_and_backs_off_by_retryability() {
    let mut m = machine();
    started_idle(&mut m);
    m.handle(10, Event::LocalWrite);
    let full = Failure::LocalStore {
        code: "disk_full".into(),
        message: "the disk is full".into(),
        retryable: true,
    };
    let out = m.handle(20, Event::PushDone(Err(full)));
    let status = m.status();
    let error = status.last_error.expect("an error");
    assert_eq!(error.kind, FailureKind::LocalStore);
    assert_eq!(error.code.as_deref(), Some("disk_full"));
    assert!(!error.needs_attention, "a full disk clears by itself");
    assert!(
        error.message.contains("the disk is full"),
        "{}",
        error.message
    );
    assert_eq!(
        status.connectivity,
        Connectivity::Online,
        "says nothing about the server"
    );
    assert_eq!(status.phase, Phase::Backoff);
    let (_, at) = timer(&out).expect("a retry timer");
    assert!(
        at - 20 <= SyncConfig::default().backoff.base_ms,
        "retried like the network"
    );

    let corrupt = Failure::LocalStore {
        code: "corrupt".into(),
        message: "the database file is corrupt".into(),
        retryable: false,
    };
    let (id, at) = timer(&out).expect("timer");
    m.handle(at, Event::TimerFired(id));
    m.handle(at, Event::ProbeDone(Ok(())));
    let out = m.handle(at + 1, Event::PushDone(Err(corrupt)));
    let (_, retry) = timer(&out).expect("a timer");
    assert_eq!(
        retry - (at + 1),
        SyncConfig::default().backoff.cap_ms,
        "a failure that needs someone waits the cap"
    );
    assert!(m.status().last_error.is_some_and(|e| e.needs_attention));
    assert_eq!(
        work(&m.handle(at + 2, Event::LocalWrite)),
        vec![],
        "stalled: writes do not retrigger"
    );
}
