//! Training curves: loss and accuracy per epoch, side by side, with the best-val epoch marked.

use std::path::Path;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::canvas::{Area, Canvas, fmt_tick, plot_err, rgb, with_path, write_png_atomic};
use super::text::{Px, font};

/// One named curve: `(x, y)` points, e.g. `(epoch, value)`.
/// Points with a non-finite coordinate are skipped.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
}

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
    let x_axis = epoch_axis(loss, accuracy, best_epoch);
    canvas.draw(|root| {
        let body = root.titled(title, font(24.0)).map_err(plot_err)?;
        let panels = body.split_evenly((1, 2));
        let loss_y = padded_range(y_values(loss), 0.08);
        curve_panel(
            &panels[0], "loss", "loss", loss, 0, x_axis, loss_y, best_epoch, false,
        )?;
        curve_panel(
            &panels[1],
            "accuracy (%)",
            "accuracy (%)",
            accuracy,
            loss.len(),
            x_axis,
            accuracy_range(accuracy),
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

/// The x axis both panels share: every curve's epochs and the best epoch.
fn epoch_axis(loss: &[Series], accuracy: &[Series], best_epoch: Option<f64>) -> XAxis {
    let points = || loss.iter().chain(accuracy).flat_map(|s| finite(s.points));
    XAxis {
        range: padded_range(points().map(|p| p.0).chain(best_epoch), 0.03),
        // Whole-number epochs: label only whole-number ticks.
        integer: points().all(|p| p.0.fract() == 0.0),
    }
}

/// The finite y values of `series`, curve after curve.
fn y_values<'a>(series: &'a [Series]) -> impl Iterator<Item = f64> + 'a {
    series
        .iter()
        .flat_map(|s| finite(s.points).into_iter().map(|p| p.1))
}

/// The accuracy panel's y range: padded, and kept inside 0..=100 when every value is a
/// percentage (so the axis never shows 105 %).
fn accuracy_range(accuracy: &[Series]) -> (f64, f64) {
    let mut acc_y = padded_range(y_values(accuracy), 0.08);
    let acc_vals: Vec<f64> = y_values(accuracy).collect();
    if acc_vals.iter().all(|v| (0.0..=100.0).contains(v)) && !acc_vals.is_empty() {
        acc_y = (acc_y.0.max(0.0), acc_y.1.min(100.0));
        if acc_y.1 - acc_y.0 < 1e-9 {
            acc_y = (0.0, 100.0);
        }
    }
    acc_y
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

/// A panel's chart: epoch on x, `f64` values on y.
type Chart<'a, 'b> = ChartContext<'a, Px<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: axes and grid, the curves, the best-epoch marker, the legend.
#[allow(clippy::too_many_arguments)]
fn curve_panel(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    color_offset: usize,
    x_axis: XAxis,
    y_range: (f64, f64),
    best_epoch: Option<f64>,
    label_best: bool,
) -> Result<()> {
    let mut chart = chart_with_grid(area, caption, y_desc, x_axis, y_range)?;
    let mut labelled = draw_curves(&mut chart, series, color_offset)?;
    if let Some(be) = best_epoch {
        labelled |= draw_best_epoch(&mut chart, series, color_offset, be, y_range, label_best)?;
    }
    if labelled {
        draw_legend(&mut chart, label_best)?;
    }
    Ok(())
}

/// Colour of curve `i` counted over both panels.
fn series_color(i: usize) -> RGBColor {
    rgb(SERIES_COLORS[i % SERIES_COLORS.len()])
}

/// The panel's coordinate system with its caption, axis labels and grid lines.
fn chart_with_grid<'a, 'b: 'a>(
    area: &'a Area<'b>,
    caption: &str,
    y_desc: &str,
    x_axis: XAxis,
    (y0, y1): (f64, f64),
) -> Result<Chart<'a, 'b>> {
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
    Ok(chart)
}

/// Each curve as a line with a legend entry, and with dots while there are few enough points
/// to tell apart. Returns whether it added a legend entry.
fn draw_curves<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    series: &[Series],
    color_offset: usize,
) -> Result<bool> {
    for (i, s) in series.iter().enumerate() {
        let color = series_color(color_offset + i);
        let pts = finite(s.points);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 20, y + 2)], color.filled()));
        if pts.len() <= 120 {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(plot_err)?;
        }
    }
    Ok(!series.is_empty())
}

/// The dashed line at the best epoch; with `label_best` also its legend entry and a ring on
/// every curve at that epoch. Returns whether it added a legend entry.
fn draw_best_epoch<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    series: &[Series],
    color_offset: usize,
    be: f64,
    (y0, y1): (f64, f64),
    label_best: bool,
) -> Result<bool> {
    let marker = RGBColor(60, 60, 60);
    let line = DashedLineSeries::new([(be, y0), (be, y1)], 6, 4, marker.stroke_width(2));
    let drawn = chart.draw_series(line).map_err(plot_err)?;
    if !label_best {
        return Ok(false);
    }
    drawn.label(best_label(series, be)).legend(move |(x, y)| {
        EmptyElement::at((x, y))
            + PathElement::new(vec![(0, 0), (7, 0)], marker.stroke_width(2))
            + PathElement::new(vec![(12, 0), (20, 0)], marker.stroke_width(2))
    });
    for (i, s) in series.iter().enumerate() {
        if let Some(v) = nearest(s.points, be) {
            let color = series_color(color_offset + i);
            chart
                .draw_series([Circle::new((be, v), 7, color.stroke_width(2))])
                .map_err(plot_err)?;
        }
    }
    Ok(true)
}

/// Legend text of the best epoch, with the value of the validation curve (or the first curve)
/// there.
fn best_label(series: &[Series], be: f64) -> String {
    let val = series
        .iter()
        .find(|s| s.name.to_lowercase().contains("val"))
        .or(series.first())
        .and_then(|s| nearest(s.points, be));
    match val {
        Some(v) => format!(
            "best val: epoch {} ({})",
            fmt_tick(be, 10.0),
            fmt_tick(v, 1.0)
        ),
        None => format!("best val: epoch {}", fmt_tick(be, 10.0)),
    }
}

fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, label_best: bool) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::tmp_path;
    use crate::plot::test_util::*;

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
}
