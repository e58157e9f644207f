//! Dense event timelines: one lane per class, each detected event a bar over its span
//! (overlapping events of different classes sit in different lanes; of one class, on top of
//! each other), its colour's strength the detection score, the score printed on it.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::canvas::{Canvas, blend, plot_err, with_path, write_png_atomic};
use super::text::text;
use super::timeline::CLASS_PALETTE;

/// One lane: the class name and its events `(start s, end s, score)`.
pub struct Lane<'a> {
    pub name: &'a str,
    pub class: usize,
    pub events: &'a [(f64, f64, f64)],
}

const LEFT: i64 = 220;
const RIGHT: i64 = 30;
const TOP: i64 = 56;
const LANE_H: i64 = 44;
const AXIS_H: i64 = 50;
const WIDTH: u32 = 1200;

/// Image size of [`event_lanes`] with `lanes` lanes.
pub fn lanes_size(lanes: usize) -> (u32, u32) {
    (WIDTH, (TOP + LANE_H * lanes.max(1) as i64 + AXIS_H) as u32)
}

/// Draws the lanes over `[0, duration]` seconds.
pub fn event_lanes(path: &Path, title: &str, duration: f64, lanes: &[Lane]) -> Result<()> {
    with_path(path, lanes_inner(path, title, duration, lanes))
}

fn lanes_inner(path: &Path, title: &str, duration: f64, lanes: &[Lane]) -> Result<()> {
    let (w, h) = lanes_size(lanes.len());
    let span = duration.max(1e-6);
    let x = |t: f64| LEFT + ((t.clamp(0.0, span) / span) * (w as i64 - LEFT - RIGHT) as f64) as i64;
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
    for (i, lane) in lanes.iter().enumerate() {
        let y0 = TOP + LANE_H * i as i64;
        canvas.fill(
            LEFT,
            y0 + 2,
            w as i64 - RIGHT,
            y0 + LANE_H - 2,
            (245, 245, 245),
        );
        let color = CLASS_PALETTE[lane.class % (CLASS_PALETTE.len() - 1)];
        for &(s, e, score) in lane.events {
            let shade = blend(
                color,
                (255, 255, 255),
                (1.0 - score.clamp(0.0, 1.0) as f32) * 0.8,
            );
            canvas.fill(x(s), y0 + 6, x(e).max(x(s) + 2), y0 + LANE_H - 6, shade);
        }
    }
    let axis_y = TOP + LANE_H * lanes.len() as i64;
    canvas.fill(LEFT, axis_y, w as i64 - RIGHT, axis_y + 1, (0, 0, 0));
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(1200.0);
    canvas.draw(|root| {
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (TOP / 2) as i32),
            text(22.0, (0, 0, 0), HPos::Center, VPos::Center),
        ))
        .map_err(plot_err)?;
        for (i, lane) in lanes.iter().enumerate() {
            let yc = (TOP + LANE_H * i as i64 + LANE_H / 2) as i32;
            let style = text(15.0, (0, 0, 0), HPos::Right, VPos::Center);
            root.draw(&Text::new(
                lane.name.to_string(),
                ((LEFT - 10) as i32, yc),
                style,
            ))
            .map_err(plot_err)?;
            for &(s, e, score) in lane.events {
                if x(e) - x(s) > 34 {
                    let style = text(12.0, (0, 0, 0), HPos::Center, VPos::Center);
                    let xc = ((x(s) + x(e)) / 2) as i32;
                    root.draw(&Text::new(format!("{score:.2}"), (xc, yc), style))
                        .map_err(plot_err)?;
                }
            }
        }
        let mut t = 0.0;
        while t <= span + 1e-9 {
            let style = text(13.0, (60, 60, 60), HPos::Center, VPos::Top);
            root.draw(&Text::new(
                format!("{t:.0} s"),
                (x(t) as i32, (axis_y + 8) as i32),
                style,
            ))
            .map_err(plot_err)?;
            t += step;
        }
        Ok(())
    })?;
    write_png_atomic(path, &canvas)
}
