//! A byte-stream output (the archive of a backup): a staged file through the write-behind
//! thread, a stream written in place (a tape drive in whole records of the archive's block
//! size, anything else through a large buffer), or an object, `s3://BUCKET/KEY`, as a
//! multipart upload that only the commit completes (`crate::objstore::upload`).

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
    /// Boxed: the upload's state is larger than the other outputs'.
    #[cfg(feature = "s3")]
    Object(Box<crate::objstore::Upload>),
}

impl StreamOut {
    /// Opens `spec`. `record_bytes` > 0: a character device (a tape drive) is written in writes
    /// of exactly that many bytes, since a drive in fixed-block mode refuses any other length.
    /// An `s3://BUCKET/KEY` name is an object in the store the environment configures
    /// (`crate::objstore::config`): refused when it exists, unless `force`.
    pub fn open(spec: &OutputSpec<'_>, record_bytes: usize) -> Result<StreamOut> {
        if let Some(name) = spec.object_name() {
            return Ok(StreamOut {
                name: name.to_string(),
                to: open_object(name, spec.force)?,
            });
        }
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
            #[cfg(feature = "s3")]
            To::Object(u) => u.as_mut(),
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
            #[cfg(feature = "s3")]
            To::Object(u) => u.finish().map(|_| ()),
        }
    }
}

#[cfg(feature = "s3")]
fn open_object(name: &str, force: bool) -> Result<To> {
    use crate::objstore::{Client, ObjectUrl, Upload};
    let obj = ObjectUrl::parse(name)?;
    let client = std::sync::Arc::new(Client::from_env()?);
    Ok(To::Object(Box::new(Upload::create(client, obj, force)?)))
}

#[cfg(not(feature = "s3"))]
fn open_object(name: &str, _force: bool) -> Result<To> {
    Err(Error::Usage(format!(
        "{name}: this vdar was built without object storage (feature s3)"
    )))
}
