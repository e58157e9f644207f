//! The paper's ablation tables as configurations (`cace ablate`): each row of Tables 1, 2, 4,
//! S1, S2 and S4 is a change to the published [`TrainConfig`], run for several seeds with the
//! honest protocol (test accuracy at the best **val** epoch) and the official one (best test
//! accuracy over epochs), and printed next to the paper's figure for that row.
//!
//! Row definitions follow the code, not the paper's names (REFERENCE §5.1.10): the paper's
//! "AVCA-Visual-only" is `Audio-Guide` (ψ = 0), "AVCA-Audio-only" is `Visual-Guide`. Tables 1
//! and S2 are measured without BECE (their AVCA row, 80.30, is Table 2's "w/o BECE"), and the
//! baseline of Table 4 ("−, −, −", 78.83) is Audio-Guide without BECE. Table 4's
//! efficient-encoder row needs ResNet50/Cnn14 features (`cace extract --encoders resnet-cnn14`)
//! and is listed as not run on VGG features.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use crate::config::{Augmentation, Guide};
use crate::model::temporal::TemporalKind;
use crate::train::{self, MeanStd, REPORT_FILE, Report, RunOptions, TrainConfig};

/// One row of a table.
pub struct Row {
    /// Short name used for the run directory.
    pub slug: &'static str,
    /// The row's label as the paper prints it.
    pub label: &'static str,
    /// The paper's accuracy (%), official protocol on the real AVE features.
    pub paper: f64,
    /// The change to the published config; `None` = cannot run on these features.
    pub apply: Option<fn(&mut TrainConfig)>,
    /// Tables 3 and S5 compare features, not configs: the row trains the published config on
    /// `DATA/<features>` (visual/audio widths taken from the folder); a row whose folder is
    /// absent is not run.
    pub features: Option<&'static str>,
}

pub const TABLES: [&str; 8] = ["1", "2", "3", "4", "S1", "S2", "S4", "S5"];

fn no_bece(c: &mut TrainConfig) {
    c.model.contrastive = false;
}

/// The rows of `table` (case-insensitive: `1`, `2`, `4`, `S1`, `S2`, `S4`).
pub fn rows(table: &str) -> Result<Vec<Row>> {
    Ok(match table.to_ascii_uppercase().as_str() {
        "1" => table_1(),
        "2" => table_2(),
        "3" => table_3(),
        "4" => table_4(),
        "S1" => table_s1(),
        "S2" => table_s2(),
        "S4" => table_s4(),
        "S5" => table_s5(),
        other => bail!(
            "unknown table `{other}`: choose one of {}",
            TABLES.join(", ")
        ),
    })
}

/// A row that runs: the published config changed by `apply`.
fn r(slug: &'static str, label: &'static str, paper: f64, apply: fn(&mut TrainConfig)) -> Row {
    Row {
        slug,
        label,
        paper,
        apply: Some(apply),
        features: None,
    }
}

/// A row of Table 3 or S5: the published config on the features in `DATA/<folder>`.
fn f(folder: &'static str, label: &'static str, paper: f64) -> Row {
    Row {
        slug: folder,
        label,
        paper,
        apply: Some(|_| {}),
        features: Some(folder),
    }
}

/// Table 3: more efficient encoders and fine-tuning. `DATA/vgg19-vggish` (`cace extract
/// --encoders vgg`, or the AVE features), `DATA/resnet50-cnn14` (`--encoders resnet-cnn14`
/// with torchvision's ResNet-50) and `DATA/resnet50ft-cnn14` (the same with the `resnet50.pth`
/// of `cace finetune --encoder resnet50`), each with the AVE labels and splits (README).
fn table_3() -> Vec<Row> {
    vec![
        f(
            "vgg19-vggish",
            "w/o more efficient encoders (VGG19 + VGGish)",
            80.80,
        ),
        f(
            "resnet50-cnn14",
            "with more efficient encoders (ResNet50 + Cnn14)",
            81.56,
        ),
        f(
            "resnet50ft-cnn14",
            "with more efficient encoders + fine-tuning",
            82.36,
        ),
    ]
}

/// Table S5: fine-tuning each visual encoder. The VGG19 rows use VGG19-BN, the network the
/// published fine-tuning code trains (`--encoders vgg19bn-vggish`, pretrained and fine-tuned
/// `vgg19_bn.pth`).
fn table_s5() -> Vec<Row> {
    vec![
        f("vgg19bn-vggish", "VGG19(-BN) w/o fine-tuning", 79.65),
        f("vgg19bnft-vggish", "VGG19(-BN) w/ fine-tuning", 80.05),
        f("resnet50-cnn14", "ResNet50 w/o fine-tuning", 81.56),
        f("resnet50ft-cnn14", "ResNet50 w/ fine-tuning", 82.36),
    ]
}

/// Table 1: which modality guides the attention (AVCA), without BECE.
fn table_1() -> Vec<Row> {
    vec![
        r("no-avca", "w/o AVCA", 78.26, |c| {
            no_bece(c);
            c.model.guide = Guide::None;
        }),
        r(
            "audio-guide",
            "w/ AVCA-Visual-only (code: Audio-Guide, ψ = 0)",
            78.83,
            |c| {
                no_bece(c);
                c.model.guide = Guide::AudioGuide;
            },
        ),
        r(
            "visual-guide",
            "w/ AVCA-Audio-only (code: Visual-Guide)",
            77.23,
            |c| {
                no_bece(c);
                c.model.guide = Guide::VisualGuide;
            },
        ),
        r("co-guide", "w/ AVCA", 80.30, no_bece),
    ]
}

/// Table 2: BECE and its weight λ.
fn table_2() -> Vec<Row> {
    vec![
        r("no-bece", "w/o BECE", 80.30, no_bece),
        r("lambda-0.2", "w/ BECE λ = 0.2", 80.25, |c| {
            c.model.lambda = 0.2
        }),
        r("lambda-0.4", "w/ BECE λ = 0.4", 80.65, |c| {
            c.model.lambda = 0.4
        }),
        r("lambda-0.6", "w/ BECE λ = 0.6", 80.80, |c| {
            c.model.lambda = 0.6
        }),
        r("lambda-0.8", "w/ BECE λ = 0.8", 80.10, |c| {
            c.model.lambda = 0.8
        }),
        r(
            "lambda-0.6-star",
            "w/ BECE λ = 0.6 * (enhanced feature for the category too)",
            80.65,
            |c| {
                c.model.enhanced_for_category = true;
            },
        ),
    ]
}

/// Table 4: the components added one by one.
fn table_4() -> Vec<Row> {
    vec![
        r("baseline", "− AVCA, − BECE (Audio-Guide)", 78.83, |c| {
            no_bece(c);
            c.model.guide = Guide::AudioGuide;
        }),
        r("bece", "− AVCA, + BECE", 78.93, |c| {
            c.model.guide = Guide::AudioGuide
        }),
        r("avca", "+ AVCA, − BECE", 80.30, no_bece),
        r("avca-bece", "+ AVCA, + BECE", 80.80, |_| {}),
        Row {
            slug: "efficient-encoders",
            label: "+ AVCA, + BECE, + efficient encoders (needs ResNet50/Cnn14 features)",
            paper: 82.36,
            apply: None,
            features: None,
        },
    ]
}

/// Table S1: the temporal encoder.
fn table_s1() -> Vec<Row> {
    vec![
        r("no-temporal", "w/o temporal encoder", 76.39, |c| {
            c.model.temporal = TemporalKind::None;
        }),
        r("lstm", "w/ unidirectional LSTM", 77.04, |c| {
            c.model.temporal = TemporalKind::Lstm;
        }),
        r("snn", "w/ SNN", 77.11, |c| {
            c.model.temporal = TemporalKind::Snn
        }),
        r("bilstm", "w/ bidirectional LSTM", 80.80, |_| {}),
    ]
}

/// Table S2: the guidance weight ψ, without BECE.
fn table_s2() -> Vec<Row> {
    vec![
        r("psi-0", "AVCA-Visual-only ψ = 0", 78.83, |c| {
            no_bece(c);
            c.model.guide = Guide::AudioGuide;
        }),
        r("psi-0.15", "w/ AVCA ψ = 0.15", 78.71, |c| {
            no_bece(c);
            c.model.psi = 0.15;
        }),
        r("psi-0.3", "w/ AVCA ψ = 0.3", 80.30, no_bece),
        r("psi-0.45", "w/ AVCA ψ = 0.45", 79.93, |c| {
            no_bece(c);
            c.model.psi = 0.45;
        }),
    ]
}

/// Table S4: (a) feature augmentation, (b) the BECE loss weight λ1.
fn table_s4() -> Vec<Row> {
    vec![
        r("mask", "(a) Channel random mask", 79.20, |c| {
            c.model.augmentation = Augmentation::ChannelMask;
        }),
        r("mixup", "(a) Feature mixup", 78.36, |c| {
            c.model.augmentation = Augmentation::Mixup;
        }),
        r("noise-1.0", "(a) Random noise σ = 1.0", 79.50, |c| {
            c.model.noise_std = 1.0
        }),
        r("noise-0.1", "(a) Random noise σ = 0.1", 80.80, |_| {}),
        r("noise-0.05", "(a) Random noise σ = 0.05", 80.72, |c| {
            c.model.noise_std = 0.05
        }),
        r("weight-0", "(b) BECE loss weight λ1 = 0.0", 80.30, |c| {
            c.contrastive_weight = 0.0
        }),
        r("weight-0.5", "(b) BECE loss weight λ1 = 0.5", 80.42, |c| {
            c.contrastive_weight = 0.5
        }),
        r("weight-1", "(b) BECE loss weight λ1 = 1.0", 80.80, |_| {}),
        r("weight-3", "(b) BECE loss weight λ1 = 3.0", 80.87, |c| {
            c.contrastive_weight = 3.0
        }),
        r("weight-5", "(b) BECE loss weight λ1 = 5.0", 80.30, |c| {
            c.contrastive_weight = 5.0
        }),
    ]
}

/// Options of one `cace ablate` run.
pub struct AblateOptions {
    pub table: String,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Base config (the published run unless given); each row changes it.
    pub base: TrainConfig,
    pub seeds: Vec<u64>,
    /// Runs trained at the same time (each uses all cores; >1 helps only on big machines).
    pub jobs: usize,
    pub device: Device,
}

/// One row's result.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub row: String,
    pub label: String,
    pub paper: f64,
    /// `None` when the row cannot run on these features.
    pub honest: Option<MeanStd>,
    pub official: Option<MeanStd>,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    pub table: String,
    pub data: PathBuf,
    pub epochs: usize,
    pub seeds: Vec<u64>,
    /// This call's wall time (runs finished by earlier calls are reused, not retrained).
    pub wall_seconds: f64,
    /// Training time of every run in the table, summed, whichever call trained it.
    pub train_seconds: f64,
    pub rows: Vec<RowResult>,
}

/// Trains one (row, seed), or reads its report when it already finished. An interrupted run
/// continues from its `last/` checkpoint (the runs are resumable, see [`train::train`]).
fn run_one(opts: &AblateOptions, row: &Row, seed: u64, verbose: bool) -> Result<Report> {
    let dir = opts.out.join(row.slug).join(format!("seed-{seed}"));
    let done = dir.join(REPORT_FILE);
    if done.exists() {
        return serde_json::from_slice(&fs::read(&done)?)
            .with_context(|| format!("{}: unreadable report", done.display()));
    }
    let mut config = TrainConfig {
        seed,
        ..opts.base.clone()
    };
    (row.apply.expect("runnable row"))(&mut config);
    let data = match row.features {
        Some(folder) => {
            let data = opts.data.join(folder);
            let ave = crate::data::ave::AveDir::open(&data)?;
            config.model.visual_dim = ave.visual_dim();
            config.model.audio_dim = ave.audio_dim();
            config.model.audio_fc = ave.audio_dim() != 128;
            data
        }
        None => opts.data.clone(),
    };
    train::train(&RunOptions {
        data,
        out: dir,
        config,
        resume: true,
        device: opts.device.clone(),
        verbose,
    })
}

/// Runs every row × seed (skipping finished ones), then writes `table.md` and `table.json`.
pub fn run(opts: &AblateOptions) -> Result<TableResult> {
    let mut rows = rows(&opts.table)?;
    if opts.seeds.is_empty() {
        bail!("no seeds given");
    }
    for row in rows.iter_mut() {
        if let Some(folder) = row.features.filter(|f| !opts.data.join(f).is_dir()) {
            eprintln!(
                "row `{}`: {} not found, not run",
                row.slug,
                opts.data.join(folder).display()
            );
            row.apply = None;
        }
    }
    // A row folder that exists but cannot be read (an extraction still running, say) fails
    // the table now, before hours of training on the other rows.
    for row in rows.iter().filter(|r| r.apply.is_some()) {
        if let Some(folder) = row.features {
            crate::data::ave::AveDir::open(&opts.data.join(folder))
                .with_context(|| format!("row `{}` of table {}", row.slug, opts.table))?;
        }
    }
    if rows.iter().all(|r| r.apply.is_none()) {
        bail!(
            "no row of table {} can run on {}{}",
            opts.table,
            opts.data.display(),
            if rows.iter().any(|r| r.features.is_some()) {
                " (it should hold one folder of features per row, README: Tables 3 and S5)"
            } else {
                ""
            }
        );
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let started = std::time::Instant::now();
    // Rows with the same config and data (Table S4's σ = 0.1 and λ1 = 1.0 are both the
    // published model) are trained once and share their reports.
    let first_with = first_with_same_config(&opts.base, &rows);
    let jobs: Vec<(usize, u64)> = (0..rows.len())
        .filter(|&i| rows[i].apply.is_some() && first_with[i] == i)
        .flat_map(|i| opts.seeds.iter().map(move |&s| (i, s)))
        .collect();
    let mut reports = run_jobs(opts, &rows, &jobs)?;
    let train_seconds = reports.iter().flatten().map(|r| r.train_seconds).sum();
    for i in 0..rows.len() {
        if rows[i].apply.is_some() && first_with[i] != i {
            reports[i] = reports[first_with[i]].clone();
        }
    }
    let result = TableResult {
        table: opts.table.to_ascii_uppercase(),
        data: opts.data.clone(),
        epochs: opts.base.epochs,
        seeds: opts.seeds.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        train_seconds,
        rows: rows
            .iter()
            .zip(reports)
            .map(|(row, reports)| row_result(row, reports))
            .collect(),
    };
    write_outputs(&opts.out, &result)?;
    Ok(result)
}

/// For each row, the first row whose config equals its own (itself when none comes earlier).
fn first_with_same_config(base: &TrainConfig, rows: &[Row]) -> Vec<usize> {
    let configs: Vec<Option<String>> = rows
        .iter()
        .map(|r| {
            r.apply.map(|apply| {
                let mut c = base.clone();
                apply(&mut c);
                let config = serde_json::to_string(&c).expect("config serialises");
                format!("{config} on {:?}", r.features)
            })
        })
        .collect();
    (0..rows.len())
        .map(|i| configs.iter().position(|c| c == &configs[i]).unwrap_or(i))
        .collect()
}

/// Trains `jobs` (`(row, seed)`), `opts.jobs` at a time; returns each row's reports in job
/// order.
fn run_jobs(opts: &AblateOptions, rows: &[Row], jobs: &[(usize, u64)]) -> Result<Vec<Vec<Report>>> {
    let total = jobs.len();
    let mut reports: Vec<Vec<Report>> = vec![vec![]; rows.len()];
    let parallel = opts.jobs.max(1);
    for (n, chunk) in jobs.chunks(parallel).enumerate() {
        let results: Vec<Result<Report>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&(i, seed)| {
                    let row = &rows[i];
                    eprintln!(
                        "== [{}/{total}] table {} row `{}` seed {seed}",
                        n * parallel + 1,
                        opts.table,
                        row.slug
                    );
                    s.spawn(move || run_one(opts, row, seed, parallel == 1))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("training thread panicked"))
                .collect()
        });
        for (&(i, _), r) in chunk.iter().zip(results) {
            reports[i].push(r?);
        }
    }
    Ok(reports)
}

/// A row's mean ± std over its seeds, both protocols.
fn row_result(row: &Row, reports: Vec<Report>) -> RowResult {
    let stat = |f: fn(&Report) -> Option<f64>| {
        let xs: Vec<f64> = reports.iter().filter_map(f).collect();
        (!xs.is_empty()).then(|| MeanStd::of(&xs))
    };
    RowResult {
        row: row.slug.to_string(),
        label: row.label.to_string(),
        paper: row.paper,
        honest: stat(|r| r.test_acc_at_best_val),
        official: stat(|r| r.test_acc_best_over_epochs),
        reports,
    }
}

/// The Markdown table.
pub fn markdown(t: &TableResult) -> String {
    let ms = |m: &Option<MeanStd>| match m {
        Some(m) => format!("{:.2} ± {:.2}", m.mean, m.std),
        None => "not run".to_string(),
    };
    let mut s = format!(
        "# Table {} — {} epochs, seeds {:?}, data `{}`\n\n\
         | row | ours: test acc. at best val (honest), % | ours: best test over epochs (official protocol), % | paper (official protocol, real AVE), % |\n\
         |---|---|---|---|\n",
        t.table,
        t.epochs,
        t.seeds,
        t.data.display()
    );
    for r in &t.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} |\n",
            r.label,
            ms(&r.honest),
            ms(&r.official),
            r.paper
        ));
    }
    s.push_str(&format!(
        "\nmean ± sample std over seeds; training time of the runs {:.0} s (this call {:.0} s; \
         runs finished before are reused). The paper's numbers are single runs selected on the \
         test split, on the real AVE features.\n",
        t.train_seconds, t.wall_seconds
    ));
    s
}

fn write_outputs(out: &Path, t: &TableResult) -> Result<()> {
    crate::checkpoint::native::write_atomic(&out.join("table.md"), markdown(t).as_bytes())?;
    crate::checkpoint::native::write_atomic(
        &out.join("table.json"),
        serde_json::to_string_pretty(t)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of every table makes a valid config, and rows differ from each other.
    #[test]
    fn every_row_is_a_valid_distinct_config() {
        for t in TABLES {
            let rows = rows(t).unwrap();
            let mut seen: Vec<String> = Vec::new();
            for row in &rows {
                let Some(apply) = row.apply else { continue };
                let mut c = TrainConfig::default();
                apply(&mut c);
                c.validate().unwrap();
                let json = format!("{} {:?}", serde_json::to_string(&c).unwrap(), row.features);
                // Only Table S4 repeats the published model (in its sub-tables a and b).
                let repeat_ok = t == "S4" && row.slug == "weight-1";
                assert!(
                    repeat_ok || !seen.contains(&json),
                    "table {t}: row {} repeats a config",
                    row.slug
                );
                seen.push(json);
            }
        }
        assert!(rows("S3").is_err());
        // Table S1's SNN row really selects the spiking encoder.
        let snn = rows("s1")
            .unwrap()
            .into_iter()
            .find(|r| r.slug == "snn")
            .unwrap();
        let mut c = TrainConfig::default();
        (snn.apply.unwrap())(&mut c);
        assert_eq!(c.model.temporal, TemporalKind::Snn);
    }
}
