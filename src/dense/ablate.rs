//! Paper Table S3 on UnAV-layout data (`cace ablate --table S3`): the UnAV baseline, with
//! AVCA, and with AVCA and BECE, each trained with several seeds ([`super::train`], resumable;
//! a finished run is read back), reported as the test mAP (%) of the epoch selected on
//! validation, mean ± sample std over seeds, at tIoU 0.5…0.9 and averaged over 0.1…0.9 as the
//! paper.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use super::checkpoint::Weights;
use super::train::{DenseReport, DenseTrainConfig, DenseTrainOptions, train};
use crate::train::MeanStd;

/// One row: its switches and the paper's numbers (mAP at 0.5…0.9, average).
pub struct Row {
    pub slug: &'static str,
    pub label: &'static str,
    pub avca: bool,
    pub bece: bool,
    pub paper: [f64; 6],
}

pub const ROWS: [Row; 3] = [
    Row {
        slug: "baseline",
        label: "UnAV baseline (−, −)",
        avca: false,
        bece: false,
        paper: [49.3, 45.0, 39.5, 32.9, 21.6, 46.8],
    },
    Row {
        slug: "avca",
        label: "+ AVCA (✓, −)",
        avca: true,
        bece: false,
        paper: [49.8, 45.1, 40.0, 32.6, 21.3, 47.1],
    },
    Row {
        slug: "avca-bece",
        label: "+ AVCA + BECE (✓, ✓)",
        avca: true,
        bece: true,
        paper: [50.1, 45.4, 40.2, 32.7, 21.2, 47.5],
    },
];

pub struct S3Options {
    pub data: PathBuf,
    pub out: PathBuf,
    pub base: DenseTrainConfig,
    pub seeds: Vec<u64>,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Row {
    pub row: String,
    pub label: String,
    /// Test mAP at tIoU 0.5…0.9 and the average over 0.1…0.9, mean ± std over seeds.
    pub test_map: Vec<MeanStd>,
    pub paper: [f64; 6],
    pub reports: Vec<DenseReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Result {
    pub data: PathBuf,
    pub epochs: usize,
    pub seeds: Vec<u64>,
    pub wall_seconds: f64,
    pub rows: Vec<S3Row>,
}

/// Trains every row × seed not finished yet, then writes `table.md` and `table.json`.
pub fn run(opts: &S3Options) -> Result<S3Result> {
    if opts.seeds.is_empty() {
        bail!("no seeds given");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    for row in &ROWS {
        let mut reports = Vec::new();
        for &seed in &opts.seeds {
            eprintln!("== table S3 row `{}` seed {seed}", row.slug);
            reports.push(run_one(opts, row, seed)?);
        }
        rows.push(summarise(row, reports));
    }
    let result = S3Result {
        data: opts.data.clone(),
        epochs: opts.base.total_epochs(),
        seeds: opts.seeds.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        rows,
    };
    crate::fsutil::write_file(&opts.out.join("table.md"), markdown(&result).as_bytes())?;
    crate::fsutil::write_file(
        &opts.out.join("table.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    Ok(result)
}

fn run_one(opts: &S3Options, row: &Row, seed: u64) -> Result<DenseReport> {
    let dir = opts.out.join(row.slug).join(format!("seed-{seed}"));
    let done = dir.join(crate::train::run_dir::REPORT_FILE);
    if done.exists() {
        return serde_json::from_slice(&std::fs::read(&done)?)
            .with_context(|| format!("{}: unreadable report", done.display()));
    }
    let mut config = DenseTrainConfig {
        seed,
        ..opts.base.clone()
    };
    config.model.avca = row.avca;
    config.model.bece = row.bece;
    train(&DenseTrainOptions {
        data: opts.data.clone(),
        out: dir.clone(),
        config,
        resume: dir.join(crate::train::run_dir::CONFIG_FILE).exists(),
        eval_weights: Weights::Ema,
        device: opts.device.clone(),
        verbose: true,
    })
}

fn summarise(row: &Row, reports: Vec<DenseReport>) -> S3Row {
    // Columns: tIoU 0.5…0.9 (indices 4..9 of 0.1…0.9), then the average.
    let column = |c: usize| {
        let xs: Vec<f64> = reports
            .iter()
            .filter_map(|r| match c {
                5 => r.test_map,
                _ => r.test_map_tiou.as_ref().map(|m| m[4 + c]),
            })
            .collect();
        MeanStd::of(&xs)
    };
    S3Row {
        row: row.slug.into(),
        label: row.label.into(),
        test_map: (0..6).map(column).collect(),
        paper: row.paper,
        reports,
    }
}

pub fn markdown(t: &S3Result) -> String {
    let mut s = format!(
        "# Table S3 — {} epochs, seeds {:?}, data `{}`\n\n\
         Test mAP (%) of the epoch selected on validation, mean ± sample std over seeds \
         (paper, real UnAV-100, in brackets).\n\n\
         | row | 0.5 | 0.6 | 0.7 | 0.8 | 0.9 | Avg. (0.1–0.9) |\n|---|---|---|---|---|---|---|\n",
        t.epochs,
        t.seeds,
        t.data.display()
    );
    for r in &t.rows {
        let cells: Vec<String> = r
            .test_map
            .iter()
            .zip(r.paper)
            .map(|(m, p)| format!("{:.2} ± {:.2} ({p:.1})", m.mean, m.std))
            .collect();
        s.push_str(&format!("| {} | {} |\n", r.label, cells.join(" | ")));
    }
    s.push_str(&format!("\nwall time {:.0} s.\n", t.wall_seconds));
    s
}

/// Whether `table` names Table S3.
pub fn is_s3(table: &str) -> bool {
    table.eq_ignore_ascii_case("s3")
}
