//! The pixels every figure is drawn on, the PNG writing, and small helpers the figures share
//! (colours, errors, tick labels).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::text::{Px, ensure_font};

pub(super) fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

/// `a` mixed with `b`: `t = 0` is `a`, `t = 1` is `b`.
pub(super) fn blend(a: (u8, u8, u8), b: (u8, u8, u8), t: f32) -> (u8, u8, u8) {
    let m = |p: u8, q: u8| {
        (p as f32 * (1.0 - t) + q as f32 * t)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    (m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

pub(super) type Area<'a> = DrawingArea<Px<'a>, Shift>;

/// An RGB image in memory that plotters draws on and that we also write to
/// directly (cells, heat maps).
pub(super) struct Canvas {
    w: u32,
    h: u32,
    buf: Vec<u8>,
}

impl Canvas {
    pub(super) fn new(w: u32, h: u32, bg: (u8, u8, u8)) -> Self {
        let mut buf = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..w * h {
            buf.extend_from_slice(&[bg.0, bg.1, bg.2]);
        }
        Canvas { w, h, buf }
    }

    pub(super) fn put(&mut self, x: i64, y: i64, c: (u8, u8, u8)) {
        if x >= 0 && y >= 0 && (x as u32) < self.w && (y as u32) < self.h {
            let i = ((y as usize) * self.w as usize + x as usize) * 3;
            self.buf[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    }

    pub(super) fn get(&self, x: i64, y: i64) -> (u8, u8, u8) {
        let i = ((y as usize) * self.w as usize + x as usize) * 3;
        (self.buf[i], self.buf[i + 1], self.buf[i + 2])
    }

    /// Fill `x0..x1` x `y0..y1` (end exclusive).
    pub(super) fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: (u8, u8, u8)) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, c);
            }
        }
    }

    /// Draw with plotters on the same pixels.
    pub(super) fn draw<F>(&mut self, f: F) -> Result<()>
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

pub(super) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// Encode `canvas` as PNG and replace `path` with it atomically.
pub(super) fn write_png_atomic(path: &Path, canvas: &Canvas) -> Result<()> {
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

pub(super) fn with_path<T>(path: &Path, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("cannot write plot {}", path.display()))
}

/// Tick label: enough decimals for the axis span, trailing zeros removed.
pub(super) fn fmt_tick(v: f64, span: f64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_format() {
        assert_eq!(fmt_tick(10.0, 30.0), "10");
        assert_eq!(fmt_tick(2.5, 5.0), "2.5");
        assert_eq!(fmt_tick(0.30000000000000004, 1.0), "0.3");
        assert_eq!(fmt_tick(0.0125, 0.05), "0.0125");
        assert_eq!(fmt_tick(-0.0, 1.0), "0");
    }
}
