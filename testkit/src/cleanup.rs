//! Running async clean-up from `Drop`, which cannot await: the future runs to completion on a
//! runtime of its own in a fresh thread, so it works inside any test runtime, even a
//! current-thread one, and finishes before the test's `Drop` returns.

use std::future::Future;

/// Runs `future` to completion from synchronous code (a `Drop`), on a runtime of its own.
pub fn run_to_completion<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(future),
            Err(e) => eprintln!("test clean-up could not start a runtime: {e}"),
        }
    });
    if thread.join().is_err() {
        eprintln!("test clean-up panicked");
    }
}
