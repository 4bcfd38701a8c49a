//! The station sockets open in this process. A stopping process tells each one's
//! client so (close 1001) and waits, briefly, for them to have done it before it
//! exits: without the wait the close races the exit and the client sees a reset.

use tokio::sync::watch;

/// A count of the station sockets open, to wait on.
pub struct OpenStreams {
    open: watch::Sender<usize>,
}

impl Default for OpenStreams {
    fn default() -> Self {
        OpenStreams { open: watch::Sender::new(0) }
    }
}

/// One socket open, counted until it is dropped.
pub(crate) struct Open<'a>(&'a OpenStreams);

impl OpenStreams {
    pub(crate) fn enter(&self) -> Open<'_> {
        self.open.send_modify(|n| *n += 1);
        Open(self)
    }

    /// Resolves once no station socket is open (once `stopping` is set, each closes).
    pub async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_waits_for_every_socket() {
        let streams = OpenStreams::default();
        streams.closed().await;
        let (a, b) = (streams.enter(), streams.enter());
        drop(a);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), streams.closed()).await;
        assert!(waited.is_err(), "one socket is still open");
        drop(b);
        streams.closed().await;
    }
}
