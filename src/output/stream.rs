//! A byte-stream output (the archive of a backup): a staged file through the write-behind
//! thread, a stream written in place (a tape drive in whole records of the archive's block
//! size, anything else through a large buffer), or an object, `s3://BUCKET/KEY`, as a
//! multipart upload that only the commit completes (`crate::objstore::upload`), or a volume
//! set across media ([`super::volumes`]).

use std::io::{self, BufWriter, Write};

use super::behind::WriteBehind;
pub use super::drive::DriveStats;
use super::drive::{DriveBuffer, DEFAULT_DRIVE_BUFFER};
use super::located::Located;
use super::open::{open, Opened, OutputSpec};
use super::records::RecordWriter;
use super::staged::Staged;
use super::volumes::{VolumeOptions, VolumeWriter};
use crate::error::{Error, Result};

/// Buffer between the producer and a stream: large writes are cheaper on a pipe.
const STREAM_BUFFER_BYTES: usize = 1 << 20;

/// An open byte-stream output; [`StreamOut::commit`] completes it.
pub struct StreamOut {
    name: String,
    to: To,
}

/// How a stream is written.
pub struct StreamOptions {
    /// > 0: a character device (a tape drive) is written in writes of exactly this many bytes.
    pub record_bytes: usize,
    /// A volume set ([`super::volumes`]) at the output's name.
    pub volumes: Option<VolumeOptions>,
    /// Bytes of the drive buffer ([`super::drive`]) in front of a stream or volume set.
    pub drive_buffer: usize,
    /// Stops a wait for the drive (SIGINT, SIGTERM).
    pub cancel: crate::cancel::Cancel,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            record_bytes: 0,
            volumes: None,
            drive_buffer: DEFAULT_DRIVE_BUFFER,
            cancel: crate::cancel::Cancel::default(),
        }
    }
}

enum To {
    Stream(Box<dyn Write + Send>),
    /// A stream or a volume set behind its drive buffer.
    Drive(DriveBuffer),
    File(Staged, WriteBehind),
    /// Boxed: the upload's state is larger than the other outputs'.
    #[cfg(feature = "s3")]
    Object(Box<crate::objstore::Upload>),
}

impl StreamOut {
    /// Opens `spec`. A character device (a tape drive) is written in records of
    /// `opts.record_bytes` when that is > 0, since a drive in fixed-block mode refuses any
    /// other length. An `s3://BUCKET/KEY` name is an object in the store the environment
    /// configures (`crate::objstore::config`): refused when it exists, unless `force`. With
    /// `opts.volumes` the stream is a volume set at the name, which must not be an object.
    /// Streams and volume sets go through a drive buffer of `opts.drive_buffer` bytes (0: none).
    pub fn open(spec: &OutputSpec<'_>, opts: StreamOptions) -> Result<StreamOut> {
        let buffered = |w: Box<dyn Write + Send>| match opts.drive_buffer {
            0 => To::Stream(w),
            n => To::Drive(DriveBuffer::new(w, n, opts.cancel.clone())),
        };
        if let Some(v) = opts.volumes {
            if spec.object_name().is_some() || spec.path == std::path::Path::new("-") {
                return Err(Error::Usage(format!(
                    "{}: volumes are written to a device or a file, not to stdout or an object",
                    spec.name()
                )));
            }
            let w = VolumeWriter::open(spec, opts.record_bytes, v)?;
            return Ok(StreamOut {
                name: spec.name(),
                to: buffered(Box::new(w)),
            });
        }
        if let Some(name) = spec.object_name() {
            return Ok(StreamOut {
                name: name.to_string(),
                to: open_object(name, spec.force)?,
            });
        }
        let to = match open(spec)? {
            Opened::Stream { file, tape } => {
                let file = Located::new(file);
                buffered(if opts.record_bytes > 0 && tape {
                    Box::new(RecordWriter::new(file, opts.record_bytes))
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
            To::Drive(w) => w,
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
            To::Drive(w) => {
                let st = w.finish().map_err(failed)?;
                log::debug!(
                    "{name}: drive buffer: {} bytes in {:.2} s; the drive waited {} times, {:.2} s \
                     in all; the archive writer waited {:.2} s for room",
                    st.bytes,
                    st.busy_secs,
                    st.stalls,
                    st.starved_secs,
                    st.blocked_secs
                );
                Ok(())
            }
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
