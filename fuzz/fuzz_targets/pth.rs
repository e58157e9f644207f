//! PyTorch checkpoints (`checkpoint::pth`, through `checkpoint::read_checkpoint` as `cace eval`
//! and `cace import` read them): zip, legacy and TAR containers, the pickle inside, tensor data.
#![no_main]

use cace_net::checkpoint::{Format, pth, read_checkpoint};
use cace_net_fuzz::{assert_names, debug, put, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch_dir("pth").join("input.pth");
    put(&path, data);
    let result = read_checkpoint(&path);
    debug("pth", &result);
    match result {
        Ok((sd, _config, format)) => {
            assert_eq!(format, Format::Official);
            for (key, t) in &sd.entries {
                let numel: usize = t.shape.iter().product();
                assert_eq!(t.data.len(), numel, "{key}: {:?}", t.shape);
            }
            // The f64 reader accepts the same file and gives the same keys and shapes.
            let sd64 = pth::read_state_dict_f64(&path).expect("read as f32, so as f64 too");
            assert_eq!(sd64.len(), sd.entries.len());
            for (_, t) in &sd64 {
                assert_eq!(t.data.len(), t.numel());
            }
        }
        Err(e) => assert_names(&format!("{e:#}"), &path),
    }
});
