//! What a training run reports: `report.json` under both model-selection protocols, and the
//! mean ± std over seeds.

use serde::{Deserialize, Serialize};

/// `RUN_DIR/report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub epochs: usize,
    /// Honest protocol: the epoch with the best **val** accuracy, and test accuracy there.
    pub best_val_epoch: Option<usize>,
    pub val_acc_at_best_val: Option<f64>,
    pub test_acc_at_best_val: Option<f64>,
    /// Official protocol (CACE-Net's script): the best **test** accuracy over all epochs.
    pub test_acc_best_over_epochs: Option<f64>,
    pub best_test_epoch: Option<usize>,
    pub final_test_acc: Option<f64>,
    pub seed: u64,
    pub train_seconds: f64,
}

pub fn fmt_acc(a: Option<f64>) -> String {
    a.map_or("-".to_string(), |a| format!("{a:.2} %"))
}

/// Prints a report, labelling the official protocol as such.
pub fn print_report(r: &Report) {
    println!(
        "best val epoch: {}",
        r.best_val_epoch.map_or("-".into(), |e| (e + 1).to_string())
    );
    println!(
        "val accuracy at best val epoch:  {}",
        fmt_acc(r.val_acc_at_best_val)
    );
    println!(
        "test accuracy at best val epoch: {}  (honest protocol: model selected on val)",
        fmt_acc(r.test_acc_at_best_val)
    );
    println!(
        "best test accuracy over epochs:  {}  (official CACE-Net protocol: selected on test, optimistic)",
        fmt_acc(r.test_acc_best_over_epochs)
    );
}

/// Mean ± std (sample std, n − 1) of several seeds' reports.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSummary {
    pub seeds: Vec<u64>,
    pub test_acc_at_best_val: MeanStd,
    pub test_acc_best_over_epochs: MeanStd,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
            n,
        }
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ± {:.2} % (n = {})", self.mean, self.std, self.n)
    }
}

impl SeedSummary {
    pub fn from_reports(reports: &[Report]) -> Self {
        let honest: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.test_acc_at_best_val)
            .collect();
        let official: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.test_acc_best_over_epochs)
            .collect();
        Self {
            seeds: reports.iter().map(|r| r.seed).collect(),
            test_acc_at_best_val: MeanStd::of(&honest),
            test_acc_best_over_epochs: MeanStd::of(&official),
            reports: reports.to_vec(),
        }
    }

    pub fn print(&self) {
        println!("seeds {:?}", self.seeds);
        println!(
            "test accuracy at best val epoch: {}  (honest protocol)",
            self.test_acc_at_best_val
        );
        println!(
            "best test accuracy over epochs:  {}  (official CACE-Net protocol, selected on test)",
            self.test_acc_best_over_epochs
        );
    }
}
