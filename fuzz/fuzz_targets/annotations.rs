//! `Annotations.txt` (`data::annotations`): the text parser, and the file reader for bytes that
//! are not UTF-8.
#![no_main]

use cace_net::data::annotations::{
    BACKGROUND, NUM_CLASSES, T, labels_onehot, load_annotations, parse_annotations,
};
use cace_net_fuzz::{assert_names, debug, put, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Only the file reader sees non-UTF-8 bytes: a clean error naming the file.
        let path = scratch_dir("annotations").join("Annotations.txt");
        put(&path, data);
        let err = load_annotations(&path).expect_err("not UTF-8 text");
        assert_names(&format!("{err:#}"), &path);
        return;
    };
    let result = parse_annotations(text);
    debug("annotations", &result);
    match result {
        Ok(anns) => {
            for a in &anns {
                assert!(a.class < NUM_CLASSES && a.start <= a.end && a.end as usize <= T);
                assert!(a.segment_labels().iter().all(|&c| c <= BACKGROUND));
            }
            let onehot = labels_onehot(&anns);
            assert_eq!(onehot.len(), anns.len() * T * (NUM_CLASSES + 1));
        }
        // Errors name the 1-based line.
        Err(e) => assert!(e.to_string().contains("line "), "{e}"),
    }
});
