//! Dense event timelines: one lane per class, each detected event a bar over its span, its
//! colour's strength the detection score, the score printed on it. Overlapping events of
//! different classes sit in different lanes; overlapping events of one class in stacked rows
//! of their lane.

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
const ROW_H: i64 = 30;
const LANE_GAP: i64 = 8;
const AXIS_H: i64 = 50;
const WIDTH: u32 = 1200;

/// Each event's row within its lane (first row where it overlaps nothing, events by start)
/// and the lane's number of rows.
fn pack(events: &[(f64, f64, f64)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| events[a].0.total_cmp(&events[b].0));
    let (mut row_of, mut row_end) = (vec![0; events.len()], Vec::<f64>::new());
    for i in order {
        let (s, e, _) = events[i];
        let r = row_end
            .iter()
            .position(|&end| end <= s)
            .unwrap_or(row_end.len());
        if r == row_end.len() {
            row_end.push(e);
        } else {
            row_end[r] = e;
        }
        row_of[i] = r;
    }
    (row_of, row_end.len().max(1))
}

fn lane_height(lane: &Lane) -> i64 {
    pack(lane.events).1 as i64 * ROW_H + LANE_GAP
}

/// Image size of [`event_lanes`] with these lanes.
pub fn lanes_size(lanes: &[Lane]) -> (u32, u32) {
    let body: i64 = lanes
        .iter()
        .map(lane_height)
        .sum::<i64>()
        .max(ROW_H + LANE_GAP);
    (WIDTH, (TOP + body + AXIS_H) as u32)
}

/// Draws the lanes over `[0, duration]` seconds.
pub fn event_lanes(path: &Path, title: &str, duration: f64, lanes: &[Lane]) -> Result<()> {
    with_path(path, lanes_inner(path, title, duration, lanes))
}

fn lanes_inner(path: &Path, title: &str, duration: f64, lanes: &[Lane]) -> Result<()> {
    let (w, h) = lanes_size(lanes);
    let span = duration.max(1e-6);
    let x = |t: f64| LEFT + ((t.clamp(0.0, span) / span) * (w as i64 - LEFT - RIGHT) as f64) as i64;
    let mut canvas = Canvas::new(w, h, (255, 255, 255));
    // Per lane: its top, and per event its bar [x0, x1) × [y0, y1).
    let mut tops = Vec::new();
    let mut bars = Vec::new();
    let mut y = TOP;
    for lane in lanes {
        let (row_of, _) = pack(lane.events);
        let height = lane_height(lane);
        tops.push((y, height));
        canvas.fill(
            LEFT,
            y + 2,
            w as i64 - RIGHT,
            y + height - LANE_GAP + 2,
            (245, 245, 245),
        );
        let color = CLASS_PALETTE[lane.class % (CLASS_PALETTE.len() - 1)];
        for (&(s, e, score), &r) in lane.events.iter().zip(&row_of) {
            let shade = blend(
                color,
                (255, 255, 255),
                (1.0 - score.clamp(0.0, 1.0) as f32) * 0.8,
            );
            let (y0, x0) = (y + r as i64 * ROW_H + 5, x(s));
            let x1 = x(e).max(x0 + 2);
            canvas.fill(x0, y0, x1, y0 + ROW_H - 4, shade);
            bars.push((x0, x1, y0 + (ROW_H - 4) / 2, score));
        }
        y += height;
    }
    let axis_y = y;
    canvas.fill(LEFT, axis_y, w as i64 - RIGHT, axis_y + 1, (0, 0, 0));
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(1200.0);
    canvas.draw(|root| {
        let centred = text(22.0, (0, 0, 0), HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, (TOP / 2) as i32),
            centred,
        ))
        .map_err(plot_err)?;
        for (lane, &(top, height)) in lanes.iter().zip(&tops) {
            let style = text(15.0, (0, 0, 0), HPos::Right, VPos::Center);
            let yc = (top + (height - LANE_GAP) / 2 + 2) as i32;
            root.draw(&Text::new(
                lane.name.to_string(),
                ((LEFT - 10) as i32, yc),
                style,
            ))
            .map_err(plot_err)?;
        }
        for &(x0, x1, yc, score) in &bars {
            if x1 - x0 > 34 {
                let style = text(12.0, (0, 0, 0), HPos::Center, VPos::Center);
                root.draw(&Text::new(
                    format!("{score:.2}"),
                    (((x0 + x1) / 2) as i32, yc as i32),
                    style,
                ))
                .map_err(plot_err)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn overlapping_events_of_a_class_take_separate_rows() {
        let events = [
            (10.0, 25.0, 0.7),
            (12.0, 20.0, 0.3),
            (26.0, 30.0, 0.5),
            (0.0, 5.0, 0.9),
        ];
        assert_eq!(super::pack(&events), (vec![0, 1, 0, 0], 2));
        assert_eq!(super::pack(&[]), (vec![], 1));
    }
}
