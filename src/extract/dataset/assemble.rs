//! The HDF5 files of a finished run, written from the staging folder in list order: the
//! features row by row, `test_order.h5`, and `index.tsv` first.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::index::{IndexEntry, index_text};
use super::staging::{Staged, Staging, Status, read_window};
use super::{EncoderSettings, ExtractOptions, ExtractReport, INDEX_FILE, write_file_atomic};
use crate::data::ave::{AUDIO_FILE, FEATURE_KEY, ORDER_KEY, Split, VISUAL_FILE};
use crate::data::h5;
use crate::extract::WINDOW;

/// Writes `index.tsv` and the HDF5 files from the staging folder, in list order.
pub(super) fn assemble(
    opts: &ExtractOptions,
    selected: &[(usize, PathBuf)],
    names: &[String],
    staging: &Staging,
    settings: &EncoderSettings,
    report: &mut ExtractReport,
) -> Result<()> {
    let out = &opts.out;
    let (entries, ok) = list_staged(selected, names, staging, report)?;
    let rows = report.rows;
    write_file_atomic(&out.join(INDEX_FILE), index_text(&entries).as_bytes())?;
    if rows == 0 {
        bail!(
            "no video of {} could be extracted (see {}); first error: {}",
            opts.videos.display(),
            out.join(INDEX_FILE).display(),
            report.failed.first().map(|f| f.1.as_str()).unwrap_or("-")
        );
    }
    let mut writer = FeatureWriter::create(out, rows, &settings.visual_shape, settings.audio_dim)?;
    for (name, staged) in &ok {
        let path = staging.feat(name);
        let mut f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        for w in 0..staged.windows {
            let (v, a) = read_window(&mut f, staged, w)
                .with_context(|| format!("reading {}", path.display()))?;
            writer.push(&v, &a)?;
        }
    }
    writer.finish()?;
    write_order(out, rows)
}

/// A staged video: its name and what its `.feat` file holds.
type StagedVideo<'a> = (&'a str, Staged);

/// The index lines of the videos in list order (a row per window, a line per failed video)
/// and the staged videos; sets `report.rows` and `report.failed`.
fn list_staged<'a>(
    selected: &[(usize, PathBuf)],
    names: &'a [String],
    staging: &Staging,
    report: &mut ExtractReport,
) -> Result<(Vec<IndexEntry>, Vec<StagedVideo<'a>>)> {
    let mut entries = Vec::new();
    let mut ok: Vec<StagedVideo> = Vec::new();
    let mut rows = 0;
    for ((list_index, _), name) in selected.iter().zip(names) {
        match staging.status(name)?.expect("every video is staged") {
            Status::Ok(s) => {
                for (w, &c) in s.content.iter().enumerate() {
                    entries.push(IndexEntry {
                        row: Some(rows),
                        list_index: *list_index,
                        video: name.clone(),
                        window: Some((w * WINDOW, c)),
                        error: None,
                    });
                    rows += 1;
                }
                ok.push((name, s));
            }
            Status::Failed(error) => {
                report.failed.push((name.clone(), error.clone()));
                entries.push(IndexEntry {
                    row: None,
                    list_index: *list_index,
                    video: name.clone(),
                    window: None,
                    error: Some(error),
                });
            }
        }
    }
    report.rows = rows;
    Ok((entries, ok))
}

/// Writes `visual_feature.h5` and `audio_feature.h5` row by row (float32, contiguous) under
/// temporary names; `finish` moves them into place.
pub(super) struct FeatureWriter {
    visual: h5::RowWriter<f32>,
    audio: h5::RowWriter<f32>,
}

impl FeatureWriter {
    pub(super) fn create(
        dir: &Path,
        rows: usize,
        visual_shape: &[usize],
        audio_dim: usize,
    ) -> Result<Self> {
        let mut vshape = vec![rows, WINDOW];
        vshape.extend_from_slice(visual_shape);
        Ok(Self {
            visual: h5::RowWriter::create(&dir.join(VISUAL_FILE), FEATURE_KEY, &vshape)?,
            audio: h5::RowWriter::create(
                &dir.join(AUDIO_FILE),
                FEATURE_KEY,
                &[rows, WINDOW, audio_dim],
            )?,
        })
    }

    pub(super) fn push(&mut self, visual: &[f32], audio: &[f32]) -> Result<()> {
        self.visual.write_rows(visual)?;
        self.audio.write_rows(audio)?;
        Ok(())
    }

    pub(super) fn finish(self) -> Result<()> {
        self.visual.finish()?;
        self.audio.finish()?;
        Ok(())
    }
}

pub(super) fn write_order(dir: &Path, rows: usize) -> Result<()> {
    let order: Vec<i64> = (0..rows as i64).collect();
    h5::write(
        &dir.join(Split::Test.order_file()),
        ORDER_KEY,
        &[rows],
        &order,
    )?;
    Ok(())
}
