//! Dense evaluation and post-processing against golden values of the official UnAV code
//! (`tools/make_dense_eval_golden.py`), and `cace dense eval` on good and bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use cace_net::dense::metrics::{
    evaluate, load_detections, load_ground_truth, unav_tiou_thresholds,
};
use cace_net::dense::nms::{NmsConfig, Segments, batched_nms};
use cace_net::dense::postprocess::{
    LevelOutput, NmsMethod, TestConfig, VideoMeta, level_candidates, postprocess_video,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dense")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn pairs(v: &Value) -> Vec<[f32; 2]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn map_equals_official() {
    for case in json("unav_map.json").as_array().unwrap() {
        let (ants, dets) = match case.get("files").and_then(Value::as_str) {
            Some("random") => ("random_annotations.json", "random_detections.json"),
            _ => ("unav_annotations.json", "unav_detections.json"),
        };
        let split = case["split"].as_str();
        let gt = load_ground_truth(&fixture(ants), split).unwrap();
        let d = load_detections(&fixture(dets)).unwrap();
        let r = evaluate(&gt, &d, &unav_tiou_thresholds());
        let what = format!("{ants} split {split:?}");
        assert_eq!(r.tiou, f64s(&case["tiou"]), "{what}: thresholds");
        assert_eq!(r.classes, i64s(&case["classes"]), "{what}: classes");
        for (t, row) in case["ap"].as_array().unwrap().iter().enumerate() {
            for (k, want) in f64s(row).into_iter().enumerate() {
                let got = r.ap[t][k];
                assert!(
                    close(got, want, 1e-6),
                    "{what}: AP tIoU {t} class {k}: {got} vs {want}"
                );
            }
        }
        for (got, want) in r.map.iter().zip(f64s(&case["mAP"])) {
            assert!(close(*got, want, 1e-6), "{what}: mAP {got} vs {want}");
        }
        let want = case["average_mAP"].as_f64().unwrap();
        assert!(
            close(r.average_map, want, 1e-6),
            "{what}: average {} vs {want}",
            r.average_map
        );
    }
}

/// Rows ordered as given except that runs of exactly equal scores are sorted by (label,
/// segment): the official final sort is torch's unstable one, whose order of ties is its own.
fn canonical(s: &Segments) -> Segments {
    let key = |i: usize| (s.scores[i], s.labels[i], s.segs[i][0], s.segs[i][1]);
    let mut idx: Vec<usize> = (0..s.len()).collect();
    let mut a = 0;
    while a < idx.len() {
        let b = (a..idx.len())
            .find(|&b| s.scores[idx[b]] != s.scores[idx[a]])
            .unwrap_or(idx.len());
        idx[a..b].sort_by(|&x, &y| key(x).partial_cmp(&key(y)).unwrap());
        a = b;
    }
    s.select(&idx)
}

fn assert_segments(got: &Segments, want: &Value, what: &str) {
    let expected = Segments {
        segs: pairs(&want["segs"]),
        scores: f32s(&want["scores"]),
        labels: i64s(&want["labels"]),
    };
    let (got, expected) = (canonical(got), canonical(&expected));
    let (segs, scores) = (expected.segs, expected.scores);
    assert_eq!(got.labels, expected.labels, "{what}: labels");
    assert_eq!(got.len(), segs.len(), "{what}: count");
    for i in 0..segs.len() {
        for j in 0..2 {
            assert!(
                (got.segs[i][j] - segs[i][j]).abs() <= 1e-5,
                "{what}: seg {i}: {:?} vs {:?}",
                got.segs[i],
                segs[i]
            );
        }
        assert!(
            (got.scores[i] - scores[i]).abs() <= 1e-5,
            "{what}: score {i}: {} vs {}",
            got.scores[i],
            scores[i]
        );
    }
}

#[test]
fn batched_nms_equals_official() {
    let g = json("unav_nms.json");
    for (c, case) in g["nms"].as_array().unwrap().iter().enumerate() {
        let input = Segments {
            segs: pairs(&case["segs"]),
            scores: f32s(&case["scores"]),
            labels: i64s(&case["labels"]),
        };
        for (r, run) in case["runs"].as_array().unwrap().iter().enumerate() {
            let k = &run["config"];
            let f = |n: &str| k[n].as_f64().unwrap() as f32;
            let cfg = NmsConfig {
                iou_threshold: f("iou_threshold"),
                min_score: f("min_score"),
                max_seg_num: k["max_seg_num"].as_u64().unwrap() as usize,
                use_soft_nms: k["use_soft_nms"].as_bool().unwrap(),
                multiclass: k["multiclass"].as_bool().unwrap(),
                sigma: f("sigma"),
                voting_thresh: f("voting_thresh"),
            };
            assert_segments(
                &batched_nms(&input, &cfg),
                run,
                &format!("case {c} run {r}"),
            );
        }
    }
}

/// One level's logits, offsets, mask and points.
type LevelData = (Vec<f32>, Vec<f32>, Vec<bool>, Vec<f32>);

#[test]
fn postprocessing_equals_official() {
    let g = json("unav_nms.json");
    for (c, case) in g["postprocess"].as_array().unwrap().iter().enumerate() {
        let k = &case["config"];
        let cfg = TestConfig {
            pre_nms_topk: k["pre_nms_topk"].as_u64().unwrap() as usize,
            ..TestConfig::unav100()
        };
        assert_eq!(k["nms_method"], "soft");
        assert_eq!(cfg.nms_method, NmsMethod::Soft);
        let data: Vec<LevelData> = case["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let mask = l["mask"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_bool().unwrap())
                    .collect();
                (
                    f32s(&l["cls_logits"]),
                    f32s(&l["offsets"]),
                    mask,
                    f32s(&l["points"]),
                )
            })
            .collect();
        let levels: Vec<LevelOutput> = data
            .iter()
            .map(|(c, o, m, p)| LevelOutput {
                cls_logits: c,
                offsets: o,
                mask: m,
                points: p,
            })
            .collect();
        let n = case["num_classes"].as_u64().unwrap() as usize;
        let aware = case["class_aware"].as_bool().unwrap();
        let mut cands = Segments::default();
        for l in &levels {
            let s = level_candidates(l, n, aware, &cfg);
            cands.segs.extend(s.segs);
            cands.scores.extend(s.scores);
            cands.labels.extend(s.labels);
        }
        assert_segments(
            &cands,
            &case["candidates"],
            &format!("postprocess {c} candidates"),
        );
        let m = &case["meta"];
        let meta = VideoMeta {
            fps: m["fps"].as_f64().unwrap() as f32,
            duration: m["duration"].as_f64().unwrap() as f32,
            feat_stride: m["feat_stride"].as_f64().unwrap() as f32,
            num_frames: m["feat_num_frames"].as_f64().unwrap() as f32,
        };
        let out = postprocess_video(&levels, n, aware, &meta, &cfg);
        assert_segments(&out, case, &format!("postprocess {c}"));
    }
}

fn cace(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prints_and_writes_official_map() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("map.json");
    let (dets, ants) = (
        fixture("unav_detections.json"),
        fixture("unav_annotations.json"),
    );
    let (ok, stdout, stderr) = cace(&[
        "dense",
        "eval",
        "--detections",
        dets.to_str().unwrap(),
        "--annotations",
        ants.to_str().unwrap(),
        "--split",
        "test",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let golden = &json("unav_map.json")[0];
    assert_eq!(golden["split"], "test");
    let avg = golden["average_mAP"].as_f64().unwrap() * 100.0;
    assert!(stdout.contains("tIoU = 0.50: mAP = "), "{stdout}");
    assert!(
        stdout.contains(&format!("average mAP: {avg:.2} %")),
        "{stdout}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(f64s(&written["tiou"]), f64s(&golden["tiou"]));
    for (got, want) in f64s(&written["mAP"]).iter().zip(f64s(&golden["mAP"])) {
        assert!(close(*got, want * 100.0, 1e-4), "{got} vs {want}");
    }
    assert!(close(written["average_mAP"].as_f64().unwrap(), avg, 1e-4));
}

#[test]
fn cli_split_defaults_to_test_and_all_takes_every_video() {
    let (dets, ants) = (
        fixture("unav_detections.json"),
        fixture("unav_annotations.json"),
    );
    let golden = json("unav_map.json");
    for (split, case) in [(None, &golden[0]), (Some("all"), &golden[2])] {
        let mut args = vec!["dense", "eval", "--detections", dets.to_str().unwrap()];
        args.extend(["--annotations", ants.to_str().unwrap()]);
        args.extend(split.iter().flat_map(|s| ["--split", *s]));
        let (ok, stdout, stderr) = cace(&args);
        assert!(ok, "{stderr}");
        let avg = case["average_mAP"].as_f64().unwrap() * 100.0;
        assert!(
            stdout.contains(&format!("average mAP: {avg:.2} %")),
            "{split:?}: {stdout}"
        );
    }
    assert!(golden[2]["split"].is_null());
}

/// Runs `dense eval` on the given detection text (annotations from the fixture) and returns
/// stderr after checking it failed with exit code 1.
fn eval_fails(dets: &str, split: &str, ants: Option<&str>) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dets.json");
    std::fs::write(&d, dets).unwrap();
    let a = match ants {
        Some(text) => {
            let a = dir.path().join("ants.json");
            std::fs::write(&a, text).unwrap();
            a
        }
        None => fixture("unav_annotations.json"),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(["dense", "eval", "--detections"])
        .arg(&d)
        .arg("--annotations")
        .arg(&a)
        .args(["--split", split])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("bug"),
        "{stderr}"
    );
    (stderr, d.display().to_string())
}

#[test]
fn cli_bad_inputs_are_named() {
    let good = r#"{"database": {"vid0": [{"segment": [1.0, 2.0], "label_id": 0, "scores": 0.5}]}}"#;
    let (e, _) = eval_fails(good, "nosuch", None);
    assert!(
        e.contains("unknown split \"nosuch\"") && e.contains("test, validation"),
        "{e}"
    );

    let (e, f) = eval_fails(
        r#"{"database": {"vid0": [{"segment": [3.0, 2.0], "label_id": 0, "scores": 0.5}]}}"#,
        "test",
        None,
    );
    assert!(
        e.contains(&f) && e.contains("ends before it starts") && e.contains("vid0"),
        "{e}"
    );

    let (e, f) = eval_fails(
        r#"{"database": {"vid0": [{"segment": [1.0, 2.0], "label_id": 0, "scores": NaN}]}}"#,
        "test",
        None,
    );
    assert!(e.contains(&f) && e.contains("NaN"), "{e}");

    let (e, f) = eval_fails(
        r#"{"database": {"vid0": [{"segment": [1.0, 2.0], "label_id": 0}]}}"#,
        "test",
        None,
    );
    assert!(e.contains(&f) && e.contains("no \"scores\""), "{e}");

    let (e, f) = eval_fails("{\"database\": {", "test", None);
    assert!(e.contains(&f) && e.contains("not a valid"), "{e}");

    let (e, _) = eval_fails(
        good,
        "test",
        Some(r#"{"database": {"v": {"subset": "test"}}}"#),
    );
    assert!(
        e.contains("ants.json") && e.contains("no \"annotations\""),
        "{e}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args([
            "dense",
            "eval",
            "--detections",
            "/nonexistent/d.json",
            "--annotations",
        ])
        .arg(fixture("unav_annotations.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("/nonexistent/d.json: cannot read"), "{e}");
}
