//! The write path: every byte vdar writes goes out through this module, whatever the command.
//!
//! - Opening an output by name ([`open`]): `-` is standard output (refused when it is a
//!   terminal), an existing device or FIFO is written in place (a block device only with
//!   `force`), anything else is a regular file staged as `NAME.partial`, locked, and renamed
//!   into place only once complete and fsynced ([`staged`]).
//! - One positional writer ([`DirectFile`]) with one rule for `O_DIRECT` and its fallback. The
//!   archive of a backup is just writes at a running offset from a write-behind thread
//!   ([`behind`], through [`StreamOut`]); a raw image restore or `cat` writes chunks at their
//!   disk offsets ([`RawSink`], through [`ImageOut`] for `cat`); SAN write-back queues its
//!   writes on the I/O engine ([`queue`]) through the handles `DirectFile` picks.
//! - Streams: a tape drive gets whole records ([`records`]), anything else a large buffer.
//! - Located errors ([`located`]): each failed write carries the byte offset where the output
//!   stopped taking bytes; errors name the file.
//!
//! Nothing here decides *what* is written: backup (`crate::pipeline`), restore
//! (`crate::restore`) and `cat` ([`copy_disk`]) produce the bytes; the front end turns its flags
//! into an [`OutputSpec`] and prints.

pub mod behind;
pub mod direct;
pub mod drive;
pub mod image;
pub mod located;
pub mod open;
pub mod queue;
pub mod records;
pub mod sink;
pub mod staged;
pub mod stream;
pub mod volumes;

pub use direct::DirectFile;
pub use image::{copy_disk, CopyStats, ImageOut};
pub use located::{FailedWrite, Located};
pub use open::{refuse_terminal, OutputSpec};
pub use sink::{DiskSink, RawSink, RawStream};
pub use stream::{StreamOptions, StreamOut};
