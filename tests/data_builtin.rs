//! The shipped AVE annotations and split orders, checked against REFERENCE §1 and the real
//! label files in `shared/data/ave`.
#[path = "data_common/mod.rs"]
mod common;

use std::collections::HashSet;

use cace_net::data::annotations::*;
use cace_net::data::ave::*;
use cace_net::data::h5;
use common::{shared_ave_dir, temp_dir};

const COUNTS: [usize; 28] = [
    188, 176, 171, 184, 188, 175, 178, 187, 172, 163, 182, 138, 102, 99, 186, 176, 160, 183, 100,
    83, 69, 160, 60, 64, 180, 109, 154, 156,
];

#[test]
fn builtin_annotations_match_reference() {
    let a = builtin_annotations();
    assert_eq!(a.len(), 4143);
    let mut counts = [0usize; 28];
    for x in &a {
        counts[x.class] += 1;
        assert_eq!(x.category, CATEGORIES[x.class]);
        assert_eq!(x.quality, "good");
    }
    assert_eq!(counts, COUNTS);
    assert_eq!((counts[0], counts[23]), (188, 64));
    // Row 26: zero-length event, all background.
    assert_eq!(a[26].youtube_id, "VWi2ENBuTbw");
    assert_eq!((a[26].start, a[26].end), (0, 0));
    assert_eq!(a[26].segment_labels(), [BACKGROUND; T]);
    // Golden rows (shared/golden/README.md §2.1).
    assert_eq!((a[339].class, a[339].start, a[339].end), (1, 0, 10));
    assert_eq!(a[339].segment_labels(), [1; 10]);
    assert_eq!((a[396].class, a[396].start, a[396].end), (2, 3, 5));
    assert_eq!(
        a[396].segment_labels(),
        [28, 28, 28, 2, 2, 28, 28, 28, 28, 28]
    );
    assert_eq!((a[3540].class, a[3540].start, a[3540].end), (23, 0, 6));
    assert_eq!(
        a[3540].segment_labels(),
        [23, 23, 23, 23, 23, 23, 28, 28, 28, 28]
    );
    // Event-length histogram (REFERENCE §1.2).
    let mut hist = [0usize; 11];
    for x in &a {
        hist[(x.end - x.start) as usize] += 1;
    }
    assert_eq!(hist, [1, 0, 214, 220, 217, 196, 200, 139, 111, 95, 2750]);
}

#[test]
fn builtin_orders_match_reference() {
    let tr = builtin_order(Split::Train);
    let va = builtin_order(Split::Val);
    let te = builtin_order(Split::Test);
    assert_eq!((tr.len(), va.len(), te.len()), (3339, 402, 402));
    assert_eq!(&tr[..10], &[40, 30, 69, 91, 90, 120, 133, 159, 12, 162]);
    assert_eq!(&va[..5], &[139, 121, 137, 167, 56]);
    assert_eq!(&te[..10], &[131, 171, 73, 93, 148, 78, 42, 10, 84, 157]);
    let all: HashSet<usize> = tr.iter().chain(&va).chain(&te).copied().collect();
    assert_eq!(all.len(), 4143, "splits overlap");
    assert!(all.iter().all(|&r| r < 4143));
    assert!(tr.contains(&26), "row 26 is in train");
}

#[test]
fn test_split_statistics() {
    let a = builtin_annotations();
    let per_cat = [
        18, 17, 17, 18, 18, 17, 17, 18, 17, 16, 18, 13, 10, 9, 18, 17, 16, 18, 10, 8, 6, 16, 6, 6,
        18, 10, 15, 15,
    ];
    let (mut seg, mut ev, mut bg) = (0, 0, 0);
    let mut cats = [0usize; 28];
    for &r in &builtin_order(Split::Test) {
        cats[a[r].class] += 1;
        for c in a[r].segment_labels() {
            seg += 1;
            if c == BACKGROUND { bg += 1 } else { ev += 1 }
        }
    }
    assert_eq!((seg, ev, bg), (4020, 3305, 715));
    assert_eq!(cats, per_cat);
    let mut cats = [0usize; 28];
    for &r in &builtin_order(Split::Val) {
        cats[a[r].class] += 1;
    }
    assert_eq!(cats, per_cat);
}

#[test]
fn builtin_labels_equal_shared_label_files() {
    let Some(d) = shared_ave_dir() else { return };
    let a = builtin_annotations();
    let read = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let ds = h5::Dataset::open(&d.join(name), "avadataset", "labels").unwrap();
        let v = ds.read_all_f64().unwrap();
        (ds.shape.clone(), v.into_iter().map(|x| x as f32).collect())
    };
    let (shape, closs) = read("labels_closs.h5");
    assert_eq!(shape, [4143, 10]);
    let (shape, mil) = read("mil_labels.h5");
    assert_eq!(shape, [4143, 29]);
    let oh = labels_onehot(&a);
    assert_eq!(oh.len(), 4143 * 10 * 29);
    for (i, x) in a.iter().enumerate() {
        let seg = x.segment_labels();
        for t in 0..10 {
            let event = seg[t] != BACKGROUND;
            assert_eq!(
                closs[i * 10 + t],
                if event { 1.0 } else { 0.0 },
                "row {i} t {t}"
            );
            let o = &oh[(i * 10 + t) * 29..(i * 10 + t + 1) * 29];
            assert_eq!(o[seg[t]], 1.0);
            assert_eq!(o.iter().sum::<f32>(), 1.0);
        }
        let m = &mil[i * 29..(i + 1) * 29];
        let expected: Vec<f32> = (0..29)
            .map(|c| if c == x.class { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(m, &expected[..], "row {i}");
    }
    // The shipped order files are byte-identical to the shared ones.
    for s in Split::ALL {
        let shipped = std::fs::read(format!(
            "{}/assets/ave/{}",
            env!("CARGO_MANIFEST_DIR"),
            s.order_file()
        ))
        .unwrap();
        assert_eq!(
            shipped,
            std::fs::read(d.join(s.order_file())).unwrap(),
            "{s}"
        );
    }
}

/// A 4143-row directory without labels/orders gets the built-in ones; an `Annotations.txt` or
/// order file in the directory takes precedence.
#[test]
fn fallback_to_builtin_when_n_is_4143() {
    let tmp = temp_dir("builtin");
    let n = 4143;
    let v: Vec<f32> = (0..n * 10 * 3).map(|i| i as f32).collect();
    let au: Vec<f32> = (0..n * 10).map(|i| -(i as f32)).collect();
    write_features(
        tmp.path(),
        &v,
        &[n, 10, 3],
        &au,
        &[n, 10, 1],
        None,
        &[],
        FeatureDType::F32,
    )
    .unwrap();
    let d = AveDir::open(tmp.path()).unwrap();
    assert_eq!(d.label_source(), Some(LabelSource::Builtin));
    for s in Split::ALL {
        assert_eq!(d.order(s).unwrap(), builtin_order(s));
    }
    let a = builtin_annotations();
    let rows = [3540, 26, 396, 339, 4142];
    let mut got = Vec::new();
    d.read_labels(&rows, &mut got).unwrap();
    let sel: Vec<Annotation> = rows.iter().map(|&r| a[r].clone()).collect();
    assert_eq!(got, labels_onehot(&sel));
    let mut vis = Vec::new();
    d.read_visual(&[4142, 0], &mut vis).unwrap();
    assert_eq!(vis[..30], v[4142 * 30..]);
    assert_eq!(vis[30..], v[..30]);

    // Annotations.txt in the directory (here: every line as Bark, 1..3) overrides the built-in.
    let text: String = (0..n).map(|i| format!("Bark&id{i}&good&1&3\n")).collect();
    std::fs::write(tmp.path().join("Annotations.txt"), text).unwrap();
    // A directory order file overrides the built-in one for that split only.
    common::put(
        &tmp.path().join("val_order.h5"),
        "order",
        &[3],
        &[5i64, 1, 4142],
    );
    let d = AveDir::open(tmp.path()).unwrap();
    assert_eq!(d.label_source(), Some(LabelSource::AnnotationsFile));
    let mut got = Vec::new();
    d.read_labels(&[7], &mut got).unwrap();
    let classes: Vec<usize> = got
        .chunks(29)
        .map(|r| r.iter().position(|&x| x == 1.0).unwrap())
        .collect();
    assert_eq!(classes, [28, 2, 2, 28, 28, 28, 28, 28, 28, 28]);
    assert_eq!(d.order(Split::Val).unwrap(), [5, 1, 4142]);
    assert_eq!(d.order(Split::Test).unwrap(), builtin_order(Split::Test));
}
