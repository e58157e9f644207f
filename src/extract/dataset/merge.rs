//! `cace extract --merge`: complete shard directories combined into the directory an
//! unsharded run over the whole list writes, byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::assemble::{FeatureWriter, write_order};
use super::index::{IndexEntry, index_text};
use super::run::check_out_dir;
use super::{
    EncoderSettings, ExtractReport, INDEX_FILE, MANIFEST_FILE, Manifest, fingerprint, read_index,
    read_json, write_file_atomic,
};
use crate::data::ave::{AUDIO_FILE, FEATURE_KEY, VISUAL_FILE};
use crate::data::h5;

/// Combines complete shard directories (`--shard i/n` for every `i` of one `n`) into `out`,
/// rows in full-list order: the same files an unsharded run writes.
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> Result<ExtractReport> {
    let manifests = read_manifests(shards)?;
    check_shard_set(shards, &manifests)?;
    let first = &manifests[0];
    check_out_dir(out)?;
    if out.join(MANIFEST_FILE).exists() {
        bail!(
            "{}: already holds an extraction; choose another --out",
            out.display()
        );
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let merged = merge_indexes(shards)?;
    let rows = merged.sources.len();
    let report = ExtractReport {
        out: out.to_path_buf(),
        rows,
        videos: merged.videos.len(),
        failed: merged.failed,
        ..Default::default()
    };
    if merged.videos.len() != first.list_len {
        bail!(
            "the shards hold {} videos but the list had {}",
            merged.videos.len(),
            first.list_len
        );
    }
    write_file_atomic(
        &out.join(INDEX_FILE),
        index_text(&merged.entries).as_bytes(),
    )?;
    if rows == 0 {
        bail!("no video in the shards was extracted");
    }
    copy_rows(shards, out, &first.encoder, &merged.sources)?;
    write_order(out, rows)?;
    Manifest {
        shard: None,
        videos: merged.videos.len(),
        rows,
        failed: report.failed.len(),
        videos_fingerprint: fingerprint(merged.videos.iter().map(String::as_str)),
        ..first.clone()
    }
    .write(out)?;
    Ok(report)
}

/// The `extract.json` of every shard directory (each must be complete).
fn read_manifests(shards: &[PathBuf]) -> Result<Vec<Manifest>> {
    if shards.is_empty() {
        bail!("--merge needs the shard directories");
    }
    let mut manifests = Vec::new();
    for dir in shards {
        let path = dir.join(MANIFEST_FILE);
        if !path.exists() {
            bail!(
                "{}: not a complete cace extract directory (no {MANIFEST_FILE}; finish that shard first)",
                dir.display()
            );
        }
        manifests.push(read_json::<Manifest>(&path)?);
    }
    Ok(manifests)
}

/// Checks that the directories are the `n` shards, each once, of one extraction (same list,
/// same encoders).
fn check_shard_set(shards: &[PathBuf], manifests: &[Manifest]) -> Result<()> {
    let first = &manifests[0];
    let Some(count) = first.shard.map(|s| s.count) else {
        bail!("{}: was not extracted with --shard", shards[0].display());
    };
    let mut seen = BTreeMap::new();
    for (dir, m) in shards.iter().zip(manifests) {
        let same = m.encoders == first.encoders
            && m.encoder == first.encoder
            && m.list_len == first.list_len
            && m.videos_source == first.videos_source;
        if !same {
            bail!(
                "{}: extracted from other videos or with other encoders than {}",
                dir.display(),
                shards[0].display()
            );
        }
        let Some(s) = m.shard.filter(|s| s.count == count) else {
            bail!(
                "{}: is not one of the {count} shards of {}",
                dir.display(),
                shards[0].display()
            );
        };
        if let Some(other) = seen.insert(s.index, dir) {
            bail!(
                "{} and {} are both shard {s}",
                other.display(),
                dir.display()
            );
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!("shards {} are missing", missing.join(", "));
    }
    Ok(())
}

/// The shards' index lines combined in full-list order.
struct MergedIndex {
    /// Index lines with the merged row numbers.
    entries: Vec<IndexEntry>,
    /// `(shard, row in that shard)` of every merged row.
    sources: Vec<(usize, usize)>,
    /// Every video, in list order.
    videos: Vec<String>,
    /// `(video, error)` of the failed videos.
    failed: Vec<(String, String)>,
}

fn merge_indexes(shards: &[PathBuf]) -> Result<MergedIndex> {
    // (list_index, shard, entry) in list order; windows of one video stay in order.
    let mut all = Vec::new();
    for (k, dir) in shards.iter().enumerate() {
        for e in read_index(dir)? {
            all.push((e.list_index, k, e));
        }
    }
    all.sort_by_key(|(li, _, e)| (*li, e.window.map(|w| w.0)));
    let mut merged = MergedIndex {
        entries: Vec::with_capacity(all.len()),
        sources: Vec::new(),
        videos: Vec::new(),
        failed: Vec::new(),
    };
    for (_, k, mut e) in all {
        if merged.videos.last() != Some(&e.video) {
            merged.videos.push(e.video.clone());
        }
        if let Some(r) = e.row {
            merged.sources.push((k, r));
            e.row = Some(merged.sources.len() - 1);
        } else {
            merged
                .failed
                .push((e.video.clone(), e.error.clone().unwrap_or_default()));
        }
        merged.entries.push(e);
    }
    Ok(merged)
}

/// Writes the merged feature files: row `i` is row `sources[i].1` of shard `sources[i].0`.
fn copy_rows(
    shards: &[PathBuf],
    out: &Path,
    encoder: &EncoderSettings,
    sources: &[(usize, usize)],
) -> Result<()> {
    let open = |dir: &Path, file: &str| -> Result<h5::Dataset> {
        let ds = h5::Dataset::open(&dir.join(file), FEATURE_KEY, "shard features")?;
        if ds.stored != h5::StoredType::Float(4) {
            bail!(
                "{}: features stored as {}, expected float32",
                ds.path.display(),
                ds.stored
            );
        }
        Ok(ds)
    };
    let files: Vec<_> = shards
        .iter()
        .map(|d| Ok((open(d, VISUAL_FILE)?, open(d, AUDIO_FILE)?)))
        .collect::<Result<_>>()?;
    let mut writer =
        FeatureWriter::create(out, sources.len(), &encoder.visual_shape, encoder.audio_dim)?;
    for &(k, r) in sources {
        let (vds, ads) = &files[k];
        writer.push(&vds.read_rows::<f32>(r, 1)?, &ads.read_rows::<f32>(r, 1)?)?;
    }
    writer.finish()
}
