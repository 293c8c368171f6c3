//! `.vmx` configuration files: which virtual disks a VM has, plus the few hardware facts an OVF
//! export needs (CPUs and their topology, memory, firmware, guest OS, NICs, controllers).
//!
//! This sits in front of the input stage: it turns "back up this VM" into a list of top-level
//! disk descriptors, each of which `crate::input` then opens as a snapshot chain. The same
//! key/value parser reads `.vmsd` snapshot dictionaries (`super::vmsd`).
//!
//! The grammar, the escapes and every key we read are specified in `formats/VMX.md`; the code
//! follows that document, and the two change together.
//!
//! Invariants:
//! - A file is at most [`MAX_DICT_BYTES`]; the size is checked before anything is read, so a
//!   hostile or runaway file cannot make us allocate more.
//! - Keys are kept as written and compared ASCII-case-insensitively, as VMware does. A key that
//!   appears twice is a syntax error: the two values could name different disks and nothing in
//!   the file says which one wins.
//! - Nothing here opens a disk; path resolution only builds paths (and, for absolute paths,
//!   checks whether they exist).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Largest `.vmx`/`.vmsd` we read. Real files are a few KiB; a VM with hundreds of snapshots
/// produces a `.vmsd` of well under 1 MiB, so 4 MiB leaves room without inviting abuse.
pub const MAX_DICT_BYTES: u64 = 4 << 20;

/// A parsed `.vmx` (or any VMware dictionary file with the same syntax, such as `.vmsd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxFile {
    /// The file the entries came from, for error messages and relative path resolution.
    pub path: PathBuf,
    /// Every `key = value` pair in file order, keys exactly as written, values unescaped.
    pub entries: Vec<(String, String)>,
    /// 1-based line number of each entry, parallel to `entries`, so that errors found after
    /// parsing (a bad number, a missing key) can still point at a line.
    lines: Vec<usize>,
}

/// The bus a virtual disk is attached to. The order of the variants is the order of
/// [`VmxFile::disks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bus {
    /// `scsiX:Y`: LSI Logic, LSI SAS, BusLogic or PVSCSI controllers.
    Scsi,
    /// `sataX:Y`: AHCI controllers.
    Sata,
    /// `ideX:Y`: the chipset's two IDE channels.
    Ide,
    /// `nvmeX:Y`: NVMe controllers.
    Nvme,
}

impl Bus {
    /// Every bus, in [`VmxFile::disks`] order.
    pub const ALL: [Bus; 4] = [Bus::Scsi, Bus::Sata, Bus::Ide, Bus::Nvme];

    /// The key prefix VMware uses for the bus (`"scsi"`, `"sata"`, `"ide"`, `"nvme"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Scsi => "scsi",
            Bus::Sata => "sata",
            Bus::Ide => "ide",
            Bus::Nvme => "nvme",
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A virtual hard disk attached to the VM (see [`VmxFile::disks`] for which devices count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxDisk {
    /// The device node in VMware's spelling, lowercase: `"scsi0:0"`. `.vmsd` files name disks
    /// by the same string (`snapshotN.diskM.node`).
    pub device: String,
    /// The bus.
    pub bus: Bus,
    /// Controller number on that bus (the `X` of `scsiX:Y`).
    pub controller: u32,
    /// Unit (target) number on the controller (the `Y` of `scsiX:Y`).
    pub unit: u32,
    /// `scsiX:Y.fileName` as written: the top descriptor of the disk's current snapshot chain.
    /// Resolve it with [`resolve_disk_path`].
    pub file_name: String,
    /// `scsiX:Y.deviceType` (`scsi-hardDisk`, `ata-hardDisk`, `rawDisk`, ...), if given.
    pub device_type: Option<String>,
}

/// A present network adapter (`ethernetN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxNic {
    /// The `N` of `ethernetN`.
    pub index: u32,
    /// `ethernetN.virtualDev`: `e1000`, `e1000e`, `vmxnet3`, `vlance`, ...
    pub virtual_dev: Option<String>,
    /// `ethernetN.networkName`: the port group, on ESXi.
    pub network_name: Option<String>,
    /// `ethernetN.addressType`: `generated`, `vpx` or `static`.
    pub address_type: Option<String>,
    /// The MAC address: `ethernetN.address` when `addressType` is `static`, otherwise
    /// `ethernetN.generatedAddress` (falling back to `address` if only that is set).
    pub mac: Option<String>,
    /// `ethernetN.startConnected`: whether the adapter is connected at power-on. Absent means
    /// connected, as VMware treats it; a present value is a boolean (`TRUE` in any case).
    pub start_connected: bool,
    /// `ethernetN.dvs.portgroupId`: the key (`dvportgroup-1001`, not the name) of the
    /// distributed port group, for an adapter on a vSphere Distributed Switch.
    pub dvs_portgroup_id: Option<String>,
    /// `ethernetN.dvs.switchId`: the distributed switch's UUID, for an adapter on one.
    pub dvs_switch_id: Option<String>,
}

/// A present disk controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxController {
    /// The bus.
    pub bus: Bus,
    /// Controller number (the `X` of `scsiX`).
    pub index: u32,
    /// `scsiX.virtualDev`: `lsilogic`, `pvscsi`, `lsisas1068`, `buslogic` (or whatever the
    /// file says; usually absent for SATA, IDE and NVMe).
    pub virtual_dev: Option<String>,
}

impl VmxFile {
    /// Parses dictionary text. `path` is only used in error messages and to resolve relative
    /// disk names later.
    ///
    /// ```
    /// # use std::path::Path;
    /// use vdar::input::vmx::VmxFile;
    /// let vmx = VmxFile::parse(
    ///     Path::new("vm.vmx"),
    ///     ".encoding = \"UTF-8\"\nscsi0.present = \"TRUE\"\n\
    ///      scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"vm.vmdk\"\n",
    /// )?;
    /// assert_eq!(vmx.disks()[0].device, "scsi0:0");
    /// # Ok::<(), vdar::Error>(())
    /// ```
    pub fn parse(path: &Path, text: &str) -> Result<VmxFile> {
        if text.len() as u64 > MAX_DICT_BYTES {
            return Err(too_large(path, text.len() as u64));
        }
        // Notepad and some Windows editors prepend a BOM; VMware skips it too.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = Vec::new();
        let mut lines = Vec::new();
        // Lowercased key -> line of first occurrence, to reject duplicates.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            // Files edited on Windows end lines with CRLF; the CR is not part of the value.
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let syntax = |what: String| Error::Syntax {
                path: path.to_path_buf(),
                line: line_no,
                what,
            };
            let Some((key, value)) = parse_line(line).map_err(syntax)? else {
                continue;
            };
            let value = String::from_utf8(value).map_err(|_| {
                syntax(format!(
                    "value of `{}` is not valid UTF-8 once its `|XX` escapes are decoded",
                    snippet(key)
                ))
            })?;
            if let Some(first) = seen.insert(key.to_ascii_lowercase(), line_no) {
                return Err(syntax(format!(
                    "duplicate key `{}` (first on line {first}): cannot tell which value applies",
                    snippet(key)
                )));
            }
            entries.push((key.to_string(), value));
            lines.push(line_no);
        }
        Ok(VmxFile {
            path: path.to_path_buf(),
            entries,
            lines,
        })
    }

    /// Reads and parses `path`, refusing files larger than [`MAX_DICT_BYTES`] before reading
    /// them, and files that are not UTF-8.
    pub fn read(path: &Path) -> Result<VmxFile> {
        let text = read_bounded_text(path)?;
        VmxFile::parse(path, &text)
    }

    /// The value of `key`, compared ASCII-case-insensitively (`memsize` finds `memSize`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| self.entries[i].1.as_str())
    }

    /// `displayName`: the name shown in the vSphere inventory.
    pub fn display_name(&self) -> Option<&str> {
        self.get("displayName")
    }

    /// `guestOS`: VMware's guest identifier (`windows2019srv-64`, `ubuntu-64`, ...).
    pub fn guest_os(&self) -> Option<&str> {
        self.get("guestOS")
    }

    /// `numvcpus`, 1 when absent (VMware's default). Zero or a non-number is a syntax error.
    pub fn num_cpus(&self) -> Result<u32> {
        match self.number::<u32>("numvcpus")? {
            Some(0) => Err(self.bad_value("numvcpus", "0 CPUs")),
            Some(n) => Ok(n),
            None => Ok(1),
        }
    }

    /// `memSize` in MiB, if set.
    pub fn memory_mb(&self) -> Result<Option<u64>> {
        self.number("memSize")
    }

    /// `virtualHW.version`, if set.
    pub fn hw_version(&self) -> Result<Option<u32>> {
        self.number("virtualHW.version")
    }

    /// `firmware`: `efi`, or absent for BIOS.
    pub fn firmware(&self) -> Option<&str> {
        self.get("firmware")
    }

    /// `uefi.secureBoot.enabled`: whether UEFI secure boot is on (false when absent).
    pub fn secure_boot(&self) -> bool {
        self.get("uefi.secureBoot.enabled").is_some_and(is_true)
    }

    /// `cpuid.coresPerSocket`, if set: the virtual CPUs are `numvcpus / coresPerSocket`
    /// sockets of this many cores. Zero or a non-number is a syntax error, as for `numvcpus`.
    pub fn cores_per_socket(&self) -> Result<Option<u32>> {
        match self.number::<u32>("cpuid.coresPerSocket")? {
            Some(0) => Err(self.bad_value("cpuid.coresPerSocket", "0 cores per socket")),
            n => Ok(n),
        }
    }

    /// Every present virtual hard disk, ordered by bus, then controller, then unit.
    ///
    /// A device `<bus>X:Y` is a disk when all of these hold (see `formats/VMX.md`):
    /// - `<bus>X:Y.present` is `TRUE` (any case); a missing `present` means absent, as VMware
    ///   treats it;
    /// - its controller is present: `<bus>X.present` is `TRUE`, except that IDE channels are
    ///   built into the chipset and count as present unless explicitly `FALSE`;
    /// - `<bus>X:Y.fileName` ends in `.vmdk` (any case), which excludes ISO images and host
    ///   devices;
    /// - `<bus>X:Y.deviceType` does not mention `cdrom` (`cdrom-image`, `atapi-cdrom`,
    ///   `cdrom-raw`).
    ///
    /// Independent disks are included; their `<bus>X:Y.mode` is available through [`Self::get`].
    pub fn disks(&self) -> Vec<VmxDisk> {
        let map = self.key_map();
        let mut out = Vec::new();
        for (key, file_name) in &self.entries {
            let lower = key.to_ascii_lowercase();
            let Some((bus, controller, Some(unit), "filename")) = parse_device_key(&lower) else {
                continue;
            };
            let device = format!("{bus}{controller}:{unit}");
            let present = map
                .get(format!("{device}.present").as_str())
                .is_some_and(|v| is_true(v));
            if !present || !controller_present(&map, bus, controller) {
                continue;
            }
            if !file_name.to_ascii_lowercase().ends_with(".vmdk") {
                continue;
            }
            let device_type = map
                .get(format!("{device}.devicetype").as_str())
                .map(|s| s.to_string());
            if device_type
                .as_deref()
                .is_some_and(|t| t.to_ascii_lowercase().contains("cdrom"))
            {
                continue;
            }
            out.push(VmxDisk {
                device,
                bus,
                controller,
                unit,
                file_name: file_name.clone(),
                device_type,
            });
        }
        out.sort_by_key(|d| (d.bus, d.controller, d.unit));
        out
    }

    /// [`Self::disks`] with each `fileName` resolved by [`resolve_disk_path`].
    ///
    /// Fails with [`Error::Usage`] when two disks resolve to the same file. That happens when
    /// the basename fallback maps disks from two datastores (`/vmfs/volumes/ds1/vm/vm.vmdk`
    /// and `/vmfs/volumes/ds2/vm/vm.vmdk`) onto one local copy; backing up one file twice under
    /// two device names would be silent data loss for the other disk.
    pub fn disk_paths(&self) -> Result<Vec<(VmxDisk, PathBuf)>> {
        let mut owner: HashMap<PathBuf, String> = HashMap::new();
        let mut out = Vec::new();
        for disk in self.disks() {
            let path = resolve_disk_path(&self.path, &disk.file_name);
            if let Some(other) = owner.insert(path.clone(), disk.device.clone()) {
                return Err(Error::Usage(format!(
                    "{}: disks {other} and {} both resolve to {}: their absolute paths do not \
                     exist here, and their basenames collide; make the datastores visible at \
                     their /vmfs/volumes paths",
                    self.path.display(),
                    disk.device,
                    path.display()
                )));
            }
            out.push((disk, path));
        }
        Ok(out)
    }

    /// Present network adapters (`ethernetN.present = "TRUE"`), ordered by `N`.
    pub fn nics(&self) -> Vec<VmxNic> {
        let map = self.key_map();
        let mut indices: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, v)| is_true(v))
            .filter_map(|(k, _)| {
                let lower = k.to_ascii_lowercase();
                let n = lower.strip_prefix("ethernet")?.strip_suffix(".present")?;
                parse_canonical_u32(n)
            })
            .collect();
        indices.sort_unstable();
        indices.dedup();
        indices
            .into_iter()
            .map(|n| {
                let field = |name: &str| {
                    map.get(format!("ethernet{n}.{name}").as_str())
                        .map(|s| s.to_string())
                };
                let address_type = field("addresstype");
                let mac = if address_type
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("static"))
                {
                    field("address")
                } else {
                    field("generatedaddress").or_else(|| field("address"))
                };
                VmxNic {
                    index: n,
                    virtual_dev: field("virtualdev"),
                    network_name: field("networkname"),
                    address_type,
                    mac,
                    start_connected: field("startconnected").is_none_or(|v| is_true(&v)),
                    dvs_portgroup_id: field("dvs.portgroupid"),
                    dvs_switch_id: field("dvs.switchid"),
                }
            })
            .collect()
    }

    /// Present disk controllers, ordered by bus then number: every `<bus>X.present = "TRUE"`,
    /// plus the implicit IDE channels that hold one of [`Self::disks`].
    pub fn controllers(&self) -> Vec<VmxController> {
        let map = self.key_map();
        let mut found: Vec<(Bus, u32)> = self
            .entries
            .iter()
            .filter(|(_, v)| is_true(v))
            .filter_map(|(k, _)| match parse_device_key(&k.to_ascii_lowercase()) {
                Some((bus, c, None, "present")) => Some((bus, c)),
                _ => None,
            })
            .collect();
        found.extend(
            self.disks()
                .iter()
                .filter(|d| d.bus == Bus::Ide)
                .map(|d| (d.bus, d.controller)),
        );
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .map(|(bus, index)| VmxController {
                bus,
                index,
                virtual_dev: map
                    .get(format!("{bus}{index}.virtualdev").as_str())
                    .map(|s| s.to_string()),
            })
            .collect()
    }

    /// The value and 1-based line of `key` (ASCII-case-insensitive), for callers that report
    /// errors about individual entries.
    pub(crate) fn get_with_line(&self, key: &str) -> Option<(&str, usize)> {
        self.find(key)
            .map(|i| (self.entries[i].1.as_str(), self.line_of(i)))
    }

    /// Lowercased key -> (value, line), built once for callers doing many lookups (a `.vmsd`
    /// with many snapshots would otherwise cost a linear scan per key).
    pub(crate) fn line_map(&self) -> HashMap<String, (&str, usize)> {
        let mut map = HashMap::with_capacity(self.entries.len());
        for (i, (k, v)) in self.entries.iter().enumerate() {
            map.entry(k.to_ascii_lowercase())
                .or_insert((v.as_str(), self.line_of(i)));
        }
        map
    }

    fn key_map(&self) -> HashMap<String, &str> {
        let mut map = HashMap::with_capacity(self.entries.len());
        for (k, v) in &self.entries {
            map.entry(k.to_ascii_lowercase()).or_insert(v.as_str());
        }
        map
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))
    }

    /// Line of entry `i`, or 0 when the entries were edited after parsing and no longer line up.
    fn line_of(&self, i: usize) -> usize {
        self.lines.get(i).copied().unwrap_or(0)
    }

    fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.bad_value(key, "not a number")),
        }
    }

    fn bad_value(&self, key: &str, what: &str) -> Error {
        let (value, line) = self.get_with_line(key).unwrap_or(("", 0));
        Error::Syntax {
            path: self.path.clone(),
            line,
            what: format!("{key} = \"{}\": {what}", snippet(value)),
        }
    }
}

/// Reads `path` as UTF-8 text of at most [`MAX_DICT_BYTES`], checking the size before reading.
pub(crate) fn read_bounded_text(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, None, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, None, e))?.len();
    if len > MAX_DICT_BYTES {
        return Err(too_large(path, len));
    }
    // `take` guards against a file that grows between the stat and the read.
    let mut bytes = Vec::new();
    file.take(MAX_DICT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, None, e))?;
    if bytes.len() as u64 > MAX_DICT_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error::Syntax {
            path: path.to_path_buf(),
            line,
            what: "not valid UTF-8 (vdar reads only UTF-8 .vmx/.vmsd files; VMware has written \
                   UTF-8 since Workstation 6 and ESX 3.5)"
                .to_string(),
        }
    })
}

fn too_large(path: &Path, len: u64) -> Error {
    Error::unsupported(
        path,
        format!("{len} bytes > {MAX_DICT_BYTES} byte limit for a VMware dictionary file"),
    )
}

/// Resolves a disk `fileName` from a `.vmx` or `.vmsd` to a local path.
///
/// The rule (normative in `formats/VMX.md`):
/// 1. A relative name resolves against the directory holding the `.vmx`/`.vmsd`, as VMware
///    resolves it.
/// 2. An absolute name (`/vmfs/volumes/<datastore>/<vm>/x.vmdk`, typical for disks on another
///    datastore) is used as is when it exists locally.
/// 3. Otherwise, and for Windows absolute names (`C:\...`, `\\server\...`) written by
///    Workstation, the basename is looked up in the `.vmx` directory: a backup proxy usually
///    sees a copy or mount of the VM folder, not the host's `/vmfs` tree.
///
/// Rule 3 can map two disks onto one file; [`VmxFile::disk_paths`] detects that.
pub fn resolve_disk_path(vmx_path: &Path, file_name: &str) -> PathBuf {
    let dir = vmx_path.parent().unwrap_or(Path::new(""));
    if let Some(base) = windows_absolute_basename(file_name) {
        return dir.join(base);
    }
    let p = Path::new(file_name);
    if !p.is_absolute() {
        return dir.join(p);
    }
    if p.exists() {
        return p.to_path_buf();
    }
    match p.file_name() {
        Some(base) => dir.join(base),
        // `/` or a path ending in `..`: nothing sensible to fall back to; opening it will
        // report the error with the name as written.
        None => p.to_path_buf(),
    }
}

/// The basename of a Windows absolute path (`C:\VMs\a.vmdk`, `\\srv\share\a.vmdk`), if it is one.
fn windows_absolute_basename(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
    if !drive && !name.starts_with("\\\\") {
        return None;
    }
    name.rsplit(['\\', '/']).next().filter(|s| !s.is_empty())
}

/// Returns why the VM beside `vmx_path` is probably powered on (the files that say so), or
/// `None` if nothing suggests it.
///
/// A running VM keeps writing its newest redo log, so backing up its current state gives a torn
/// image; back up a snapshot instead. The signs are a swap file (`*.vswp`, created at power-on
/// and deleted at power-off) or a lock (`*.lck` files or directories, as Workstation and
/// hosted products make; `.lck-*` files, as ESXi makes on NFS datastores) in the `.vmx`
/// directory. On VMFS, locks are on-disk and invisible, and `sched.swap.dir` can move the swap
/// file elsewhere, so `None` does not prove the VM is off. An unreadable directory gives `None`.
pub fn vm_looks_powered_on(vmx_path: &Path) -> Option<String> {
    let dir = match vmx_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut hits: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            l.ends_with(".vswp") || l.ends_with(".lck") || l.starts_with(".lck-")
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort();
    let more = hits.len().saturating_sub(3);
    hits.truncate(3);
    let mut list = hits.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    // Only the evidence: the caller says what it means, once.
    Some(format!("{list} beside the .vmx"))
}

/// Parses one line: `Ok(None)` for blank and comment lines, `Ok(Some((key, raw value bytes)))`
/// for an entry, `Err(what)` otherwise. Grammar in `formats/VMX.md`.
fn parse_line(line: &str) -> std::result::Result<Option<(&str, Vec<u8>)>, String> {
    let is_ws = |c: char| c == ' ' || c == '\t';
    let rest = line.trim_start_matches(is_ws);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let key_end = rest
        .find(|c: char| is_ws(c) || c == '=' || c == '#')
        .unwrap_or(rest.len());
    let key = &rest[..key_end];
    if key.is_empty() {
        return Err("expected `key = value`, found `=` with no key".to_string());
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!("control character {c:?} in key `{}`", snippet(key)));
    }
    let rest = rest[key_end..].trim_start_matches(is_ws);
    let Some(rest) = rest.strip_prefix('=') else {
        return Err(format!(
            "expected `key = value`, found `{}`",
            snippet(line.trim_matches(is_ws))
        ));
    };
    let rest = rest.trim_start_matches(is_ws);
    let (raw, after) = if let Some(quoted) = rest.strip_prefix('"') {
        // VMware never writes a raw `"` inside a value (it escapes it as `|22`), so the first
        // quote closes the value.
        let Some(end) = quoted.find('"') else {
            return Err(format!("unterminated quoted value for `{}`", snippet(key)));
        };
        (&quoted[..end], &quoted[end + 1..])
    } else {
        // Unquoted values (`config.version = 8`) appear in hand-edited files; VMware accepts
        // them. They end at whitespace or a comment.
        let end = rest
            .find(|c: char| is_ws(c) || c == '#' || c == '"')
            .unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    let after = after.trim_start_matches(is_ws);
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!(
            "unexpected `{}` after the value of `{}`",
            snippet(after),
            snippet(key)
        ));
    }
    Ok(Some((key, unescape(raw))))
}

/// Decodes `|XX` (two hex digits, either case) to the byte 0xXX. A `|` not followed by two hex
/// digits stays literal, as in VMware's own decoder, so old hand-written values survive.
fn unescape(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'|' {
            let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                // Two hex digits are at most 0xff, so the cast cannot truncate.
                out.push((h << 4 | l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

fn controller_present(map: &HashMap<String, &str>, bus: Bus, controller: u32) -> bool {
    match map.get(format!("{bus}{controller}.present").as_str()) {
        Some(v) => is_true(v),
        // IDE channels are part of the chipset: ESXi does not write `ide1.present` for a VM
        // whose CD-ROM sits on ide1:0.
        None => bus == Bus::Ide,
    }
}

/// Splits a lowercased device key: `scsi0:1.filename` -> (Scsi, 0, Some(1), "filename"),
/// `scsi0.present` -> (Scsi, 0, None, "present").
fn parse_device_key(key: &str) -> Option<(Bus, u32, Option<u32>, &str)> {
    let (bus, rest) = Bus::ALL
        .iter()
        .find_map(|b| key.strip_prefix(b.as_str()).map(|r| (*b, r)))?;
    let (dev, attr) = rest.split_once('.')?;
    let (controller, unit) = match dev.split_once(':') {
        Some((c, u)) => (c, Some(parse_canonical_u32(u)?)),
        None => (dev, None),
    };
    Some((bus, parse_canonical_u32(controller)?, unit, attr))
}

/// Decimal without sign or leading zeros. Rejecting `scsi0:01` keeps one spelling per device,
/// so that `.present` and `.fileName` lookups cannot disagree about which device they mean.
fn parse_canonical_u32(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// At most 60 characters of `s`, for error messages about possibly huge hostile lines.
pub(crate) fn snippet(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modelled on an ESXi 7 `.vmx`, with a few devices added to cover every rule.
    const ESXI_VMX: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
# hand-added comment
displayName = "web |22prod|22 |7C eu"
guestOS = "ubuntu-64"
numvcpus = "4"
memSize = "8192"
firmware = "efi"
scsi0.virtualDev = "lsilogic"
scsi0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "web-000002.vmdk"
scsi0:0.present = "TRUE"
scsi0:1.fileName = "web_1.vmdk"
scsi0:1.present = "FALSE"
scsi0:2.fileName = "web_2.vmdk"
scsi1.virtualDev = "pvscsi"
scsi1.present = "TRUE"
scsi1:3.fileName = "/vmfs/volumes/ds2/web/web_3.vmdk"
scsi1:3.present = "true"
scsi2.virtualDev = "lsisas1068"
scsi2.present = "FALSE"
scsi2:0.fileName = "orphan.vmdk"
scsi2:0.present = "TRUE"
sata0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "/vmfs/volumes/iso/ubuntu.iso"
sata0:0.present = "TRUE"
sata0:1.fileName = "web_4.VMDK"
sata0:1.present = "TRUE"
ide1:0.deviceType = "atapi-cdrom"
ide1:0.fileName = "CD/DVD drive 0"
ide1:0.present = "TRUE"
ide0:0.fileName = "web_ide.vmdk"
ide0:0.present = "TRUE"
nvme0.present = "TRUE"
nvme0:0.fileName = "web_5.vmdk"
nvme0:0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "vpx"
ethernet0.generatedAddress = "00:50:56:aa:bb:cc"
ethernet0.present = "TRUE"
ethernet1.virtualDev = "e1000"
ethernet1.present = "FALSE"
ethernet2.virtualDev = "e1000e"
ethernet2.addressType = "static"
ethernet2.address = "00:50:56:00:00:02"
ethernet2.present = "TRUE"
annotation = "line one|0Aline two|7Cpipe |zz |4"
"#;

    fn vmx(text: &str) -> VmxFile {
        VmxFile::parse(Path::new("/vmfs/volumes/ds1/web/web.vmx"), text).expect("test vmx parses")
    }

    fn syntax_line(text: &str) -> (usize, String) {
        match VmxFile::parse(Path::new("t.vmx"), text) {
            Err(Error::Syntax { line, what, .. }) => (line, what),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn esxi_disks_in_bus_controller_unit_order() {
        let v = vmx(ESXI_VMX);
        let disks = v.disks();
        let got: Vec<(&str, &str)> = disks
            .iter()
            .map(|d| (d.device.as_str(), d.file_name.as_str()))
            .collect();
        // Left out: scsi0:1 (present FALSE), scsi0:2 (no present), scsi2:0 (controller absent),
        // sata0:0 (ISO), ide1:0 (CD-ROM).
        assert_eq!(
            got,
            [
                ("scsi0:0", "web-000002.vmdk"),
                ("scsi1:3", "/vmfs/volumes/ds2/web/web_3.vmdk"),
                ("sata0:1", "web_4.VMDK"),
                ("ide0:0", "web_ide.vmdk"),
                ("nvme0:0", "web_5.vmdk"),
            ]
        );
        let d = &v.disks()[1];
        assert_eq!((d.bus, d.controller, d.unit), (Bus::Scsi, 1, 3));
        assert_eq!(v.disks()[0].device_type.as_deref(), Some("scsi-hardDisk"));
        assert_eq!(v.disks()[2].device_type, None);
    }

    #[test]
    fn esxi_escapes_and_getters() {
        let v = vmx(ESXI_VMX);
        assert_eq!(v.display_name(), Some("web \"prod\" | eu"));
        assert_eq!(v.get("ANNOTATION"), Some("line one\nline two|pipe |zz |4"));
        assert_eq!(v.guest_os(), Some("ubuntu-64"));
        assert_eq!(v.num_cpus().expect("numvcpus"), 4);
        assert_eq!(v.memory_mb().expect("memsize"), Some(8192));
        assert_eq!(v.hw_version().expect("hw"), Some(19));
        assert_eq!(v.firmware(), Some("efi"));
        // Keys are kept as written, in order.
        assert_eq!(v.entries[0], (".encoding".into(), "UTF-8".into()));
        assert_eq!(v.entries[3].0, "displayName");
        assert_eq!(v.entries[4].0, "guestOS");
        assert_eq!(v.get_with_line("memsize"), Some(("8192", 8)));
    }

    #[test]
    fn esxi_nics_and_controllers() {
        let v = vmx(ESXI_VMX);
        let nics = v.nics();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].index, 0);
        assert_eq!(nics[0].virtual_dev.as_deref(), Some("vmxnet3"));
        assert_eq!(nics[0].network_name.as_deref(), Some("VM Network"));
        assert_eq!(nics[0].mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert_eq!(nics[1].index, 2);
        assert_eq!(nics[1].address_type.as_deref(), Some("static"));
        assert_eq!(nics[1].mac.as_deref(), Some("00:50:56:00:00:02"));

        let controllers = v.controllers();
        let c: Vec<(Bus, u32, Option<&str>)> = controllers
            .iter()
            .map(|c| (c.bus, c.index, c.virtual_dev.as_deref()))
            .collect();
        assert_eq!(
            c,
            [
                (Bus::Scsi, 0, Some("lsilogic")),
                (Bus::Scsi, 1, Some("pvscsi")),
                (Bus::Sata, 0, None),
                (Bus::Ide, 0, None),
                (Bus::Nvme, 0, None),
            ]
        );
    }

    /// Issue 14 items 3 and 4: the facts an OVF needs beyond the hardware list: secure boot,
    /// cores per socket, a NIC's connection state and its distributed port group.
    #[test]
    fn r14_boot_cpu_topology_and_nic_wiring() {
        let v = vmx("numvcpus = \"4\"\ncpuid.coresPerSocket = \"2\"\n\
             firmware = \"efi\"\nuefi.secureBoot.enabled = \"TRUE\"\n\
             ethernet0.present = \"TRUE\"\nethernet0.startConnected = \"FALSE\"\n\
             ethernet0.networkName = \"VM Network\"\n\
             ethernet1.present = \"TRUE\"\nethernet1.startConnected = \"TRUE\"\n\
             ethernet1.dvs.switchId = \"50 1c 2d 3e 4f 50 61 72-83 94 a5 b6 c7 d8 e9 fa\"\n\
             ethernet1.dvs.portgroupId = \"dvportgroup-1001\"\nethernet1.dvs.portId = \"17\"\n\
             ethernet2.present = \"TRUE\"\n");
        assert!(v.secure_boot());
        assert_eq!(v.cores_per_socket().expect("cores"), Some(2));
        let nics = v.nics();
        assert!(!nics[0].start_connected);
        assert_eq!(nics[0].dvs_portgroup_id, None);
        assert!(nics[1].start_connected);
        assert_eq!(nics[1].network_name, None);
        assert_eq!(
            nics[1].dvs_portgroup_id.as_deref(),
            Some("dvportgroup-1001")
        );
        assert!(nics[1]
            .dvs_switch_id
            .as_deref()
            .is_some_and(|s| s.starts_with("50 1c")));
        // No `startConnected`: connected, as VMware powers it on.
        assert!(nics[2].start_connected);

        let v = vmx("uefi.secureBoot.enabled = \"false\"\n");
        assert!(!v.secure_boot());
        assert_eq!(v.cores_per_socket().expect("absent"), None);
        let v = vmx("a = \"1\"\ncpuid.coresPerSocket = \"0\"\n");
        assert!(matches!(
            v.cores_per_socket(),
            Err(Error::Syntax { line: 2, .. })
        ));
        let v = vmx("cpuid.coresPerSocket = \"two\"\n");
        assert!(v.cores_per_socket().is_err());
    }

    #[test]
    fn crlf_bom_unquoted_and_trailing_comments() {
        let text = "\u{feff}.encoding = \"UTF-8\"\r\nconfig.version = 8\r\n\
                    \tnumvcpus=\"2\"   # two\r\nempty =\r\nsp = \"a b\"\r\n";
        let v = vmx(text);
        assert_eq!(v.get("config.version"), Some("8"));
        assert_eq!(v.num_cpus().expect("numvcpus"), 2);
        assert_eq!(v.get("empty"), Some(""));
        assert_eq!(v.get("sp"), Some("a b"));
        assert_eq!(v.entries.len(), 5);
    }

    #[test]
    fn defaults_and_bad_numbers() {
        let v = vmx("memSize = \"lots\"\n");
        assert_eq!(v.num_cpus().expect("default"), 1);
        assert!(matches!(v.memory_mb(), Err(Error::Syntax { line: 1, .. })));
        let v = vmx("a = \"1\"\nnumvcpus = \"0\"\n");
        assert!(matches!(v.num_cpus(), Err(Error::Syntax { line: 2, .. })));
    }

    #[test]
    fn malformed_lines_report_their_line() {
        assert_eq!(syntax_line("a = \"1\"\n\ngarbage\n").0, 3);
        assert_eq!(syntax_line("a \"1\"\n").0, 1);
        assert_eq!(syntax_line("a = \"1\"\r\nb = \"open\r\n").0, 2);
        assert_eq!(syntax_line("a = \"1\" trailing\n").0, 1);
        assert_eq!(syntax_line("a = 1 2\n").0, 1);
        assert_eq!(syntax_line(" = \"x\"\n").0, 1);
        let (line, what) = syntax_line("scsi0:0.fileName = \"a\"\nSCSI0:0.FILENAME = \"b\"\n");
        assert_eq!(line, 2);
        assert!(what.contains("first on line 1"), "{what}");
        // `|FF` alone is not UTF-8.
        assert_eq!(syntax_line("# c\nx = \"|FF\"\n").0, 2);
        // Multi-byte UTF-8 written as escapes is fine.
        assert_eq!(vmx("x = \"caf|C3|A9\"\n").get("x"), Some("café"));
    }

    #[test]
    fn hostile_line_is_truncated_in_the_message() {
        let text = format!("{}\n", "x".repeat(100_000));
        let (line, what) = syntax_line(&text);
        assert_eq!(line, 1);
        assert!(what.len() < 200, "{}", what.len());
    }

    #[test]
    fn odd_device_keys_are_not_disks() {
        let v = vmx("scsi0.present = \"TRUE\"\n\
             scsi0:01.present = \"TRUE\"\nscsi0:01.fileName = \"a.vmdk\"\n\
             scsi0:1.fileName = \"b.vmdk\"\n\
             identity:0.present = \"TRUE\"\nidentity:0.fileName = \"c.vmdk\"\n\
             ide0.present = \"FALSE\"\nide0:0.present = \"TRUE\"\nide0:0.fileName = \"d.vmdk\"\n");
        assert!(v.disks().is_empty(), "{:?}", v.disks());
    }

    #[test]
    fn resolve_relative_absolute_and_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vmx_path = dir.path().join("vm.vmx");
        assert_eq!(
            resolve_disk_path(&vmx_path, "vm.vmdk"),
            dir.path().join("vm.vmdk")
        );
        assert_eq!(
            resolve_disk_path(Path::new("vm.vmx"), "vm.vmdk"),
            PathBuf::from("vm.vmdk")
        );
        // An absolute path that exists is used as is.
        let other = tempfile::tempdir().expect("tempdir");
        let real = other.path().join("x.vmdk");
        std::fs::write(&real, b"").expect("write");
        let real_str = real.to_str().expect("utf-8 temp path");
        assert_eq!(resolve_disk_path(&vmx_path, real_str), real);
        // One that does not exist falls back to the basename beside the .vmx.
        assert_eq!(
            resolve_disk_path(&vmx_path, "/vmfs/volumes/ds2/vm/vm_1.vmdk"),
            dir.path().join("vm_1.vmdk")
        );
        assert_eq!(
            resolve_disk_path(&vmx_path, "C:\\VMs\\vm\\vm_2.vmdk"),
            dir.path().join("vm_2.vmdk")
        );
    }

    #[test]
    fn disk_paths_reject_two_disks_on_one_file() {
        let v = VmxFile::parse(
            Path::new("/nonexistent-vdar-test/vm.vmx"),
            "scsi0.present = \"TRUE\"\n\
             scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"/vmfs/volumes/a/vm/vm.vmdk\"\n\
             scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"/vmfs/volumes/b/vm/vm.vmdk\"\n",
        )
        .expect("parses");
        match v.disk_paths() {
            Err(Error::Usage(m)) => assert!(m.contains("scsi0:0 and scsi0:1"), "{m}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
        let v = vmx(ESXI_VMX);
        let paths = v.disk_paths().expect("distinct");
        assert_eq!(
            paths[0].1,
            Path::new("/vmfs/volumes/ds1/web/web-000002.vmdk")
        );
    }

    #[test]
    fn powered_on_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vmx_path = dir.path().join("vm.vmx");
        std::fs::write(&vmx_path, ESXI_VMX).expect("write");
        std::fs::write(dir.path().join("vm.vmdk"), b"").expect("write");
        assert_eq!(vm_looks_powered_on(&vmx_path), None);

        std::fs::create_dir(dir.path().join("vm.vmx.lck")).expect("mkdir");
        let why = vm_looks_powered_on(&vmx_path).expect("lock dir noticed");
        assert!(why.contains("vm.vmx.lck"), "{why}");

        std::fs::remove_dir(dir.path().join("vm.vmx.lck")).expect("rmdir");
        std::fs::write(dir.path().join("vm-5a1b2c3d.vswp"), b"").expect("write");
        let why = vm_looks_powered_on(&vmx_path).expect("swap noticed");
        assert!(why.contains("vm-5a1b2c3d.vswp"), "{why}");
    }

    #[test]
    fn read_checks_size_and_encoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.vmx");
        let f = File::create(&big).expect("create");
        // Sparse: costs no disk space, and `read` must refuse it from the size alone.
        f.set_len(MAX_DICT_BYTES + 1).expect("set_len");
        assert!(matches!(
            VmxFile::read(&big),
            Err(Error::Unsupported { .. })
        ));

        let latin1 = dir.path().join("latin1.vmx");
        std::fs::write(&latin1, b"a = \"1\"\nb = \"caf\xe9\"\n").expect("write");
        assert!(matches!(
            VmxFile::read(&latin1),
            Err(Error::Syntax { line: 2, .. })
        ));

        let ok = dir.path().join("ok.vmx");
        std::fs::write(&ok, ESXI_VMX).expect("write");
        assert_eq!(VmxFile::read(&ok).expect("reads").disks().len(), 5);

        assert!(matches!(
            VmxFile::read(&dir.path().join("missing.vmx")),
            Err(Error::Io { .. })
        ));
    }
}
