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

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, PxScale, ScaleFont as _, point};
use anyhow::{Context, Result, bail, ensure};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind, FontTransform,
};

/// DejaVu Sans 2.37 (Bitstream Vera licence), see `assets/fonts/README.md`.
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// Family name the embedded font is registered under (plotters' default).
const FONT: &str = "sans-serif";

/// One named curve: `(x, y)` points, e.g. `(epoch, value)`.
/// Points with a non-finite coordinate are skipped.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
}

/// One row of a [`timeline`]: 10 one-second segments.
pub struct TimelineRow<'a> {
    pub name: &'a str,
    /// `0..=27` = event class, `28` = background ([`BACKGROUND_LABEL`]).
    pub labels: &'a [usize; 10],
    /// Event probability per segment, drawn as a thin bar inside each cell.
    pub probs: Option<&'a [f32; 10]>,
}

/// Label of the background (no event) class in [`TimelineRow::labels`].
pub const BACKGROUND_LABEL: usize = 28;

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

/// Line colours of [`training_curves`]: loss series `i` gets
/// `SERIES_COLORS[i % 10]`, accuracy series `j` gets
/// `SERIES_COLORS[(loss.len() + j) % 10]`, so no two curves share a colour.
pub const SERIES_COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Size of the [`training_curves`] image.
pub const CURVES_SIZE: (u32, u32) = (1200, 450);
/// Size of the [`attention_grid`] image.
pub const ATTENTION_SIZE: (u32, u32) = (600, 528);

// ---------------------------------------------------------------- common --

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|name| plotters::style::register_font(name, FontStyle::Normal, FONT_BYTES).is_ok())
    });
    ensure!(ok, "the embedded DejaVu Sans font could not be parsed");
    Ok(())
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

/// Text style of `size` px in colour `c`, anchored at `(h, v)`.
fn text(size: f64, c: (u8, u8, u8), h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size).into_font(),
        color: rgb(c).to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// The embedded font, parsed once.
fn glyph_font() -> &'static FontRef<'static> {
    static F: OnceLock<FontRef<'static>> = OnceLock::new();
    // `ensure_font` has already parsed the same bytes successfully.
    F.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).expect("embedded font parses"))
}

/// Width of `text` at `size` px, and the font's ascent and descent (< 0).
fn text_metrics(text: &str, size: f32) -> (f32, f32, f32) {
    let font = glyph_font().as_scaled(PxScale::from(size));
    let mut x = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(p) = prev {
            x += font.kern(p, id);
        }
        x += font.h_advance(id);
        prev = Some(id);
    }
    (x, font.ascent(), font.descent())
}

/// The bitmap backend with its own text rendering: plotters 0.3.7's ab_glyph
/// path drops each glyph's left side bearing (so "cl" reads as "d"); this one
/// places glyphs at sub-pixel positions with bearings and kerning. All other
/// drawing is the bitmap backend's.
struct Px<'a>(BitMapBackend<'a>);

impl<'a> DrawingBackend for Px<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        ul: BackendCoord,
        br: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(ul, br, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, asc, desc) = text_metrics(text, style.size() as f32);
        let (w, h) = (w.ceil() as u32, (asc - desc).ceil() as u32);
        Ok(match style.transform() {
            FontTransform::Rotate90 | FontTransform::Rotate270 => (h, w),
            _ => (w, h),
        })
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let size = style.size() as f32;
        let (width, asc, desc) = text_metrics(text, size);
        let anchor = style.anchor();
        // Pen start and baseline relative to the anchor point, unrotated.
        let x0 = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let base = match anchor.v_pos {
            VPos::Top => asc,
            VPos::Center => (asc + desc) / 2.0,
            VPos::Bottom => desc,
        };
        let trans = style.transform();
        let font = glyph_font().as_scaled(PxScale::from(size));
        let mut x = x0;
        let mut prev = None;
        let mut failed = None;
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(x, base));
            x += font.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, cov| {
                if cov < 0.02 || failed.is_some() {
                    return;
                }
                let (lx, ly) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                let (tx, ty) = trans.transform(lx, ly);
                let c = BackendColor {
                    alpha: color.alpha * cov.min(1.0) as f64,
                    rgb: color.rgb,
                };
                if let Err(e) = self.0.draw_pixel((pos.0 + tx, pos.1 + ty), c) {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }
}

type Area<'a> = DrawingArea<Px<'a>, Shift>;

/// An RGB image in memory that plotters draws on and that we also write to
/// directly (cells, heat maps).
struct Canvas {
    w: u32,
    h: u32,
    buf: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32, bg: (u8, u8, u8)) -> Self {
        let mut buf = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..w * h {
            buf.extend_from_slice(&[bg.0, bg.1, bg.2]);
        }
        Canvas { w, h, buf }
    }

    fn put(&mut self, x: i64, y: i64, c: (u8, u8, u8)) {
        if x >= 0 && y >= 0 && (x as u32) < self.w && (y as u32) < self.h {
            let i = ((y as usize) * self.w as usize + x as usize) * 3;
            self.buf[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    }

    fn get(&self, x: i64, y: i64) -> (u8, u8, u8) {
        let i = ((y as usize) * self.w as usize + x as usize) * 3;
        (self.buf[i], self.buf[i + 1], self.buf[i + 2])
    }

    /// Fill `x0..x1` x `y0..y1` (end exclusive).
    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: (u8, u8, u8)) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, c);
            }
        }
    }

    /// Draw with plotters on the same pixels.
    fn draw<F>(&mut self, f: F) -> Result<()>
    where
        F: FnOnce(&Area<'_>) -> Result<()>,
    {
        ensure_font()?;
        let (w, h) = (self.w, self.h);
        let root = Px(BitMapBackend::with_buffer(&mut self.buf, (w, h))).into_drawing_area();
        f(&root)?;
        root.present().context("finishing the drawing")?;
        Ok(())
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// Encode `canvas` as PNG and replace `path` with it atomically.
fn write_png_atomic(path: &Path, canvas: &Canvas) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, canvas.w, canvas.h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().context("encoding PNG")?;
        wr.write_image_data(&canvas.buf).context("encoding PNG")?;
        wr.finish().context("encoding PNG")?;
    }
    crate::fsutil::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

fn with_path<T>(path: &Path, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("cannot write plot {}", path.display()))
}

/// Tick label: enough decimals for the axis span, trailing zeros removed.
fn fmt_tick(v: f64, span: f64) -> String {
    let span = if span.is_finite() && span > 0.0 {
        span
    } else {
        1.0
    };
    let decimals = ((-span.log10()).ceil() + 2.0).clamp(0.0, 6.0) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" { "0".to_string() } else { s }
}

/// `(lo, hi)` of finite `vals` widened by `pad` of the span; never empty.
fn padded_range(vals: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.05
        } else {
            1.0
        };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

// ------------------------------------------------------- training curves --

/// Training curves: one 1200x450 PNG with two panels side by side: left
/// "loss" (e.g. train loss per epoch), right "accuracy (%)" (e.g. val and test
/// accuracy per epoch) with a dashed marker at `best_epoch` (the best-val
/// epoch), which is also drawn, unlabelled, on the loss panel. Both panels
/// share the epoch range. Colours: [`SERIES_COLORS`].
pub fn training_curves(
    path: &Path,
    title: &str,
    loss: &[Series],
    accuracy: &[Series],
    best_epoch: Option<f64>,
) -> Result<()> {
    with_path(
        path,
        training_curves_inner(path, title, loss, accuracy, best_epoch),
    )
}

fn training_curves_inner(
    path: &Path,
    title: &str,
    loss: &[Series],
    accuracy: &[Series],
    best_epoch: Option<f64>,
) -> Result<()> {
    let best_epoch = best_epoch.filter(|b| b.is_finite());
    let (w, h) = CURVES_SIZE;
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
    let xs = loss
        .iter()
        .chain(accuracy)
        .flat_map(|s| finite(s.points).into_iter().map(|p| p.0))
        .chain(best_epoch);
    let x_range = padded_range(xs, 0.03);
    // Whole-number epochs: label only whole-number ticks.
    let integer_x = loss
        .iter()
        .chain(accuracy)
        .flat_map(|s| finite(s.points))
        .all(|p| p.0.fract() == 0.0);
    let x_axis = XAxis {
        range: x_range,
        integer: integer_x,
    };

    canvas.draw(|root| {
        let body = root.titled(title, font(24.0)).map_err(plot_err)?;
        let panels = body.split_evenly((1, 2));
        let loss_y = padded_range(
            loss.iter()
                .flat_map(|s| finite(s.points).into_iter().map(|p| p.1)),
            0.08,
        );
        curve_panel(
            &panels[0], "loss", "loss", loss, 0, x_axis, loss_y, best_epoch, false,
        )?;

        let mut acc_y = padded_range(
            accuracy
                .iter()
                .flat_map(|s| finite(s.points).into_iter().map(|p| p.1)),
            0.08,
        );
        let acc_vals: Vec<f64> = accuracy
            .iter()
            .flat_map(|s| finite(s.points).into_iter().map(|p| p.1))
            .collect();
        if acc_vals.iter().all(|v| (0.0..=100.0).contains(v)) && !acc_vals.is_empty() {
            acc_y = (acc_y.0.max(0.0), acc_y.1.min(100.0));
            if acc_y.1 - acc_y.0 < 1e-9 {
                acc_y = (0.0, 100.0);
            }
        }
        curve_panel(
            &panels[1],
            "accuracy (%)",
            "accuracy (%)",
            accuracy,
            loss.len(),
            x_axis,
            acc_y,
            best_epoch,
            true,
        )?;
        Ok(())
    })?;
    write_png_atomic(path, &canvas)
}

#[derive(Clone, Copy)]
struct XAxis {
    range: (f64, f64),
    /// All x are whole numbers (epochs): leave fractional ticks unlabelled.
    integer: bool,
}

#[allow(clippy::too_many_arguments)]
fn curve_panel(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    color_offset: usize,
    x_axis: XAxis,
    (y0, y1): (f64, f64),
    best_epoch: Option<f64>,
    label_best: bool,
) -> Result<()> {
    let (x0, x1) = x_axis.range;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(19.0))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    let x_fmt = |v: &f64| {
        if x_axis.integer && (v - v.round()).abs() > 1e-9 {
            String::new()
        } else {
            fmt_tick(*v, x1 - x0)
        }
    };
    let y_fmt = |v: &f64| fmt_tick(*v, y1 - y0);
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(font(14.0))
        .axis_desc_style(font(15.0))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_err)?;

    let mut labelled = false;
    for (i, s) in series.iter().enumerate() {
        let color = rgb(SERIES_COLORS[(color_offset + i) % SERIES_COLORS.len()]);
        let pts = finite(s.points);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 20, y + 2)], color.filled()));
        labelled = true;
        if pts.len() <= 120 {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(plot_err)?;
        }
    }

    if let Some(be) = best_epoch {
        let marker = RGBColor(60, 60, 60);
        let line = DashedLineSeries::new([(be, y0), (be, y1)], 6, 4, marker.stroke_width(2));
        let drawn = chart.draw_series(line).map_err(plot_err)?;
        if label_best {
            // Value of the validation curve (or the first curve) at the best epoch.
            let val = series
                .iter()
                .find(|s| s.name.to_lowercase().contains("val"))
                .or(series.first())
                .and_then(|s| nearest(s.points, be));
            let text = match val {
                Some(v) => format!(
                    "best val: epoch {} ({})",
                    fmt_tick(be, 10.0),
                    fmt_tick(v, 1.0)
                ),
                None => format!("best val: epoch {}", fmt_tick(be, 10.0)),
            };
            drawn.label(text).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (7, 0)], marker.stroke_width(2))
                    + PathElement::new(vec![(12, 0), (20, 0)], marker.stroke_width(2))
            });
            labelled = true;
            for (i, s) in series.iter().enumerate() {
                if let Some(v) = nearest(s.points, be) {
                    let color = rgb(SERIES_COLORS[(color_offset + i) % SERIES_COLORS.len()]);
                    chart
                        .draw_series([Circle::new((be, v), 7, color.stroke_width(2))])
                        .map_err(plot_err)?;
                }
            }
        }
    }

    if labelled {
        chart
            .configure_series_labels()
            .position(if label_best {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .margin(12)
            .label_font(font(14.0))
            .background_style(WHITE)
            .border_style(RGBColor(150, 150, 150))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// y of the finite point whose x is within half a unit of `x`, closest first.
fn nearest(points: &[(f64, f64)], x: f64) -> Option<f64> {
    finite(points)
        .into_iter()
        .filter(|p| (p.0 - x).abs() <= 0.5)
        .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))
        .map(|p| p.1)
}

// -------------------------------------------------------------- timeline --

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

fn blend(a: (u8, u8, u8), b: (u8, u8, u8), t: f32) -> (u8, u8, u8) {
    let m = |p: u8, q: u8| {
        (p as f32 * (1.0 - t) + q as f32 * t)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    (m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
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
    let (w, h) = timeline_size(rows.len());
    let mut canvas = Canvas::new(w, h, (255, 255, 255));

    // Cells and probability bars, straight into the pixels.
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

    let cells_bottom = TL_TOP + rows.len() as i64 * (TL_ROW_H + TL_ROW_GAP) - TL_ROW_GAP;
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

    // Text with plotters.
    canvas.draw(|root| {
        let center = |size: f64, c: (u8, u8, u8)| text(size, c, HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (TL_TOP / 2) as i32),
            center(22.0, (0, 0, 0)),
        ))
        .map_err(plot_err)?;

        let cell_font = font(14.0);
        for (r, row) in rows.iter().enumerate() {
            let (_, y0, _, y1) = timeline_cell(r, 0);
            let name_style = text(16.0, (0, 0, 0), HPos::Right, VPos::Center);
            let name = fit_label(row.name, (TL_LEFT - 16) as u32, false, |s| {
                root.estimate_text_size(s, &name_style)
                    .map(|d| d.0)
                    .unwrap_or(u32::MAX)
            });
            root.draw(&Text::new(
                name,
                ((TL_LEFT - 12) as i32, ((y0 + y1) / 2) as i32),
                name_style.clone(),
            ))
            .map_err(plot_err)?;

            for sec in 0..10 {
                let label = row.labels[sec];
                let cell = timeline_cell(r, sec);
                let full = match class_names.get(label) {
                    Some(n) => n.to_string(),
                    None if label == BACKGROUND_LABEL => "background".to_string(),
                    None => format!("#{label}"),
                };
                let text = fit_label(&full, (TL_CELL_W - 8) as u32, true, |s| {
                    root.estimate_text_size(s, &cell_font)
                        .map(|d| d.0)
                        .unwrap_or(u32::MAX)
                });
                let color = if label == BACKGROUND_LABEL {
                    TL_TEXT_GREY
                } else {
                    text_color_on(CLASS_PALETTE[label])
                };
                let pos = (((cell.0 + cell.2) / 2) as i32, (cell.1 + 15) as i32);
                root.draw(&Text::new(text, pos, center(14.0, color)))
                    .map_err(plot_err)?;
            }
        }

        for s in 0..=10 {
            let x = TL_LEFT + s * TL_CELL_W;
            root.draw(&Text::new(
                s.to_string(),
                (x as i32, (axis_y + 18) as i32),
                center(14.0, (0, 0, 0)),
            ))
            .map_err(plot_err)?;
        }
        root.draw(&Text::new(
            "time (s)",
            ((TL_LEFT + 5 * TL_CELL_W) as i32, (axis_y + 42) as i32),
            center(15.0, (0, 0, 0)),
        ))
        .map_err(plot_err)?;
        Ok(())
    })?;
    write_png_atomic(path, &canvas)
}

// ------------------------------------------------------------- attention --

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
    let lo = weights.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let norm: Vec<f32> = if hi - lo > f32::EPSILON * hi.abs().max(1.0) {
        weights.iter().map(|w| (w - lo) / (hi - lo)).collect()
    } else {
        vec![0.5; 49]
    };

    let (w, h) = ATTENTION_SIZE;
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
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
    if frame.is_none() {
        // Faint lines between cells.
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
    // Colour bar, hot at the top.
    for y in 0..AG_PANEL {
        let c = jet(1.0 - y as f32 / (AG_PANEL - 1) as f32);
        canvas.fill(AG_BAR_X, AG_TOP + y, AG_BAR_X + AG_BAR_W, AG_TOP + y + 1, c);
    }

    canvas.draw(|root| {
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (AG_TOP / 2) as i32),
            text(20.0, (0, 0, 0), HPos::Center, VPos::Center),
        ))
        .map_err(plot_err)?;
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
    })?;
    write_png_atomic(path, &canvas)
}

// ----------------------------------------------------------------- tests --

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::fsutil::tmp_path;

    struct Img {
        w: u32,
        h: u32,
        px: Vec<u8>,
    }

    impl Img {
        fn at(&self, x: i64, y: i64) -> (u8, u8, u8) {
            let i = ((y as usize) * self.w as usize + x as usize) * 3;
            (self.px[i], self.px[i + 1], self.px[i + 2])
        }
        fn count(&self, c: (u8, u8, u8)) -> usize {
            self.px
                .chunks(3)
                .filter(|p| (p[0], p[1], p[2]) == c)
                .count()
        }
        fn count_in(
            &self,
            (x0, y0, x1, y1): (i64, i64, i64, i64),
            f: impl Fn((u8, u8, u8)) -> bool,
        ) -> usize {
            let mut n = 0;
            for y in y0..y1 {
                for x in x0..x1 {
                    n += f(self.at(x, y)) as usize;
                }
            }
            n
        }
        fn distinct(&self) -> usize {
            let mut v: Vec<[u8; 3]> = self.px.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        }
    }

    fn decode(path: &Path) -> Img {
        let dec = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut px).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        px.truncate(info.buffer_size());
        Img {
            w: info.width,
            h: info.height,
            px,
        }
    }

    /// Stable folder so the images can be looked at after `cargo test`.
    fn out(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("cace-net-plot-tests");
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = fs::remove_file(&p);
        p
    }

    fn unwritable(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join("cace-net-plot-tests-no-such-dir")
            .join(name)
    }

    const AVE: [&str; 28] = crate::data::annotations::CATEGORIES;

    type Curve = Vec<(f64, f64)>;

    fn curves_data() -> (Curve, Curve, Curve) {
        let loss = (1..=30)
            .map(|e| (e as f64, 2.5 * (-(e as f64) / 8.0).exp() + 0.3))
            .collect();
        let val = (1..=30)
            .map(|e| (e as f64, 78.0 - 40.0 * (-(e as f64) / 5.0).exp()))
            .collect();
        let test = (1..=30)
            .map(|e| (e as f64, 76.5 - 40.0 * (-(e as f64) / 5.5).exp()))
            .collect();
        (loss, val, test)
    }

    #[test]
    fn training_curves_png_has_size_and_series_colours() {
        let (loss, val, test) = curves_data();
        let p = out("curves.png");
        training_curves(
            &p,
            "CACE-Net on AVE, seed 1",
            &[Series {
                name: "train loss",
                points: &loss,
            }],
            &[
                Series {
                    name: "val",
                    points: &val,
                },
                Series {
                    name: "test",
                    points: &test,
                },
            ],
            Some(22.0),
        )
        .unwrap();
        assert!(!tmp_path(&p).exists(), "temporary file left behind");
        let img = decode(&p);
        assert_eq!((img.w, img.h), CURVES_SIZE);
        for (i, c) in SERIES_COLORS.iter().take(3).enumerate() {
            assert!(img.count(*c) > 100, "series {i} colour {c:?} not drawn");
        }
        // Left panel holds the loss colour, right panel the accuracy colours.
        let half = img.w as i64 / 2;
        let h = img.h as i64;
        assert!(img.count_in((0, 0, half, h), |c| c == SERIES_COLORS[0]) > 100);
        assert_eq!(
            img.count_in((half, 0, 2 * half, h), |c| c == SERIES_COLORS[0]),
            0
        );
        assert!(img.count_in((half, 0, 2 * half, h), |c| c == SERIES_COLORS[2]) > 100);
        // Text (dark pixels) and a not-blank picture.
        assert!(
            img.count_in((0, 0, img.w as i64, 40), |c| c.0 < 80
                && c.1 < 80
                && c.2 < 80)
                > 100
        );
        assert!(img.distinct() > 20);
    }

    #[test]
    fn training_curves_tolerates_degenerate_input() {
        let one = [(1.0, 0.5)];
        let flat = [(1.0, 50.0), (2.0, 50.0), (3.0, f64::NAN)];
        let p = out("curves_degenerate.png");
        training_curves(
            &p,
            "",
            &[Series {
                name: "loss",
                points: &one,
            }],
            &[Series {
                name: "val",
                points: &flat,
            }],
            Some(f64::NAN),
        )
        .unwrap();
        assert_eq!((decode(&p).w, decode(&p).h), CURVES_SIZE);
        let p = out("curves_empty.png");
        training_curves(&p, "empty", &[], &[], None).unwrap();
        assert!(decode(&p).distinct() > 2);
    }

    fn timeline_rows() -> ([usize; 10], [usize; 10], [f32; 10]) {
        let pred = [28, 28, 6, 6, 6, 6, 6, 13, 28, 28];
        let gt = [28, 6, 6, 6, 6, 6, 6, 6, 28, 1];
        let probs = [0.05, 0.2, 0.9, 1.0, 0.95, 0.85, 0.7, 0.55, 0.1, 0.0];
        (pred, gt, probs)
    }

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

    fn weights(hot: usize) -> [f32; 49] {
        let mut w = [0.0f32; 49];
        let (hr, hc) = ((hot / 7) as f32, (hot % 7) as f32);
        for (i, x) in w.iter_mut().enumerate() {
            let (r, c) = ((i / 7) as f32, (i % 7) as f32);
            *x = 0.002 + 0.05 * (-((r - hr).powi(2) + (c - hc).powi(2)) / 4.0).exp();
        }
        w[hot] += 0.01;
        w
    }

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

    #[test]
    fn write_replaces_existing_file_atomically() {
        let p = out("replace.png");
        fs::write(&p, b"old").unwrap();
        attention_grid(&p, "replaced", &weights(10), None).unwrap();
        assert_eq!(decode(&p).w, ATTENTION_SIZE.0);
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn tick_format() {
        assert_eq!(fmt_tick(10.0, 30.0), "10");
        assert_eq!(fmt_tick(2.5, 5.0), "2.5");
        assert_eq!(fmt_tick(0.30000000000000004, 1.0), "0.3");
        assert_eq!(fmt_tick(0.0125, 0.05), "0.0125");
        assert_eq!(fmt_tick(-0.0, 1.0), "0");
    }
}

/// Draws `RUN_DIR/curves.png` from a run's metrics: train loss, val and test accuracy, and the
/// best-val epoch (1-based on the x axis).
pub fn curves_for_run(
    run: &Path,
    history: &[crate::train::EpochMetrics],
    best_val_epoch: Option<usize>,
) -> anyhow::Result<()> {
    let x = |m: &crate::train::EpochMetrics| (m.epoch + 1) as f64;
    let loss: Vec<(f64, f64)> = history.iter().map(|m| (x(m), m.train_loss)).collect();
    let val: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|m| m.val_acc.map(|a| (x(m), a)))
        .collect();
    let test: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|m| m.test_acc.map(|a| (x(m), a)))
        .collect();
    let mut acc = Vec::new();
    if !val.is_empty() {
        acc.push(Series {
            name: "val",
            points: &val,
        });
    }
    if !test.is_empty() {
        acc.push(Series {
            name: "test",
            points: &test,
        });
    }
    let title = format!("CACE-Net training ({} epochs)", history.len());
    training_curves(
        &run.join("curves.png"),
        &title,
        &[Series {
            name: "train loss",
            points: &loss,
        }],
        &acc,
        best_val_epoch.map(|e| (e + 1) as f64),
    )
}
