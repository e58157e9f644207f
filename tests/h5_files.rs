//! HDF5 through the pure-Rust reader and writer, checked against h5py:
//! - files h5py wrote (`tools/make_h5_fixtures.py`: contiguous and chunked + gzip, float32 and
//!   float64 features, float and integer labels and orders, superblock v0 and latest) read to the
//!   exact values h5py stored;
//! - (ignored unless h5py is installed; CI runs them) h5py reads back exactly what `write_features`
//!   and `cace synth` wrote, and a >4 GiB float64 `visual_feature.h5` streams in rows.

mod data_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cace_net::data::ave::*;
use cace_net::data::synth::{SynthConfig, generate};
use data_common::temp_dir;

/// The fixtures' value of flat element `i` (see tools/make_h5_fixtures.py).
fn value(i: usize) -> f64 {
    ((i * 7919) % 1000) as f64 / 64.0 - 7.0
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/h5py")
        .join(name)
}

/// Row `r` of a file whose flat element `i` holds `value(i)`.
fn expected_row(r: usize, row_len: usize) -> Vec<f32> {
    (r * row_len..(r + 1) * row_len)
        .map(|i| value(i) as f32)
        .collect()
}

#[test]
fn h5py_fixtures_read_exactly() {
    for (name, dtype) in [
        ("contiguous_f64", FeatureDType::F64),
        ("contiguous_f32", FeatureDType::F32),
        ("chunked_gzip_f32", FeatureDType::F32),
        ("chunked_gzip_f64_latest", FeatureDType::F64),
    ] {
        let d = AveDir::open(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.num_rows(), 6, "{name}");
        assert_eq!(d.visual_shape(), [10, 7, 7, 4], "{name}");
        assert_eq!(
            (d.visual_dtype(), d.audio_dtype()),
            (dtype, dtype),
            "{name}"
        );
        // Rows out of order and repeated, as batches ask for them.
        let rows = [5, 0, 3, 3, 1];
        let (mut vis, mut aud, mut lab) = (Vec::new(), Vec::new(), Vec::new());
        d.read_visual(&rows, &mut vis).unwrap();
        d.read_audio(&rows, &mut aud).unwrap();
        d.read_labels(&rows, &mut lab).unwrap();
        let want_v: Vec<f32> = rows.iter().flat_map(|&r| expected_row(r, 1960)).collect();
        let want_a: Vec<f32> = rows.iter().flat_map(|&r| expected_row(r, 80)).collect();
        assert_eq!(vis, want_v, "{name}: visual");
        assert_eq!(aud, want_a, "{name}: audio");
        // labels: class (r*5+t) % 28, background when (r+t) % 3 == 0.
        assert_eq!(lab.len(), rows.len() * 10 * 29, "{name}");
        for (k, &r) in rows.iter().enumerate() {
            for t in 0..10 {
                let class = if (r + t) % 3 == 0 {
                    28
                } else {
                    (r * 5 + t) % 28
                };
                let one = &lab[(k * 10 + t) * 29..(k * 10 + t + 1) * 29];
                let hot: Vec<usize> = (0..29).filter(|&c| one[c] == 1.0).collect();
                assert_eq!(hot, [class], "{name}: row {r} segment {t}");
            }
        }
        assert_eq!(d.order(Split::Train).unwrap(), [4, 0, 2], "{name}");
        assert_eq!(d.order(Split::Val).unwrap(), [1], "{name}");
        assert_eq!(d.order(Split::Test).unwrap(), [5, 3], "{name}");
    }
}

/// Runs tools/h5_dump.py on `file` and returns (numpy dtype name, shape, raw little-endian bytes).
fn h5py_dump(file: &Path, key: &str) -> (String, Vec<usize>, Vec<u8>) {
    let out = file.with_extension("dump");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/h5_dump.py");
    let st = Command::new("python3")
        .arg(&script)
        .args([file.as_os_str(), key.as_ref(), out.as_os_str()])
        .status()
        .expect("python3 must be on PATH for this test");
    assert!(
        st.success(),
        "{} failed on {} (is h5py installed? `pip install h5py`)",
        script.display(),
        file.display()
    );
    let bytes = std::fs::read(&out).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(bytes[..nl].to_vec()).unwrap();
    let mut words = header.split(' ');
    let dtype = words.next().unwrap().to_string();
    let shape = words.map(|w| w.parse().unwrap()).collect();
    (dtype, shape, bytes[nl + 1..].to_vec())
}

fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn le_f64_as_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
        .collect()
}

/// h5py's reading of every file of an AVE directory equals ours.
fn h5py_agrees(dir: &Path) {
    let d = AveDir::open(dir).unwrap();
    let all: Vec<usize> = (0..d.num_rows()).collect();
    for (file, dtype, ours) in [
        (VISUAL_FILE, d.visual_dtype(), {
            let mut v = Vec::new();
            d.read_visual(&all, &mut v).unwrap();
            v
        }),
        (AUDIO_FILE, d.audio_dtype(), {
            let mut v = Vec::new();
            d.read_audio(&all, &mut v).unwrap();
            v
        }),
    ] {
        let (np_dtype, shape, raw) = h5py_dump(&dir.join(file), FEATURE_KEY);
        assert_eq!(shape[0], d.num_rows(), "{file}");
        let theirs = match dtype {
            FeatureDType::F32 => {
                assert_eq!(np_dtype, "float32", "{file}");
                le_f32(&raw)
            }
            FeatureDType::F64 => {
                assert_eq!(np_dtype, "float64", "{file}");
                le_f64_as_f32(&raw)
            }
        };
        assert_eq!(theirs, ours, "{}: h5py reads other values", file);
    }
    for split in Split::ALL {
        let (np_dtype, _, raw) = h5py_dump(&dir.join(split.order_file()), ORDER_KEY);
        assert_eq!(np_dtype, "int64");
        let theirs: Vec<usize> = raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        assert_eq!(theirs, d.order(split).unwrap(), "{split}");
    }
}

#[test]
#[ignore = "needs python3 with h5py (pip install h5py); run by .ci/run"]
fn h5py_reads_what_we_write() {
    let tmp = temp_dir("h5py-rt");
    for (k, dtype) in [FeatureDType::F32, FeatureDType::F64]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("w{k}"));
        let n = 5;
        let vis: Vec<f64> = (0..n * 10 * 49 * 3).map(|i| value(i) + 1e-9).collect();
        let aud: Vec<f64> = (0..n * 10 * 16).map(|i| -value(i)).collect();
        let orders = [
            (Split::Train, vec![0, 2]),
            (Split::Val, vec![1]),
            (Split::Test, vec![4, 3]),
        ];
        write_features(
            &dir,
            &vis,
            &[n, 10, 7, 7, 3],
            &aud,
            &[n, 10, 16],
            None,
            &orders,
            dtype,
        )
        .unwrap();
        h5py_agrees(&dir);
    }
    let synth = tmp.path().join("synth");
    let cfg = SynthConfig {
        videos: 24,
        visual_dim: 16,
        ..SynthConfig::default()
    };
    generate(&synth, &cfg).unwrap();
    h5py_agrees(&synth);
    // labels.h5 too (float32 one-hot).
    let (np_dtype, shape, raw) = h5py_dump(&synth.join(LABELS_FILE), FEATURE_KEY);
    assert_eq!((np_dtype.as_str(), shape), ("float32", vec![24, 10, 29]));
    let mut ours = Vec::new();
    AveDir::open(&synth)
        .unwrap()
        .read_labels(&(0..24).collect::<Vec<_>>(), &mut ours)
        .unwrap();
    assert_eq!(le_f32(&raw), ours);
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
#[ignore = "needs a >4 GiB file from `python3 tools/make_h5_fixtures.py --big DIR`; set CACE_BIG_H5=DIR"]
fn big_float64_file_streams_in_rows() {
    let dir = PathBuf::from(std::env::var("CACE_BIG_H5").expect("set CACE_BIG_H5"));
    let d = AveDir::open(&dir).unwrap();
    let n = d.num_rows();
    let bytes = std::fs::metadata(dir.join(VISUAL_FILE)).unwrap().len();
    assert!(
        bytes > 4 << 30,
        "the file must exceed 4 GiB ({bytes} bytes)"
    );
    assert_eq!(d.visual_dtype(), FeatureDType::F64);
    let marked: Vec<usize> = std::fs::read_to_string(dir.join("marked_rows.txt"))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let row_len = 10 * 49 * 512;
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    for first in (0..n).step_by(64) {
        let rows: Vec<usize> = (first..n.min(first + 64)).collect();
        buf.clear();
        d.read_visual(&rows, &mut buf).unwrap();
        for (k, &r) in rows.iter().enumerate() {
            let got = &buf[k * row_len..(k + 1) * row_len];
            if marked.contains(&r) {
                assert_eq!(got, expected_row(r, row_len), "row {r}");
            } else {
                assert!(got.iter().all(|&x| x == 0.0), "row {r} should be zeros");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "streamed {n} rows ({:.2} GB float64) in {secs:.1} s ({:.0} MB/s), peak RSS {:.2} GB",
        bytes as f64 / 1e9,
        bytes as f64 / 1e6 / secs,
        peak_rss() as f64 / 1e9
    );
    assert!(peak_rss() < 1 << 30, "rows must stream, not load the file");
}
