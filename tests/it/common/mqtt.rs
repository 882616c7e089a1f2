//! An MQTT subscriber for tests (rumqttc, persistent session), collecting every message the
//! agent publishes, and helpers to read the sequence numbers out of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::wait_for;

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload, decompressed when it is gzip (`compression = "gzip"`).
    pub fn plain(&self) -> Vec<u8> {
        if self.payload.starts_with(&[0x1f, 0x8b]) {
            copilot_edge::compress::gunzip(&self.payload, 64 << 20).expect("valid gzip payload")
        } else {
            self.payload.clone()
        }
    }

    /// The record sequence number: from the `# copilot_edge_record seq=N` header of Prometheus
    /// payloads, or the `seq` field of JSON payloads. None for status messages.
    pub fn seq(&self) -> Option<u64> {
        let plain = self.plain();
        let text = String::from_utf8_lossy(&plain);
        if let Some(rest) = text.strip_prefix("# copilot_edge_record seq=") {
            return rest.split_whitespace().next()?.parse().ok();
        }
        let v: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        v["seq"].as_u64()
    }
}

/// A subscriber to `copilot/#` with a persistent session (QoS 1), so messages published while
/// it is away are queued by the broker.
pub struct Collector {
    pub messages: Arc<Mutex<Vec<Message>>>,
    client: Client,
}

fn options(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(64 << 20, 64 << 20);
    o
}

impl Collector {
    /// Registers the persistent session and subscription, then disconnects.
    pub fn register(port: u16, id: &str) {
        let (client, mut conn) = Client::new(options(port, id), 10);
        client.subscribe("copilot/#", QoS::AtLeastOnce).unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("register subscriber: {e}"),
            }
        }
        client.disconnect().unwrap();
        for ev in conn.iter() {
            if ev.is_err() {
                break;
            }
        }
    }

    /// Connects (resuming the session) and collects in a background thread.
    pub fn start(port: u16, id: &str) -> Collector {
        let (client, mut conn) = Client::new(options(port, id), 100);
        client.subscribe("copilot/#", QoS::AtLeastOnce).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m2 = messages.clone();
        std::thread::spawn(move || {
            let mut connected = false;
            let mut attempts = 0;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                    Ok(Event::Incoming(Packet::Publish(p))) => m2.lock().unwrap().push(Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    }),
                    Ok(_) => {}
                    // Not up yet (the listener may still be starting): try again for a while.
                    Err(_) if !connected && attempts < 100 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // The broker went away or we disconnected: stop collecting.
                    Err(_) => return,
                }
            }
        });
        Collector { messages, client }
    }

    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Sequence numbers in arrival order (status messages left out).
    pub fn seqs(&self) -> Vec<u64> {
        self.snapshot().iter().filter_map(Message::seq).collect()
    }

    /// Waits until every sequence number 1..=upto has arrived.
    pub fn wait_all(&self, upto: u64, timeout: Duration) {
        wait_for(
            &format!("seqs 1..={upto} at the subscriber"),
            timeout,
            || {
                let mut s = self.seqs();
                s.sort_unstable();
                s.dedup();
                (s.len() as u64 >= upto && s[..upto as usize] == (1..=upto).collect::<Vec<_>>()[..])
                    .then_some(())
            },
        );
    }

    pub fn stop(self) {
        let _ = self.client.disconnect();
    }
}

/// Asserts that `seqs` (arrival order, duplicates allowed) is 1..=max with no gap, and that
/// first arrivals are in increasing order.
pub fn assert_complete_in_order(seqs: &[u64]) -> u64 {
    assert!(!seqs.is_empty(), "no records arrived");
    let mut seen = std::collections::BTreeSet::new();
    let mut firsts = Vec::new();
    for s in seqs {
        if seen.insert(*s) {
            firsts.push(*s);
        }
    }
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "records arrived out of order: {firsts:?}"
    );
    let max = *seen.iter().next_back().unwrap();
    let missing: Vec<u64> = (1..=max).filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "missing sequence numbers {missing:?} (max {max})"
    );
    max
}
