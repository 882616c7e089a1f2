//! The diagnose engine in the running binary: reload on SIGHUP (good and bad files, requests in
//! flight undisturbed), the asset register and languages in the answer, `check-config` on the
//! engine's files.

use std::time::Duration;

use crate::common::*;

const PUMP_SOP: &str = "---\nid: SOP-PMP-900\ntitle: Test pump cavitation\nequipment: centrifugal pump, pump\nsymptoms: cavitation, gravel noise\ndefects: blocked suction strainer\n---\nScope.\n## Safety\n- Lock out the pump.\n## Steps\n1. Check the suction strainer.\n2. Check the suction valve is fully open.\n";

const GLYCOL_SOP: &str = "---\nid: SOP-GLY-001\ntitle: Glycol dosing skid alarm\nequipment: glycol skid, dosing skid\nsymptoms: dosing alarm, glycol low\ndefects: empty drum\n---\nScope.\n## Steps\n1. Check the glycol drum level.\n";

fn cited(r: &Response) -> Vec<String> {
    r.json()["rag_guidance"]["cited_documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sighup_reloads_knowledge_assets_and_lexicon_and_keeps_the_old_set_on_errors() {
    let dir = TempDir::new("reload");
    let kb = dir.path().join("kb");
    let lex = dir.path().join("lexicon");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::create_dir_all(&lex).unwrap();
    std::fs::write(kb.join("sop-pmp-900.md"), PUMP_SOP).unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "id,class\npump-*,centrifugal pump\n").unwrap();
    // Our keys go into config_with's [paths] table.
    let cfg = config_with(dir.path(), "").replacen(
        "\n\n[identity]",
        &format!(
            "\nknowledge_dir = {:?}\nassets = {:?}\nlexicon_dir = {:?}\n\n[identity]",
            kb.display().to_string(),
            assets.display().to_string(),
            lex.display().to_string()
        ),
        1,
    );
    let a = Agent::start(dir.path(), &cfg);
    let r = a.diagnose("plant-7", "pump-3", "glycol skid dosing alarm, drum empty?");
    assert_eq!(r.status, 200);
    assert!(cited(&r).is_empty(), "{}", r.text());
    assert_eq!(r.json()["understood"]["asset"]["class"], "centrifugal pump");

    // A good change: a new document, a new asset class and a plant lexicon entry.
    std::fs::write(kb.join("sop-gly-001.md"), GLYCOL_SOP).unwrap();
    std::fs::write(
        &assets,
        "id,class\npump-*,centrifugal pump\nskid-*,glycol skid\n",
    )
    .unwrap();
    std::fs::write(
        lex.join("plant.toml"),
        "language = \"en\"\n[terms]\n\"gly\" = \"glycol\"\n",
    )
    .unwrap();
    // Requests keep flowing through the reload.
    let traffic = Traffic::start(a.addr, "reload");
    a.signal(libc::SIGHUP);
    a.wait_event("knowledge_base_reloaded", Duration::from_secs(10), |e| {
        e["documents"] == 2
    });
    let r = a.diagnose("plant-7", "skid-1", "gly dosing alarm again");
    assert_eq!(cited(&r), vec!["SOP-GLY-001"], "{}", r.text());
    assert_eq!(r.json()["understood"]["asset"]["class"], "glycol skid");
    assert_eq!(
        a.metric("copilot_edge_knowledge_reloads_total", &["result=\"ok\""]),
        Some(1.0)
    );

    // A bad change: a document without steps. The old set stays, and the log says why.
    std::fs::write(
        kb.join("sop-bad.md"),
        "---\nid: SOP-BAD-1\ntitle: Broken\n---\nno steps here\n",
    )
    .unwrap();
    a.signal(libc::SIGHUP);
    let e = a.wait_event(
        "knowledge_base_reload_failed",
        Duration::from_secs(10),
        |_| true,
    );
    let why = e["error"].as_str().unwrap();
    assert!(
        why.contains("paths.knowledge_dir") && why.contains("sop-bad.md"),
        "{why}"
    );
    let r = a.diagnose("plant-7", "skid-1", "gly dosing alarm again");
    assert_eq!(cited(&r), vec!["SOP-GLY-001"], "{}", r.text());
    // A bad asset register is refused the same way.
    std::fs::remove_file(kb.join("sop-bad.md")).unwrap();
    std::fs::write(&assets, "id,class\nskid-1\n").unwrap();
    a.signal(libc::SIGHUP);
    a.wait_event(
        "knowledge_base_reload_failed",
        Duration::from_secs(10),
        |e| e["error"].as_str().unwrap().contains("paths.assets"),
    );
    assert_eq!(
        a.metric(
            "copilot_edge_knowledge_reloads_total",
            &["result=\"failed\""]
        ),
        Some(2.0)
    );
    let (ok, bad) = traffic.stop_counts();
    // Every request during the reloads was answered.
    assert!(ok > 0 && bad == 0, "{ok} answered, {bad} not");
    assert!(a.stop().success());
}

#[test]
fn answers_show_language_asset_and_refuse_unknown_classes() {
    let dir = TempDir::new("engine-answers");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let r = a.diagnose(
        "plant-7",
        "conv-3",
        "Förderband läuft seitlich ab und scheuert am Rahmen",
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["understood"]["language"], "de", "{j}");
    assert_eq!(j["understood"]["asset"]["make"], "Interroll", "{j}");
    assert_eq!(cited(&r)[0], "SOP-CONV-001", "{j}");
    // The German translation beside the SOP is quoted, with the same step numbers.
    let title = j["rag_guidance"]["citations"][0]["title"].as_str().unwrap();
    assert!(title.contains("Förderband"), "{j}");
    let steps = j["rag_guidance"]["recommended_steps"].as_array().unwrap();
    assert!(
        steps[0].as_str().unwrap().contains("[SOP-CONV-001 step 1]"),
        "{j}"
    );

    let r = a.diagnose(
        "plant-7",
        "forklift-2",
        "hydraulic oil leaking from the mast cylinder",
    );
    let j = r.json();
    assert!(cited(&r).is_empty(), "{j}");
    assert_eq!(j["refusal_reason"], "no_sop_for_equipment_class", "{j}");
    assert!(
        j["generated_report"].as_str().unwrap().contains("forklift"),
        "{j}"
    );
    let r = a.diagnose(
        "plant-7",
        "bldg-a",
        "the water cooler in the office is leaking onto the floor",
    );
    assert_eq!(r.json()["refusal_reason"], "out_of_scope", "{}", r.text());
    assert_eq!(
        a.metric(
            "copilot_edge_diagnose_refusals_total",
            &["reason=\"out_of_scope\""]
        ),
        Some(1.0)
    );
    assert!(a
        .metric("copilot_edge_diagnose_language_total", &["language=\"de\""])
        .is_some());
}

#[test]
fn check_config_validates_assets_and_lexicon() {
    let dir = TempDir::new("engine-check");
    let bad_assets = dir.path().join("assets.csv");
    std::fs::write(&bad_assets, "id,class\npress-1,press\npress-1,press\n").unwrap();
    let lex = dir.path().join("lex");
    std::fs::create_dir_all(&lex).unwrap();
    std::fs::write(
        lex.join("fr.toml"),
        "language = \"fr\"\nstemmer = \"frnch\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate_dir = {:?}\nlog_dir = {:?}\nassets = {:?}\nlexicon_dir = {:?}\n",
            dir.path().join("s").display().to_string(),
            dir.path().join("l").display().to_string(),
            bad_assets.display().to_string(),
            lex.display().to_string()
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check-config", cfg.to_str().unwrap()], dir.path());
    let all = format!("{out}{err}");
    assert_eq!(code, 78, "{all}");
    assert!(
        all.contains("paths.assets") && all.contains("twice"),
        "{all}"
    );
    assert!(
        all.contains("paths.lexicon_dir") && all.contains("frnch"),
        "{all}"
    );
}

#[test]
fn refusals_say_why_in_the_api_and_count_in_metrics() {
    let dir = TempDir::new("refusals");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let cases = [
        (
            "press-12",
            "how many hydraulic presses do we have in hall A?",
            "not_a_fault_report",
            "not_a_fault_report",
        ),
        (
            "gen-1",
            "the diesel generator will not start on its weekly test",
            "no_supporting_document",
            "no_sop_for_machine",
        ),
        (
            "pump-7",
            "насос сильно вибрирует и течёт масло",
            "language_not_supported",
            "language_not_supported",
        ),
    ];
    for (eq, text, status, reason) in cases {
        let r = a.diagnose("plant-7", eq, text);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["answer_status"], status, "{text}: {v}");
        assert_eq!(v["refusal_reason"], reason, "{text}");
        assert_eq!(v["hallucination_flag"], true, "no cited document");
        assert!(v["rag_guidance"]["recommended_steps"]
            .as_array()
            .unwrap()
            .is_empty());
    }
    // A French report is understood and answered from the SOP.
    let r = a.diagnose(
        "plant-7",
        "pump-7",
        "la pompe fait un bruit de gravier et la pression de refoulement est basse",
    );
    let v = r.json();
    assert_eq!(v["answer_status"], "supported", "{v}");
    assert_eq!(v["understood"]["language"], "fr");
    assert_eq!(cited(&r)[0], "SOP-PMP-001");
    for reason in [
        "not_a_fault_report",
        "no_sop_for_machine",
        "language_not_supported",
    ] {
        assert_eq!(
            a.metric(
                "copilot_edge_diagnose_refusals_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(1.0),
            "{reason}"
        );
    }
}
