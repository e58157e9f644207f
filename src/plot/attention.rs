//! 7x7 attention heat maps (CACE-Net paper, Figure 5 style), alone or over the video frame.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::canvas::{Area, Canvas, blend, fmt_tick, plot_err, with_path, write_png_atomic};
use super::text::text;

/// Size of the [`attention_grid`] image.
pub const ATTENTION_SIZE: (u32, u32) = (600, 528);

const AG_LEFT: i64 = 20;
const AG_TOP: i64 = 56;
const AG_PANEL: i64 = 448;
const AG_BAR_X: i64 = AG_LEFT + AG_PANEL + 26;
const AG_BAR_W: i64 = 22;
/// Opacity of the heat map over a frame.
const AG_ALPHA: f32 = 0.5;

/// The "jet" colour map: 0 = dark blue, 0.5 = green-yellow, 1 = dark red.
fn jet(t: f32) -> (u8, u8, u8) {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let ch = |c: f32| ((1.5 - (4.0 * t - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    (ch(3.0), ch(2.0), ch(1.0))
}

/// Bilinear sample of a `w`x`h` grid at continuous `(gx, gy)` (cell units,
/// cell centres at integers), clamped at the edges.
fn bilinear(w: usize, h: usize, gx: f32, gy: f32, at: impl Fn(usize, usize) -> f32) -> f32 {
    let gx = gx.clamp(0.0, (w - 1) as f32);
    let gy = gy.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bot = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bot * fy
}

/// Heat map of a 7x7 attention grid (CACE-Net paper, Figure 5 style; row-major,
/// `weights[row * 7 + col]`, row 0 at the top), min-max normalised into the
/// "jet" colour map, with a colour bar labelled in the raw weight values.
/// Without `frame` the 49 cells are drawn as blocks; with
/// `frame = (width, height, RGB bytes)` the map is smoothly upsampled and laid
/// at 50% opacity over the frame, stretched to the square panel. Size:
/// [`ATTENTION_SIZE`].
pub fn attention_grid(
    path: &Path,
    title: &str,
    weights: &[f32; 49],
    frame: Option<(u32, u32, &[u8])>,
) -> Result<()> {
    with_path(path, attention_grid_inner(path, title, weights, frame))
}

fn attention_grid_inner(
    path: &Path,
    title: &str,
    weights: &[f32; 49],
    frame: Option<(u32, u32, &[u8])>,
) -> Result<()> {
    check_inputs(weights, frame)?;
    let lo = weights.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let norm = min_max(weights, lo, hi);

    let (w, h) = ATTENTION_SIZE;
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
    paint_heat_map(&mut canvas, &norm, frame);
    if frame.is_none() {
        paint_cell_lines(&mut canvas);
    }
    paint_colour_bar(&mut canvas);
    canvas.draw(|root| {
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (AG_TOP / 2) as i32),
            text(20.0, (0, 0, 0), HPos::Center, VPos::Center),
        ))
        .map_err(plot_err)?;
        draw_outlines(root)?;
        draw_bar_ticks(root, lo, hi)
    })?;
    write_png_atomic(path, &canvas)
}

fn check_inputs(weights: &[f32; 49], frame: Option<(u32, u32, &[u8])>) -> Result<()> {
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        bail!("attention weight {i} is not finite ({})", weights[i]);
    }
    if let Some((fw, fh, bytes)) = frame {
        ensure!(fw > 0 && fh > 0, "frame is empty ({fw}x{fh})");
        ensure!(
            bytes.len() as u64 == fw as u64 * fh as u64 * 3,
            "frame is {fw}x{fh} RGB, so {} bytes, but {} were given",
            fw as u64 * fh as u64 * 3,
            bytes.len()
        );
    }
    Ok(())
}

/// `weights` mapped onto `0..=1` (`lo` to 0, `hi` to 1); all 0.5 when they are (nearly) equal.
fn min_max(weights: &[f32; 49], lo: f32, hi: f32) -> Vec<f32> {
    if hi - lo > f32::EPSILON * hi.abs().max(1.0) {
        weights.iter().map(|w| (w - lo) / (hi - lo)).collect()
    } else {
        vec![0.5; 49]
    }
}

/// The square panel: jet-coloured blocks, or the smoothly upsampled map over the frame.
fn paint_heat_map(canvas: &mut Canvas, norm: &[f32], frame: Option<(u32, u32, &[u8])>) {
    let cell = AG_PANEL as f32 / 7.0;
    for py in 0..AG_PANEL {
        for px in 0..AG_PANEL {
            let c = match frame {
                None => {
                    let (cx, cy) = ((px as f32 / cell) as usize, (py as f32 / cell) as usize);
                    jet(norm[cy.min(6) * 7 + cx.min(6)])
                }
                Some((fw, fh, bytes)) => {
                    let gx = (px as f32 + 0.5) / cell - 0.5;
                    let gy = (py as f32 + 0.5) / cell - 0.5;
                    let t = bilinear(7, 7, gx, gy, |x, y| norm[y * 7 + x]);
                    let sx = (px as f32 + 0.5) * fw as f32 / AG_PANEL as f32 - 0.5;
                    let sy = (py as f32 + 0.5) * fh as f32 / AG_PANEL as f32 - 0.5;
                    let ch = |k: usize| {
                        bilinear(fw as usize, fh as usize, sx, sy, |x, y| {
                            bytes[(y * fw as usize + x) * 3 + k] as f32
                        })
                        .round() as u8
                    };
                    blend((ch(0), ch(1), ch(2)), jet(t), AG_ALPHA)
                }
            };
            canvas.put(AG_LEFT + px, AG_TOP + py, c);
        }
    }
}

/// Faint lines between the blocks.
fn paint_cell_lines(canvas: &mut Canvas) {
    let cell = AG_PANEL as f32 / 7.0;
    for k in 1..7 {
        let o = (k as f32 * cell).round() as i64;
        for t in 0..AG_PANEL {
            for (x, y) in [(AG_LEFT + o, AG_TOP + t), (AG_LEFT + t, AG_TOP + o)] {
                let c = canvas.get(x, y);
                canvas.put(x, y, blend(c, (255, 255, 255), 0.35));
            }
        }
    }
}

/// The colour bar, hot at the top.
fn paint_colour_bar(canvas: &mut Canvas) {
    for y in 0..AG_PANEL {
        let c = jet(1.0 - y as f32 / (AG_PANEL - 1) as f32);
        canvas.fill(AG_BAR_X, AG_TOP + y, AG_BAR_X + AG_BAR_W, AG_TOP + y + 1, c);
    }
}

/// Black outlines around the panel and the colour bar.
fn draw_outlines(root: &Area<'_>) -> Result<()> {
    let frame_style = ShapeStyle::from(&BLACK).stroke_width(1);
    root.draw(&Rectangle::new(
        [
            (AG_LEFT as i32 - 1, AG_TOP as i32 - 1),
            ((AG_LEFT + AG_PANEL) as i32, (AG_TOP + AG_PANEL) as i32),
        ],
        frame_style,
    ))
    .map_err(plot_err)?;
    root.draw(&Rectangle::new(
        [
            (AG_BAR_X as i32 - 1, AG_TOP as i32 - 1),
            ((AG_BAR_X + AG_BAR_W) as i32, (AG_TOP + AG_PANEL) as i32),
        ],
        frame_style,
    ))
    .map_err(plot_err)?;
    Ok(())
}

/// Five ticks on the colour bar, labelled with the raw weights they stand for.
fn draw_bar_ticks(root: &Area<'_>, lo: f32, hi: f32) -> Result<()> {
    let span = (hi - lo) as f64;
    for k in 0..=4 {
        let t = k as f64 / 4.0;
        let y = AG_TOP + ((1.0 - t) * (AG_PANEL - 1) as f64).round() as i64;
        let x = AG_BAR_X + AG_BAR_W;
        root.draw(&PathElement::new(
            vec![(x as i32, y as i32), (x as i32 + 5, y as i32)],
            BLACK,
        ))
        .map_err(plot_err)?;
        root.draw(&Text::new(
            fmt_tick(lo as f64 + t * span, span),
            (x as i32 + 8, y as i32),
            text(13.0, (0, 0, 0), HPos::Left, VPos::Center),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::fsutil::tmp_path;
    use crate::plot::test_util::*;

    /// Cell whose heat (recovered from the pixel colour) is largest.
    fn hottest_cell(img: &Img, scale: f32) -> usize {
        let map: Vec<(u8, u8, u8)> = (0..=1000)
            .map(|i| jet(i as f32 / 1000.0))
            .map(|c| blend((0, 0, 0), c, scale))
            .collect();
        let (mut best, mut best_t) = (usize::MAX, -1.0);
        for py in 0..AG_PANEL {
            for px in 0..AG_PANEL {
                let c = img.at(AG_LEFT + px, AG_TOP + py);
                let d = |m: &(u8, u8, u8)| {
                    (m.0 as i32 - c.0 as i32).pow(2)
                        + (m.1 as i32 - c.1 as i32).pow(2)
                        + (m.2 as i32 - c.2 as i32).pow(2)
                };
                let i = (0..map.len()).min_by_key(|&i| d(&map[i])).unwrap();
                let t = i as f32 / 1000.0;
                if t > best_t {
                    best_t = t;
                    best = (py * 7 / AG_PANEL) as usize * 7 + (px * 7 / AG_PANEL) as usize;
                }
            }
        }
        best
    }

    #[test]
    fn attention_grid_hottest_cell_is_largest_weight() {
        let w = weights(7 * 2 + 5); // row 2, column 5
        let p = out("attention.png");
        attention_grid(&p, "attention, segment 4", &w, None).unwrap();
        let img = decode(&p);
        assert_eq!((img.w, img.h), ATTENTION_SIZE);
        assert_eq!(hottest_cell(&img, 1.0), 19);
        let cell = AG_PANEL / 7;
        let centre = |i: usize| {
            (
                AG_LEFT + (i % 7) as i64 * cell + cell / 2,
                AG_TOP + (i / 7) as i64 * cell + cell / 2,
            )
        };
        let (x, y) = centre(19);
        assert_eq!(img.at(x, y), jet(1.0));
        let min = (0..49).min_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
        let (x, y) = centre(min);
        assert_eq!(img.at(x, y), jet(0.0));
        // Colour bar: hot at the top, cold at the bottom.
        assert_eq!(img.at(AG_BAR_X + 5, AG_TOP), jet(1.0));
        assert_eq!(img.at(AG_BAR_X + 5, AG_TOP + AG_PANEL - 1), jet(0.0));
    }

    #[test]
    fn attention_grid_overlays_frame() {
        // Black frame: the pixels are the heat map at half strength.
        let black = vec![0u8; 224 * 224 * 3];
        let w = weights(7 * 5 + 1);
        let p = out("attention_black_frame.png");
        attention_grid(&p, "over a black frame", &w, Some((224, 224, &black))).unwrap();
        let img = decode(&p);
        assert_eq!((img.w, img.h), ATTENTION_SIZE);
        assert_eq!(hottest_cell(&img, AG_ALPHA), 36);

        // A 16:9 synthetic frame shows through.
        let (fw, fh) = (320u32, 180u32);
        let mut frame = Vec::with_capacity((fw * fh * 3) as usize);
        for y in 0..fh {
            for x in 0..fw {
                let sky = y < fh / 2;
                let r = if sky { 120 + (x * 100 / fw) as u8 } else { 60 };
                let g = if sky { 170 } else { 140 - (y * 60 / fh) as u8 };
                let b = if sky { 235 } else { 50 };
                frame.extend_from_slice(&[r, g, b]);
            }
        }
        let p = out("attention_frame.png");
        attention_grid(
            &p,
            "frame overlay, segment 3",
            &weights(7 * 3 + 3),
            Some((fw, fh, &frame)),
        )
        .unwrap();
        let img = decode(&p);
        assert_eq!((img.w, img.h), ATTENTION_SIZE);
        // Top-left: sky (120,170,235) half-blended with cold blue.
        let c = img.at(AG_LEFT + 2, AG_TOP + 2);
        let want = blend((120, 170, 235), jet(0.0), AG_ALPHA);
        assert!(
            (c.0 as i32 - want.0 as i32).abs() <= 3 && (c.2 as i32 - want.2 as i32).abs() <= 3,
            "{c:?} vs {want:?}"
        );

        let short = vec![0u8; 10];
        let err =
            attention_grid(&out("attention_bad.png"), "", &w, Some((4, 4, &short))).unwrap_err();
        assert!(format!("{err:#}").contains("48 bytes"), "{err:#}");
        let mut nan = w;
        nan[3] = f32::NAN;
        assert!(attention_grid(&out("attention_nan.png"), "", &nan, None).is_err());
    }

    #[test]
    fn write_replaces_existing_file_atomically() {
        let p = out("replace.png");
        fs::write(&p, b"old").unwrap();
        attention_grid(&p, "replaced", &weights(10), None).unwrap();
        assert_eq!(decode(&p).w, ATTENTION_SIZE.0);
        assert!(!tmp_path(&p).exists());
    }
}
