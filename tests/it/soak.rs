//! The soak run (`tests/soak`; ignored by `cargo test`, not part of CI): mixed traffic for
//! `SOAK_MINUTES` (default 30) against the real binary, with the real Mosquitto broker going
//! away for half of every minute and a real (tmpfs) disk below the spool's free-space floor for
//! half of the time. It samples memory, file descriptors and threads, and at the end checks at
//! the broker that every record the spool accepted arrived, in order, with duplicates only
//! where a connection was lost before its acknowledgement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::mqtt::{assert_complete_in_order, Collector, Message};
use crate::common::services::mosquitto_on;
use crate::common::*;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: u64,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    cpu_s: f64,
}

fn sample(pid: u32, t0: Instant) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        at_s: t0.elapsed().as_secs(),
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: field("Threads:"),
        cpu_s: cpu_seconds(pid),
    }
}

/// Feedback, bad input and metrics scrapes besides the diagnose traffic.
fn side_traffic(a_addr: std::net::SocketAddr, stop: Arc<AtomicBool>, bad: Arc<AtomicU64>) {
    let auth = format!("Bearer {TOKEN}");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let r = request(
            a_addr,
            "POST",
            "/v1/diagnose",
            &[("Authorization", &auth)],
            b"{\"plant_id\": 7}",
        );
        assert!(r.status < 500, "bad input got {}", r.status);
        bad.fetch_add(1, Ordering::Relaxed);
        if i % 5 == 0 {
            let _ = request(a_addr, "GET", "/metrics", &[], b"");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "the soak run: tests/soak (30 minutes by default)"]
fn soak() {
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let fs = TmpFs::mount("soak", "96m");
    let floor: u64 = 32 << 20;
    let port = free_port();
    let broker_data = TempDir::new("soak-broker");
    let mut broker = Some(mosquitto_on(port, broker_data.path()));
    Collector::register(port, "soak");
    let a = Agent::start(
        fs.path(),
        &config_with(
            fs.path(),
            &format!(
                "[metrics]\nsnapshot_interval_secs = 1\n\n[spool]\nmin_free_bytes = {floor}\nmax_bytes = 33554432\nsegment_bytes = 1048576\n\n[logging]\nmax_file_bytes = 1048576\nmax_files = 4\n\n[sinks.mqtt]\nenabled = true\nport = {port}\nbacklog_records_per_sec = 2000\n"
            ),
        ),
    );
    let received: Arc<Mutex<Vec<Message>>> = Arc::default();
    let mut sub = Some(Collector::start(port, "soak"));
    let traffic = Traffic::start(a.addr, "soak");
    let (stop, bad) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let side = {
        let (s, b, addr) = (stop.clone(), bad.clone(), a.addr);
        std::thread::spawn(move || side_traffic(addr, s, b))
    };

    let t0 = Instant::now();
    let mut samples = vec![sample(a.child.id(), t0)];
    let mut restarts = 0u64;
    let mut filler: Option<std::path::PathBuf> = None;
    let (mut floor_secs, mut last_tick) = (0u64, Instant::now());
    let end = Duration::from_secs(minutes * 60);
    while t0.elapsed() < end {
        std::thread::sleep(Duration::from_secs(1));
        let s = t0.elapsed().as_secs();
        // The broker: up for the first half of every minute, down for the second.
        let want_up = s % 60 < 30;
        if want_up && broker.is_none() {
            broker = Some(mosquitto_on(port, broker_data.path()));
            sub = Some(Collector::start(port, "soak"));
            restarts += 1;
        } else if !want_up && broker.is_some() {
            if let Some(c) = sub.take() {
                // Disconnect first, then read: a message acknowledged by the client must be in
                // what we keep.
                let got = c.messages.clone();
                c.stop();
                std::thread::sleep(Duration::from_millis(300));
                received
                    .lock()
                    .unwrap()
                    .extend(got.lock().unwrap().drain(..));
            }
            if let Some(mut b) = broker.take() {
                b.stop();
            }
        }
        // The disk: below the floor in odd minutes, shifted by 15 s against the broker.
        let want_full = (s + 15) / 60 % 2 == 1;
        if want_full && filler.is_none() {
            let free = fs.free();
            filler = Some(fs.fill("filler", free.saturating_sub(floor / 2)));
        } else if !want_full {
            if let Some(f) = filler.take() {
                std::fs::remove_file(f).unwrap();
            }
        }
        if filler.is_some() {
            floor_secs += last_tick.elapsed().as_secs().max(1);
        }
        last_tick = Instant::now();
        if s % 10 == 0 {
            samples.push(sample(a.child.id(), t0));
        }
    }

    // Wind down: traffic off, disk freed, broker up until everything is delivered.
    stop.store(true, Ordering::Relaxed);
    side.join().unwrap();
    let diagnosed = traffic.stop();
    if let Some(f) = filler.take() {
        std::fs::remove_file(f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    let upto = appended(&a);
    let _broker = match broker.take() {
        Some(b) => b,
        None => {
            let b = mosquitto_on(port, broker_data.path());
            sub = Some(Collector::start(port, "soak"));
            b
        }
    };
    let collector = sub.take().unwrap();
    let already: Vec<Message> = received.lock().unwrap().clone();
    wait_for(
        "every spooled record at the broker",
        Duration::from_secs(300),
        || {
            let mut seqs: Vec<u64> = already
                .iter()
                .chain(collector.snapshot().iter())
                .filter_map(Message::seq)
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            (seqs.len() as u64 >= upto).then_some(())
        },
    );
    let all: Vec<u64> = already
        .iter()
        .chain(collector.snapshot().iter())
        .filter_map(Message::seq)
        .collect();
    let max = assert_complete_in_order(&all);
    let unique = {
        let mut u = all.clone();
        u.sort_unstable();
        u.dedup();
        u.len()
    };
    let duplicates = all.len() - unique;
    let metric = |name: &str, labels: &[&str]| a.metric(name, labels).unwrap_or(0.0);
    let dropped_floor = metric(
        "copilot_edge_spool_dropped_records_total",
        &["reason=\"disk_floor\""],
    );
    let dropped_bound = metric(
        "copilot_edge_spool_dropped_records_total",
        &["reason=\"max_bytes\""],
    );
    let dropped_queue = metric("copilot_edge_log_events_dropped_total", &[]);
    let last = sample(a.child.id(), t0);
    samples.push(last);
    let floor_events = a
        .events()
        .iter()
        .filter(|e| e["event"] == "spool_disk_floor")
        .count();
    assert_eq!(a.stop().code(), Some(0));

    // Levelling off: the last third against the middle third.
    let third = samples.len() / 3;
    let peak = |v: &[Sample], f: fn(&Sample) -> u64| v.iter().map(f).max().unwrap_or(0);
    let (mid, tail) = (&samples[third..2 * third], &samples[2 * third..]);
    let rss = |s: &Sample| s.rss_kib;
    let fds = |s: &Sample| s.fds as u64;
    let thr = |s: &Sample| s.threads;
    println!("\n## soak: {minutes} min, broker down 30 s of every minute ({restarts} restarts), disk below the floor {floor_secs} s");
    println!("| at (s) | RSS (MiB) | fds | threads | CPU (s) |\n|---|---|---|---|---|");
    let step = (samples.len() / 12).max(1);
    for s in samples.iter().step_by(step).chain(std::iter::once(&last)) {
        println!(
            "| {} | {:.1} | {} | {} | {:.1} |",
            s.at_s,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads,
            s.cpu_s
        );
    }
    println!("\n| figure | value |\n|---|---|");
    println!("| diagnose answered (200) | {diagnosed} |");
    println!(
        "| bad requests answered 4xx | {} |",
        bad.load(Ordering::Relaxed)
    );
    println!("| records spooled and delivered (seq 1..) | {max} |");
    println!("| duplicates delivered (acks lost at a broker stop) | {duplicates} |");
    println!("| records refused below the floor (counted, no seq) | {dropped_floor} |");
    println!("| records dropped by the size bound | {dropped_bound} |");
    println!("| log events dropped at the spool queue | {dropped_queue} |");
    println!("| spool_disk_floor log lines | {floor_events} |");
    println!(
        "| peak RSS middle third / last third (MiB) | {:.1} / {:.1} |",
        peak(mid, rss) as f64 / 1024.0,
        peak(tail, rss) as f64 / 1024.0
    );
    println!(
        "| peak fds middle / last | {} / {} |",
        peak(mid, fds),
        peak(tail, fds)
    );
    println!(
        "| threads middle / last | {} / {} |",
        peak(mid, thr),
        peak(tail, thr)
    );

    assert!(diagnosed > minutes * 60, "only {diagnosed} answers");
    assert_eq!(
        dropped_bound, 0.0,
        "the size bound should not be reached in this run"
    );
    assert!(max >= upto, "delivered up to {max}, spooled {upto}");
    // Duplicates only from acknowledgements lost when the broker stopped: at most one
    // in-flight window per stop.
    assert!(
        duplicates as u64 <= (restarts + 1) * 64,
        "{duplicates} duplicates for {restarts} broker restarts"
    );
    // A floor report when the state changes, then at most one a minute.
    assert!(
        floor_events as u64 <= 2 * (minutes + 1),
        "{floor_events} spool_disk_floor lines in {minutes} min"
    );
    if minutes >= 6 {
        assert!(
            peak(tail, rss) <= peak(mid, rss) + peak(mid, rss) / 10 + 2048,
            "memory still growing: {samples:?}"
        );
        assert!(
            peak(tail, fds) <= peak(mid, fds) + 8,
            "fds growing: {samples:?}"
        );
        assert!(
            peak(tail, thr) <= peak(mid, thr) + 2,
            "threads growing: {samples:?}"
        );
    }
}
