//! Hot-path micro-benchmarks (`cargo bench --bench hot_paths`; harness = false, no criterion).
//!
//! Each operation gets a warm-up, then timed samples until its time budget is spent; an
//! operation faster than ~10 µs is timed in batches (the per-op figure is batch time / batch
//! size). The table gives the median and p99 per operation:
//!
//! - retrieval: `DiagnoseEngine::diagnose` on the embedded sample knowledge base and on 10,000
//!   documents (the sample plus generated SOPs drawn from the sample's vocabulary, its header
//!   labels and a pool of rare made-up words, so the vocabulary grows with the collection);
//! - JSON: decode of a diagnose request body, build + encode of the response document, decode of
//!   that response;
//! - metrics: `Metrics::render` with 10,000 `copilot_equipment_requests_total` series;
//! - Sparkplug B: NDATA of the same snapshots from their text (every value, and by exception),
//!   against the text render (budget: at most 2x);
//! - gzip: the MQTT sink's optional compression of the same snapshots, levels 6 and 9;
//! - spool: `Spool::append` of a 20 KB metrics snapshot and of 300-byte log records.
//!
//! Knobs: `HOT_PATHS_SECS` (time budget per operation, default 1.0), `HOT_PATHS_DOCS`
//! (size of the large knowledge base, default 10000), `HOT_PATHS_MD=path` (also write the table
//! there).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use copilot_edge::clock::now_ms;
use copilot_edge::config::{self, Config, Environment};
use copilot_edge::diagnose::kb::{self, Document};
use copilot_edge::diagnose::{
    embedded_documents, DiagnoseEngine, EngineSettings, Observation, Question, EMBEDDED_KB,
};
use copilot_edge::metrics::Metrics;
use copilot_edge::sinks::sparkplug;
use copilot_edge::spool::segment::Kind;
use copilot_edge::spool::Spool;

/// The diagnose request of `tests/bench.d/diagnose.lua` (and of the reference's bench).
const BODY: &str = r#"{"plant_id":"plant-7","equipment_id":"press-12","problem_description":"hydraulic press shows vibration above 5mm/s and coolant leak near the primary line"}"#;
const QUESTION: &str =
    "hydraulic press shows vibration above 5mm/s and coolant leak near the primary line";
const EVAL_SET: &str = include_str!("../fixtures/retrieval_eval.tsv");

// ----------------------------------------------------------------------------------------------
// Timing
// ----------------------------------------------------------------------------------------------

struct Row {
    name: String,
    median: Duration,
    p99: Duration,
    samples: usize,
    batch: usize,
    note: String,
    target: String,
}

struct Bench {
    budget: Duration,
    rows: Vec<Row>,
}

impl Bench {
    /// Times `f` (one operation per call). Returns (median, p99, total ops, total time).
    fn run<F: FnMut()>(&mut self, name: &str, max_ops: usize, target: &str, mut f: F) -> Stats {
        // Warm-up: a tenth of the budget (at least one call), which also sizes the batch.
        let warm = self.budget / 10;
        let t0 = Instant::now();
        let mut n = 0usize;
        while n == 0 || (t0.elapsed() < warm && n < max_ops / 10 + 1) {
            f();
            n += 1;
        }
        let per_op = t0.elapsed() / n as u32;
        let batch = if per_op >= Duration::from_micros(10) {
            1
        } else {
            (Duration::from_micros(10).as_nanos() / per_op.as_nanos().max(1)).clamp(1, 10_000)
                as usize
        };
        let mut samples: Vec<Duration> = Vec::new();
        let start = Instant::now();
        let mut ops = 0usize;
        while (start.elapsed() < self.budget || samples.len() < 5)
            && ops + batch <= max_ops.max(batch * 5)
        {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            samples.push(t.elapsed() / batch as u32);
            ops += batch;
            if samples.len() >= 200_000 {
                break;
            }
        }
        let total: Duration = samples.iter().map(|d| *d * batch as u32).sum();
        samples.sort_unstable();
        let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
        let st = Stats {
            median: q(0.5),
            p99: q(0.99),
            ops,
            total,
        };
        self.rows.push(Row {
            name: name.to_string(),
            median: st.median,
            p99: st.p99,
            samples: samples.len(),
            batch,
            note: String::new(),
            target: target.to_string(),
        });
        eprintln!(
            "  {name}: median {} p99 {} ({} samples x {batch})",
            fmt_d(st.median),
            fmt_d(st.p99),
            samples.len()
        );
        st
    }

    /// Times a one-shot operation `reps` times (e.g. building an index).
    fn once<T, F: FnMut() -> T>(&mut self, name: &str, reps: usize, note: &str, mut f: F) -> T {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let v = black_box(f());
            times.push(t.elapsed());
            last = Some(v);
        }
        times.sort_unstable();
        let q = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
        self.rows.push(Row {
            name: name.to_string(),
            median: q(0.5),
            p99: q(1.0),
            samples: times.len(),
            batch: 1,
            note: note.to_string(),
            target: String::new(),
        });
        eprintln!("  {name}: median {} ({} runs)", fmt_d(q(0.5)), times.len());
        last.expect("at least one run")
    }

    fn note(&mut self, note: String) {
        if let Some(r) = self.rows.last_mut() {
            r.note = note;
        }
    }
}

struct Stats {
    median: Duration,
    p99: Duration,
    ops: usize,
    total: Duration,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.total.as_secs_f64().max(1e-12)
    }
}

fn fmt_d(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

// ----------------------------------------------------------------------------------------------
// Generated knowledge base
// ----------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

struct Vocab {
    /// Every prose word of the sample KB, with repetitions (sampling it follows their frequency).
    words: Vec<String>,
    equipment: Vec<String>,
    symptoms: Vec<String>,
    defects: Vec<String>,
    /// Made-up rare words (vendor names, part names): the long tail a real collection has.
    rare: Vec<String>,
}

impl Vocab {
    fn from_sample(docs: &[Document], rng: &mut Rng) -> Vocab {
        let mut words = Vec::new();
        let (mut equipment, mut symptoms, mut defects) = (Vec::new(), Vec::new(), Vec::new());
        for d in docs {
            let prose = std::iter::once(&d.summary)
                .chain(&d.safety)
                .chain(&d.steps)
                .chain(&d.escalate);
            for p in prose {
                words.extend(p.split_whitespace().map(str::to_string));
            }
            equipment.extend(d.equipment.iter().cloned());
            symptoms.extend(d.symptoms.iter().cloned());
            defects.extend(d.defects.iter().cloned());
        }
        for v in [&mut equipment, &mut symptoms, &mut defects] {
            v.sort();
            v.dedup();
        }
        const SYL: &[&str] = &[
            "ka", "ro", "ten", "vi", "mar", "lo", "dex", "su", "tra", "nor", "pel", "qui", "zan",
            "bor", "fi", "gal", "hex", "mon", "tur", "vel", "wex", "yor", "lin", "cam",
        ];
        let rare = (0..20_000)
            .map(|_| {
                (0..rng.range(2, 4))
                    .map(|_| *rng.pick(SYL))
                    .collect::<String>()
            })
            .collect();
        Vocab {
            words,
            equipment,
            symptoms,
            defects,
            rare,
        }
    }

    fn sentence(&self, rng: &mut Rng, lo: usize, hi: usize) -> String {
        let n = rng.range(lo, hi);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            // 4 % of words come from the long tail.
            if rng.below(100) < 4 {
                s.push_str(rng.pick::<String>(&self.rare));
            } else {
                s.push_str(rng.pick::<String>(&self.words));
            }
        }
        s
    }

    fn labels(&self, rng: &mut Rng, from: &[String], lo: usize, hi: usize) -> String {
        let mut v: Vec<&str> = (0..rng.range(lo, hi))
            .map(|_| rng.pick(from).as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v.join(", ")
    }

    /// One SOP in the knowledge-base format of `src/diagnose/kb.rs`.
    fn document(&self, rng: &mut Rng, n: usize) -> String {
        let eq = self.labels(rng, &self.equipment, 1, 3);
        let main_eq = eq.split(", ").next().unwrap_or("machine").to_string();
        let symptom = rng.pick(&self.symptoms).clone();
        let mut t = format!(
            "---\nid: GEN-{n:05}\ntitle: {} {symptom} ({})\nequipment: {eq}\nsymptoms: {symptom}, {}\ndefects: {}\n---\n",
            capitalise(&main_eq),
            rng.pick(&self.rare),
            self.labels(rng, &self.symptoms, 1, 4),
            self.labels(rng, &self.defects, 2, 5),
        );
        t.push_str(&self.sentence(rng, 40, 90));
        t.push_str(".\n\n## Safety\n");
        for _ in 0..rng.range(2, 3) {
            t.push_str(&format!("- {}.\n", self.sentence(rng, 10, 20)));
        }
        t.push_str("\n## Steps\n");
        for i in 1..=rng.range(5, 9) {
            t.push_str(&format!("{i}. {}.\n", self.sentence(rng, 14, 30)));
        }
        t.push_str("\n## Escalate\n");
        for _ in 0..rng.range(1, 2) {
            t.push_str(&format!("- {}.\n", self.sentence(rng, 10, 20)));
        }
        t
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `n - sample` generated documents, as (file name, text).
fn generated_texts(sample: &[Document], n: usize) -> Vec<(String, String)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocab = Vocab::from_sample(sample, &mut rng);
    (1..=n.saturating_sub(sample.len()))
        .map(|i| (format!("gen-{i:05}.md"), vocab.document(&mut rng, i)))
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Main
// ----------------------------------------------------------------------------------------------

fn bench_config(spool_dir: &std::path::Path) -> Config {
    let text = format!(
        "[spool]\ndir = {:?}\nmin_free_bytes = 0\nmax_bytes = 268435456\nsegment_bytes = 8388608\n\
         [labels]\nmax_plants = 100\nmax_equipment_per_plant = 10000\n",
        spool_dir.display().to_string()
    );
    config::parse(&text, "hot_paths")
        .and_then(|r| r.validate("hot_paths", &Environment::default()))
        .unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn metrics(cfg: &Config) -> Arc<Metrics> {
    Arc::new(
        Metrics::new("gw-bench", cfg.labels.clone(), &cfg.metrics, 0.0).expect("metrics build"),
    )
}

/// Sparkplug B encoding of the snapshot `text` (as the MQTT sink does it, from the spooled
/// text): an NDATA with every value, to compare with the text render (`render`), and one by
/// exception with a single changed value.
fn sparkplug_rows(b: &mut Bench, text: &[u8], render: Duration, what: &str) {
    let text = String::from_utf8_lossy(text).into_owned();
    let now = now_ms();
    let mut node = sparkplug::Node::new(0);
    let birth = node.birth(Some((1, now, &text)), "", now);
    node.device_births(now, &text, now);
    let full = node.data(2, now, &text, false, false, now).bytes();
    let st = b.run(
        &format!("sparkplug: NDATA, {what}, every value"),
        usize::MAX,
        "< 2x the text render",
        || {
            black_box(node.data(2, now, black_box(&text), false, false, now));
        },
    );
    b.note(format!(
        "{:.2}x the text render; {full} bytes (text {}), birth {} bytes",
        st.median.as_secs_f64() / render.as_secs_f64(),
        text.len(),
        birth.len()
    ));
    let d = node.data(2, now, &text, false, true, now);
    node.commit(d.messages(), true);
    let st = b.run(
        &format!("sparkplug: NDATA, {what}, by exception (nothing changed)"),
        usize::MAX,
        "",
        || {
            black_box(node.data(3, now, black_box(&text), false, true, now));
        },
    );
    b.note(format!(
        "{:.2}x the text render",
        st.median.as_secs_f64() / render.as_secs_f64()
    ));
}

/// gzip of a snapshot's text (`[sinks.mqtt] compression = "gzip"`) at the sink's level 6 and
/// at 9, against the text render.
fn gzip_rows(b: &mut Bench, text: &[u8], render: Duration, what: &str) {
    for level in [6u8, 9] {
        let size = copilot_edge::compress::gzip(text, level).len();
        let st = b.run(
            &format!("gzip: level {level}, {what}"),
            usize::MAX,
            "",
            || {
                black_box(copilot_edge::compress::gzip(black_box(text), level));
            },
        );
        b.note(format!(
            "{:.2}x the text render; {size} bytes of {} ({:.1} %)",
            st.median.as_secs_f64() / render.as_secs_f64(),
            text.len(),
            100.0 * size as f64 / text.len() as f64
        ));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore any arguments.
    let secs: f64 = std::env::var("HOT_PATHS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let big_n: usize = std::env::var("HOT_PATHS_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut b = Bench {
        budget: Duration::from_secs_f64(secs.max(0.01)),
        rows: Vec::new(),
    };
    let spool_dir: PathBuf =
        std::env::temp_dir().join(format!("hot-paths-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool_dir);
    let cfg = bench_config(&spool_dir);
    let settings = EngineSettings {
        min_relevance: cfg.engine.min_relevance,
        max_documents: cfg.engine.max_documents.get(),
        max_steps: cfg.engine.max_steps.get(),
        off: Default::default(),
    };
    eprintln!("hot_paths: {secs} s per operation, large KB = {big_n} documents");

    // --- retrieval ------------------------------------------------------------------------
    let sample = embedded_documents().expect("embedded KB parses");
    let eval: Vec<&str> = EVAL_SET
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit_once('\t').map(|(_, q)| q))
        .collect();
    let ask = |e: &DiagnoseEngine, text: &str| {
        e.diagnose(&Question {
            plant_id: "plant-7",
            equipment_id: "press-12",
            problem_description: text,
            observed_defects: &[],
        })
    };
    let small = DiagnoseEngine::new(sample.clone(), settings);
    let a = ask(&small, QUESTION);
    assert!(
        a.supported,
        "the bench question must be answered from the sample KB"
    );
    b.run(
        &format!(
            "retrieval: diagnose, sample KB ({} docs), wrk question",
            small.len()
        ),
        usize::MAX,
        "",
        || {
            black_box(ask(&small, black_box(QUESTION)));
        },
    );
    let mut i = 0;
    b.run(
        &format!(
            "retrieval: diagnose, sample KB, eval-set mix ({} questions)",
            eval.len()
        ),
        usize::MAX,
        "",
        || {
            i = (i + 1) % eval.len();
            black_box(ask(&small, black_box(eval[i])));
        },
    );

    let texts = generated_texts(&sample, big_n);
    let all_texts: Vec<(String, String)> = copilot_edge::compress::embedded_texts(EMBEDDED_KB)
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .chain(texts)
        .collect();
    let kb_bytes: usize = all_texts.iter().map(|(_, t)| t.len()).sum::<usize>();
    let docs = b.once(
        &format!("kb: parse_all of {} documents", all_texts.len()),
        3,
        &format!("{:.1} MB of Markdown", kb_bytes as f64 / 1e6),
        || {
            kb::parse_all(all_texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
                .expect("generated KB parses")
        },
    );
    let big = b.once(
        &format!(
            "kb: DiagnoseEngine::new (index build), {} documents",
            docs.len()
        ),
        3,
        "",
        || DiagnoseEngine::new(docs.clone(), settings),
    );
    let a = ask(&big, QUESTION);
    let n_big = big.len();
    b.run(
        &format!("retrieval: diagnose, {n_big} docs, wrk question"),
        usize::MAX,
        "< 2 ms",
        || {
            black_box(ask(&big, black_box(QUESTION)));
        },
    );
    b.note(format!(
        "supported={} cites {:?}",
        a.supported, a.guidance.cited_documents
    ));
    let mut i = 0;
    b.run(
        &format!("retrieval: diagnose, {n_big} docs, eval-set mix"),
        usize::MAX,
        "< 2 ms",
        || {
            i = (i + 1) % eval.len();
            black_box(ask(&big, black_box(eval[i])));
        },
    );
    drop(big);
    drop(docs);

    // --- JSON ------------------------------------------------------------------------------
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct DiagnoseBody {
        plant_id: String,
        equipment_id: String,
        problem_description: String,
        #[serde(default)]
        observed_defects: Vec<Observation>,
    }
    b.run("json: decode request body (struct)", usize::MAX, "", || {
        let v: DiagnoseBody = serde_json::from_slice(black_box(BODY.as_bytes())).expect("body");
        black_box(v);
    });
    let answer = ask(&small, QUESTION);
    // The handler serialises a struct of borrowed parts (no `Value` tree); the same shape here.
    #[derive(serde::Serialize)]
    struct Response<'a> {
        request_id: &'a str,
        trace_id: &'a str,
        plant_id: &'a str,
        equipment_id: &'a str,
        vision_analysis: &'a copilot_edge::diagnose::VisionAnalysis,
        rag_guidance: &'a copilot_edge::diagnose::Guidance,
        generated_report: &'a str,
        confidence_score: f64,
        answer_status: &'static str,
        hallucination_flag: bool,
        agent: Agent,
        usage: Usage,
    }
    #[derive(serde::Serialize)]
    struct Agent {
        name: &'static str,
        engine: &'static str,
        fallback: bool,
        fallback_reason: Option<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Usage {
        input_tokens: u64,
        output_tokens: u64,
    }
    let response = Response {
        request_id: "6f1c2d3e-0000-4000-8000-000000000000",
        trace_id: "5781dac43bde42c599279102217a4574",
        plant_id: "plant-7",
        equipment_id: "press-12",
        vision_analysis: &answer.vision,
        rag_guidance: &answer.guidance,
        generated_report: &answer.report,
        confidence_score: answer.confidence,
        answer_status: if answer.supported {
            "supported"
        } else {
            "no_supporting_document"
        },
        hallucination_flag: !answer.supported,
        agent: Agent {
            name: "rag_agent",
            engine: "bm25-local",
            fallback: false,
            fallback_reason: None,
        },
        usage: Usage {
            input_tokens: answer.input_tokens,
            output_tokens: answer.output_tokens,
        },
    };
    let encoded = serde_json::to_vec(&response).expect("encode");
    b.run(
        "json: encode response (borrowed struct, as the handler)",
        usize::MAX,
        "",
        || {
            black_box(serde_json::to_vec(black_box(&response)).expect("encode"));
        },
    );
    b.note(format!("{} bytes", encoded.len()));
    b.run(
        "json: decode response (bytes → Value)",
        usize::MAX,
        "",
        || {
            let v: serde_json::Value = serde_json::from_slice(black_box(&encoded)).expect("decode");
            black_box(v);
        },
    );

    // --- metrics render ---------------------------------------------------------------------
    let m = metrics(&cfg);
    let base = m.render().len();
    let base_render = b.run(
        "metrics: render, base set (no request series)",
        usize::MAX,
        "",
        || {
            black_box(m.render());
        },
    );
    b.note(format!("{base} bytes"));
    sparkplug_rows(&mut b, &m.render(), base_render.median, "base set");
    gzip_rows(&mut b, &m.render(), base_render.median, "base set");
    for p in 0..10 {
        let plant = format!("plant-{p}");
        for e in 0..1000 {
            m.equipment_requests
                .inc(plant.as_str(), format!("eq-{e:04}").as_str());
        }
    }
    let rendered = m.render();
    let series = rendered
        .split(|c| *c == b'\n')
        .filter(|l| l.starts_with(b"copilot_equipment_requests_total{"))
        .count();
    assert_eq!(series, 10_000, "10,000 equipment series rendered");
    let st = b.run(
        "metrics: render, 10,000 equipment series",
        usize::MAX,
        "< 5 ms",
        || {
            black_box(m.render());
        },
    );
    b.note(format!(
        "{:.2} MB, {:.0} renders/s",
        rendered.len() as f64 / 1e6,
        st.per_sec()
    ));
    sparkplug_rows(&mut b, &rendered, st.median, "10,000 equipment series");
    gzip_rows(&mut b, &rendered, st.median, "10,000 equipment series");
    drop(m);

    // --- spool append -----------------------------------------------------------------------
    let spool = Spool::open(&cfg.spool, &["mqtt"], metrics(&cfg)).expect("spool opens");
    // A realistic 20 KB snapshot: Prometheus text lines.
    let mut snapshot = String::new();
    let mut k = 0;
    while snapshot.len() < 20 * 1024 {
        snapshot.push_str(&format!(
            "copilot_requests_total{{gateway_id=\"gw-bench\",plant_id=\"plant-{}\",agent_name=\"rag_agent\",status_code=\"200\"}} {}\n",
            k % 16,
            k * 37
        ));
        k += 1;
    }
    let snapshot = &snapshot.as_bytes()[..20 * 1024];
    let st = b.run("spool: append 20 KB metrics snapshot", 10_000, "", || {
        black_box(spool.append(Kind::Metrics, now_ms(), &[snapshot]));
    });
    b.note(format!(
        "{:.0} records/s, {:.0} MB/s",
        st.per_sec(),
        st.per_sec() * snapshot.len() as f64 / 1e6
    ));
    let log = {
        let mut l = String::from(
            r#"{"timestamp":"2026-11-26T22:39:53.833027Z","level":"info","event":"request_completed","trace_id":"5781dac43bde42c599279102217a4574","method":"POST","path":"/v1/diagnose","status_code":200,"duration_ms":0.21,"user_id":"technician-42","plant_id":"plant-7","equipment_id":"press-12""#,
        );
        while l.len() < 299 {
            l.push(' ');
        }
        l.push('}');
        l
    };
    let st = b.run(
        "spool: append 300 B log record (1 per call)",
        400_000,
        "",
        || {
            black_box(spool.append(Kind::Log, now_ms(), &[log.as_bytes()]));
        },
    );
    b.note(format!(
        "{:.0} records/s, {:.1} MB/s",
        st.per_sec(),
        st.per_sec() * log.len() as f64 / 1e6
    ));
    let batch: Vec<&[u8]> = vec![log.as_bytes(); 64];
    let st = b.run(
        "spool: append 300 B log records (64 per call), per call",
        20_000,
        "",
        || {
            black_box(spool.append(Kind::Log, now_ms(), &batch));
        },
    );
    b.note(format!(
        "{:.0} records/s, {:.1} MB/s",
        st.per_sec() * 64.0,
        st.per_sec() * 64.0 * log.len() as f64 / 1e6
    ));
    b.once(
        "spool: append 300 B log record + flush (fdatasync)",
        20,
        "what a crash-safe append would cost; the agent flushes once a second",
        || {
            spool.append(Kind::Log, now_ms(), &[log.as_bytes()]);
            spool.flush().expect("flush")
        },
    );
    drop(spool);
    let _ = std::fs::remove_dir_all(&spool_dir);

    // --- table ------------------------------------------------------------------------------
    let mut out = String::new();
    out.push_str("| operation | median | p99 | samples × batch | notes | target |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for r in &b.rows {
        let verdict = target_verdict(&r.target, r.median);
        out.push_str(&format!(
            "| {} | {} | {} | {} × {} | {} | {}{} |\n",
            r.name,
            fmt_d(r.median),
            fmt_d(r.p99),
            r.samples,
            r.batch,
            r.note,
            r.target,
            verdict
        ));
    }
    println!("{out}");
    if let Ok(p) = std::env::var("HOT_PATHS_MD") {
        std::fs::write(&p, &out).unwrap_or_else(|e| panic!("write {p}: {e}"));
    }
}

/// ` — met` / ` — MISSED` for a `< N ms` target, judged on the median.
fn target_verdict(target: &str, median: Duration) -> String {
    match target
        .strip_prefix("< ")
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse::<f64>().ok())
    {
        Some(ms) if median.as_secs_f64() * 1e3 < ms => " — met".to_string(),
        Some(_) => " — MISSED".to_string(),
        None => String::new(),
    }
}
