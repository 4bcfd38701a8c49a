//! The preprocessing pool: decode and letterbox run on their own named threads
//! (`visionq-pre`), each with its own [`Preprocessor`] (its buffers and resizer are
//! reused frame after frame), instead of on tokio's blocking pool. The pool's size is
//! the node's preprocessing concurrency, so decoding never takes more cores than that,
//! and per-thread CPU readings tell decoding apart from HTTP and the inference thread.
//! Both compositions use it: the preprocess role, and the infer-worker preprocessing
//! frames inline.

use std::cell::RefCell;
use std::sync::Arc;

use crate::image::Preprocessor;

thread_local! {
    static PREPROCESSOR: RefCell<Option<Preprocessor>> = const { RefCell::new(None) };
}

type Make = dyn Fn() -> Preprocessor + Send + Sync;

pub struct PreprocessPool {
    pool: rayon::ThreadPool,
    make: Arc<Make>,
}

impl PreprocessPool {
    /// `threads` threads named `visionq-pre-N`; `make` builds each thread's preprocessor.
    pub fn new(threads: usize, make: impl Fn() -> Preprocessor + Send + Sync + 'static) -> std::io::Result<PreprocessPool> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("visionq-pre-{i}"))
            // A job that panics drops its answer (its caller then panics in turn, as a
            // task on tokio's blocking pool would); the pool itself goes on.
            .panic_handler(|_| tracing::error!("a preprocessing job panicked"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(PreprocessPool { pool, make: Arc::new(make) })
    }

    /// Runs `job` on a pool thread with that thread's preprocessor.
    pub async fn run<R: Send + 'static>(&self, job: impl FnOnce(&mut Preprocessor) -> R + Send + 'static) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let make = self.make.clone();
        self.pool.spawn(move || {
            let r = PREPROCESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                job(slot.get_or_insert_with(|| make()))
            });
            let _ = tx.send(r);
        });
        rx.await.expect("preprocessing jobs do not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_named_threads_with_a_reused_preprocessor() {
        let pool = PreprocessPool::new(2, || Preprocessor::new(32, 32, 1 << 20)).unwrap();
        let name = pool.run(|_| std::thread::current().name().map(str::to_string)).await;
        assert!(name.unwrap().starts_with("visionq-pre-"));
        let size = pool.run(|p| p.input_size()).await;
        assert_eq!(size, (32, 32));
    }
}
