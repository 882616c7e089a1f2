//! The service side of knowledge bundles: which knowledge the agent starts on, and the task that
//! takes new bundles from the central source (HTTP with ETag, a retained MQTT message), checks
//! them (signature, target, smoke questions) and swaps the engine in without dropping a
//! request, keeping the last good bundle on disk. It also follows `kb rollback` (another
//! process replacing `current.kb`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Bundle, BundleError, Store, CURRENT};
use crate::config::Config;
use crate::diagnose::{DiagnoseEngine, EngineSettings, Knowledge};
use crate::http::AppState;

/// The `result` values of `copilot_edge_knowledge_checks_total`.
pub const RESULTS: [&str; 9] = [
    "not_saved",
    "unchanged",
    "applied",
    "not_targeted",
    "fetch_failed",
    "bad_signature",
    "broken",
    "smoke_failed",
    "rolled_back",
];
/// How often the task looks for a `kb rollback` by another process.
const ROLLBACK_POLL: Duration = Duration::from_secs(1);
/// An HTTP check gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the status page and `/metrics` say about the running knowledge base.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KbView {
    /// The bundle's version; `builtin` or `directory` for knowledge not from a bundle.
    pub version: String,
    /// The first 12 hex digits of the bundle's content hash; empty without a bundle.
    pub hash: String,
    /// `embedded`, `directory`, `http` or `mqtt`.
    pub source: String,
    /// When the bundle was packed (Unix ms); `None` without a bundle.
    pub created_ms: Option<i64>,
    /// When the source last answered (Unix ms).
    pub last_check_ms: Option<i64>,
    /// When the running knowledge base last changed (Unix ms).
    pub last_change_ms: i64,
    /// Why the last bundle offered was refused or the last check failed; cleared by a success.
    pub last_error: Option<String>,
    /// The full content hash (`sha256:…`), to compare offers against.
    #[serde(skip)]
    pub content_hash: String,
    /// Whether `last_error` says the source was not reached (the next answer clears it) rather
    /// than that a bundle was refused (which stays until a bundle is taken or the source changes).
    #[serde(skip)]
    pub error_is_fetch: bool,
}

/// The running knowledge base's view, shared by the rollout task and the status page, and the
/// lock every change of the running knowledge base takes (a bundle offered over HTTP or MQTT, a
/// rollback, a SIGHUP reload), so that two never interleave.
#[derive(Debug, Default)]
pub struct KbState(Mutex<KbView>, tokio::sync::Mutex<()>);

impl KbState {
    /// Held while the running knowledge base is rebuilt and swapped.
    pub async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.1.lock().await
    }

    /// A copy of the view.
    pub fn view(&self) -> KbView {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut KbView)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The knowledge the agent serves: the last good bundle in `kb.dir` when there is one that
/// still verifies against the configured keys, else `paths.knowledge_dir` or the built-in set.
/// A bundle that no longer loads is logged (`kb_rejected`) and not used.
pub fn startup_knowledge(cfg: &Config) -> Result<(Knowledge, KbView), Vec<crate::config::Problem>> {
    let store = Store::new(&cfg.kb.dir);
    match store.read(CURRENT) {
        Ok(Some(bytes)) => {
            let source = store.state().current_source;
            match Bundle::parse(&bytes).and_then(|b| {
                b.verify(&cfg.kb.public_keys)?;
                Ok((b.knowledge()?, b))
            }) {
                Ok((k, b)) => return Ok((k, view_of(&b, &source))),
                Err(e) => {
                    warn!(path = %store.dir().join(CURRENT).display(), reason = e.kind(), detail = %e, "kb_rejected")
                }
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "kb_rejected"),
    }
    let k = crate::app::load_knowledge(cfg)?;
    let (version, source) = match cfg.paths.knowledge_dir {
        Some(_) => ("directory", "directory"),
        None => ("builtin", "embedded"),
    };
    Ok((
        k,
        KbView {
            version: version.into(),
            source: source.into(),
            ..KbView::default()
        },
    ))
}

fn view_of(b: &Bundle, source: &str) -> KbView {
    KbView {
        version: b.manifest.version.clone(),
        hash: b.short_hash().to_string(),
        source: source.to_string(),
        created_ms: Some(b.manifest.created_unix_ms),
        content_hash: b.manifest.content_hash.clone(),
        ..KbView::default()
    }
}

/// Publishes a new running knowledge base in the metrics and the shared view (its check
/// times and last error carry over).
pub fn publish(state: &AppState, mut view: KbView) {
    let m = &state.metrics.kb;
    m.info.reset();
    m.info
        .with_label_values(&[&view.version, &view.hash, &view.source])
        .set(1.0);
    m.created.set(view.created_ms.unwrap_or(0) as f64 / 1000.0);
    view.last_change_ms = crate::clock::now_ms();
    m.last_change.set(view.last_change_ms as f64 / 1000.0);
    state.kb.update(|v| {
        view.last_check_ms = v.last_check_ms;
        view.last_error = v.last_error.take();
        view.error_is_fetch = v.error_is_fetch;
        *v = view;
    });
}

/// The rollout task: takes bundles from the configured sources and follows `kb rollback`.
pub struct Rollout {
    cfg: Arc<Config>,
    state: Arc<AppState>,
    store: Store,
    settings: EngineSettings,
    /// `current.kb`'s fingerprint after this process last wrote or read it.
    seen: Mutex<Option<(u64, i64, i64, u64)>>,
    /// The content hash last skipped as rolled back (logged once).
    last_skipped: Mutex<String>,
}

impl Rollout {
    /// The task for `cfg` (it does nothing but follow rollbacks when no source is configured).
    pub fn new(cfg: Arc<Config>, state: Arc<AppState>, settings: EngineSettings) -> Arc<Rollout> {
        let store = Store::new(&cfg.kb.dir);
        let seen = Mutex::new(store.fingerprint());
        Arc::new(Rollout {
            cfg,
            state,
            store,
            settings,
            seen,
            last_skipped: Mutex::default(),
        })
    }

    /// Runs the sources and the rollback watch until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // Every result exists from 0, so a first refusal is an increase, not a new series.
        for r in RESULTS {
            self.state.metrics.kb.checks.with_label_values(&[r]);
        }
        let mut tasks = tokio::task::JoinSet::new();
        if self.cfg.kb.http.is_some() {
            tasks.spawn(self.clone().poll_http(stop.clone()));
        }
        if let (Some(_), Some(_)) = (&self.cfg.kb.mqtt_topic, &self.cfg.mqtt) {
            tasks.spawn(self.clone().follow_mqtt(stop.clone()));
        }
        tasks.spawn(self.clone().watch_rollback(stop.clone()));
        while tasks.join_next().await.is_some() {}
    }

    fn count(&self, result: &str) {
        self.state
            .metrics
            .kb
            .checks
            .with_label_values(&[result])
            .inc();
    }

    fn checked(&self, source: &str) {
        let now = crate::clock::now_ms();
        self.state
            .metrics
            .kb
            .last_check
            .with_label_values(&[source])
            .set(now as f64 / 1000.0);
        self.state.kb.update(|v| {
            v.last_check_ms = Some(now);
            if v.error_is_fetch {
                v.last_error = None;
                v.error_is_fetch = false;
            }
        });
    }

    fn failed(&self, result: &str, source: &str, detail: String) {
        self.count(result);
        warn!(reason = result, source, detail = %detail, kept = %self.state.kb.view().version, "kb_rejected");
        self.state.kb.update(|v| {
            v.last_error = Some(detail);
            v.error_is_fetch = result == "fetch_failed";
        });
    }

    /// Counts and reports a refused bundle; its `result`.
    fn refuse(&self, e: BundleError, source: &str) -> &'static str {
        let r = e.kind();
        self.failed(r, source, e.to_string());
        r
    }

    /// Takes a bundle's bytes from `source`; returns the `result` counted.
    pub async fn offer(&self, bytes: Bytes, source: &'static str) -> &'static str {
        let _one = self.state.kb.changing().await;
        // Unpacking and hashing up to the size limits is CPU work: off the async workers.
        let raw = bytes.clone();
        let bundle = match blocking("reading the bundle", move || Bundle::parse(&raw)).await {
            Ok(b) => b,
            Err(e) => return self.refuse(e, source),
        };
        let running = self.state.kb.view();
        let hash = &bundle.manifest.content_hash;
        // The same bundle (a re-pack of the same files with a new version or time is not: it
        // is taken, so the version the fleet sees is the one published).
        if *hash == running.content_hash
            && running.version == bundle.manifest.version
            && running.created_ms == Some(bundle.manifest.created_unix_ms)
        {
            self.count("unchanged");
            self.state.kb.update(|v| v.last_error = None);
            return "unchanged";
        }
        if self.store.state().rolled_back.contains(hash) {
            self.count("rolled_back");
            // Once per bundle, not per poll (a source without ETags sends it every time).
            let mut last = self.last_skipped.lock().unwrap_or_else(|e| e.into_inner());
            if *last != *hash {
                info!(source, version = %bundle.manifest.version, hash = bundle.short_hash(), "kb_skipped_rolled_back");
                *last = hash.clone();
            }
            return "rolled_back";
        }
        if let Err(e) = bundle.verify(&self.cfg.kb.public_keys) {
            return self.refuse(e, source);
        }
        let id = &self.cfg.identity;
        if let Some(t) = &bundle.manifest.target {
            if !t.selects(&id.site_plant_id, &id.gateway_id) {
                self.count("not_targeted");
                info!(source, version = %bundle.manifest.version, "kb_not_targeted");
                return "not_targeted";
            }
        }
        let t0 = std::time::Instant::now();
        let settings = self.settings;
        let built = blocking("building the engine", move || {
            let engine = DiagnoseEngine::build(bundle.knowledge()?, settings);
            super::bundle::smoke(&engine, &bundle.manifest.smoke)?;
            Ok((engine, bundle))
        })
        .await;
        let (engine, bundle) = match built {
            Ok(built) => built,
            Err(e) => return self.refuse(e, source),
        };
        // Kept on disk before it serves, so a restart right after serves it too; a bundle that
        // cannot be kept is not served (a restart would silently go back).
        if let Err(e) = self.store.install(&bytes, source) {
            self.failed("not_saved", source, format!("keeping the bundle: {e}"));
            return "not_saved";
        }
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = self.store.fingerprint();
        self.state.engine.replace(engine);
        publish(&self.state, view_of(&bundle, source));
        self.state.kb.update(|v| v.last_error = None);
        self.count("applied");
        info!(
            source,
            version = %bundle.manifest.version,
            hash = bundle.short_hash(),
            documents = self.state.engine.get().len(),
            ms = t0.elapsed().as_millis() as u64,
            "kb_applied"
        );
        crate::memtrim::release_freed_memory();
        "applied"
    }

    /// Polls `kb.url` with If-None-Match; backs off on failures.
    async fn poll_http(self: Arc<Self>, stop: CancellationToken) {
        let Some((ep, path, url)) = self.cfg.kb.http.clone() else {
            return;
        };
        let interval = self.cfg.kb.poll_interval;
        let mut backoff = crate::sinks::Backoff::new(Duration::from_secs(1), interval * 4);
        let mut etag: Option<String> = None;
        let mut seen = self.seen_fingerprint();
        loop {
            // After a rollback, fetch the whole bundle again: the source's answer is compared
            // with the rolled-back hash, not waved through as "not modified".
            let fp = self.seen_fingerprint();
            if fp != seen {
                etag = None;
                seen = fp;
            }
            let mut req = hyper::Request::get(path.as_str())
                .header(hyper::header::HOST, ep.authority.as_str())
                .header(
                    hyper::header::USER_AGENT,
                    concat!("copilot-edge/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(t) = &etag {
                req = req.header(hyper::header::IF_NONE_MATCH, t.as_str());
            }
            let req = req.body(Full::new(Bytes::new())).expect("valid request");
            let delay = match crate::httpc::send_with_headers(
                &ep,
                req,
                FETCH_TIMEOUT,
                super::bundle::MAX_BUNDLE_BYTES,
            )
            .await
            {
                Ok((304, _, _)) => {
                    self.checked("http");
                    self.count("unchanged");
                    backoff.reset();
                    jitter(interval)
                }
                Ok((200, headers, body)) => {
                    self.checked("http");
                    let result = self.offer(body, "http").await;
                    // A refused bundle is not fetched again until the source changes it; one
                    // that could not be kept (a full disk) is, at the next poll.
                    etag = (result != "not_saved")
                        .then(|| headers.get(hyper::header::ETAG))
                        .flatten()
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    // What this poll installed is not a change by someone else.
                    seen = self.seen_fingerprint();
                    backoff.reset();
                    jitter(interval)
                }
                Ok((status, _, _)) => {
                    self.failed("fetch_failed", "http", format!("{url}: HTTP {status}"));
                    backoff.next_delay().min(interval)
                }
                Err(e) => {
                    self.failed("fetch_failed", "http", format!("{url}: {e}"));
                    backoff.next_delay().min(interval)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn seen_fingerprint(&self) -> Option<(u64, i64, i64, u64)> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to `kb.mqtt_topic` on the sink's broker with a client of its own; the
    /// retained message arrives at every (re)connect, so it is compared by content hash.
    async fn follow_mqtt(self: Arc<Self>, stop: CancellationToken) {
        use rumqttc::{AsyncClient, Event, Packet, QoS};
        let (Some(topic), Some(mq)) = (self.cfg.kb.mqtt_topic.clone(), self.cfg.mqtt.clone())
        else {
            return;
        };
        let mut o = crate::sinks::mqtt::client_options(&mq, &format!("{}-kb", mq.client_id));
        // Incoming packets as large as a bundle may be (outgoing ones are tiny).
        o.set_max_packet_size(super::bundle::MAX_BUNDLE_BYTES, mq.max_packet_bytes);
        let (client, mut events) = AsyncClient::new(o, 4);
        let mut backoff =
            crate::sinks::Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = client.try_disconnect();
                    return;
                }
                ev = events.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    if let Err(e) = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await {
                        self.failed("fetch_failed", "mqtt", format!("subscribe {topic}: {e}"));
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        // A broker ACL that refuses the topic: the source is not reached.
                        self.failed(
                            "fetch_failed",
                            "mqtt",
                            format!("{}:{}: subscription to {topic} refused", mq.host, mq.port),
                        );
                    } else {
                        self.checked("mqtt");
                    }
                }
                Ok(Event::Incoming(Packet::PingResp)) => self.checked("mqtt"),
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                    self.checked("mqtt");
                    if !p.payload.is_empty() {
                        self.offer(p.payload, "mqtt").await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.failed(
                        "fetch_failed",
                        "mqtt",
                        format!("{}:{}: {e}", mq.host, mq.port),
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// Follows `kb rollback`: when `current.kb` changes under the agent, serve it.
    async fn watch_rollback(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(ROLLBACK_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let fp = self.store.fingerprint();
            if fp.is_none() || fp == self.seen_fingerprint() {
                continue;
            }
            let _one = self.state.kb.changing().await;
            let fp = self.store.fingerprint();
            if fp == self.seen_fingerprint() {
                continue; // an offer that held the lock wrote it
            }
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = fp;
            let cfg = self.cfg.clone();
            let settings = self.settings;
            let built = tokio::task::spawn_blocking(move || {
                startup_knowledge(&cfg).map(|(k, v)| (DiagnoseEngine::build(k, settings), v))
            })
            .await;
            match built {
                Ok(Ok((engine, view)))
                    if view.content_hash != self.state.kb.view().content_hash =>
                {
                    self.state.engine.replace(engine);
                    info!(version = %view.version, hash = %view.hash, source = %view.source, "kb_rolled_back");
                    publish(&self.state, view);
                }
                Ok(Ok(_)) => {}
                Ok(Err(p)) => warn!(error = %crate::app::problems_text(&p), "kb_rejected"),
                Err(e) => warn!(error = %e, "kb_rejected"),
            }
        }
    }
}

/// Runs `f` on the blocking pool; a task that did not finish (a panic) is a broken bundle.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, BundleError> + Send + 'static,
) -> Result<T, BundleError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(BundleError::Broken(format!("{what}: {e}"))))
}

/// `interval` ± 10 %, so a fleet does not poll in step.
fn jitter(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let f = 0.9 + 0.2 * f64::from(nanos % 1000) / 1000.0;
    interval.mul_f64(f)
}
