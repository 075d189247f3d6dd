//! The one bridge from the async decoder path to synchronous callers. Every backend but WebGPU in a
//! browser finishes a step before returning (the CPU computes it; native wgpu blocks on its
//! readback), so its futures are ready at the first poll; [`ready`] polls once and never blocks.
//! A browser GPU must hand control back to the event loop to read a buffer, so its futures are
//! awaited (the wasm `Generation.stepAsync`); polled here they say so with a typed error.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::{Error, Result};

/// The output of `fut` when it completes at its first poll; `Unsupported` when it would wait.
pub fn ready<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(Error::Unsupported(
            "this backend answers asynchronously (WebGPU in a browser): use the async call (stepAsync)".into(),
        )),
    }
}
