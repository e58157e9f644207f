//! Checks of an AVE-layout directory's contents, shared by the reader (on open and on read)
//! and the writer (before anything is written). Every error names the file.

use std::path::Path;

use super::{DataError, FEATURE_KEY, FeatureDType, GRID, NUM_LABELS};
use crate::data::annotations::T;

pub(super) fn invalid(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

pub(super) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub(super) fn check_visual_shape(path: &Path, shape: &[usize]) -> Result<(), DataError> {
    let ok = match shape {
        [n, t, h, w, c] => *n > 0 && *t == T && *h == GRID && *w == GRID && *c > 0,
        [n, t, c] => *n > 0 && *t == T && *c > 0,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has shape {}; expected [N,{T},{GRID},{GRID},C] or [N,{T},C] with N, C > 0",
                fmt_shape(shape)
            ),
        ))
    }
}

pub(super) fn check_audio_shape(path: &Path, shape: &[usize]) -> Result<(), DataError> {
    match shape {
        [n, t, c] if *n > 0 && *t == T && *c > 0 => Ok(()),
        _ => Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has shape {}; expected [N,{T},C] with N, C > 0",
                fmt_shape(shape)
            ),
        )),
    }
}

pub(super) fn check_same_rows(
    visual: &Path,
    vshape: &[usize],
    audio: &Path,
    n_audio: usize,
) -> Result<(), DataError> {
    if vshape[0] != n_audio {
        return Err(invalid(
            visual,
            format!(
                "dataset '{FEATURE_KEY}' has shape {} but {} has {n_audio} rows",
                fmt_shape(vshape),
                file_name(audio)
            ),
        ));
    }
    Ok(())
}

/// Checks `[n,10,29]` one-hot label values; returns the class of every segment (`n*10`).
pub(super) fn labels_to_classes(path: &Path, values: &[f64]) -> Result<Vec<u8>, DataError> {
    let mut classes = Vec::with_capacity(values.len() / NUM_LABELS);
    for (k, v) in values.chunks_exact(NUM_LABELS).enumerate() {
        let bad = |why: String| {
            invalid(
                path,
                format!(
                    "labels of row {}, segment {} are not one-hot: {why}",
                    k / T,
                    k % T
                ),
            )
        };
        if let Some(j) = v.iter().position(|&x| x != 0.0 && x != 1.0) {
            return Err(bad(format!("entry {j} is {}", v[j])));
        }
        let ones: Vec<usize> = (0..NUM_LABELS).filter(|&j| v[j] == 1.0).collect();
        if ones.len() != 1 {
            return Err(bad(format!(
                "{} entries are 1 (at {ones:?}), expected exactly one",
                ones.len()
            )));
        }
        classes.push(ones[0] as u8);
    }
    Ok(classes)
}

/// Checks order indices: each in `0..n`, no duplicates.
pub(super) fn check_order(
    path: &Path,
    indices: &[i128],
    n: usize,
) -> Result<Vec<usize>, DataError> {
    let mut seen = vec![usize::MAX; n];
    let mut out = Vec::with_capacity(indices.len());
    for (pos, &ix) in indices.iter().enumerate() {
        if ix < 0 || ix >= n as i128 {
            return Err(invalid(path, format!("index {ix} out of range (N = {n})")));
        }
        let ix = ix as usize;
        if seen[ix] != usize::MAX {
            return Err(invalid(
                path,
                format!("duplicate index {ix} (at positions {} and {pos})", seen[ix]),
            ));
        }
        seen[ix] = pos;
        out.push(ix);
    }
    Ok(out)
}

pub(super) fn check_feature_values(
    path: &Path,
    data: super::FeatureSlice<'_>,
    row_len: usize,
    dtype: FeatureDType,
) -> Result<(), DataError> {
    let bad = |p: usize, v: f64, why: &str| {
        invalid(
            path,
            format!(
                "{why} value {v} in row {} (element {} of the row)",
                p / row_len,
                p % row_len
            ),
        )
    };
    match data {
        super::FeatureSlice::F32(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(p, v[p] as f64, "non-finite"));
            }
        }
        super::FeatureSlice::F64(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(p, v[p], "non-finite"));
            }
            if dtype == FeatureDType::F32
                && let Some(p) = v.iter().position(|x| x.abs() > f32::MAX as f64)
            {
                return Err(bad(p, v[p], "out-of-float32-range"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ave::AVE_ROWS;

    #[test]
    fn order_checks() {
        let p = Path::new("/d/test_order.h5");
        assert_eq!(check_order(p, &[2, 0, 1], 3).unwrap(), vec![2, 0, 1]);
        let m = check_order(p, &[5000], AVE_ROWS).unwrap_err().to_string();
        assert_eq!(m, "/d/test_order.h5: index 5000 out of range (N = 4143)");
        let m = check_order(p, &[-1], 3).unwrap_err().to_string();
        assert!(m.contains("index -1 out of range"), "{m}");
        let m = check_order(p, &[1, 2, 1], 3).unwrap_err().to_string();
        assert!(
            m.contains("duplicate index 1 (at positions 0 and 2)"),
            "{m}"
        );
    }

    #[test]
    fn onehot_checks() {
        let p = Path::new("/d/labels.h5");
        let mut v = vec![0.0f64; 2 * T * NUM_LABELS];
        for k in 0..2 * T {
            v[k * NUM_LABELS + (k % NUM_LABELS)] = 1.0;
        }
        let classes = labels_to_classes(p, &v).unwrap();
        assert_eq!(classes[13], 13);
        let mut w = v.clone();
        w[(T + 2) * NUM_LABELS] = 1.0; // row 1, segment 2 gets a second 1
        let m = labels_to_classes(p, &w).unwrap_err().to_string();
        assert!(
            m.starts_with("/d/labels.h5: labels of row 1, segment 2 are not one-hot"),
            "{m}"
        );
        let mut w = v.clone();
        w[5] = 0.5;
        assert!(
            labels_to_classes(p, &w)
                .unwrap_err()
                .to_string()
                .contains("entry 5 is 0.5")
        );
        let mut w = v;
        w[0] = 0.0; // row 0 segment 0 all zero
        assert!(
            labels_to_classes(p, &w)
                .unwrap_err()
                .to_string()
                .contains("0 entries are 1")
        );
    }

    #[test]
    fn shape_checks() {
        let p = Path::new("/d/visual_feature.h5");
        check_visual_shape(p, &[5, 10, 7, 7, 512]).unwrap();
        check_visual_shape(p, &[5, 10, 2048]).unwrap();
        for bad in [
            &[5, 9, 7, 7, 512][..],
            &[5, 10, 6, 7, 512],
            &[0, 10, 3],
            &[5, 10],
            &[5, 10, 0],
        ] {
            let m = check_visual_shape(p, bad).unwrap_err().to_string();
            assert!(
                m.starts_with("/d/visual_feature.h5: dataset 'avadataset' has shape ["),
                "{m}"
            );
        }
        let m = check_same_rows(p, &[5, 10, 7, 7, 512], Path::new("/d/audio_feature.h5"), 4)
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            "/d/visual_feature.h5: dataset 'avadataset' has shape [5,10,7,7,512] but audio_feature.h5 has 4 rows"
        );
    }
}
