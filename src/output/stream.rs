//! A byte-stream output (the archive of a backup): a staged file through the write-behind
//! thread, or a stream written in place: a tape drive in whole records of the archive's block
//! size, anything else through a large buffer.

use std::io::{self, BufWriter, Write};

use super::behind::WriteBehind;
use super::located::Located;
use super::open::{open, Opened, OutputSpec};
use super::records::RecordWriter;
use super::staged::Staged;
use crate::error::{Error, Result};

/// Buffer between the producer and a stream: large writes are cheaper on a pipe.
const STREAM_BUFFER_BYTES: usize = 1 << 20;

/// An open byte-stream output; [`StreamOut::commit`] completes it.
pub struct StreamOut {
    name: String,
    to: To,
}

enum To {
    Stream(Box<dyn Write + Send>),
    File(Staged, WriteBehind),
}

impl StreamOut {
    /// Opens `spec`. `record_bytes` > 0: a character device (a tape drive) is written in writes
    /// of exactly that many bytes, since a drive in fixed-block mode refuses any other length.
    pub fn open(spec: &OutputSpec<'_>, record_bytes: usize) -> Result<StreamOut> {
        let to = match open(spec)? {
            Opened::Stream { file, tape } => {
                let file = Located::new(file);
                To::Stream(if record_bytes > 0 && tape {
                    Box::new(RecordWriter::new(file, record_bytes))
                } else {
                    Box::new(BufWriter::with_capacity(STREAM_BUFFER_BYTES, file))
                })
            }
            Opened::Staged {
                staged,
                partial,
                file,
            } => To::File(staged, WriteBehind::new(&partial, file)),
        };
        Ok(StreamOut {
            name: spec.name(),
            to,
        })
    }

    /// Where the bytes go. Failed writes carry a [`super::FailedWrite`] with the offset.
    pub fn writer(&mut self) -> &mut (dyn Write + Send) {
        match &mut self.to {
            To::Stream(w) => w.as_mut(),
            To::File(_, w) => w,
        }
    }

    /// Writes what is still buffered; a file then gets its final name (fsynced).
    pub fn commit(self) -> Result<()> {
        let name = self.name;
        let failed = |e: io::Error| Error::io(&name, None, e);
        match self.to {
            To::Stream(mut w) => w.flush().map_err(failed),
            To::File(mut staged, w) => {
                w.finish().map_err(failed)?;
                staged.commit()
            }
        }
    }
}
