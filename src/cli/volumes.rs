//! Volume sets at the command line: `--volume-size`, `--next-volume CMD`, and the operator's
//! prompt on the terminal when no command is given (the rules are in
//! `crate::archive::volume` and `crate::output::volumes`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::args::{parse_size, VolumeArgs};
use crate::archive::volume::{CommandChanger, VolumeChanger};
use crate::output::volumes::VolumeOptions;
use crate::output::StreamOptions;

/// Asks at the controlling terminal (stdin and stdout may be the archive).
struct TtyChanger {
    device: String,
}

impl VolumeChanger for TtyChanger {
    fn next(&mut self, number: u32, why: &str) -> crate::Result<()> {
        let tty = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|_| {
                crate::Error::Usage(format!(
                    "{}: {why}; there is no terminal to ask for volume {number} \
                     (give --next-volume CMD)",
                    self.device
                ))
            })?;
        let mut out = &tty;
        let mut line = String::new();
        write!(
            out,
            "vdar: {}: {why}. Load volume {number} and press Enter (q to stop): ",
            self.device
        )
        .and_then(|()| BufReader::new(&tty).read_line(&mut line))
        .map_err(|e| crate::Error::io("/dev/tty", None, e))?;
        if line.is_empty() || line.trim() == "q" {
            return Err(crate::Error::Usage(format!(
                "{}: stopped at volume {number} ({why})",
                self.device
            )));
        }
        Ok(())
    }

    fn asks_again(&self) -> bool {
        true
    }
}

/// The changer for volumes at `device`: the command when given (ended when `cancel` is
/// set), else the terminal.
pub(super) fn changer(
    next_volume: Option<&str>,
    device: &Path,
    cancel: &crate::cancel::Cancel,
) -> Box<dyn VolumeChanger> {
    match next_volume {
        Some(cmd) => Box::new(CommandChanger::new(cmd, device, cancel.clone())),
        None => Box::new(TtyChanger {
            device: device.display().to_string(),
        }),
    }
}

/// How `backup` writes its stream: records of `record_bytes`, volumes, the drive buffer.
pub(super) fn stream_options(
    a: &VolumeArgs,
    output: &Path,
    record_bytes: usize,
    cancel: &crate::cancel::Cancel,
) -> anyhow::Result<StreamOptions> {
    let drive_buffer = parse_size(&a.drive_buffer).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        drive_buffer <= 1 << 34,
        "--drive-buffer {}: at most 16 GiB",
        a.drive_buffer
    );
    Ok(StreamOptions {
        record_bytes,
        volumes: volumes(a, output, cancel)?,
        drive_buffer: drive_buffer as usize,
        cancel: cancel.clone(),
    })
}

/// The volume set asked for: `None` for a single stream.
fn volumes(
    a: &VolumeArgs,
    output: &Path,
    cancel: &crate::cancel::Cancel,
) -> anyhow::Result<Option<VolumeOptions>> {
    if !a.multi_volume && a.volume_size.is_none() && a.next_volume.is_none() {
        return Ok(None);
    }
    if a.next_volume.is_none() && std::fs::File::open("/dev/tty").is_err() {
        anyhow::bail!(
            "{}: a volume set without --next-volume asks for each next volume at the terminal, \
             and there is none: give --next-volume CMD",
            output.display()
        );
    }
    let volume_bytes = match &a.volume_size {
        Some(s) => parse_size(s).map_err(anyhow::Error::msg)?,
        None => 0,
    };
    anyhow::ensure!(
        a.volume_size.is_none() || volume_bytes > 0,
        "--volume-size 0: give a size, or leave the option out to end volumes where the media end"
    );
    Ok(Some(VolumeOptions {
        volume_bytes,
        changer: changer(a.next_volume.as_deref(), output, cancel),
    }))
}
