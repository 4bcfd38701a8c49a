//! One shutdown signal for the whole process: SIGTERM/SIGINT, or a test's trigger.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown { rx })
}

impl Shutdown {
    /// Resolves once shutdown was asked for.
    pub async fn wait(mut self) {
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}

/// Fires `trigger` on SIGTERM or Ctrl-C.
pub fn on_signals(trigger: Trigger) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
        trigger.fire();
    });
}
