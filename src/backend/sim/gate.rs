//! The pause gate between writer threads and whoever stops them.
//!
//! Writers announce each write by incrementing `inflight`, then check `holds`; a holder
//! increments `holds`, then waits for `inflight` to drain. Both use sequentially consistent
//! operations, so either the writer sees the hold (and backs off without writing) or the holder
//! sees the write in flight (and waits for it). Once [`Gate::hold`] returns, no write is in
//! progress and none starts until the last hold is released. Holds nest.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};

pub(crate) struct Gate {
    holds: AtomicU32,
    inflight: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

/// A write in progress; dropping it ends the write.
pub(crate) struct InFlight<'a>(&'a Gate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, SeqCst);
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate {
            holds: AtomicU32::new(0),
            inflight: AtomicU64::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Stop writers: returns once no write is in progress; none starts until [`Gate::release`].
    pub(crate) fn hold(&self) {
        {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.holds.fetch_add(1, SeqCst);
        }
        let mut spins = 0u32;
        while self.inflight.load(SeqCst) != 0 {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Undo one [`Gate::hold`]; the last release lets writers go on.
    pub(crate) fn release(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.holds.fetch_sub(1, SeqCst) == 1 {
            self.cv.notify_all();
        }
    }

    /// Start a write, waiting while the gate is held. `None` once `stop` is set.
    pub(crate) fn enter(&self, stop: &AtomicBool) -> Option<InFlight<'_>> {
        loop {
            if stop.load(SeqCst) {
                return None;
            }
            self.inflight.fetch_add(1, SeqCst);
            if self.holds.load(SeqCst) == 0 {
                return Some(InFlight(self));
            }
            self.inflight.fetch_sub(1, SeqCst);
            let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            while self.holds.load(SeqCst) > 0 && !stop.load(SeqCst) {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Start a write even while the gate is held (a device-model or test write); a concurrent
    /// [`Gate::hold`] still waits for it to end.
    pub(crate) fn enter_forced(&self) -> InFlight<'_> {
        self.inflight.fetch_add(1, SeqCst);
        InFlight(self)
    }

    /// Wake every waiting writer (after setting their stop flag).
    pub(crate) fn wake_all(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }
}
