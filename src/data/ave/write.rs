//! Writing an AVE-layout directory from feature arrays in memory, everything validated before
//! anything is written.

use std::fs;
use std::path::Path;

use super::validate::{
    check_audio_shape, check_feature_values, check_order, check_same_rows, check_visual_shape,
    fmt_shape, invalid, labels_to_classes,
};
use super::{
    AUDIO_FILE, DataError, FEATURE_KEY, FeatureDType, LABELS_FILE, NUM_LABELS, ORDER_KEY, Split,
    VISUAL_FILE,
};
use crate::data::annotations::T;
use crate::data::h5;

/// Borrowed feature values, f32 or f64.
#[derive(Debug, Clone, Copy)]
pub enum FeatureSlice<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl FeatureSlice<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            FeatureSlice::F32(v) => v.len(),
            FeatureSlice::F64(v) => v.len(),
        }
    }
}

impl<'a> From<&'a [f32]> for FeatureSlice<'a> {
    fn from(v: &'a [f32]) -> Self {
        FeatureSlice::F32(v)
    }
}

impl<'a> From<&'a [f64]> for FeatureSlice<'a> {
    fn from(v: &'a [f64]) -> Self {
        FeatureSlice::F64(v)
    }
}

impl<'a> From<&'a Vec<f32>> for FeatureSlice<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        FeatureSlice::F32(v)
    }
}

impl<'a> From<&'a Vec<f64>> for FeatureSlice<'a> {
    fn from(v: &'a Vec<f64>) -> Self {
        FeatureSlice::F64(v)
    }
}

/// Writes an AVE-layout directory (created if needed): `visual_feature.h5`, `audio_feature.h5`
/// (key `avadataset`, stored as `dtype`), `labels.h5` when `labels` is given (`[N,10,29]` f32
/// one-hot) and one `{split}_order.h5` (key `order`, int64) per entry of `orders`. Shapes are full
/// shapes including `N`. Everything is validated before anything is written (shapes as in
/// [`AveDir::open`](super::AveDir::open), lengths, finite values, one-hot labels, order
/// indices). Each file is written under a temporary name and renamed into place. Files of the
/// layout that are not written (`labels.h5` when `labels` is `None`, order files of splits not
/// in `orders`) are removed from `dir` so that stale files cannot contradict the new data;
/// `Annotations.txt` is left alone.
#[allow(clippy::too_many_arguments)]
pub fn write_features<'a>(
    dir: &Path,
    visual: impl Into<FeatureSlice<'a>>,
    visual_shape: &[usize],
    audio: impl Into<FeatureSlice<'a>>,
    audio_shape: &[usize],
    labels: Option<&[f32]>,
    orders: &[(Split, Vec<usize>)],
    dtype: FeatureDType,
) -> Result<(), DataError> {
    let (visual, audio) = (visual.into(), audio.into());
    let vpath = dir.join(VISUAL_FILE);
    let apath = dir.join(AUDIO_FILE);
    let lpath = dir.join(LABELS_FILE);
    check_visual_shape(&vpath, visual_shape)?;
    check_audio_shape(&apath, audio_shape)?;
    check_same_rows(&vpath, visual_shape, &apath, audio_shape[0])?;
    let n = visual_shape[0];
    for (path, data, shape) in [(&vpath, visual, visual_shape), (&apath, audio, audio_shape)] {
        check_feature_data(path, data, shape, dtype)?;
    }
    if let Some(l) = labels {
        check_label_data(&lpath, l, n)?;
    }
    check_orders(dir, orders, n)?;

    fs::create_dir_all(dir).map_err(|e| DataError::Io {
        path: dir.to_path_buf(),
        what: "cannot create directory",
        source: e,
    })?;
    write_feature_file(&vpath, visual, visual_shape, dtype)?;
    write_feature_file(&apath, audio, audio_shape, dtype)?;
    match labels {
        Some(l) => h5::write(&lpath, FEATURE_KEY, &[n, T, NUM_LABELS], l)?,
        None => remove_if_exists(&lpath)?,
    }
    write_orders(dir, orders)
}

/// `data` has the length of `shape` and finite values that fit `dtype`.
fn check_feature_data(
    path: &Path,
    data: FeatureSlice<'_>,
    shape: &[usize],
    dtype: FeatureDType,
) -> Result<(), DataError> {
    let expected: usize = shape.iter().product();
    if data.len() != expected {
        return Err(invalid(
            path,
            format!(
                "{} values given for shape {} ({expected} values)",
                data.len(),
                fmt_shape(shape)
            ),
        ));
    }
    check_feature_values(path, data, expected / shape[0], dtype)
}

/// `labels` are `[n,10,29]` one-hot values.
fn check_label_data(path: &Path, labels: &[f32], n: usize) -> Result<(), DataError> {
    if labels.len() != n * T * NUM_LABELS {
        return Err(invalid(
            path,
            format!(
                "{} label values given; expected {n}*{T}*{NUM_LABELS} = {}",
                labels.len(),
                n * T * NUM_LABELS
            ),
        ));
    }
    let as_f64: Vec<f64> = labels.iter().map(|&x| x as f64).collect();
    labels_to_classes(path, &as_f64)?;
    Ok(())
}

/// Each split at most once, its indices valid for `n` rows.
fn check_orders(dir: &Path, orders: &[(Split, Vec<usize>)], n: usize) -> Result<(), DataError> {
    let mut seen = [false; 3];
    for (split, idx) in orders {
        let p = dir.join(split.order_file());
        if std::mem::replace(&mut seen[split.index()], true) {
            return Err(invalid(&p, format!("{split} order given twice")));
        }
        let as_i: Vec<i128> = idx.iter().map(|&i| i as i128).collect();
        check_order(&p, &as_i, n)?;
    }
    Ok(())
}

/// The order files of the splits in `orders`; those of the others are removed.
fn write_orders(dir: &Path, orders: &[(Split, Vec<usize>)]) -> Result<(), DataError> {
    for split in Split::ALL {
        let p = dir.join(split.order_file());
        match orders.iter().find(|(s, _)| *s == split) {
            Some((_, idx)) => {
                let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                h5::write(&p, ORDER_KEY, &[v.len()], &v)?;
            }
            None => remove_if_exists(&p)?,
        }
    }
    Ok(())
}

fn write_feature_file(
    path: &Path,
    data: FeatureSlice<'_>,
    shape: &[usize],
    dtype: FeatureDType,
) -> Result<(), DataError> {
    match (data, dtype) {
        (FeatureSlice::F32(v), FeatureDType::F32) => h5::write(path, FEATURE_KEY, shape, v),
        (FeatureSlice::F64(v), FeatureDType::F64) => h5::write(path, FEATURE_KEY, shape, v),
        (FeatureSlice::F32(v), FeatureDType::F64) => {
            let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            h5::write(path, FEATURE_KEY, shape, &w)
        }
        (FeatureSlice::F64(v), FeatureDType::F32) => {
            let w: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            h5::write(path, FEATURE_KEY, shape, &w)
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), DataError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataError::Io {
            path: path.to_path_buf(),
            what: "cannot remove stale file",
            source: e,
        }),
    }
}
