//! Replay on two cores: a reader thread reads and decodes the input ahead of the rules, in
//! batches, in input order; the rules run on the caller's task one message after another, so
//! what they plan is exactly what the one-thread replay plans. Consumed batches travel back
//! to the reader thread, which drops the messages there (freed by the thread that allocated
//! them) and reuses the batch.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use crate::message::{DecodeError, Message, decode};
use crate::source::{FileInput, InputReader, SourceError};

/// Lines per batch: a channel hand-off costs about as much as decoding one message, so it is
/// paid once per batch.
const BATCH: usize = 256;
/// Batches decoded ahead of the rules: bounds memory to a few thousand messages.
const AHEAD: usize = 8;

/// One input line, decoded.
#[derive(Debug)]
pub struct Decoded {
    /// The file, or `-` for stdin.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: usize,
    /// The message, or why it could not be decoded.
    pub message: Result<Message, DecodeError>,
}

impl std::fmt::Display for Decoded {
    /// `file:line`, the way diagnostics name an input (formatted only when one is reported).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What the reader thread hands over.
// Lines are nearly every item and the batch vectors are reused: boxing them would cost an
// allocation per message to save space in a few hundred slots.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Item {
    /// A line and its decoding.
    Line(Decoded),
    /// The input could not be read; nothing follows.
    Failed(SourceError),
}

/// The reader/decoder stage; see the module docs.
pub struct DecodeAhead {
    /// Decoded batches, in input order.
    batches: mpsc::Receiver<Vec<Item>>,
    /// Consumed batches, back to the reader thread.
    back: std_mpsc::Sender<Vec<Item>>,
}

impl DecodeAhead {
    /// Starts reading and decoding `inputs` on a thread of its own.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start(inputs: Vec<FileInput>) -> Self {
        let (tx, batches) = mpsc::channel(AHEAD);
        let (back, returned) = std_mpsc::channel::<Vec<Item>>();
        // Not joined: on stdin it may be blocked in a read; it ends at its next send once
        // the receiver is gone.
        std::thread::Builder::new()
            .name("payrules-decode".into())
            .spawn(move || decode_loop(InputReader::new(inputs), &tx, &returned))
            .expect("spawning the decode thread");
        Self { batches, back }
    }

    /// The next batch; `None` once the input is exhausted.
    pub async fn next_batch(&mut self) -> Option<Vec<Item>> {
        self.batches.recv().await
    }

    /// Hands a consumed batch back for dropping and reuse.
    pub fn recycle(&self, batch: Vec<Item>) {
        if let Err(std_mpsc::SendError(batch)) = self.back.send(batch) {
            drop(batch);
        }
    }
}

fn decode_loop(
    mut reader: InputReader,
    tx: &mpsc::Sender<Vec<Item>>,
    returned: &std_mpsc::Receiver<Vec<Item>>,
) {
    loop {
        let mut batch = match returned.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(BATCH),
        };
        let mut end = false;
        while batch.len() < BATCH {
            match reader.next_line() {
                None => {
                    end = true;
                    break;
                }
                Some(Ok(l)) => {
                    let more_ready = l.more_ready;
                    batch.push(Item::Line(Decoded {
                        file: l.file.clone(),
                        line: l.line,
                        message: decode(l.bytes),
                    }));
                    if !more_ready {
                        // Stdin with nothing buffered: pass on what we have before waiting.
                        break;
                    }
                }
                Some(Err(e)) => {
                    batch.push(Item::Failed(e));
                    end = true;
                    break;
                }
            }
        }
        if !batch.is_empty() && tx.blocking_send(batch).is_err() {
            return;
        }
        if end {
            return;
        }
    }
}
