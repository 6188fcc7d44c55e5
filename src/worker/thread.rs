//! The worker's own thread and current-thread tokio runtime: nothing depends on the caller's
//! runtime. A panic in the worker is caught here, so that what it held is still accounted for.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use tokio::sync::mpsc;

use super::transport::Transport;
use super::Worker;
use crate::drop_event::DropReason;
use crate::error::{ConfigError, StartError};
use crate::protocol::{Control, Shared};
use crate::record::{Notice, Record};

/// The worker thread, for joining it once it has exited.
pub(crate) struct WorkerHandle {
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the worker thread is about to exit.
    exited: Receiver<()>,
}

impl WorkerHandle {
    /// Joins the thread if it has exited or does so shortly; never waits unboundedly.
    pub(crate) fn join(&self) {
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.exited.recv_timeout(Duration::from_millis(250))
        {
            let handle = self
                .thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
    }

    /// In a forked child the worker thread does not exist: its handle names the parent's
    /// thread, so dropping it (a `pthread_detach` of a thread this process does not have) is
    /// left undone.
    pub(crate) fn forget_in_child(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        std::mem::forget(handle);
    }
}

/// Starts the worker thread and waits until its runtime and HTTP client are built.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    records: Receiver<Record>,
    notices: Receiver<Notice>,
    control: mpsc::UnboundedReceiver<Control>,
) -> Result<WorkerHandle, ConfigError> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    // Dropped by the thread as its very last act: lets shutdown wait for the exit with a bound.
    let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("pandaprobe-worker".into())
        .spawn(move || {
            crate::producer::mark_worker_thread();
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::new)
                .and_then(|rt| Ok((rt, Transport::new(&shared.config)?)));
            let (runtime, transport) = match started {
                Ok(parts) => parts,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut worker = Worker::new(shared, records, notices, control, transport);
            // A panic must not take the accounting with it: the worker's state outlives it.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(worker.run())));
            let reason = match ran {
                Ok(()) => DropReason::Shutdown,
                Err(panic) => {
                    let _entered = runtime.enter();
                    worker.died(panic.as_ref());
                    DropReason::WorkerFailed
                }
            };
            {
                let _entered = runtime.enter();
                let swept =
                    std::panic::catch_unwind(AssertUnwindSafe(|| worker.sweep_queue(reason)));
                drop(swept);
                drop(worker);
            }
            runtime.shutdown_timeout(Duration::from_millis(100));
            drop(exit_tx);
        })
        .map_err(|e| ConfigError::Worker {
            source: StartError::new(e),
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WorkerHandle {
            thread: Mutex::new(Some(thread)),
            exited,
        }),
        Ok(Err(source)) => Err(ConfigError::Worker { source }),
        Err(_) => Err(ConfigError::Worker {
            source: StartError::stopped(),
        }),
    }
}
