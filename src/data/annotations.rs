//! AVE `Annotations.txt`: one line per video row, `Category&YouTubeID&Quality&Start&End`.
//!
//! Row `i` of every 4143-row AVE array corresponds to line `i` (0-based) of the file.
//! Segment `t` (second `[t, t+1)`) is an event of the line's category iff `Start <= t < End`,
//! otherwise background (class [`BACKGROUND`]). See `shared/design/REFERENCE.md` §1.2.

use std::path::Path;

use super::error::DataError;

/// Number of event categories (classes `0..28`).
pub const NUM_CLASSES: usize = 28;
/// Class index of the background (no event) label; one-hot vectors have `NUM_CLASSES + 1` entries.
pub const BACKGROUND: usize = 28;
/// Number of one-second segments per video (defined once, in the crate root).
pub use crate::T;

/// Category names in class-index order (order of first appearance in the AVE `Annotations.txt`).
pub const CATEGORIES: [&str; NUM_CLASSES] = [
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
];

/// The AVE `Annotations.txt` shipped with the crate (4143 lines; source and licence in
/// `assets/ave/README.md`).
const BUILTIN_ANNOTATIONS: &str = include_str!("../../assets/ave/Annotations.txt");

/// One line of `Annotations.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub category: String,
    /// Index of `category` in [`CATEGORIES`] (`0..28`).
    pub class: usize,
    pub youtube_id: String,
    pub quality: String,
    /// First event second (inclusive).
    pub start: u32,
    /// End of the event (exclusive), `start <= end <= 10`.
    pub end: u32,
}

impl Annotation {
    /// Per-segment class: `self.class` for `start <= t < end`, else [`BACKGROUND`].
    pub fn segment_labels(&self) -> [usize; T] {
        let mut out = [BACKGROUND; T];
        for (t, o) in out.iter_mut().enumerate() {
            if (self.start as usize) <= t && t < self.end as usize {
                *o = self.class;
            }
        }
        out
    }
}

/// Class index of a category name, if it is one of [`CATEGORIES`].
pub fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

/// Parses the text of an `Annotations.txt`. Fields are separated by `&` only (names contain
/// commas); surrounding whitespace of a field is ignored. Every non-empty line must have 5
/// fields, a known category, integers `start <= end <= 10`. Empty lines are an error except at
/// the very end of the text (they would shift the row alignment). Errors name the 1-based line.
pub fn parse_annotations(text: &str) -> Result<Vec<Annotation>, DataError> {
    let lines: Vec<&str> = text.lines().collect();
    // Tolerate blank lines at the end of the file only.
    let last = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |p| p + 1);
    let mut out = Vec::with_capacity(last);
    for (i, line) in lines[..last].iter().enumerate() {
        out.push(parse_line(line).map_err(|msg| DataError::Annotation {
            file: None,
            line: i + 1,
            msg,
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Annotation, String> {
    if line.trim().is_empty() {
        return Err("empty line".into());
    }
    let fields: Vec<&str> = line.split('&').map(str::trim).collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 '&'-separated fields (Category&YouTubeID&Quality&Start&End), found {}: {line:?}",
            fields.len()
        ));
    }
    let category = fields[0];
    let class = category_index(category).ok_or_else(|| format!("unknown category {category:?}"))?;
    let youtube_id = fields[1];
    if youtube_id.is_empty() {
        return Err("empty YouTube id".into());
    }
    let parse_sec = |what: &str, s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .map_err(|_| format!("{what} second {s:?} is not a non-negative integer"))
    };
    let start = parse_sec("start", fields[3])?;
    let end = parse_sec("end", fields[4])?;
    if start > end || end > T as u32 {
        return Err(format!(
            "invalid span start={start} end={end} (need start <= end <= {T})"
        ));
    }
    Ok(Annotation {
        category: category.to_string(),
        class,
        youtube_id: youtube_id.to_string(),
        quality: fields[2].to_string(),
        start,
        end,
    })
}

/// Reads and parses an `Annotations.txt` file; errors name the file (and the line).
pub fn load_annotations(path: impl AsRef<Path>) -> Result<Vec<Annotation>, DataError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        what: "cannot read annotations",
        source: e,
    })?;
    parse_annotations(&text).map_err(|e| match e {
        DataError::Annotation { line, msg, .. } => DataError::Annotation {
            file: Some(path.to_path_buf()),
            line,
            msg,
        },
        other => other,
    })
}

/// The 4143 annotations shipped with the crate (AVE `Annotations.txt`).
pub fn builtin_annotations() -> Vec<Annotation> {
    parse_annotations(BUILTIN_ANNOTATIONS).expect("built-in Annotations.txt is valid")
}

/// Per-segment one-hot labels, `[anns.len(), T, NUM_CLASSES + 1]` row-major, background = 28.
pub fn labels_onehot(anns: &[Annotation]) -> Vec<f32> {
    const C: usize = NUM_CLASSES + 1;
    let mut out = vec![0.0f32; anns.len() * T * C];
    for (i, a) in anns.iter().enumerate() {
        for (t, c) in a.segment_labels().into_iter().enumerate() {
            out[(i * T + t) * C + c] = 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_commas_and_parentheses() {
        let text = "Male speech, man speaking&abc&good&2&5\nFrying (food)&x_y-z&good&0&10\n";
        let a = parse_annotations(text).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].class, 1);
        assert_eq!(a[0].category, "Male speech, man speaking");
        assert_eq!(a[0].youtube_id, "abc");
        assert_eq!(a[0].quality, "good");
        assert_eq!((a[0].start, a[0].end), (2, 5));
        assert_eq!(a[1].class, 10);
    }

    #[test]
    fn crlf_and_trailing_blank_lines_ok() {
        let a = parse_annotations("Bark&a&good&0&1\r\nCat&b&good&1&1\r\n\n\n").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].class, 22);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_annotations("Bark&a&good&0&1\nDog&b&good&0&1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("unknown category \"Dog\""), "{msg}");

        for (bad, needle) in [
            ("Bark&a&good&0\n", "5 '&'-separated"),
            ("Bark&a&good&0&1&2\n", "found 6"),
            ("Bark&a&good&5&4\n", "invalid span"),
            ("Bark&a&good&0&11\n", "invalid span"),
            ("Bark&a&good&-1&4\n", "not a non-negative integer"),
            ("Bark&a&good&x&4\n", "not a non-negative integer"),
            ("Bark&&good&0&4\n", "empty YouTube id"),
        ] {
            let msg = parse_annotations(bad).unwrap_err().to_string();
            assert!(
                msg.contains("line 1") && msg.contains(needle),
                "{bad:?} -> {msg}"
            );
        }
        let msg = parse_annotations("Bark&a&good&0&1\n\nCat&b&good&0&1\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2") && msg.contains("empty line"),
            "{msg}"
        );
    }

    #[test]
    fn segment_labels_and_onehot() {
        let a = parse_annotations("Horse&a&good&0&6\nBark&b&good&3&5\nChurch bell&c&good&0&0\n")
            .unwrap();
        assert_eq!(
            a[0].segment_labels(),
            [23, 23, 23, 23, 23, 23, 28, 28, 28, 28]
        );
        assert_eq!(
            a[1].segment_labels(),
            [28, 28, 28, 2, 2, 28, 28, 28, 28, 28]
        );
        assert_eq!(a[2].segment_labels(), [BACKGROUND; T]);
        let oh = labels_onehot(&a);
        assert_eq!(oh.len(), 3 * T * 29);
        for row in oh.chunks(29) {
            assert_eq!(row.iter().sum::<f32>(), 1.0);
        }
        assert_eq!(oh[(T + 3) * 29 + 2], 1.0); // row 1, t=3, class 2
        assert_eq!(oh[(T + 5) * 29 + 28], 1.0); // row 1, t=5, background
    }

    #[test]
    fn builtin_parses() {
        let a = builtin_annotations();
        assert_eq!(a.len(), 4143);
        assert_eq!(a[0].category, CATEGORIES[0]);
        // Categories appear in contiguous blocks in index order.
        assert!(a.windows(2).all(|w| w[0].class <= w[1].class));
        assert_eq!(a.last().unwrap().class, NUM_CLASSES - 1);
    }
}
