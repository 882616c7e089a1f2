//! The systemd notify and watchdog protocol against a real `NOTIFY_SOCKET` datagram socket.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn ready_watchdog_and_stopping_are_sent() {
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let a = Agent::start_env(
        dir.path(),
        &config_with(dir.path(), ""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "600000"),
        ],
    );
    let mut got: Vec<(Instant, String)> = Vec::new();
    let mut buf = [0u8; 256];
    let recv = |got: &mut Vec<(Instant, String)>, buf: &mut [u8], until: Instant| {
        while Instant::now() < until {
            if let Ok(n) = sock.recv(buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    };
    // Idle for 3 s: the watchdog must keep pinging at about WATCHDOG_USEC / 2.
    recv(&mut got, &mut buf, Instant::now() + Duration::from_secs(3));
    assert_eq!(
        got.first().map(|g| g.1.as_str()),
        Some("READY=1"),
        "{got:?}"
    );
    let pings: Vec<Instant> = got
        .iter()
        .filter(|g| g.1 == "WATCHDOG=1")
        .map(|g| g.0)
        .collect();
    assert!(
        pings.len() >= 6,
        "expected ~10 pings in 3 s at 300 ms, got {}: {got:?}",
        pings.len()
    );
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] < Duration::from_millis(600),
            "gap {:?} reaches the watchdog limit",
            w[1] - w[0]
        );
    }
    // The agent is usable while pinging.
    assert_eq!(a.get("/health").status, 200);
    a.signal(libc::SIGTERM);
    got.clear();
    recv(&mut got, &mut buf, Instant::now() + Duration::from_secs(2));
    assert!(got.iter().any(|g| g.1 == "STOPPING=1"), "{got:?}");
    assert_eq!(a.stop().code(), Some(0));
}

#[test]
fn no_notify_socket_is_fine() {
    let dir = TempDir::new("nonotify");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    assert_eq!(a.get("/ready").status, 200);
    assert_eq!(a.stop().code(), Some(0));
}
