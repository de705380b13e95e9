//! The agent's conversation with its supervisor: Unix signals in (SIGTERM and SIGINT
//! leave, SIGHUP reloads), systemd notifications out (ready, reloading, stopping, and the
//! watchdog fed from the owner loop).

use std::time::Instant;

use sd_notify::NotifyState;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use tracing::warn;

/// A signal the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// SIGTERM: leave gracefully (a second one exits at once).
    Terminate,
    /// SIGINT: the same as SIGTERM.
    Interrupt,
    /// SIGHUP: reload the configuration.
    Hangup,
}

impl Signal {
    /// Its name, for logs.
    pub(super) fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        }
    }
}

/// The installed handlers.
pub(super) struct Signals {
    terminate: UnixSignal,
    interrupt: UnixSignal,
    hangup: UnixSignal,
}

impl Signals {
    /// Installs the handlers; from now on these signals no longer kill the process.
    pub(super) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received.
    pub(super) async fn next(&mut self) -> Signal {
        // `recv` yields `None` only once the driver is gone, which it is not while the
        // runtime runs: pend for ever rather than report a signal nobody sent.
        tokio::select! {
            Some(()) = self.terminate.recv() => Signal::Terminate,
            Some(()) = self.interrupt.recv() => Signal::Interrupt,
            Some(()) = self.hangup.recv() => Signal::Hangup,
            else => std::future::pending().await,
        }
    }
}

/// systemd's watchdog (`WatchdogSec=`): fed from the owner loop at half its interval, so
/// a stalled loop, not merely a live process, gets the agent restarted.
pub(super) struct Watchdog {
    every: Option<std::time::Duration>,
    next: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked for, if any.
    pub(super) fn from_systemd() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|interval| interval / 2),
            next: Instant::now(),
        }
    }

    /// Feeds it if it is due.
    pub(super) fn feed(&mut self) {
        if let Some(every) = self.every
            && Instant::now() >= self.next
        {
            notify(&[NotifyState::Watchdog]);
            self.next = Instant::now() + every;
        }
    }

    /// When it must be fed next (`None`: no watchdog).
    pub(super) fn due(&self) -> Option<Instant> {
        self.every.map(|_| self.next)
    }
}

/// Tells systemd about the agent's state (a no-op outside systemd).
pub(super) fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}
