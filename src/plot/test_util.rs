//! Fixtures of the figure tests: decoding the written PNGs, output paths, sample data.

use std::fs;
use std::path::{Path, PathBuf};

pub(super) struct Img {
    pub(super) w: u32,
    pub(super) h: u32,
    pub(super) px: Vec<u8>,
}

impl Img {
    pub(super) fn at(&self, x: i64, y: i64) -> (u8, u8, u8) {
        let i = ((y as usize) * self.w as usize + x as usize) * 3;
        (self.px[i], self.px[i + 1], self.px[i + 2])
    }
    pub(super) fn count(&self, c: (u8, u8, u8)) -> usize {
        self.px
            .chunks(3)
            .filter(|p| (p[0], p[1], p[2]) == c)
            .count()
    }
    pub(super) fn count_in(
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
    pub(super) fn distinct(&self) -> usize {
        let mut v: Vec<[u8; 3]> = self.px.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    }
}

pub(super) fn decode(path: &Path) -> Img {
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
pub(super) fn out(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("cace-net-plot-tests");
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    p
}

pub(super) fn unwritable(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join("cace-net-plot-tests-no-such-dir")
        .join(name)
}

pub(super) const AVE: [&str; 28] = crate::data::annotations::CATEGORIES;

pub(super) type Curve = Vec<(f64, f64)>;

pub(super) fn curves_data() -> (Curve, Curve, Curve) {
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

pub(super) fn timeline_rows() -> ([usize; 10], [usize; 10], [f32; 10]) {
    let pred = [28, 28, 6, 6, 6, 6, 6, 13, 28, 28];
    let gt = [28, 6, 6, 6, 6, 6, 6, 6, 28, 1];
    let probs = [0.05, 0.2, 0.9, 1.0, 0.95, 0.85, 0.7, 0.55, 0.1, 0.0];
    (pred, gt, probs)
}

pub(super) fn weights(hot: usize) -> [f32; 49] {
    let mut w = [0.0f32; 49];
    let (hr, hc) = ((hot / 7) as f32, (hot % 7) as f32);
    for (i, x) in w.iter_mut().enumerate() {
        let (r, c) = ((i / 7) as f32, (i % 7) as f32);
        *x = 0.002 + 0.05 * (-((r - hr).powi(2) + (c - hc).powi(2)) / 4.0).exp();
    }
    w[hot] += 0.01;
    w
}
