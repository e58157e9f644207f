//! The video list of `--videos` (a folder or a list file) and the share of one `--shard`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Shard, VIDEO_EXTENSIONS};

/// The video list of `--videos` (a folder or a list file), see the module doc.
pub fn list_videos(source: &Path) -> Result<Vec<PathBuf>> {
    if source.is_dir() {
        videos_in_folder(source)
    } else if source.is_file() {
        videos_in_list(source)
    } else {
        bail!("{}: no such folder or video list", source.display());
    }
}

/// Every video file under `dir`, sorted by path.
fn videos_in_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no video files (extensions {})",
            dir.display(),
            VIDEO_EXTENSIONS.join(", ")
        );
    }
    Ok(files)
}

/// The paths a list file names, in file order (relative to its folder; blank lines and `#`
/// comments skipped; a path listed twice is an error).
fn videos_in_list(list: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(list)
        .with_context(|| format!("reading the video list {}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let p = Path::new(line);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if !seen.insert(p.clone()) {
            bail!(
                "{}: line {}: {} is listed twice",
                list.display(),
                i + 1,
                p.display()
            );
        }
        files.push(p);
    }
    if files.is_empty() {
        bail!("{}: the video list is empty", list.display());
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_video_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The videos of a shard: `(list position, path)`.
pub fn select(list: &[PathBuf], shard: Option<Shard>) -> Vec<(usize, PathBuf)> {
    list.iter()
        .enumerate()
        .filter(|(p, _)| shard.is_none_or(|s| p % s.count == s.index))
        .map(|(p, v)| (p, v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_list() {
        let list: Vec<PathBuf> = (0..7).map(|i| PathBuf::from(format!("v{i}.mp4"))).collect();
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| select(&list, Some(Shard { index: i, count: 3 })))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            select(&list, Some(Shard { index: 1, count: 3 }))
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }
}
