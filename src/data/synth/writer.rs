//! Writing a synthetic dataset: the small files (annotations, orders, labels), the feature
//! files chunk by chunk, and `synth.json`, all in a staging folder that is moved into place
//! only when complete (see "Writing" in the module documentation of [`super`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::generator::{CELLS, SegKind, synth_rows};
use super::info::synth_info;
use super::prototypes::Prototypes;
use super::select::{Selection, annotation_line, select_rows};
use super::{CHUNK_ROWS, SYNTH_INFO_FILE, SynthConfig, SynthSummary};
use crate::data::annotations::{Annotation, T, builtin_annotations};
use crate::data::ave::{
    ANNOTATIONS_FILE, AUDIO_FILE, AVE_ROWS, DataError, FEATURE_KEY, FeatureDType, GRID,
    LABELS_FILE, NUM_LABELS, ORDER_KEY, Split, VISUAL_FILE,
};
use crate::data::h5::{self, FloatRowWriter};

/// Writes a synthetic AVE-layout dataset into `out_dir` (created if needed; must not already
/// hold any file of the layout). See the module documentation for the content.
pub fn generate(out_dir: &Path, cfg: &SynthConfig) -> Result<SynthSummary, DataError> {
    let bad_cfg = |msg: String| DataError::Invalid {
        path: out_dir.to_path_buf(),
        msg: format!("synthetic dataset: {msg}"),
    };
    if cfg.videos < 3 || cfg.videos > AVE_ROWS {
        return Err(bad_cfg(format!(
            "videos = {} is out of range (need 3 <= videos <= {AVE_ROWS}: one row per split at least, at most all AVE rows)",
            cfg.videos
        )));
    }
    if !cfg.noise.is_finite() || cfg.noise < 0.0 {
        return Err(bad_cfg(format!(
            "noise = {} must be finite and >= 0",
            cfg.noise
        )));
    }
    if cfg.visual_dim == 0 || cfg.audio_dim == 0 {
        return Err(bad_cfg(format!(
            "visual_dim = {} and audio_dim = {} must be > 0",
            cfg.visual_dim, cfg.audio_dim
        )));
    }

    fs::create_dir_all(out_dir).map_err(|e| DataError::Io {
        path: out_dir.to_path_buf(),
        what: "cannot create output directory",
        source: e,
    })?;
    check_no_existing(out_dir)?;

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let staging = out_dir.join(format!(
        ".synth-staging-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&staging).map_err(|e| DataError::Io {
        path: out_dir.to_path_buf(),
        what: "output directory is not writable (cannot create a staging directory in it)",
        source: e,
    })?;
    let result = write_all(&staging, out_dir, cfg).and_then(|summary| {
        publish(&staging, out_dir)?;
        Ok(summary)
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Every file name `generate` writes, in the order they are moved into place.
const OUTPUT_FILES: [&str; 8] = [
    ANNOTATIONS_FILE,
    SYNTH_INFO_FILE,
    "train_order.h5",
    "val_order.h5",
    "test_order.h5",
    LABELS_FILE,
    AUDIO_FILE,
    VISUAL_FILE,
];

fn check_no_existing(out_dir: &Path) -> Result<(), DataError> {
    debug_assert!(
        Split::ALL
            .iter()
            .all(|s| OUTPUT_FILES.contains(&s.order_file()))
    );
    for name in OUTPUT_FILES {
        let p = out_dir.join(name);
        if p.symlink_metadata().is_ok() {
            return Err(DataError::Invalid {
                path: p,
                msg: "already exists; the synthetic generator never overwrites a dataset (remove the old files or choose an empty directory)".into(),
            });
        }
    }
    Ok(())
}

/// Moves the finished files from `staging` into `out_dir`; on failure removes what was moved.
fn publish(staging: &Path, out_dir: &Path) -> Result<(), DataError> {
    for name in OUTPUT_FILES {
        fs::File::open(staging.join(name))
            .and_then(|f| f.sync_all())
            .map_err(|e| DataError::Io {
                path: out_dir.join(name),
                what: "cannot flush the written file to disk",
                source: e,
            })?;
    }
    check_no_existing(out_dir)?;
    let mut moved = Vec::new();
    for name in OUTPUT_FILES {
        let (from, to) = (staging.join(name), out_dir.join(name));
        if let Err(e) = fs::rename(&from, &to) {
            for p in moved {
                let _ = fs::remove_file(p);
            }
            return Err(DataError::Io {
                path: to,
                what: "cannot move the written file into place",
                source: e,
            });
        }
        moved.push(to);
    }
    Ok(())
}

fn write_all(staging: &Path, out_dir: &Path, cfg: &SynthConfig) -> Result<SynthSummary, DataError> {
    let all = builtin_annotations();
    let sel = select_rows(cfg.videos).map_err(|msg| DataError::Invalid {
        path: out_dir.to_path_buf(),
        msg,
    })?;
    // Small files first (cheap failures surface early).
    write_small_files(staging, out_dir, &all, &sel)?;
    let summary = write_feature_files(staging, cfg, &all, &sel)?;
    let info = synth_info(cfg, &summary, &sel.rows);
    write_file(
        &staging.join(SYNTH_INFO_FILE),
        out_dir.join(SYNTH_INFO_FILE),
        info.as_bytes(),
    )?;
    Ok(summary)
}

/// `Annotations.txt`, the three order files and `labels.h5` of the selected rows.
fn write_small_files(
    staging: &Path,
    out_dir: &Path,
    all: &[Annotation],
    sel: &Selection,
) -> Result<(), DataError> {
    let n = sel.rows.len();
    let anns: Vec<&Annotation> = sel.rows.iter().map(|&r| &all[r]).collect();
    let mut text = String::new();
    for a in &anns {
        text.push_str(&annotation_line(a));
    }
    write_file(
        &staging.join(ANNOTATIONS_FILE),
        out_dir.join(ANNOTATIONS_FILE),
        text.as_bytes(),
    )?;
    for (split, order) in Split::ALL.iter().zip(&sel.orders) {
        let v: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        h5::write(&staging.join(split.order_file()), ORDER_KEY, &[v.len()], &v)?;
    }
    let mut labels = vec![0.0f32; n * T * NUM_LABELS];
    for (i, a) in anns.iter().enumerate() {
        for (t, c) in a.segment_labels().into_iter().enumerate() {
            labels[(i * T + t) * NUM_LABELS + c] = 1.0;
        }
    }
    h5::write(
        &staging.join(LABELS_FILE),
        FEATURE_KEY,
        &[n, T, NUM_LABELS],
        &labels,
    )
}

/// Generates the features of the selected rows [`CHUNK_ROWS`] at a time into the two feature
/// files; returns the summary (rows per split, segments per kind).
fn write_feature_files(
    staging: &Path,
    cfg: &SynthConfig,
    all: &[Annotation],
    sel: &Selection,
) -> Result<SynthSummary, DataError> {
    let n = sel.rows.len();
    let protos = Prototypes::new(cfg.seed, cfg.visual_dim, cfg.audio_dim);
    let vrow = T * CELLS * cfg.visual_dim;
    let arow = T * cfg.audio_dim;
    let f64 = cfg.dtype == FeatureDType::F64;
    let mut vis = FloatRowWriter::create(
        &staging.join(VISUAL_FILE),
        FEATURE_KEY,
        &[n, T, GRID, GRID, cfg.visual_dim],
        f64,
    )?;
    let mut aud = FloatRowWriter::create(
        &staging.join(AUDIO_FILE),
        FEATURE_KEY,
        &[n, T, cfg.audio_dim],
        f64,
    )?;
    let mut summary = SynthSummary {
        rows: n,
        train: sel.orders[0].len(),
        val: sel.orders[1].len(),
        test: sel.orders[2].len(),
        ..SynthSummary::default()
    };
    let chunk = CHUNK_ROWS.min(n);
    let mut vbuf = vec![0.0f32; chunk * vrow];
    let mut abuf = vec![0.0f32; chunk * arow];
    for rows in sel.rows.chunks(chunk) {
        let count = rows.len();
        let (vs, as_) = (&mut vbuf[..count * vrow], &mut abuf[..count * arow]);
        let kinds = synth_rows(cfg, &protos, rows, all, vs, as_);
        count_kinds(&mut summary, &kinds);
        vis.write_rows(vs)?;
        aud.write_rows(as_)?;
    }
    summary.background_segments =
        summary.off_screen_sound + summary.silent_object + summary.neither;
    aud.finish()?;
    vis.finish()?;
    Ok(summary)
}

fn count_kinds(summary: &mut SynthSummary, kinds: &[[SegKind; T]]) {
    for k in kinds.iter().flatten() {
        match k {
            SegKind::Event => summary.event_segments += 1,
            SegKind::OffScreen => summary.off_screen_sound += 1,
            SegKind::Silent => summary.silent_object += 1,
            SegKind::Neither => summary.neither += 1,
        }
    }
}

fn write_file(tmp: &Path, final_path: PathBuf, bytes: &[u8]) -> Result<(), DataError> {
    fs::write(tmp, bytes).map_err(|e| DataError::Io {
        path: final_path,
        what: "cannot write file",
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::generator::synth_row;

    /// The files hold exactly the in-memory rows (f64 and f32 storage), and the summary counts
    /// match the kinds.
    #[test]
    fn files_hold_the_generated_rows() {
        use crate::data::ave::AveDir;
        let dir = std::env::temp_dir().join(format!("cace-synth-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let anns = builtin_annotations();
        for (i, dtype) in [FeatureDType::F64, FeatureDType::F32]
            .into_iter()
            .enumerate()
        {
            let out = dir.join(i.to_string());
            let cfg = SynthConfig {
                videos: 40,
                visual_dim: 16,
                audio_dim: 8,
                dtype,
                seed: 7,
                ..SynthConfig::default()
            };
            let summary = generate(&out, &cfg).unwrap();
            let ave = AveDir::open(&out).unwrap();
            assert_eq!(ave.visual_dtype(), dtype);
            let sel = select_rows(40).unwrap();
            let protos = Prototypes::new(7, 16, 8);
            let (mut counts, mut v, mut a) = ([0usize; 4], Vec::new(), Vec::new());
            ave.read_visual(&(0..40).collect::<Vec<_>>(), &mut v)
                .unwrap();
            ave.read_audio(&(0..40).collect::<Vec<_>>(), &mut a)
                .unwrap();
            let (vl, al) = (T * CELLS * 16, T * 8);
            for (i, &r) in sel.rows.iter().enumerate() {
                let (mut rv, mut ra) = (vec![0.0; vl], vec![0.0; al]);
                let kinds = synth_row(&cfg, &protos, r, &anns[r], &mut rv, &mut ra);
                assert_eq!(&v[i * vl..(i + 1) * vl], &rv[..], "row {i}");
                assert_eq!(&a[i * al..(i + 1) * al], &ra[..], "row {i}");
                for k in kinds {
                    counts[k as usize] += 1;
                }
            }
            assert_eq!(
                counts,
                [
                    summary.event_segments,
                    summary.off_screen_sound,
                    summary.silent_object,
                    summary.neither
                ]
            );
            let info = fs::read_to_string(out.join(SYNTH_INFO_FILE)).unwrap();
            let info: serde_json::Value = serde_json::from_str(&info).unwrap();
            assert_eq!(info["original_rows"], serde_json::json!(sel.rows));
            assert_eq!(info["seed"], 7);
            assert_eq!(info["background_kind_probabilities"]["silent_object"], 0.45);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
