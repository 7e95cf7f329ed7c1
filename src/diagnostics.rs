//! Warnings the library gives while it carries on (a video shorter than its header says, a
//! mask that looks anti-aliased): printed to stderr unless a handler is installed.

use std::sync::RwLock;

/// A function that receives each warning's text.
pub type WarningHandler = Box<dyn Fn(&str) + Send + Sync>;

static HANDLER: RwLock<Option<WarningHandler>> = RwLock::new(None);

/// Routes warnings to `handler` instead of stderr (`None` restores stderr).
pub fn set_warning_handler(handler: Option<WarningHandler>) {
    *HANDLER.write().unwrap_or_else(|e| e.into_inner()) = handler;
}

/// Reports a warning: to the installed handler, or as `warning: ...` on stderr.
pub fn warn(message: impl std::fmt::Display) {
    let text = message.to_string();
    match &*HANDLER.read().unwrap_or_else(|e| e.into_inner()) {
        Some(h) => h(&text),
        None => eprintln!("warning: {text}"),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Collects the warnings whose text contains a marker (tests run in parallel, so each
    //! test filters by a file name of its own).
    use std::sync::{Mutex, Once};

    static INSTALL: Once = Once::new();
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// The warnings given so far that contain `marker`.
    pub(crate) fn warnings_containing(marker: &str) -> Vec<String> {
        install();
        let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|w| w.contains(marker))
            .cloned()
            .collect()
    }

    /// Installs the collecting handler (once per test binary).
    pub(crate) fn install() {
        INSTALL.call_once(|| {
            super::set_warning_handler(Some(Box::new(|w: &str| {
                SEEN.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(w.to_string());
            })));
        });
    }
}
