//! Per-segment event timelines (CACE-Net paper, Figure 4 style): one row of ten one-second
//! cells per labelling, coloured by class.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::canvas::{Area, Canvas, blend, plot_err, with_path, write_png_atomic};
use super::text::{font, text};

/// One row of a [`timeline`]: 10 one-second segments.
pub struct TimelineRow<'a> {
    pub name: &'a str,
    /// `0..=27` = event class, `28` = background ([`BACKGROUND_LABEL`]).
    pub labels: &'a [usize; 10],
    /// Event probability per segment, drawn as a thin bar inside each cell.
    pub probs: Option<&'a [f32; 10]>,
}

/// Label of the background (no event) class in [`TimelineRow::labels`].
pub const BACKGROUND_LABEL: usize = crate::data::annotations::BACKGROUND;

/// Fixed colours of the 28 AVE classes (index = class) and, last, background
/// (light grey). All 29 are distinct, and no class colour is grey.
pub const CLASS_PALETTE: [(u8, u8, u8); 29] = [
    (31, 119, 180),  // 0
    (255, 127, 14),  // 1
    (44, 160, 44),   // 2
    (214, 39, 40),   // 3
    (148, 103, 189), // 4
    (140, 86, 75),   // 5
    (227, 119, 194), // 6
    (188, 189, 34),  // 7
    (23, 190, 207),  // 8
    (174, 199, 232), // 9
    (255, 187, 120), // 10
    (152, 223, 138), // 11
    (255, 152, 150), // 12
    (197, 176, 213), // 13
    (196, 156, 148), // 14
    (247, 182, 210), // 15
    (219, 219, 141), // 16
    (158, 218, 229), // 17
    (0, 128, 128),   // 18
    (128, 0, 0),     // 19
    (0, 0, 128),     // 20
    (128, 128, 0),   // 21
    (255, 215, 0),   // 22
    (255, 0, 255),   // 23
    (102, 166, 30),  // 24
    (166, 118, 29),  // 25
    (0, 255, 255),   // 26
    (106, 61, 154),  // 27
    (211, 211, 211), // 28 = background
];

const TL_LEFT: i64 = 150;
const TL_CELL_W: i64 = 84;
const TL_RIGHT: i64 = 24;
const TL_TOP: i64 = 56;
const TL_ROW_H: i64 = 60;
const TL_ROW_GAP: i64 = 10;
const TL_AXIS_H: i64 = 62;
const TL_TEXT_GREY: (u8, u8, u8) = (105, 105, 105);

/// Image size of a [`timeline`] with `rows` rows.
pub fn timeline_size(rows: usize) -> (u32, u32) {
    let n = rows as i64;
    let w = TL_LEFT + 10 * TL_CELL_W + TL_RIGHT;
    let h = TL_TOP + n * TL_ROW_H + (n - 1).max(0) * TL_ROW_GAP + TL_AXIS_H;
    (w as u32, h as u32)
}

/// Pixel box `(x0, y0, x1, y1)`, end exclusive, of cell `sec` of row `row`.
fn timeline_cell(row: usize, sec: usize) -> (i64, i64, i64, i64) {
    let x0 = TL_LEFT + sec as i64 * TL_CELL_W;
    let y0 = TL_TOP + row as i64 * (TL_ROW_H + TL_ROW_GAP);
    (x0, y0, x0 + TL_CELL_W, y0 + TL_ROW_H)
}

/// Box of the probability bar track inside a cell box.
fn timeline_bar(cell: (i64, i64, i64, i64)) -> (i64, i64, i64, i64) {
    let (x0, _, x1, y1) = cell;
    (x0 + 7, y1 - 13, x1 - 7, y1 - 7)
}

fn text_color_on(bg: (u8, u8, u8)) -> (u8, u8, u8) {
    let lum = 0.299 * bg.0 as f32 + 0.587 * bg.1 as f32 + 0.114 * bg.2 as f32;
    if lum < 150.0 {
        (255, 255, 255)
    } else {
        (0, 0, 0)
    }
}

/// Shorten `name` until `width(name) <= max_w`: the full name, then (with
/// `first_word`) its first word (split at spaces, commas, parentheses), then
/// that cut with "…".
fn fit_label(name: &str, max_w: u32, first_word: bool, width: impl Fn(&str) -> u32) -> String {
    let name = name.trim();
    if width(name) <= max_w {
        return name.to_string();
    }
    let first = if first_word {
        name.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == '/')
            .find(|s| !s.is_empty())
            .unwrap_or(name)
    } else {
        name
    };
    if width(first) <= max_w {
        return first.to_string();
    }
    let chars: Vec<char> = first.chars().collect();
    for n in (1..chars.len()).rev() {
        let s: String = chars[..n].iter().collect::<String>() + "…";
        if width(&s) <= max_w {
            return s;
        }
    }
    chars.first().map(|c| c.to_string()).unwrap_or_default()
}

/// Per-segment timeline (CACE-Net paper, Figure 4 style): one row of 10
/// one-second cells per [`TimelineRow`] (e.g. "prediction", "ground truth"),
/// each filled with its class colour from [`CLASS_PALETTE`] (background =
/// light grey) and labelled with the class name (shortened to fit), seconds
/// 0..10 on the x axis, `title` (e.g. the video name) on top. Size:
/// [`timeline_size`]. `class_names[k]` names class `k`; background is named
/// `class_names[28]` when given, else "background".
pub fn timeline(
    path: &Path,
    title: &str,
    rows: &[TimelineRow],
    class_names: &[&str],
) -> Result<()> {
    with_path(path, timeline_inner(path, title, rows, class_names))
}

fn timeline_inner(
    path: &Path,
    title: &str,
    rows: &[TimelineRow],
    class_names: &[&str],
) -> Result<()> {
    check_labels(rows)?;
    let (w, h) = timeline_size(rows.len());
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
    // Cells, bars and the axis straight into the pixels; text with plotters.
    paint_cells(&mut canvas, rows);
    let axis_y = paint_axis(&mut canvas, rows.len());
    canvas.draw(|root| {
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (TL_TOP / 2) as i32),
            centred(22.0, (0, 0, 0)),
        ))
        .map_err(plot_err)?;
        for (r, row) in rows.iter().enumerate() {
            draw_row_text(root, r, row, class_names)?;
        }
        draw_axis_labels(root, axis_y)
    })?;
    write_png_atomic(path, &canvas)
}

fn check_labels(rows: &[TimelineRow]) -> Result<()> {
    for row in rows {
        for (sec, &l) in row.labels.iter().enumerate() {
            if l > BACKGROUND_LABEL {
                bail!(
                    "timeline row {:?}: label {l} at second {sec} is out of range (0..=27 class, 28 background)",
                    row.name
                );
            }
        }
    }
    Ok(())
}

/// Every cell in its class colour, with its probability bar when the row has probabilities.
fn paint_cells(canvas: &mut Canvas, rows: &[TimelineRow]) {
    for (r, row) in rows.iter().enumerate() {
        for sec in 0..10 {
            let cell = timeline_cell(r, sec);
            let color = CLASS_PALETTE[row.labels[sec]];
            // 1 px white gap on each side separates neighbouring cells.
            canvas.fill(cell.0 + 1, cell.1, cell.2 - 1, cell.3, color);
            if let Some(probs) = row.probs {
                let p = probs[sec];
                let p = if p.is_finite() {
                    p.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (bx0, by0, bx1, by1) = timeline_bar(cell);
                canvas.fill(bx0, by0, bx1, by1, blend(color, (255, 255, 255), 0.65));
                let filled = bx0 + ((bx1 - bx0) as f32 * p).round() as i64;
                canvas.fill(bx0, by0, filled, by1, (35, 35, 35));
            }
        }
    }
}

/// The time axis line and its 11 ticks below `rows` rows; returns the line's y.
fn paint_axis(canvas: &mut Canvas, rows: usize) -> i64 {
    let cells_bottom = TL_TOP + rows as i64 * (TL_ROW_H + TL_ROW_GAP) - TL_ROW_GAP;
    let axis_y = cells_bottom.max(TL_TOP) + 6;
    canvas.fill(
        TL_LEFT,
        axis_y,
        TL_LEFT + 10 * TL_CELL_W + 1,
        axis_y + 1,
        (0, 0, 0),
    );
    for s in 0..=10 {
        let x = TL_LEFT + s * TL_CELL_W;
        canvas.fill(x, axis_y, x + 1, axis_y + 6, (0, 0, 0));
    }
    axis_y
}

/// Text style of `size` px in colour `c`, centred on its position.
fn centred(size: f64, c: (u8, u8, u8)) -> TextStyle<'static> {
    text(size, c, HPos::Center, VPos::Center)
}

/// Width in pixels of `s` drawn in `style`; unmeasurable text counts as too wide.
fn text_width(root: &Area<'_>, s: &str, style: &TextStyle) -> u32 {
    root.estimate_text_size(s, style)
        .map(|d| d.0)
        .unwrap_or(u32::MAX)
}

/// Row `r`'s name left of its cells, and each cell's class name.
fn draw_row_text(root: &Area<'_>, r: usize, row: &TimelineRow, class_names: &[&str]) -> Result<()> {
    let (_, y0, _, y1) = timeline_cell(r, 0);
    let name_style = text(16.0, (0, 0, 0), HPos::Right, VPos::Center);
    let name = fit_label(row.name, (TL_LEFT - 16) as u32, false, |s| {
        text_width(root, s, &name_style)
    });
    root.draw(&Text::new(
        name,
        ((TL_LEFT - 12) as i32, ((y0 + y1) / 2) as i32),
        name_style.clone(),
    ))
    .map_err(plot_err)?;
    for sec in 0..10 {
        draw_cell_label(root, timeline_cell(r, sec), row.labels[sec], class_names)?;
    }
    Ok(())
}

/// The class name of `label` (shortened to fit) in the upper part of `cell`, in a colour
/// readable on the cell's.
fn draw_cell_label(
    root: &Area<'_>,
    cell: (i64, i64, i64, i64),
    label: usize,
    class_names: &[&str],
) -> Result<()> {
    let full = match class_names.get(label) {
        Some(n) => n.to_string(),
        None if label == BACKGROUND_LABEL => "background".to_string(),
        None => format!("#{label}"),
    };
    let shown = fit_label(&full, (TL_CELL_W - 8) as u32, true, |s| {
        text_width(root, s, &font(14.0))
    });
    let color = if label == BACKGROUND_LABEL {
        TL_TEXT_GREY
    } else {
        text_color_on(CLASS_PALETTE[label])
    };
    let pos = (((cell.0 + cell.2) / 2) as i32, (cell.1 + 15) as i32);
    root.draw(&Text::new(shown, pos, centred(14.0, color)))
        .map_err(plot_err)?;
    Ok(())
}

/// Seconds 0..=10 under the ticks and the axis title.
fn draw_axis_labels(root: &Area<'_>, axis_y: i64) -> Result<()> {
    for s in 0..=10 {
        let x = TL_LEFT + s * TL_CELL_W;
        root.draw(&Text::new(
            s.to_string(),
            (x as i32, (axis_y + 18) as i32),
            centred(14.0, (0, 0, 0)),
        ))
        .map_err(plot_err)?;
    }
    root.draw(&Text::new(
        "time (s)",
        ((TL_LEFT + 5 * TL_CELL_W) as i32, (axis_y + 42) as i32),
        centred(15.0, (0, 0, 0)),
    ))
    .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::*;

    #[test]
    fn timeline_cells_have_class_colours_and_text() {
        let (pred, gt, probs) = timeline_rows();
        let p = out("timeline.png");
        let rows = [
            TimelineRow {
                name: "prediction",
                labels: &pred,
                probs: Some(&probs),
            },
            TimelineRow {
                name: "ground truth",
                labels: &gt,
                probs: None,
            },
        ];
        timeline(&p, "video -5ahXUbgvvM: Helicopter", &rows, &AVE).unwrap();
        let img = decode(&p);
        assert_eq!((img.w, img.h), timeline_size(2));
        for (r, row) in rows.iter().enumerate() {
            for sec in 0..10 {
                let cell = timeline_cell(r, sec);
                let centre = ((cell.0 + cell.2) / 2, (cell.1 + cell.3) / 2);
                let want = CLASS_PALETTE[row.labels[sec]];
                assert_eq!(img.at(centre.0, centre.1), want, "row {r} second {sec}");
                // Label text in the upper part of the cell.
                let text_box = (cell.0 + 2, cell.1 + 2, cell.2 - 2, cell.1 + 28);
                assert!(
                    img.count_in(text_box, |c| c != want) > 15,
                    "no text in row {r} second {sec}"
                );
            }
        }
        assert_eq!(
            img.at(timeline_cell(0, 0).0 + 40, timeline_cell(0, 0).1 + 30),
            (211, 211, 211)
        );
        // Probability bars: full for p = 1, empty for p = 0, none without probs.
        let dark = |c: (u8, u8, u8)| c == (35, 35, 35);
        let bar = |r, s| timeline_bar(timeline_cell(r, s));
        let full = bar(0, 3);
        assert_eq!(
            img.count_in(full, dark) as i64,
            (full.2 - full.0) * (full.3 - full.1)
        );
        assert_eq!(img.count_in(bar(0, 9), dark), 0);
        assert_eq!(img.count_in(bar(1, 3), dark), 0);
        let half = bar(0, 7); // p = 0.55
        let n = img.count_in(half, dark) as f64 / ((half.2 - half.0) * (half.3 - half.1)) as f64;
        assert!((n - 0.55).abs() < 0.05, "bar fraction {n}");
    }

    #[test]
    fn timeline_names_background_and_rejects_bad_labels() {
        let all: [usize; 10] = [0, 3, 5, 10, 19, 25, 27, 28, 28, 26];
        let p = out("timeline_many.png");
        let rows = [TimelineRow {
            name: "a very long row name indeed",
            labels: &all,
            probs: None,
        }];
        timeline(&p, "shortening", &rows, &AVE).unwrap();
        let img = decode(&p);
        assert_eq!((img.w, img.h), timeline_size(1));
        let bad = [0, 1, 2, 3, 4, 5, 6, 7, 8, 29];
        let p = out("timeline_bad.png");
        let err = timeline(
            &p,
            "bad",
            &[TimelineRow {
                name: "x",
                labels: &bad,
                probs: None,
            }],
            &AVE,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("29") && msg.contains(&p.display().to_string()),
            "{msg}"
        );
        assert!(!p.exists());
    }

    #[test]
    fn fit_label_shortens() {
        let width = |s: &str| s.chars().count() as u32 * 10;
        assert_eq!(fit_label("Bark", 80, true, width), "Bark");
        assert_eq!(
            fit_label("Male speech, man speaking", 80, true, width),
            "Male"
        );
        assert_eq!(fit_label("Frying (food)", 80, true, width), "Frying");
        assert_eq!(fit_label("Accordionist", 80, true, width), "Accordi…");
        assert_eq!(fit_label("Helicopter", 5, true, width), "H");
        assert_eq!(
            fit_label("very long row name", 80, false, width),
            "very lo…"
        );
    }

    #[test]
    fn palette_is_distinct_and_background_is_grey() {
        let mut v = CLASS_PALETTE.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), 29);
        let (r, g, b) = CLASS_PALETTE[BACKGROUND_LABEL];
        assert!(r == g && g == b && r > 180);
        for c in &CLASS_PALETTE[..28] {
            assert!(!(c.0 == c.1 && c.1 == c.2), "class colour {c:?} is grey");
        }
    }
}
