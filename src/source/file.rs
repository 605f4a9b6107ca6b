//! Notifications from files: a `.json` file holds one message, a `.jsonl` file one per line,
//! a directory is read file by file in name order (its `.json` and `.jsonl` files only), and
//! `-` is stdin (one message per line).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::queue::{Item, Queue, QueueStats};
use super::{Delivery, Source, SourceError};

/// One input to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileInput {
    /// A file holding one message.
    Json(PathBuf),
    /// A file holding one message per line.
    JsonLines(PathBuf),
    /// Standard input, one message per line.
    Stdin,
}

impl FileInput {
    /// Expands command-line paths into inputs, in order: directories become their `.json` and
    /// `.jsonl` files sorted by name.
    ///
    /// # Errors
    /// A path that does not exist or a directory that cannot be listed.
    pub fn resolve<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<FileInput>, SourceError> {
        let mut inputs = Vec::new();
        for path in paths {
            let path = path.as_ref();
            if path == Path::new("-") {
                inputs.push(FileInput::Stdin);
                continue;
            }
            let io_err = |source| SourceError::Io {
                path: path.display().to_string(),
                source,
            };
            let meta = std::fs::metadata(path).map_err(io_err)?;
            if meta.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(io_err)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && Self::extension(p).is_some())
                    .collect();
                entries.sort();
                inputs.extend(entries.into_iter().filter_map(Self::from_path));
            } else {
                inputs.push(
                    Self::from_path(path.to_path_buf())
                        .unwrap_or(FileInput::JsonLines(path.to_path_buf())),
                );
            }
        }
        Ok(inputs)
    }

    fn extension(p: &Path) -> Option<&str> {
        p.extension()
            .and_then(|e| e.to_str())
            .filter(|e| *e == "json" || *e == "jsonl")
    }

    fn from_path(p: PathBuf) -> Option<FileInput> {
        match Self::extension(&p)? {
            "json" => Some(FileInput::Json(p)),
            _ => Some(FileInput::JsonLines(p)),
        }
    }

    fn name(&self) -> String {
        match self {
            FileInput::Json(p) | FileInput::JsonLines(p) => p.display().to_string(),
            FileInput::Stdin => "-".to_string(),
        }
    }
}

/// One message read from an input, with where it was.
#[derive(Debug, Clone)]
pub struct InputLine {
    /// The message bytes (without the line terminator).
    pub bytes: Bytes,
    /// The file, or `-` for stdin.
    pub file: String,
    /// 1-based line number; 1 for a `.json` file.
    pub line: usize,
}

impl InputLine {
    /// `file:line`, the way diagnostics name it.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

struct Open {
    name: Arc<str>,
    /// A `BufReader` (not `dyn BufRead`) so what it holds unread can be asked for.
    reader: BufReader<Box<dyn Read + Send>>,
    /// Stdin: lines may arrive one by one, as they are written.
    interactive: bool,
    line: usize,
    whole: bool,
}

/// Reads messages from inputs one by one, lazily: a large file or an endless stdin is never
/// held in memory. Empty lines are skipped.
pub struct InputReader {
    pending: VecDeque<FileInput>,
    open: Option<Open>,
    buf: Vec<u8>,
}

impl InputReader {
    /// Reads `inputs` in order.
    pub fn new(inputs: Vec<FileInput>) -> Self {
        Self {
            pending: inputs.into(),
            open: None,
            buf: Vec::with_capacity(8 * 1024),
        }
    }

    fn open_next(&mut self) -> Option<Result<(), SourceError>> {
        let input = self.pending.pop_front()?;
        let name: Arc<str> = input.name().into();
        let (reader, whole): (BufReader<Box<dyn Read + Send>>, bool) = match &input {
            FileInput::Stdin => (BufReader::new(Box::new(std::io::stdin())), false),
            FileInput::Json(p) | FileInput::JsonLines(p) => match File::open(p) {
                Ok(f) => (
                    BufReader::with_capacity(64 * 1024, Box::new(f)),
                    matches!(input, FileInput::Json(_)),
                ),
                Err(source) => {
                    return Some(Err(SourceError::Io {
                        path: name.to_string(),
                        source,
                    }));
                }
            },
        };
        self.open = Some(Open {
            name,
            interactive: input == FileInput::Stdin,
            reader,
            line: 0,
            whole,
        });
        Some(Ok(()))
    }
}

impl InputReader {
    /// The next non-empty line, borrowed from the reader's buffer: no copy, no allocation.
    /// (`Iterator::next` is this plus an owned copy.)
    pub fn next_line(&mut self) -> Option<Result<LineRef<'_>, SourceError>> {
        let range = match self.advance()? {
            Ok(range) => range,
            Err(e) => return Some(Err(e)),
        };
        let open = self.open.as_ref()?;
        Some(Ok(LineRef {
            bytes: &self.buf[range],
            file: &open.name,
            line: open.line,
            more_ready: !open.interactive || !open.reader.buffer().is_empty(),
        }))
    }

    /// Reads until a non-empty line is in `buf`; its trimmed range. The current file stays
    /// open (its name and line number describe the line) until the next call.
    fn advance(&mut self) -> Option<Result<std::ops::Range<usize>, SourceError>> {
        loop {
            let Some(open) = self.open.as_mut() else {
                if let Err(e) = self.open_next()? {
                    return Some(Err(e));
                }
                continue;
            };
            self.buf.clear();
            let read = if open.whole {
                open.reader.read_to_end(&mut self.buf)
            } else {
                open.reader.read_until(b'\n', &mut self.buf)
            };
            match read {
                Err(source) => {
                    let path = open.name.to_string();
                    self.open = None;
                    return Some(Err(SourceError::Io { path, source }));
                }
                Ok(0) => {
                    self.open = None;
                    continue;
                }
                Ok(_) => {
                    open.line += 1;
                    if open.whole {
                        // The next read sees EOF and moves on.
                        open.whole = false;
                    }
                    let trimmed = self.buf.trim_ascii();
                    if trimmed.is_empty() {
                        continue;
                    }
                    let start = trimmed.as_ptr() as usize - self.buf.as_ptr() as usize;
                    return Some(Ok(start..start + trimmed.len()));
                }
            }
        }
    }
}

/// A line of [`InputReader::next_line`], borrowed from the reader.
#[derive(Debug, Clone, Copy)]
pub struct LineRef<'a> {
    /// The message bytes (without the line terminator).
    pub bytes: &'a [u8],
    /// The file, or `-` for stdin; shared by every line of the file.
    pub file: &'a Arc<str>,
    /// 1-based line number; 1 for a `.json` file.
    pub line: usize,
    /// Whether the next line can be read without waiting for a writer: false on stdin when
    /// nothing more is buffered, so a consumer batching lines knows to pass this one on now.
    pub more_ready: bool,
}

impl Iterator for InputReader {
    type Item = Result<InputLine, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_line()?.map(|l| InputLine {
            bytes: Bytes::copy_from_slice(l.bytes),
            file: l.file.to_string(),
            line: l.line,
        }))
    }
}

/// A [`Source`] over files. Lines are read on a blocking thread ahead of the worker (bounded,
/// so a huge input is never all in memory); nacked deliveries come back after their delay and
/// the source finishes once the input is read and every delivery is settled.
pub struct FileSource {
    lines: mpsc::Receiver<Result<InputLine, SourceError>>,
    input_done: bool,
    queue: Queue,
}

impl FileSource {
    /// Starts reading `inputs`. Must be called within a tokio runtime.
    pub fn new(inputs: Vec<FileInput>, visibility_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::task::spawn_blocking(move || {
            for line in InputReader::new(inputs) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: rx,
            input_done: false,
            queue: Queue::new(visibility_timeout),
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn next(&mut self) -> Result<Option<Delivery>, SourceError> {
        if let Some(d) = self.queue.try_next() {
            return Ok(Some(d));
        }
        if !self.input_done {
            match self.lines.recv().await {
                Some(Ok(line)) => {
                    let origin = line.origin();
                    return Ok(Some(self.queue.deliver(Item {
                        payload: line.bytes,
                        origin,
                        attempts: 0,
                    })));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    self.input_done = true;
                    self.queue.close();
                }
            }
        }
        Ok(self.queue.next().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn directories_are_read_in_name_order_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "{\"n\":2}\n\n{\"n\":3}\n").unwrap();
        let mut one = File::create(dir.path().join("a.json")).unwrap();
        writeln!(one, "{{\n  \"n\": 1\n}}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();

        let inputs = FileInput::resolve(&[dir.path()]).unwrap();
        let lines: Vec<InputLine> = InputReader::new(inputs).map(Result::unwrap).collect();
        let got: Vec<(String, usize)> = lines
            .iter()
            .map(|l| {
                (
                    Path::new(&l.file)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    l.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.json".into(), 1),
                ("b.jsonl".into(), 1),
                ("b.jsonl".into(), 3)
            ]
        );
        assert_eq!(&lines[2].bytes[..], b"{\"n\":3}");
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let err = FileInput::resolve(&["/no/such/file.jsonl"]).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
    }

    #[tokio::test]
    async fn file_source_finishes_after_input_and_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "1\n2\n").unwrap();
        let mut source = FileSource::new(
            FileInput::resolve(&[&path]).unwrap(),
            Duration::from_secs(1),
        );
        let first = source.next().await.unwrap().unwrap();
        assert!(first.origin.ends_with("in.jsonl:1"));
        first.nack(Duration::from_millis(10)).await.unwrap();
        let mut seen = Vec::new();
        while let Some(d) = source.next().await.unwrap() {
            seen.push(d.origin.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(source.stats().acked, 2);
    }
}
