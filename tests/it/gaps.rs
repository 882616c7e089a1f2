//! Knowledge gaps: a refusal and a rating of 1-2 stars each become one `knowledge_gap` event,
//! one count in `copilot_edge_knowledge_gaps_total{plant_id,equipment_class,reason}`, and an
//! entry that `/v1/status` lists for a signed-in engineer only.

use crate::common::*;

#[test]
fn refusals_and_low_ratings_become_knowledge_gaps() {
    let dir = TempDir::new("gaps");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let gaps = |a: &Agent| {
        a.events()
            .into_iter()
            .filter(|e| e["event"] == "knowledge_gap")
            .collect::<Vec<_>>()
    };
    let count = |a: &Agent, class: &str, reason: &str| {
        a.metric(
            "copilot_edge_knowledge_gaps_total",
            &[
                "plant_id=\"plant-7\"",
                &format!("equipment_class=\"{class}\""),
                &format!("reason=\"{reason}\""),
            ],
        )
        .unwrap_or(0.0)
    };

    // A question no SOP answers, with a long text: the event carries it cut to 160 characters.
    let long = format!(
        "the diesel generator will not start on its weekly test {}",
        "and the battery light flickers ".repeat(10)
    );
    let r = a.diagnose("plant-7", "gen-1", &long);
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = r.json();
    assert_eq!(refused["refusal_reason"], "no_sop_for_machine", "{refused}");
    // An answered question, rated 2 then (another one) 4: only the 2 is a gap.
    let answered: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            let v = a
                .diagnose(
                    "plant-7",
                    "pump-7",
                    "centrifugal pump cavitation noise and low discharge pressure",
                )
                .json();
            assert_eq!(v["answer_status"], "supported", "{v}");
            v
        })
        .collect();
    for (v, score) in answered.iter().zip([2, 4]) {
        let r = a.post(
            "/v1/feedback",
            &serde_json::json!({"request_id": v["request_id"], "score": score}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let events = wait_for(
        "two knowledge_gap events",
        std::time::Duration::from_secs(10),
        || {
            let g = gaps(&a);
            (g.len() >= 2).then_some(g)
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events_now = gaps(&a);
    assert_eq!(events_now.len(), 2, "{events_now:?}");
    let (miss, low) = (&events[0], &events[1]);
    assert_eq!(miss["reason"], "no_sop_for_machine");
    assert_eq!(miss["request_id"], refused["request_id"]);
    assert_eq!(miss["trace_id"], refused["trace_id"]);
    assert_eq!(miss["plant_id"], "plant-7");
    assert_eq!(miss["equipment_id"], "gen-1");
    assert_eq!(miss["language"], "en");
    let q = miss["question"].as_str().unwrap();
    assert!(q.starts_with("the diesel generator will not start"), "{q}");
    assert_eq!(
        q.chars().count(),
        161,
        "cut to 160 characters and an ellipsis: {q}"
    );
    assert_eq!(low["reason"], "low_rating");
    assert_eq!(low["request_id"], answered[0]["request_id"]);
    assert_eq!(low["equipment_id"], "pump-7");
    assert!(low["question"].as_str().unwrap().contains("cavitation"));
    // Counted with bounded labels: the class from the asset register, "unknown" when it has none.
    let pump_class = low["equipment_class"].as_str().unwrap().to_string();
    assert_eq!(count(&a, &pump_class, "low_rating"), 1.0);
    let gen_class = miss["equipment_class"].as_str().unwrap().to_string();
    assert_eq!(count(&a, &gen_class, "no_sop_for_machine"), 1.0);

    // The status page's list: newest first, with a token only.
    let s = a.get_auth("/v1/status").json();
    let list = s["knowledge_gaps"]
        .as_array()
        .expect("listed when signed in");
    assert_eq!(list.len(), 2, "{s}");
    assert_eq!(list[0]["reason"], "low_rating");
    assert_eq!(list[1]["reason"], "no_sop_for_machine");
    assert_eq!(list[1]["text"], miss["question"]);
    let public = a.get("/v1/status").json();
    assert!(
        public.get("knowledge_gaps").is_none(),
        "question texts without a token: {public}"
    );
}

#[test]
fn gap_events_leave_out_the_question_when_the_plant_keeps_questions_on_site() {
    let dir = TempDir::new("gaps-private");
    let a = Agent::start(
        dir.path(),
        &config_with(dir.path(), "[logging]\ngap_question_text = false\n"),
    );
    let r = a.diagnose(
        "plant-7",
        "gen-1",
        "Jan Novak says the diesel generator will not start on its weekly test",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let event = wait_for(
        "a knowledge_gap event",
        std::time::Duration::from_secs(10),
        || {
            a.events()
                .into_iter()
                .find(|e| e["event"] == "knowledge_gap")
        },
    );
    assert_eq!(event["reason"], "no_sop_for_machine", "{event}");
    assert_eq!(event["equipment_id"], "gen-1");
    assert!(event.get("question").is_none(), "{event}");
    // Nowhere in the log files either (what the sinks ship is read from the same events).
    let logs = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(logs.contains("knowledge_gap"), "log files hold the event");
    assert!(
        !logs.contains("Jan Novak"),
        "the name stayed out of the logs"
    );
    // The signed-in status page still lists it (from memory).
    let s = a.get_auth("/v1/status").json();
    assert!(s["knowledge_gaps"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Jan Novak"));
}
