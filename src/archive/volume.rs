//! Volume sets: one archive stream cut across several media (tapes, block devices, files),
//! each starting with a volume header (formats/VOLUME.md), and read back as one stream.
//!
//! The header names the set (an id drawn when the backup starts), the volume's number and
//! the stream offset its data continues from, so a restore refuses a volume of another set,
//! a repeated one or one out of order before it believes a byte of it. A volume's data ends
//! where its medium ends (a tape's filemark, a block device's last byte), or at its recorded
//! size. The archive ends with its footer: the reader watches for it as data passes, stops
//! there (what follows on a reused medium is not data) and never asks for a volume after it.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::format::{csum8, Footer, FOOTER_BYTES, FOOTER_MAGIC_V1};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::input::source::{le_u32, le_u64};

/// blake3("vdar volume v1")[..8] (checked by `tests::magic_is_derived`).
pub const VOLUME_MAGIC_V1: [u8; 8] = [0x8d, 0xb8, 0x0c, 0x85, 0xfc, 0xde, 0x5f, 0xce];
/// The volume header version this build writes and reads.
pub const VOLUME_VERSION: u32 = 1;
/// The encoded header's size; on the medium it is padded with zeros to one record
/// ([`VolumeHeader::header_bytes`]).
pub const HEADER_CORE_BYTES: usize = 512;

/// A volume header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeHeader {
    /// Bytes the header takes on the medium: 512, or the archive's block size when larger.
    pub header_bytes: u32,
    /// The volume's number, from 1.
    pub number: u32,
    /// The set's id: every volume of one archive carries it.
    pub set: [u8; 16],
    /// Archive stream bytes on the volumes before this one.
    pub stream_offset: u64,
    /// The volume's size, header included, when the writer cut it at a size
    /// (`--volume-size`); 0 when it ends where its medium ends.
    pub volume_bytes: u64,
    /// When the backup started (Unix seconds), for messages.
    pub created: u64,
}

impl VolumeHeader {
    /// Encodes the header, padded to `header_bytes`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.header_bytes as usize];
        b[0..8].copy_from_slice(&VOLUME_MAGIC_V1);
        b[8..12].copy_from_slice(&VOLUME_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_bytes.to_le_bytes());
        b[16..20].copy_from_slice(&self.number.to_le_bytes());
        b[24..40].copy_from_slice(&self.set);
        b[40..48].copy_from_slice(&self.stream_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.volume_bytes.to_le_bytes());
        b[56..64].copy_from_slice(&self.created.to_le_bytes());
        let c = csum8(&b[..120]);
        b[120..128].copy_from_slice(&c);
        b
    }

    /// Decodes the first [`HEADER_CORE_BYTES`] of a volume read from `name`.
    pub fn decode(b: &[u8; HEADER_CORE_BYTES], name: &str) -> Result<VolumeHeader> {
        let bad = |at: u64, what: String| {
            Error::Usage(format!("{name}: volume header byte {at}: {what}"))
        };
        if !is_volume(b) {
            return Err(bad(0, "not a vdar volume".into()));
        }
        if b[120..128] != csum8(&b[..120]) {
            return Err(bad(120, "header checksum mismatch (damaged volume)".into()));
        }
        let version = le_u32(b, 8);
        if version != VOLUME_VERSION {
            return Err(bad(
                8,
                format!("volume version {version} (this build reads 1)"),
            ));
        }
        if b[20..24] != [0; 4] || b[64..120].iter().any(|&x| x != 0) {
            return Err(bad(20, "reserved bytes are not zero".into()));
        }
        let h = VolumeHeader {
            header_bytes: le_u32(b, 12),
            number: le_u32(b, 16),
            set: b[24..40].try_into().expect("len"),
            stream_offset: le_u64(b, 40),
            volume_bytes: le_u64(b, 48),
            created: le_u64(b, 56),
        };
        let hb = h.header_bytes;
        if !hb.is_power_of_two() || !(512..=16 << 20).contains(&hb) {
            return Err(bad(
                12,
                format!("header size {hb} is not a power of two, 512 to 16M"),
            ));
        }
        if h.number == 0 || (h.volume_bytes != 0 && h.volume_bytes <= u64::from(hb)) {
            return Err(bad(
                16,
                "volume number 0, or a size that leaves no data".into(),
            ));
        }
        Ok(h)
    }

    /// The set id as hex, for messages.
    pub fn set_hex(&self) -> String {
        self.set.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether `head` starts a volume.
pub fn is_volume(head: &[u8]) -> bool {
    head.starts_with(&VOLUME_MAGIC_V1)
}

/// What loads the next volume: an autoloader command, or an operator asked at a terminal.
pub trait VolumeChanger: Send {
    /// Makes volume `number` ready at the device; `why` says what happened to the one before
    /// ("volume 1 is full", "that was volume 3 of another set").
    fn next(&mut self, number: u32, why: &str) -> Result<()>;
    /// Whether a wrong volume may be answered by asking again (an operator can fetch the
    /// right tape; a command that loaded the wrong one would only do it again).
    fn asks_again(&self) -> bool;
    /// `Err(Error::Interrupted)` once the reading should stop (a changer that can be told to
    /// stop is told by the same flag): checked before every read of a volume.
    fn stopped(&self) -> Result<()> {
        Ok(())
    }
}

/// `--next-volume CMD`: runs `sh -c CMD` with `VDAR_VOLUME` (the number wanted) and
/// `VDAR_DEVICE` (the path) in its environment, as `tar -F` and `mbuffer -A` run theirs.
///
/// The command runs in a process group of its own, and a stop (SIGINT/SIGTERM, through
/// `cancel`) ends the whole group: TERM, then KILL after [`CHANGER_GRACE`]. An autoloader
/// script that hangs, or the `sleep` or `mtx` it runs, is neither waited for nor left behind.
/// The group is also why a terminal's Ctrl-C reaches only vdar, which passes it on.
pub struct CommandChanger {
    command: String,
    device: PathBuf,
    cancel: Cancel,
}

/// How long a stopped changer command may take to exit after TERM before it is killed.
pub const CHANGER_GRACE: Duration = Duration::from_secs(2);

/// How often a running changer command is looked at.
const CHANGER_POLL: Duration = Duration::from_millis(50);

impl CommandChanger {
    /// A changer running `command` for the volumes at `device`, stopped by `cancel`.
    pub fn new(command: &str, device: &Path, cancel: Cancel) -> CommandChanger {
        CommandChanger {
            command: command.to_string(),
            device: device.to_path_buf(),
            cancel,
        }
    }

    /// Waits for `child`; on a stop, ends its process group and says so.
    fn wait(&self, child: &mut Child, number: u32) -> Result<ExitStatus> {
        let io = |e| Error::io("/bin/sh", None, e);
        loop {
            if let Some(status) = child.try_wait().map_err(io)? {
                return Ok(status);
            }
            if let Err(stop) = self.cancel.check() {
                end_child(child);
                log::warn!(
                    "{}: stopped while the next-volume command {:?} loaded volume {number};                      ended it",
                    self.device.display(),
                    self.command
                );
                return Err(stop);
            }
            std::thread::sleep(CHANGER_POLL);
        }
    }
}

/// The process group of the changer command running now. The thread that waits for it may
/// not be the one that ends the process: [`end_running_changer`] lets that one end it too.
static RUNNING: Mutex<Option<Pid>> = Mutex::new(None);

fn running() -> std::sync::MutexGuard<'static, Option<Pid>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the changer command still running, if any, with all it started: for a process about
/// to exit (a stop seen by another thread first), so that nothing is left behind.
pub fn end_running_changer() {
    if let Some(group) = running().take() {
        end_group(group, || false);
    }
}

/// TERM to process group `group`, KILL to what is left of it after the grace time. `reap`
/// reaps the group's leader when it has exited (its zombie keeps the group alive).
fn end_group(group: Pid, mut reap: impl FnMut() -> bool) {
    let _ = rustix::process::kill_process_group(group, Signal::TERM);
    let deadline = Instant::now() + CHANGER_GRACE;
    let mut reaped = false;
    while Instant::now() < deadline {
        reaped = reaped || reap();
        if rustix::process::test_kill_process_group(group).is_err() {
            return;
        }
        std::thread::sleep(CHANGER_POLL);
    }
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
    if !reaped {
        reap();
    }
}

/// Ends `child`'s process group (see [`end_group`]) and reaps it.
fn end_child(child: &mut Child) {
    running().take();
    let Some(group) = Pid::from_raw(child.id() as i32) else {
        return;
    };
    end_group(group, || matches!(child.try_wait(), Ok(Some(_))));
    let _ = child.wait();
}

impl VolumeChanger for CommandChanger {
    fn next(&mut self, number: u32, why: &str) -> Result<()> {
        self.cancel.check()?;
        log::info!("{why}: running {:?} for volume {number}", self.command);
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &self.command])
            .env("VDAR_VOLUME", number.to_string())
            .env("VDAR_DEVICE", &self.device)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("/bin/sh", None, e))?;
        *running() = Pid::from_raw(child.id() as i32);
        let status = self.wait(&mut child, number);
        running().take();
        let status = status?;
        if !status.success() {
            return Err(Error::Usage(format!(
                "{}: {why}, and the next-volume command {:?} failed ({status}) to load volume {number}",
                self.device.display(),
                self.command
            )));
        }
        Ok(())
    }

    fn asks_again(&self) -> bool {
        false
    }

    fn stopped(&self) -> Result<()> {
        self.cancel.check()
    }
}

/// Opens the device (or file) the volumes are read from, again for each volume.
pub type Reopen = Box<dyn FnMut() -> io::Result<Box<dyn Read>>>;

/// The archive stream of a volume set, read volume after volume.
pub struct VolumeReader {
    name: String,
    cur: Box<dyn Read>,
    reopen: Option<Reopen>,
    changer: Option<Box<dyn VolumeChanger>>,
    first: VolumeHeader,
    number: u32,
    /// Archive bytes delivered.
    delivered: u64,
    /// Data bytes left in the current volume, when it was cut at a size.
    left: Option<u64>,
    /// The last bytes delivered (less than a footer), where a footer may have begun.
    tail: Vec<u8>,
    /// The archive's footer has been delivered: nothing after it is data.
    done: bool,
}

impl VolumeReader {
    /// Starts reading the set whose first volume `cur` is (positioned at its start), named
    /// `name` in messages. Without `reopen` and `changer` (standard input) a set of more than
    /// one volume is an error naming the volume needed.
    pub fn open(
        name: &str,
        mut cur: Box<dyn Read>,
        reopen: Option<Reopen>,
        changer: Option<Box<dyn VolumeChanger>>,
    ) -> Result<VolumeReader> {
        let first = read_header(&mut cur, name, 1)?;
        if first.number != 1 || first.stream_offset != 0 {
            return Err(Error::Usage(format!(
                "{name}: this is volume {} of set {}; a restore starts at volume 1",
                first.number,
                first.set_hex()
            )));
        }
        Ok(VolumeReader {
            name: name.to_string(),
            cur,
            reopen,
            changer,
            left: data_bytes(&first),
            first,
            number: 1,
            delivered: 0,
            tail: Vec::new(),
            done: false,
        })
    }

    /// Of `data`, just read, the bytes that are archive: up to the end of the archive's
    /// footer when it is among them (magic, checksum, and `footer_offset` at its place in the
    /// stream), so that what follows it on a medium (a reused tape or device) is never data.
    fn archive_part(&mut self, data: &[u8]) -> usize {
        let carried = self.tail.len();
        // A footer that began in the bytes delivered before: only the seam is copied.
        if carried > 0 {
            let mut seam = self.tail.clone();
            seam.extend_from_slice(&data[..data.len().min(FOOTER_BYTES - 1)]);
            if let Some(end) = footer_end(&seam, self.delivered - carried as u64, carried) {
                self.done = true;
                return end - carried;
            }
        }
        if let Some(end) = footer_end(data, self.delivered, data.len()) {
            self.done = true;
            return end;
        }
        if data.len() >= FOOTER_BYTES - 1 {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - (FOOTER_BYTES - 1)..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(FOOTER_BYTES - 1);
            self.tail.drain(..excess);
        }
        data.len()
    }

    /// Loads and checks the next volume.
    fn next_volume(&mut self) -> Result<()> {
        let want = self.number + 1;
        let (Some(reopen), Some(changer)) = (self.reopen.as_mut(), self.changer.as_mut()) else {
            return Err(Error::Usage(format!(
                "{}: the archive continues on volume {want} of set {} (at archive byte {}); \
                 read the set from its device, with --next-volume CMD or at a terminal",
                self.name,
                self.first.set_hex(),
                self.delivered
            )));
        };
        let mut why = format!("volume {} ended before the archive did", self.number);
        loop {
            changer.next(want, &why)?;
            let mut cur = reopen().map_err(|e| Error::io(&self.name, None, e))?;
            let h = read_header(&mut cur, &self.name, want)?;
            let wrong = if h.set != self.first.set {
                Some(format!(
                    "that was volume {} of another set, {}",
                    h.number,
                    h.set_hex()
                ))
            } else if h.number < want {
                Some(format!("that was volume {} again", h.number))
            } else if h.number > want {
                Some(format!("that was volume {}, out of order", h.number))
            } else if h.stream_offset != self.delivered {
                Some(format!(
                    "volume {want} continues from archive byte {}, but {} were read",
                    h.stream_offset, self.delivered
                ))
            } else {
                None
            };
            match wrong {
                None => {
                    self.cur = cur;
                    self.number = want;
                    self.left = data_bytes(&h);
                    return Ok(());
                }
                Some(w) if changer.asks_again() => why = format!("{w}; volume {want} is wanted"),
                Some(w) => {
                    return Err(Error::Usage(format!(
                        "{}: {w}; volume {want} of set {} is wanted",
                        self.name,
                        self.first.set_hex()
                    )))
                }
            }
        }
    }
}

fn data_bytes(h: &VolumeHeader) -> Option<u64> {
    (h.volume_bytes != 0).then(|| h.volume_bytes - u64::from(h.header_bytes))
}

/// Reads the header record of volume `want` and skips its padding.
fn read_header(r: &mut dyn Read, name: &str, want: u32) -> Result<VolumeHeader> {
    let name = format!("{name} (volume {want})");
    let mut b = [0u8; HEADER_CORE_BYTES];
    r.read_exact(&mut b).map_err(|e| {
        Error::Usage(format!(
            "{name}: no volume header in its first {HEADER_CORE_BYTES} bytes: {e}"
        ))
    })?;
    let h = VolumeHeader::decode(&b, &name)?;
    let pad = u64::from(h.header_bytes) - HEADER_CORE_BYTES as u64;
    let skipped = io::copy(&mut r.take(pad), &mut io::sink())
        .map_err(|e| Error::io(&name, Some(HEADER_CORE_BYTES as u64), e))?;
    if skipped != pad {
        return Err(Error::Usage(format!("{name}: ends inside its header")));
    }
    Ok(h)
}

impl Read for VolumeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if let Some(c) = &self.changer {
                c.stopped().map_err(io::Error::other)?;
            }
            let room = self.left.map_or(buf.len(), |l| buf.len().min(l as usize));
            let n = if room == 0 {
                0
            } else {
                self.cur.read(&mut buf[..room])?
            };
            if n > 0 {
                let n = self.archive_part(&buf[..n]);
                self.delivered += n as u64;
                if let Some(l) = &mut self.left {
                    *l -= n as u64;
                }
                return Ok(n);
            }
            if let Some(l) = self.left.filter(|&l| l > 0) {
                return Err(io::Error::other(Error::Usage(format!(
                    "{}: volume {} ends {l} bytes short of the size its header records",
                    self.name, self.number
                ))));
            }
            self.next_volume().map_err(io::Error::other)?;
        }
    }
}

/// The end (an index into `buf`) of the first valid footer in `buf` that starts before
/// `starts_before`, `buf[0]` being stream byte `at`.
fn footer_end(buf: &[u8], at: u64, starts_before: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = find(&buf[from..], &FOOTER_MAGIC_V1) {
        let i = from + k;
        if i >= starts_before || i + FOOTER_BYTES > buf.len() {
            return None;
        }
        let fb: &[u8; FOOTER_BYTES] = buf[i..i + FOOTER_BYTES].try_into().expect("len");
        if Footer::decode(fb, at + i as u64).is_ok() {
            return Some(i + FOOTER_BYTES);
        }
        from = i + 1;
    }
    None
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8; 8]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = hay[from..].iter().position(|&b| b == needle[0]) {
        let at = from + k;
        if hay.len() - at < needle.len() {
            return None;
        }
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_derived() {
        assert_eq!(
            VOLUME_MAGIC_V1,
            blake3::hash(b"vdar volume v1").as_bytes()[..8]
        );
    }

    /// Hands out at most `step` bytes per read.
    struct Trickle(std::io::Cursor<Vec<u8>>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn the_footer_ends_the_data_however_the_reads_fall() {
        let h = VolumeHeader {
            header_bytes: 512,
            number: 1,
            set: [1; 16],
            stream_offset: 0,
            volume_bytes: 0,
            created: 0,
        };
        // Data with footer magic in it that is no footer, then the footer, then old bytes.
        let mut archive: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        archive[300..308].copy_from_slice(&FOOTER_MAGIC_V1);
        let footer = Footer {
            index_offset: 0,
            footer_offset: archive.len() as u64,
            record_count: 2,
            meta_hash: [9; 32],
        };
        archive.extend_from_slice(&footer.encode());
        let mut medium = h.encode();
        medium.extend_from_slice(&archive);
        medium.extend_from_slice(&[0xc4; 300]);
        for step in [1, 7, 95, 96, 97, 500, 4096] {
            let src = Trickle(std::io::Cursor::new(medium.clone()), step);
            let mut r = VolumeReader::open("t", Box::new(src), None, None).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == archive, "step {step}: {} bytes", got.len());
        }
    }

    #[test]
    fn headers_round_trip_and_damage_is_refused() {
        let h = VolumeHeader {
            header_bytes: 4096,
            number: 2,
            set: [7; 16],
            stream_offset: 1 << 30,
            volume_bytes: 1 << 31,
            created: 1_796_601_600,
        };
        let b = h.encode();
        assert_eq!(b.len(), 4096);
        let core: [u8; 512] = b[..512].try_into().unwrap();
        assert_eq!(VolumeHeader::decode(&core, "t").unwrap(), h);
        for at in [8, 17, 30, 70, 125] {
            let mut d = core;
            d[at] ^= 1;
            assert!(VolumeHeader::decode(&d, "t").is_err(), "byte {at}");
        }
    }
}
