//! Ctrl-C (SIGINT) and SIGTERM: the first asks the training loop to stop after the
//! current step (it then writes a checkpoint and the metrics and exits non-zero); the
//! second exits at once with status 130. Nothing already written can be corrupted by that
//! exit: checkpoints, `config.json` and `summary.json` are replaced atomically and
//! metrics are appended one whole line per write, so at worst a hidden temporary file is
//! left behind (ignored, and removed by the next save or by `--force`).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The exit status of a run stopped by a signal (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Signals received by this process since the handler was installed.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// A stop request: set by a signal (when installed) or by [`Interrupt::request`].
#[derive(Clone, Debug)]
pub struct Interrupt {
    local: Arc<AtomicBool>,
    signals: bool,
}

impl Interrupt {
    /// A flag that only [`Interrupt::request`] sets (no signal handling; for tests and
    /// library use).
    pub fn manual() -> Interrupt {
        Interrupt { local: Arc::new(AtomicBool::new(false)), signals: false }
    }

    /// Install the process-wide SIGINT/SIGTERM handler (once; later calls share it) and
    /// return a flag that it sets. The handler prints one line on the first signal and
    /// exits with [`EXIT_INTERRUPTED`] on the second.
    pub fn install() -> Result<Interrupt> {
        let installed = INSTALLED.get_or_init(|| {
            ctrlc::set_handler(|| {
                let n = SIGNALS.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    eprintln!(
                        "\ninterrupted: finishing the current step, then writing a checkpoint \
                         (interrupt again to quit at once)"
                    );
                } else {
                    eprintln!("\ninterrupted again: exiting now (files already written are intact)");
                    std::process::exit(EXIT_INTERRUPTED);
                }
            })
            .map_err(|e| e.to_string())
        });
        match installed {
            Ok(()) => Ok(Interrupt { local: Arc::new(AtomicBool::new(false)), signals: true }),
            Err(e) => Err(Error::InvalidArgument { op: "signal handler", message: e.clone() }),
        }
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.local.load(Ordering::SeqCst) || (self.signals && SIGNALS.load(Ordering::SeqCst) > 0)
    }

    /// Ask the loop to stop, as a first Ctrl-C would.
    pub fn request(&self) {
        self.local.store(true, Ordering::SeqCst);
    }
}
