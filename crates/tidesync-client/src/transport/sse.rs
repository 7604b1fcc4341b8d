//! A minimal Server-Sent Events parser for the event stream.

/// A minimal Server-Sent Events parser: counts `poke` events, ignores comments (heartbeats)
/// and other events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns how many pokes completed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> usize {
        self.buffer.extend_from_slice(bytes);
        let mut pokes = 0;
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.event.take().as_deref() == Some("poke") {
                    pokes += 1;
                }
            } else if let Some(name) = line.strip_prefix("event:") {
                self.event = Some(name.trim().to_owned());
            }
            // `data:` lines name the space; every subscribed space is pulled anyway.
        }
        pokes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_pokes_are_counted_across_chunk_boundaries_and_heartbeats_ignored() {
        let mut p = SseParser::default();
        assert_eq!(p.feed(b": keep-alive\n\nevent: po"), 0);
        assert_eq!(
            p.feed(b"ke\ndata: user:alice\n\nevent: poke\r\ndata: team:1\r\n\r\n"),
            2
        );
        assert_eq!(p.feed(b"event: other\ndata: x\n\n"), 0);
    }
}
