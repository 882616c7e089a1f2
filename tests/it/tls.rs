//! TLS on the uplinks (rustls): MQTT with mutual TLS to a real Mosquitto, HTTPS to a real
//! Pushgateway, and a server whose certificate the agent must not trust.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::mqtt::{assert_complete_in_order, Collector};
use crate::common::services::{mosquitto_with, pushgateway_tls};
use crate::common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, signed by it;
/// plus an unrelated CA.
fn pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other-ca",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "san.ext"), ("client", "client.ext")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
}

#[test]
fn mqtt_over_mutual_tls() {
    let pkidir = TempDir::new("pki");
    pki(pkidir.path());
    let p = |f: &str| pkidir.path().join(f).display().to_string();
    let (tls_port, plain_port) = (free_port(), free_port());
    let _broker = mosquitto_with(
        tls_port,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nlistener {plain_port} 127.0.0.1\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        ),
    );
    // Both listeners up, and the subscription registered before the agent publishes.
    wait_for("plain listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", plain_port))
            .ok()
            .map(|_| ())
    });
    Collector::register(plain_port, "it-tls");
    let sub = Collector::start(plain_port, "it-tls");
    let dir = TempDir::new("tls-agent");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!(
                "[metrics]\nsnapshot_interval_secs = 1\n[sinks.mqtt]\nenabled = true\nport = {tls_port}\ntls = true\ntls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                p("ca.pem"),
                p("client.pem"),
                p("client.key")
            ),
        ),
    );
    a.wait_event("sink_online", Duration::from_secs(15), |e| {
        e["sink"] == "mqtt"
    });
    for _ in 0..5 {
        assert_eq!(
            a.diagnose("plant-7", "press-12", "conveyor belt drifts to one side")
                .status,
            200
        );
    }
    wait_for("records over TLS", Duration::from_secs(20), || {
        (sub.seqs().len() >= 8).then_some(())
    });
    assert_complete_in_order(&sub.seqs());

    // An agent that does not trust the broker's CA never connects, and says why.
    let dir2 = TempDir::new("tls-untrusted");
    let b = Agent::start(
        dir2.path(),
        &config_with(
            dir2.path(),
            &format!("[sinks.mqtt]\nenabled = true\nport = {tls_port}\ntls = true\ntls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n", p("other-ca.pem"), p("client.pem"), p("client.key")),
        ),
    );
    let ev = b.wait_event("sink_offline", Duration::from_secs(15), |e| {
        e["sink"] == "mqtt"
    });
    let msg = ev["error"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("cert") || msg.contains("tls"), "{msg}");
    assert_eq!(
        b.metric("copilot_edge_sink_up", &["sink=\"mqtt\""]),
        Some(0.0)
    );
    assert_eq!(
        b.diagnose("plant-7", "press-12", "pump cavitation noise")
            .status,
        200
    );
    sub.stop();
}

#[test]
fn pushgateway_over_https() {
    let pkidir = TempDir::new("pki-pgw");
    pki(pkidir.path());
    let p = |f: &str| pkidir.path().join(f).display().to_string();
    let port = free_port();
    let _pg = pushgateway_tls(
        port,
        &pkidir.path().join("server.pem"),
        &pkidir.path().join("server.key"),
    );
    let dir = TempDir::new("pgw-https");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[metrics]\nsnapshot_interval_secs = 1\n[sinks.pushgateway]\nenabled = true\nurl = \"https://127.0.0.1:{port}\"\ntls_ca_file = {:?}\n", p("ca.pem")),
        ),
    );
    assert_eq!(
        a.diagnose("plant-7", "press-12", "conveyor belt drifts to one side")
            .status,
        200
    );
    a.wait_event("sink_online", Duration::from_secs(15), |e| {
        e["sink"] == "pushgateway"
    });
    // Read back over TLS with curl, trusting the same CA.
    wait_for(
        "the request's counter pushed over https",
        Duration::from_secs(15),
        || {
            let out = Command::new("curl")
                .args([
                    "-sf",
                    "--cacert",
                    &p("ca.pem"),
                    &format!("https://127.0.0.1:{port}/metrics"),
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            (metric_in(
                &text,
                "copilot_requests_total",
                &["gateway_id=\"gw-test\"", "status_code=\"200\""],
            ) == Some(1.0))
            .then_some(())
        },
    );
    // A server certificate from a CA the agent does not trust: a TLS error, not a push.
    let dir2 = TempDir::new("pgw-plain");
    let b = Agent::start(dir2.path(), &config_with(dir2.path(), &format!("[sinks.pushgateway]\nenabled = true\nurl = \"https://127.0.0.1:{port}\"\ntls_ca_file = {:?}\n", p("other-ca.pem"))));
    b.wait_event("sink_offline", Duration::from_secs(15), |e| {
        e["sink"] == "pushgateway" && e["error"].as_str().unwrap_or("").contains("tls")
    });
}
