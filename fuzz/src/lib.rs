//! Helpers shared by the fuzz targets: the library's readers take paths, so every input is
//! written to a file in a scratch directory of this process first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `$TMPDIR/cace-fuzz-<target>-<pid>/`, created on first use. One per process, so parallel
/// fuzzers (`-jobs`, `-fork`) never share files. Left behind on exit (libFuzzer exits with
/// `exit()`); it holds a few inputs only.
pub fn scratch_dir(target: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cace-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// Replaces `path` with `bytes` (the previous input's file is overwritten in place).
pub fn put(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write a fuzz input to the scratch directory");
}

/// Asserts the rule of the crate's errors: the message (with its causes) names `path`.
pub fn assert_names(err: &dyn std::fmt::Display, path: &Path) {
    let msg = err.to_string();
    let name = path.display().to_string();
    assert!(msg.contains(&name), "error does not name {name}: {msg}");
}

/// Whether `CACE_FUZZ_DEBUG` is set: the targets then print each input's outcome (to check
/// what a seed reaches, e.g. `CACE_FUZZ_DEBUG=1 cargo +nightly fuzz run pth corpus/pth -- -runs=0`).
pub fn debug_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CACE_FUZZ_DEBUG").is_some())
}

/// Prints `what: outcome` when [`debug_enabled`].
pub fn debug<T, E: std::fmt::Display>(what: &str, r: &Result<T, E>) {
    if debug_enabled() {
        match r {
            Ok(_) => eprintln!("{what}: ok"),
            Err(e) => eprintln!("{what}: error: {e:#}"),
        }
    }
}
