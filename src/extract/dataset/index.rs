//! `index.tsv`: which video and seconds every row holds, and which videos failed.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::INDEX_FILE;
use crate::extract::WINDOW;

/// One line of `index.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub row: Option<usize>,
    pub list_index: usize,
    pub video: String,
    /// `(start_s, content_s)` of the window; `None` for a failed video.
    pub window: Option<(usize, usize)>,
    pub error: Option<String>,
}

const INDEX_HEADER: &str = "row\tlist_index\tvideo\tstart_s\tcontent_s\tpadded_s\tstatus\terror";

fn clean_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

pub(super) fn index_text(entries: &[IndexEntry]) -> String {
    let mut out = String::from(INDEX_HEADER);
    out.push('\n');
    for e in entries {
        let row = e.row.map_or("-".to_string(), |r| r.to_string());
        let (start, content, padded) = match e.window {
            Some((s, c)) => (s.to_string(), c.to_string(), (WINDOW - c).to_string()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let status = if e.error.is_some() { "failed" } else { "ok" };
        let error = e.error.as_deref().map(clean_field).unwrap_or_default();
        out.push_str(&format!(
            "{row}\t{}\t{}\t{start}\t{content}\t{padded}\t{status}\t{error}\n",
            e.list_index,
            clean_field(&e.video)
        ));
    }
    out
}

/// Reads the `index.tsv` of an extracted directory.
pub fn read_index(dir: &Path) -> Result<Vec<IndexEntry>> {
    let path = dir.join(INDEX_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_HEADER) {
        bail!("{}: not an index written by cace extract", path.display());
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let bad = || anyhow!("{}: line {}: malformed", path.display(), i + 2);
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                return Err(bad());
            }
            let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
            let failed = f[6] == "failed";
            Ok(IndexEntry {
                row: if failed { None } else { Some(num(f[0])?) },
                list_index: num(f[1])?,
                video: f[2].to_string(),
                window: if failed {
                    None
                } else {
                    Some((num(f[3])?, num(f[4])?))
                },
                error: failed.then(|| f[7].to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip() {
        let entries = vec![
            IndexEntry {
                row: Some(0),
                list_index: 0,
                video: "a.mp4".into(),
                window: Some((0, 10)),
                error: None,
            },
            IndexEntry {
                row: Some(1),
                list_index: 0,
                video: "a.mp4".into(),
                window: Some((10, 3)),
                error: None,
            },
            IndexEntry {
                row: None,
                list_index: 1,
                video: "b.mp4".into(),
                window: None,
                error: Some("bad\tfile".into()),
            },
        ];
        let dir = std::env::temp_dir().join(format!("cace-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(INDEX_FILE), index_text(&entries)).unwrap();
        let back = read_index(&dir).unwrap();
        assert_eq!(back[..2], entries[..2]);
        assert_eq!(back[2].error.as_deref(), Some("bad file"));
        assert!(index_text(&entries).contains("1\t0\ta.mp4\t10\t3\t7\tok\t\n"));
        fs::remove_dir_all(dir).unwrap();
    }
}
