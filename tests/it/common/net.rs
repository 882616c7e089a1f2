//! The few helpers every test harness needs — `tests/it`, the benches (`tests/benches/replay.rs`)
//! and the fleet simulator (`tests/fleet.d/sim.rs`) include this one file (`#[path]`), so a free
//! port and an installed program are found one way.

use std::path::{Path, PathBuf};

/// A free loopback port (bound then released; fine for services started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of an installed program (`$PATH`, then /usr/bin, /usr/sbin, /usr/local/bin);
/// panics naming `tests/run`, which installs what the tests need.
pub fn need(bin: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
    ]) {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` is not installed: run tests/run, which installs the Debian packages the tests need");
}
