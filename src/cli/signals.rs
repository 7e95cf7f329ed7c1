//! Interrupts: the first SIGINT (Ctrl-C) or SIGTERM asks the run to stop cleanly after the
//! frame in progress; a second one ends the process at once. The exit status of a stopped run
//! is 128 + the signal number (130, 143), as shells report a killed command.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set when a stop was requested.
static STOP: AtomicBool = AtomicBool::new(false);

/// The signal that requested it.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// SIGINT's number, the status base for platforms without signals.
const SIGINT: i32 = 2;

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if SIGNAL.swap(signal, Ordering::SeqCst) != 0 {
        // A second signal: the default action (termination) right away. Both calls are
        // async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers and returns the stop flag the run polls.
pub fn install() -> &'static AtomicBool {
    #[cfg(unix)]
    {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only touches atomics and async-signal-safe libc calls.
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }
    #[cfg(not(unix))]
    {
        // Failing to install the handler only loses the clean stop; Ctrl-C still ends the run.
        let _ = ctrlc::set_handler(|| {
            SIGNAL.store(SIGINT, Ordering::SeqCst);
            STOP.store(true, Ordering::SeqCst);
        });
    }
    &STOP
}

/// A run that was stopped by a signal: its exit status is 128 + the signal number.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal's number (2 for SIGINT, 15 for SIGTERM).
    pub signal: i32,
    /// What was written before the stop.
    pub written: String,
}

impl Interrupted {
    /// The stop that was requested, if any.
    pub fn requested(written: impl Into<String>) -> Option<Interrupted> {
        STOP.load(Ordering::SeqCst).then(|| Interrupted {
            signal: match SIGNAL.load(Ordering::SeqCst) {
                0 => SIGINT,
                s => s,
            },
            written: written.into(),
        })
    }

    /// The process exit status.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.signal {
            2 => "SIGINT".to_string(),
            15 => "SIGTERM".to_string(),
            s => format!("signal {s}"),
        };
        write!(f, "interrupted by {name}: {}", self.written)
    }
}

impl std::error::Error for Interrupted {}
