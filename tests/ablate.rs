//! `cace ablate --table S1 --seeds 2 --epochs 3` on a small synthetic set: the table in
//! Markdown and JSON, one run per row and seed, and a second call reusing the finished runs.

use std::process::Command;

use cace_net::data::synth::{SynthConfig, generate};
use serde_json::Value;

#[test]
fn ablate_table_s1_writes_markdown_and_json_and_resumes() {
    let dir = std::env::temp_dir().join(format!("cace-ablate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    generate(
        &data,
        &SynthConfig {
            videos: 24,
            ..SynthConfig::default()
        },
    )
    .unwrap();
    let out = dir.join("s1");
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_cace"))
            .args([
                "ablate", "--table", "S1", "--seeds", "2", "--epochs", "3", "--data",
            ])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let stdout = run();
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(stdout.contains("w/ SNN"));
    for label in [
        "w/o temporal encoder",
        "w/ unidirectional LSTM",
        "w/ SNN",
        "w/ bidirectional LSTM",
    ] {
        assert!(md.contains(label), "{label} missing from\n{md}");
    }
    assert!(
        md.contains("| 77.11 |"),
        "paper figure of the SNN row\n{md}"
    );
    let table: Value =
        serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let reports = row["reports"].as_array().unwrap();
        assert_eq!(reports.len(), 2, "{}", row["row"]);
        let seeds: Vec<u64> = reports
            .iter()
            .map(|r| r["seed"].as_u64().unwrap())
            .collect();
        assert_eq!(seeds, vec![1, 2]);
        // mean of the two honest numbers is what the table reports
        let xs: Vec<f64> = reports
            .iter()
            .map(|r| r["test_acc_at_best_val"].as_f64().unwrap())
            .collect();
        let mean = row["honest"]["mean"].as_f64().unwrap();
        assert!((mean - (xs[0] + xs[1]) / 2.0).abs() < 1e-9);
        let std = row["honest"]["std"].as_f64().unwrap();
        assert!((std - (xs[0] - xs[1]).abs() / 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(reports[0]["epochs"].as_u64(), Some(3));
    }
    assert!(out.join("snn/seed-2/report.json").exists());
    // A second call finds every run finished and rebuilds the same rows.
    let before = table["rows"].clone();
    run();
    let again: Value =
        serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    assert_eq!(again["rows"], before);
    // Its training time is that of the runs it reused (Table S1's rows are 4 distinct
    // configs), not of the call, which trained nothing.
    let runs: f64 = rows
        .iter()
        .flat_map(|r| r["reports"].as_array().unwrap())
        .map(|r| r["train_seconds"].as_f64().unwrap())
        .sum();
    let train = again["train_seconds"].as_f64().unwrap();
    assert!(
        runs > 0.0 && (train - runs).abs() < 1e-6 * runs,
        "{train} vs {runs}"
    );
    assert!(again["wall_seconds"].as_f64().unwrap() < train);
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(
        md.contains(&format!("training time of the runs {train:.0} s")),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Table 3 compares feature sets: each row trains on its own folder of `--data`; a row whose
/// folder is missing is reported as not run, and an empty `--data` is an error naming it.
#[test]
fn ablate_table_3_trains_one_folder_per_row() {
    let dir = std::env::temp_dir().join(format!("cace-ablate3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (folder, seed) in [("vgg19-vggish", 1), ("resnet50-cnn14", 2)] {
        let cfg = SynthConfig {
            videos: 24,
            seed,
            ..SynthConfig::default()
        };
        generate(&dir.join("data").join(folder), &cfg).unwrap();
    }
    let ablate = |data: &std::path::Path, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_cace"))
            .args([
                "ablate", "--table", "3", "--seeds", "1", "--epochs", "2", "--data",
            ])
            .arg(data)
            .arg("--out")
            .arg(dir.join(out))
            .output()
            .unwrap()
    };
    let o = ablate(&dir.join("data"), "t3");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("resnet50ft-cnn14") && stderr.contains("not run"),
        "{stderr}"
    );
    let table: Value =
        serde_json::from_slice(&std::fs::read(dir.join("t3/table.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    let acc = |i: usize| rows[i]["official"]["mean"].as_f64();
    assert!(
        acc(0).is_some() && acc(1).is_some() && acc(2).is_none(),
        "{table}"
    );
    // Each row trained on its own folder: different data, different losses.
    let metrics = |row: &str| {
        std::fs::read_to_string(dir.join("t3").join(row).join("seed-1/metrics.jsonl")).unwrap()
    };
    let first_loss = |row: &str| {
        let line: Value = serde_json::from_str(metrics(row).lines().next().unwrap()).unwrap();
        line["train_loss"].as_f64().unwrap()
    };
    assert_ne!(first_loss("vgg19-vggish"), first_loss("resnet50-cnn14"));

    // Refused before anything is trained or written: the message holds both `needles`.
    let refused = |data: &std::path::Path, out: &str, needles: [&str; 2]| {
        let o = ablate(data, out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(needles.iter().all(|n| stderr.contains(n)), "{stderr}");
        assert!(!dir.join(out).exists(), "{out}: wrote an output folder");
    };
    // A row folder that exists but holds no features yet (its extraction still running)
    // fails the table before any row trains, naming the folder.
    std::fs::create_dir_all(dir.join("data/resnet50ft-cnn14")).unwrap();
    refused(
        &dir.join("data"),
        "t3-partial",
        ["resnet50ft-cnn14", "row `"],
    );

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    refused(&empty, "t3-empty", ["no row of table 3", "empty"]);
    let _ = std::fs::remove_dir_all(&dir);
}
