//! Server-Sent Events decoding, correct whatever the chunk boundaries.
//!
//! Fed raw bytes as they arrive; yields whole events. Handles `\n`, `\r\n` and `\r` line ends
//! (also split across reads), comments and keep-alives, multi-line `data:`, and bounds the
//! memory one event may take.

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An event grew past the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeded {0} bytes")]
pub struct TooLarge(pub usize);

/// Incremental decoder. Owns the partial line and partial event between reads.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// `data:` lines of the event being assembled.
    data: String,
    /// Whether any `data:` line was seen for the event being assembled.
    has_data: bool,
    event: Option<String>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    max: usize,
}

impl Decoder {
    /// `max` bounds one event (its partial line plus assembled data), in bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            after_cr: false,
            max,
        }
    }

    /// Feed the next bytes; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLarge> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            // The `\n` of a `\r\n` split across reads: the `\r` ended the line already.
            match rest.split_first() {
                Some((b'\n', r)) => {
                    rest = r;
                    self.after_cr = false;
                }
                Some(_) => self.after_cr = false,
                None => {} // an empty read: still waiting to see
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let (part, tail) = rest.split_at(pos);
            let cr = tail[0] == b'\r';
            rest = &tail[1..];
            if cr {
                match rest.split_first() {
                    Some((b'\n', r)) => rest = r,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                self.end_line(part, &mut out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(part);
                self.end_line(&line, &mut out);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > self.max {
            self.line.clear();
            self.data.clear();
            return Err(TooLarge(self.max));
        }
        Ok(out)
    }

    /// The stream ended: an event not closed by a blank line is still delivered.
    pub fn finish(&mut self) -> Option<Event> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, &mut out);
        }
        self.end_line(&[], &mut out);
        out.pop()
    }

    fn end_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.has_data = false;
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                match std::str::from_utf8(value) {
                    Ok(v) => self.data.push_str(v),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // id, retry and unknown fields do not matter to a proxy
        }
    }
}

/// Frame one `data:` payload for a client.
pub fn frame(data: &str) -> bytes::Bytes {
    let mut s = String::with_capacity(data.len() + 8);
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    bytes::Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.feed(c).unwrap());
        }
        out.extend(d.finish());
        out
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn basic_events_comments_and_done() {
        let ev = decode_all(&[b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\ndata: two\ndata: lines\n\ndata: [DONE]\n\n"]);
        assert_eq!(data(&ev), ["{\"a\":1}", "two\nlines", "[DONE]"]);
        assert_eq!(ev[1].event.as_deref(), Some("x"));
    }

    #[test]
    fn crlf_and_cr_split_across_reads() {
        let ev = decode_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\r", b"data:c\n", b"\n"]);
        assert_eq!(data(&ev), ["a", "b", "c"]);
    }

    #[test]
    fn a_split_crlf_does_not_swallow_the_next_blank_line() {
        assert_eq!(
            data(&decode_all(&[b"data: a\r", b"\n", b"\n", b"data: b\n\n"])),
            ["a", "b"]
        );
        assert_eq!(data(&decode_all(&[b"data: a\r", b"", b"\n", b"\r"])), ["a"]);
        let mut d = Decoder::new(1 << 10);
        assert!(d.feed(b"data: a\r").unwrap().is_empty());
        assert!(d.feed(b"\n").unwrap().is_empty());
        assert_eq!(
            d.feed(b"\n").unwrap().len(),
            1,
            "the blank line ends the event at once"
        );
    }

    #[test]
    fn unterminated_last_event_is_delivered() {
        assert_eq!(data(&decode_all(&[b"data: tail"])), ["tail"]);
        assert!(decode_all(&[b": only a comment"]).is_empty());
    }

    #[test]
    fn oversize_events_are_refused() {
        let mut d = Decoder::new(16);
        assert!(d.feed(b"data: 0123456789").is_ok());
        assert_eq!(d.feed(b"0123456789"), Err(TooLarge(16)));
    }

    proptest! {
        /// Cutting the same stream at any boundaries yields the same events.
        #[test]
        fn chunk_boundaries_do_not_matter(
            cuts in proptest::collection::vec(0usize..400, 0..30),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let stream = [
                ": ping", "", "data: {\"id\":1,\"x\":\"héllo\"}", "", "event: e", "data: a", "data: b", "",
                "data: {\"choices\":[{\"delta\":{\"content\":\"ü€\"}}]}", "", "data: [DONE]", "",
            ].join(nl);
            let bytes = stream.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let whole = decode_all(&[bytes]);
            prop_assert_eq!(decode_all(&chunks), whole.clone());
            prop_assert_eq!(whole.len(), 4);
        }

        /// The same with every line ending picked at random (`\n`, `\r\n` or a bare `\r`).
        #[test]
        fn mixed_line_endings_do_not_care_about_cuts(
            ends in proptest::collection::vec(0usize..3, 12),
            cuts in proptest::collection::vec(0usize..400, 0..30),
        ) {
            let lines = [": ping", "", "data: {\"a\":1}", "", "event: e", "data: a", "data: b", "",
                "data: ü€", "", "data: [DONE]", ""];
            let mut stream = Vec::new();
            for (line, end) in lines.iter().zip(&ends) {
                stream.extend_from_slice(line.as_bytes());
                stream.extend_from_slice([&b"\n"[..], b"\r\n", b"\r"][*end]);
            }
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            prop_assert_eq!(decode_all(&chunks), decode_all(&[&stream]));
        }
    }
}
