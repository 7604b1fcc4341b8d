//! `fault-proxy UPSTREAM`: the test kit's [`FaultProxy`] as a process, for tests written in
//! other languages (the Node suites in `compat/test/`).
//!
//! It starts a proxy on `127.0.0.1:0` forwarding to `UPSTREAM` (a loopback `HOST:PORT`),
//! prints the proxy's address (`127.0.0.1:PORT`) as the first line on stdout, then reads one
//! command per line from stdin and answers each with one line: `ok` (or `ok` followed by
//! the figures asked for), or `error: ...` for a command it does not understand (the proxy
//! keeps running). The proxy stops, closing every connection, when stdin closes, so a test
//! runner that dies takes its proxy with it.
//!
//! Commands (see [`FaultProxy`] for what each fault does to a connection):
//!
//! | command | effect |
//! |---|---|
//! | `cut N` | cut the next `N` responses after the server started answering them (`cut 0`: none) |
//! | `cut-after K` | a cut response still forwards its first `K` bytes (default 0) |
//! | `offline on` / `offline off` | close the listening socket (connects are refused) / listen again |
//! | `refuse on` / `refuse off` | accept new connections and close them at once / forward again |
//! | `kill` | close every live connection now; answers `ok N` with how many were closed |
//! | `delay MS [JITTER_MS]` | add latency before forwarding each chunk, both directions |
//! | `upstream HOST:PORT` | forward new connections to another loopback address |
//! | `stats` | `ok accepted=… refused=… active=… closed=… responses_cut=… connections_killed=…` |
//!
//! ```text
//! $ fault-proxy 127.0.0.1:8787
//! 127.0.0.1:40123
//! cut 1
//! ok
//! stats
//! ok accepted=3 refused=0 active=1 closed=2 responses_cut=1 connections_killed=0
//! ```

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tidesync_testkit::{CutMode, FaultProxy};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), None) = (args.next(), args.next()) else {
        eprintln!("usage: fault-proxy UPSTREAM (a loopback HOST:PORT, e.g. 127.0.0.1:8787)");
        return ExitCode::from(2);
    };
    let upstream: SocketAddr = match upstream.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: UPSTREAM {upstream:?} is not an IP:PORT address: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match FaultProxy::start(upstream) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("error: cannot start the proxy in front of {upstream}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve_commands(&proxy, io::stdin().lock(), io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: fault-proxy control channel: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the proxy's address, then answers commands until `input` ends.
fn serve_commands(proxy: &FaultProxy, input: impl BufRead, mut out: impl Write) -> io::Result<()> {
    writeln!(out, "{}", proxy.addr())?;
    out.flush()?;
    for line in input.lines() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let answer = match run(proxy, line) {
            Ok(answer) => answer,
            Err(e) => {
                format!("error: {e} (in {line:?}; see the commands in fault-proxy's doc comment)")
            }
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// Carries out one command; the answer line on success.
fn run(proxy: &FaultProxy, line: &str) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["cut", n] => {
            let n: u32 = number(n)?;
            proxy.set_cut(if n == 0 {
                CutMode::Off
            } else {
                CutMode::Next(n)
            });
        }
        ["cut-after", k] => proxy.cut_after_bytes(number(k)?),
        ["offline", on] => proxy.offline(switch(on)?),
        ["refuse", on] => proxy.refuse(switch(on)?),
        ["kill"] => return Ok(format!("ok {}", proxy.kill_all())),
        ["delay", ms] => proxy.set_delay(millis(ms)?, Duration::ZERO),
        ["delay", ms, jitter] => proxy.set_delay(millis(ms)?, millis(jitter)?),
        ["upstream", addr] => {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("{addr:?} is not an IP:PORT address: {e}"))?;
            proxy.set_upstream(addr).map_err(|e| e.to_string())?;
        }
        ["stats"] => {
            let s = proxy.stats();
            return Ok(format!(
                "ok accepted={} refused={} active={} closed={} responses_cut={} connections_killed={}",
                s.accepted, s.refused, s.active, s.closed, s.responses_cut, s.connections_killed
            ));
        }
        _ => return Err("unknown command".to_owned()),
    }
    Ok("ok".to_owned())
}

fn number<T: std::str::FromStr>(word: &str) -> Result<T, String> {
    word.parse()
        .map_err(|_| format!("{word:?} is not a non-negative whole number"))
}

fn millis(word: &str) -> Result<Duration, String> {
    number(word).map(Duration::from_millis)
}

fn switch(word: &str) -> Result<bool, String> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{word:?} is neither on nor off")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn commands_are_answered_one_line_each_and_bad_ones_explain_themselves() {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let proxy = FaultProxy::start(upstream.local_addr().unwrap()).unwrap();
        let input = "cut 2\n\nstats\ndelay 5 1\noffline on\noffline off\nkill\ncut x\nfly\n";
        let mut out = Vec::new();
        serve_commands(&proxy, input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], proxy.addr().to_string());
        assert_eq!(lines[1], "ok");
        assert!(lines[2].starts_with("ok accepted=0 "), "{}", lines[2]);
        assert_eq!(lines[3..6], ["ok", "ok", "ok"]);
        assert_eq!(lines[6], "ok 0");
        assert!(
            lines[7].starts_with("error: \"x\" is not a non-negative whole number"),
            "{}",
            lines[7]
        );
        assert!(
            lines[8].starts_with("error: unknown command"),
            "{}",
            lines[8]
        );
        assert_eq!(lines.len(), 9);
        assert_eq!(proxy.faults().cut, CutMode::Next(2));
        assert_eq!(proxy.faults().delay, Duration::from_millis(5));
    }
}
