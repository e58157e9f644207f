//! Running a compute-bound section on rayon's worker threads.
//!
//! burn-flex's parallel operations, and ours, are rayon jobs. Called from a thread outside the
//! pool (the program's main thread), each one is handed to the pool while the caller sleeps
//! until it is done: ~1,300 such hand-overs per training step, each waking a worker and then
//! the caller again, with the cores idle in between (`perf stat`: ~1,500 context switches a
//! second per worker). Run on a worker, the same operations split their work with the other
//! workers directly and the caller takes a share itself. `cace bench`, alternated on the same
//! binary: cores busy in training 1.77–1.80 outside the pool, 1.81–1.87 on it (BENCHMARKS.md,
//! issue 16).
//!
//! Only for sections that do not wait on other threads (a training step, a forward pass): a
//! worker blocked on a channel whose sender needs the pool would, with one thread, deadlock.

/// Runs `f` on a rayon worker thread (in place when already on one), with this thread's
/// [`crate::precision`].
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let precision = crate::precision::current();
    rayon::scope(|_| {
        let _precision = crate::precision::scope(precision);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;

    #[test]
    fn runs_on_a_worker_with_the_callers_precision() {
        let outside = rayon::current_thread_index();
        let _bf16 = crate::precision::scope(Precision::Bf16);
        let (index, precision) =
            run(|| (rayon::current_thread_index(), crate::precision::current()));
        assert!(outside.is_none(), "the test thread is not a worker");
        assert!(index.is_some(), "f ran outside the pool");
        assert_eq!(precision, Precision::Bf16);
        // Nested: in place on the same worker.
        let (a, b) = run(|| {
            (
                rayon::current_thread_index(),
                run(rayon::current_thread_index),
            )
        });
        assert_eq!(a, b);
    }
}
