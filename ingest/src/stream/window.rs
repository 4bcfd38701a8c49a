//! A socket's flow control, without I/O: the frames in flight against the window it
//! granted, and — in `newest` mode — the one frame held for the next free slot.
//! Nothing here buffers more than one frame, and nothing is dropped unannounced:
//! every frame offered is sent, refused, or held, and a held frame that a newer one
//! replaces is handed back to be answered `skipped`.

use super::messages::Mode;

/// Frames in flight on a socket, and the one held for a slot.
pub(crate) struct Window<F> {
    size: usize,
    mode: Mode,
    in_flight: usize,
    held: Option<F>,
}

/// What becomes of a frame offered to the window.
#[derive(Debug, PartialEq)]
pub(crate) enum Offer<F> {
    /// A slot is the frame's: send it into the pipeline.
    Send(F),
    /// The window is full (`queue` mode): refuse the frame.
    Full(F),
    /// The window is full (`newest` mode): the frame waits for the next slot, and
    /// the frame it replaces, if one was waiting, is skipped.
    Held { skipped: Option<F> },
}

impl<F> Window<F> {
    pub(crate) fn new(size: usize, mode: Mode) -> Self {
        assert!(size > 0, "a window holds at least one frame");
        Window { size, mode, in_flight: 0, held: None }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn offer(&mut self, frame: F) -> Offer<F> {
        if self.in_flight < self.size {
            self.in_flight += 1;
            return Offer::Send(frame);
        }
        match self.mode {
            Mode::Queue => Offer::Full(frame),
            Mode::Newest => Offer::Held { skipped: self.held.replace(frame) },
        }
    }

    /// A frame in flight was answered (its result, a timeout, or its refusal by the
    /// pipeline): its slot goes to the frame held, if any, which is returned to send.
    pub(crate) fn done(&mut self) -> Option<F> {
        assert!(self.in_flight > 0, "a slot freed that was not taken");
        match self.held.take() {
            Some(next) => Some(next),
            None => {
                self.in_flight -= 1;
                None
            }
        }
    }

    /// The frame held when the socket ends: it never entered the pipeline.
    pub(crate) fn take_held(&mut self) -> Option<F> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_mode_refuses_beyond_the_window_and_holds_nothing() {
        let mut w = Window::new(2, Mode::Queue);
        assert_eq!(w.offer(1), Offer::Send(1));
        assert_eq!(w.offer(2), Offer::Send(2));
        assert_eq!(w.offer(3), Offer::Full(3));
        assert_eq!(w.offer(4), Offer::Full(4));
        assert_eq!(w.in_flight(), 2);
        assert_eq!(w.done(), None);
        assert_eq!(w.offer(5), Offer::Send(5));
        assert_eq!(w.offer(6), Offer::Full(6));
        assert_eq!(w.take_held(), None);
    }

    #[test]
    fn newest_mode_holds_one_frame_and_hands_back_the_one_it_replaces() {
        let mut w = Window::new(1, Mode::Newest);
        assert_eq!(w.offer("a"), Offer::Send("a"));
        assert_eq!(w.offer("b"), Offer::Held { skipped: None });
        assert_eq!(w.offer("c"), Offer::Held { skipped: Some("b") });
        assert_eq!(w.offer("d"), Offer::Held { skipped: Some("c") });
        // `a` answered: its slot goes straight to `d`, still one in flight.
        assert_eq!(w.done(), Some("d"));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.done(), None);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.offer("e"), Offer::Send("e"));
        assert_eq!(w.offer("f"), Offer::Held { skipped: None });
        assert_eq!(w.take_held(), Some("f"));
        assert_eq!(w.take_held(), None);
    }
}
