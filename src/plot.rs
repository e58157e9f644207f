//! PNG figures: training curves, per-segment event timelines (CACE-Net
//! paper, Figure 4 style) and 7x7 attention heat maps (Figure 5 style).
//!
//! Pure Rust: drawing with `plotters` (bitmap backend, in memory), text with
//! the embedded DejaVu Sans font through `ab_glyph`, encoding with `png`. No
//! system library or font is used at run time.
//!
//! Every function replaces `PATH` atomically (`fsutil::write_atomic`), so a reader never
//! sees a half-written file. The parent folder must exist. Every error names
//! `PATH`.
//!
//! One file per figure (`curves.rs`, `timeline.rs`, `attention.rs`); `canvas.rs` holds the
//! pixels and the PNG writing they share, `text.rs` the font and the glyph rendering.

mod attention;
mod canvas;
mod curves;
mod lanes;
#[cfg(test)]
mod test_util;
mod text;
mod timeline;

pub use attention::{ATTENTION_SIZE, attention_grid};
pub use curves::{CURVES_SIZE, SERIES_COLORS, Series, training_curves};
pub use lanes::{Lane, event_lanes, lanes_size};
pub use timeline::{BACKGROUND_LABEL, CLASS_PALETTE, TimelineRow, timeline, timeline_size};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::*;

    #[test]
    fn unwritable_path_error_names_the_path() {
        let (loss, val, _) = curves_data();
        let (pred, gt, _) = timeline_rows();
        let errs = [
            (
                unwritable("c.png"),
                training_curves(
                    &unwritable("c.png"),
                    "t",
                    &[Series {
                        name: "l",
                        points: &loss,
                    }],
                    &[Series {
                        name: "v",
                        points: &val,
                    }],
                    None,
                ),
            ),
            (
                unwritable("t.png"),
                timeline(
                    &unwritable("t.png"),
                    "t",
                    &[
                        TimelineRow {
                            name: "p",
                            labels: &pred,
                            probs: None,
                        },
                        TimelineRow {
                            name: "g",
                            labels: &gt,
                            probs: None,
                        },
                    ],
                    &AVE,
                ),
            ),
            (
                unwritable("a.png"),
                attention_grid(&unwritable("a.png"), "t", &weights(0), None),
            ),
        ];
        for (path, r) in errs {
            let err = r.unwrap_err();
            let shown = path.display().to_string();
            assert!(err.to_string().contains(&shown), "{err}");
            assert!(format!("{err:#}").contains(&shown), "{err:#}");
        }
    }
}
