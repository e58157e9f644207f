//! Which AVE rows a synthetic set of `N` videos takes, and its split orders (see "Rows and
//! splits" in the module documentation of [`super`]).

use crate::data::annotations::Annotation;
use crate::data::ave::{AVE_ROWS, Split, builtin_order};

/// Chosen original rows (ascending; synthetic row `i` = original row `rows[i]`) and the orders
/// (train, val, test) in synthetic row indices.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Selection {
    pub(super) rows: Vec<usize>,
    pub(super) orders: [Vec<usize>; 3],
}

/// Per-split sizes: largest-remainder rounding of `n·|s|/4143` (ties to the earlier split),
/// then every split gets at least one row, taken from the currently largest split.
fn split_sizes(n: usize, lens: [usize; 3]) -> [usize; 3] {
    let total: usize = lens.iter().sum();
    let mut k = [0usize; 3];
    let mut rem = [0usize; 3];
    for s in 0..3 {
        k[s] = n * lens[s] / total;
        rem[s] = n * lens[s] % total;
    }
    let mut left = n - k.iter().sum::<usize>();
    while left > 0 {
        let s = (0..3)
            .max_by_key(|&s| (rem[s], std::cmp::Reverse(s)))
            .unwrap();
        k[s] += 1;
        rem[s] = 0;
        left -= 1;
    }
    for s in 0..3 {
        if k[s] == 0 {
            let big = (0..3)
                .max_by_key(|&b| (k[b], std::cmp::Reverse(b)))
                .unwrap();
            k[big] -= 1;
            k[s] += 1;
        }
    }
    k
}

pub(super) fn select_rows(n: usize) -> Result<Selection, String> {
    if !(3..=AVE_ROWS).contains(&n) {
        return Err(format!(
            "videos = {n} is out of range (need 3..={AVE_ROWS})"
        ));
    }
    let full: Vec<Vec<usize>> = Split::ALL.iter().map(|&s| builtin_order(s)).collect();
    let sizes = split_sizes(n, [full[0].len(), full[1].len(), full[2].len()]);
    let mut rows: Vec<usize> = (0..3).flat_map(|s| full[s][..sizes[s]].to_vec()).collect();
    rows.sort_unstable();
    debug_assert!(rows.windows(2).all(|w| w[0] < w[1]));
    let mut new_index = vec![usize::MAX; AVE_ROWS];
    for (i, &r) in rows.iter().enumerate() {
        new_index[r] = i;
    }
    let orders = [0, 1, 2].map(|s| full[s][..sizes[s]].iter().map(|&r| new_index[r]).collect());
    Ok(Selection { rows, orders })
}

/// The `Annotations.txt` line of an annotation (identical to the AVE file's line).
pub(super) fn annotation_line(a: &Annotation) -> String {
    format!(
        "{}&{}&{}&{}&{}\n",
        a.category, a.youtube_id, a.quality, a.start, a.end
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::annotations::builtin_annotations;

    #[test]
    fn split_sizes_sum_and_proportions() {
        let lens = [3339, 402, 402];
        for n in [3, 4, 5, 10, 11, 30, 100, 299, 300, 1000, 4142, 4143] {
            let k = split_sizes(n, lens);
            assert_eq!(k.iter().sum::<usize>(), n, "n={n}");
            assert!(k.iter().all(|&x| x >= 1), "n={n}: {k:?}");
            for s in 0..3 {
                let q = n as f64 * lens[s] as f64 / 4143.0;
                // Within one of the exact quota (the at-least-one rule only matters for tiny n).
                if n >= 11 {
                    assert!((k[s] as f64 - q).abs() < 1.0, "n={n} s={s}: {k:?} vs {q}");
                }
            }
        }
        assert_eq!(split_sizes(3, lens), [1, 1, 1]);
        assert_eq!(split_sizes(30, lens), [24, 3, 3]);
        assert_eq!(split_sizes(4143, lens), lens);
    }

    #[test]
    fn selection_is_consistent() {
        assert!(select_rows(2).is_err());
        assert!(select_rows(4144).is_err());
        let full = select_rows(AVE_ROWS).unwrap();
        assert_eq!(full.rows, (0..AVE_ROWS).collect::<Vec<_>>());
        for (i, s) in Split::ALL.iter().enumerate() {
            assert_eq!(full.orders[i], builtin_order(*s));
        }
        for n in [3, 30, 301] {
            let sel = select_rows(n).unwrap();
            assert_eq!(sel.rows.len(), n);
            assert!(sel.rows.windows(2).all(|w| w[0] < w[1]));
            let mut all: Vec<usize> = sel.orders.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            for (i, s) in Split::ALL.iter().enumerate() {
                let real = builtin_order(*s);
                let mapped: Vec<usize> = sel.orders[i].iter().map(|&r| sel.rows[r]).collect();
                assert_eq!(mapped, real[..mapped.len()].to_vec(), "n={n} {s}");
            }
        }
    }

    #[test]
    fn annotation_lines_reproduce_the_ave_file() {
        let text = include_str!("../../../assets/ave/Annotations.txt");
        let ours: String = builtin_annotations().iter().map(annotation_line).collect();
        assert_eq!(ours, text);
    }
}
