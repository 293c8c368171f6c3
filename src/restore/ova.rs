//! OVA output: a tar of an OVF 1.x descriptor, a `.mf` manifest with the SHA256 of each file,
//! and the VM's disks as streamOptimized VMDKs, in that order. What goes into the descriptor
//! and the tar is specified in `formats/OVF.md`; the code follows that document.
//!
//! The tar header of each member carries its size and the OVF carries each disk's file size
//! and populated size, none of which is known before the disk is compressed. So each disk is
//! first spooled, compressed, to an unlinked temporary file (hashing as it goes), and the
//! archive is assembled when the VM's last disk is done: the OVA can then go to a pipe.
//! Spool space is the compressed size of the VM's disks.
//!
//! Invariants:
//! - The descriptor is the first member and the manifest the second, as VMware's exports and
//!   ova-compose place them (OVF 1.1 allows the manifest right after the descriptor or last;
//!   right after it lets a reader check each disk as it streams past).
//! - Members are POSIX ustar entries; a name that does not fit the 100-byte ustar name field,
//!   or is not ASCII, also gets a PAX extended header (`path=`) before it, never a GNU
//!   `././@LongLink` entry, which POSIX readers do not understand.
//! - Member and file names come from [`file_stem`]: characters that are unsafe in a file name
//!   are replaced. The VM's name inside the descriptor is the original one, XML-escaped.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::guest_os;
use crate::error::{Error, Result};
use crate::input::vmx::{Bus, VmxController, VmxDisk, VmxFile, VmxNic};

/// A writer that hashes (SHA256) and counts what passes through.
pub struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    /// The inner writer, the hex SHA256 and the byte count.
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex(&self.hash.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where an OVA write failed: the byte offset in the OVA or in a disk's spool file. It travels
/// inside the `io::Error` through the buffer and the tar builder, which pass errors on but do
/// not know the offset; [`located`] turns it into the library's error.
#[derive(Debug)]
enum FailedAt {
    /// Writing the OVA, at this byte (the bytes accepted before it).
    Output(u64),
    /// Reading the spool of this member, at this byte.
    Spool(String, u64),
}

/// An error at a [`FailedAt`] place, boxed inside an `io::Error`.
#[derive(Debug)]
struct Failed {
    at: FailedAt,
    cause: io::Error,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for Failed {}

fn failed(at: FailedAt, cause: io::Error) -> io::Error {
    io::Error::new(cause.kind(), Failed { at, cause })
}

/// The OVA file under its buffer: counts the bytes it accepted, so that a failed write (a full
/// file system) is reported at its byte offset, as the other outputs' are.
pub(crate) struct Positioned<W> {
    inner: W,
    at: u64,
}

impl<W: Write> Positioned<W> {
    /// `inner`, written from its start.
    pub(crate) fn new(inner: W) -> Self {
        Positioned { inner, at: 0 }
    }
}

impl<W: Write> Write for Positioned<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(b)
            .map_err(|e| failed(FailedAt::Output(self.at), e))?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .map_err(|e| failed(FailedAt::Output(self.at), e))
    }
}

/// A spool file read back into the OVA: a failed read names the spool, not the OVA.
struct SpoolReader<'a> {
    member: &'a str,
    file: &'a mut File,
    at: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self
            .file
            .read(b)
            .map_err(|e| failed(FailedAt::Spool(self.member.to_string(), self.at), e))?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The library's error for an I/O error of [`write_ova`] writing to `output`: at the offset
/// and in the file a [`FailedAt`] inside it names, else on `output` (whose writer may carry
/// its own location, as the CLI's standard output does).
pub(crate) fn located(output: &Path, e: io::Error) -> Error {
    if !e.get_ref().is_some_and(|x| x.is::<Failed>()) {
        return Error::io(output, None, e);
    }
    let f = e
        .into_inner()
        .and_then(|x| x.downcast::<Failed>().ok())
        .expect("invariant: checked to hold a Failed just above");
    match f.at {
        FailedAt::Output(at) => Error::io(output, Some(at), f.cause),
        FailedAt::Spool(member, at) => {
            Error::io(format!("OVA spool of {member}"), Some(at), f.cause)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// One spooled disk of an OVA.
pub(crate) struct OvaDisk {
    /// The archive's disk name (`scsi0:0` when it came from a .vmx).
    pub device: String,
    /// Member name in the OVA.
    pub file: String,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes held in grains.
    pub populated: u64,
    /// Size of the streamOptimized file.
    pub size: u64,
    /// Its SHA256, hex.
    pub sha256: String,
    /// The spooled file.
    pub spool: File,
}

/// XML-escapes text and attribute values (the OVF here, vSphere SOAP requests too).
pub(crate) fn x(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Not allowed in XML 1.0 at all: dropped rather than producing a broken document.
            c if c.is_control() && c != '\t' && c != '\n' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

/// OVF controller (ResourceType, ResourceSubType) for a .vmx controller.
fn controller_kind(bus: Bus, dev: Option<&str>) -> (u32, &'static str, &'static str) {
    let dev = dev.unwrap_or_default().to_ascii_lowercase();
    match bus {
        Bus::Scsi => (
            6,
            match dev.as_str() {
                "pvscsi" => "VirtualSCSI",
                "lsisas1068" => "lsilogicsas",
                "buslogic" => "buslogic",
                _ => "lsilogic",
            },
            "SCSI Controller",
        ),
        Bus::Sata => (20, "vmware.sata.ahci", "SATA Controller"),
        Bus::Ide => (5, "", "IDE Controller"),
        Bus::Nvme => (20, "vmware.nvme.controller", "NVMe Controller"),
    }
}

/// OVF NIC ResourceSubType for a .vmx `virtualDev`.
fn nic_kind(dev: Option<&str>) -> &'static str {
    match dev.unwrap_or_default().to_ascii_lowercase().as_str() {
        "vmxnet3" => "VmxNet3",
        "vmxnet2" | "vmxnet" => "VmxNet2",
        "e1000e" => "E1000e",
        "vlance" => "PCNet32",
        _ => "E1000",
    }
}

/// The network an adapter without `networkName` or a distributed port group is put on: the
/// default port group of every ESXi host.
const DEFAULT_NETWORK: &str = "VM Network";

/// The longest member name a ustar header's name field holds. The prefix field only helps
/// names with a `/`, which member names never have.
const USTAR_NAME_BYTES: usize = 100;

/// One `<Item>`: rasd elements must appear in alphabetical order (the CIM schema's sequence);
/// `extra`, VMware's `vmw:` elements as XML, follow them (the schema's trailing `xs:any`).
fn item(s: &mut String, fields: &mut [(&str, String)], extra: &[String]) {
    fields.sort_by(|a, b| a.0.cmp(b.0));
    s.push_str("      <Item>\n");
    for (k, v) in fields.iter() {
        let _ = writeln!(s, "        <rasd:{k}>{}</rasd:{k}>", x(v));
    }
    for e in extra {
        let _ = writeln!(s, "        {e}");
    }
    s.push_str("      </Item>\n");
}

/// A `<vmw:Config>` setting (a vSphere `VirtualMachineConfigSpec` property), optional for an
/// importer that does not know it, as VMware's exports mark it.
fn vmw_config(key: &str, value: &str) -> String {
    format!(
        "<vmw:Config ovf:required=\"false\" vmw:key=\"{}\" vmw:value=\"{}\"/>",
        x(key),
        x(value)
    )
}

/// The network adapter `n` is connected to, as the OVF names it, and the NetworkSection's
/// description of that network.
///
/// `networkName` (the port group's name) when the .vmx has it. A NIC on a distributed switch
/// often has none, only the port group's key: the key stands in for the name, and the
/// description says so, since vSphere deploys to a port group chosen by name. Otherwise
/// [`DEFAULT_NETWORK`].
fn nic_network(n: &VmxNic) -> (String, String) {
    if let Some(name) = n.network_name.as_deref().filter(|s| !s.is_empty()) {
        return (name.to_string(), format!("The {name} network"));
    }
    if let Some(key) = n.dvs_portgroup_id.as_deref().filter(|s| !s.is_empty()) {
        let switch = n
            .dvs_switch_id
            .as_deref()
            .map(|s| format!(" of distributed switch {s}"))
            .unwrap_or_default();
        return (
            key.to_string(),
            format!(
                "Distributed port group {key}{switch}: the .vmx names the port group by its \
                 key only; map this network to it by name when deploying"
            ),
        );
    }
    (
        DEFAULT_NETWORK.to_string(),
        format!("The {DEFAULT_NETWORK} network"),
    )
}

/// The OVF descriptor for VM `name` with `disks`, hardware from `vmx` (defaults without one:
/// 1 CPU, 1024 MiB, BIOS, an LSI Logic controller holding the disks, no NIC). Normative
/// description: `formats/OVF.md`.
pub(crate) fn ovf(name: &str, vmx: Option<&VmxFile>, disks: &[OvaDisk]) -> Result<String> {
    let hw = Hardware::of(vmx)?;
    let nics = vmx.map(|v| v.nics()).unwrap_or_default();
    let nic_networks: Vec<(String, String)> = nics.iter().map(nic_network).collect();
    let mut s = String::new();
    s.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    references(&mut s, disks);
    disk_section(&mut s, disks);
    network_section(&mut s, &nic_networks);
    virtual_system_head(&mut s, name, vmx);
    s.push_str(
        "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n      <System>\n",
    );
    let _ = writeln!(
        s,
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        \
         <vssd:InstanceID>0</vssd:InstanceID>\n        \
         <vssd:VirtualSystemIdentifier>{}</vssd:VirtualSystemIdentifier>\n        \
         <vssd:VirtualSystemType>vmx-{:02}</vssd:VirtualSystemType>\n      </System>",
        x(name),
        hw.version.unwrap_or(10)
    );
    let mut items = Items { s: &mut s, id: 1 };
    items.cpu_and_memory(&hw);
    let ctl_ids = items.controllers(&hw.controllers, !disks.is_empty());
    items.disks(name, &hw.disks, disks, &ctl_ids)?;
    items.nics(&nics, &nic_networks);
    // Boot firmware and secure boot: VMware's templates and ova-compose write both for every
    // VM; without them vSphere deploys BIOS, and an EFI guest does not boot.
    let firmware = if hw.efi { "efi" } else { "bios" };
    let _ = writeln!(s, "      {}", vmw_config("firmware", firmware));
    let _ = writeln!(
        s,
        "      {}",
        vmw_config(
            "bootOptions.efiSecureBootEnabled",
            &hw.secure_boot.to_string()
        )
    );
    s.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    Ok(s)
}

/// What the OVF says about a VM's hardware, from its .vmx or the defaults.
struct Hardware {
    cpus: u32,
    /// Cores per socket, if the .vmx sets a topology that divides the CPUs.
    cores: Option<u32>,
    memory_mb: u64,
    /// The virtual hardware version (`virtualHW.version`).
    version: Option<u32>,
    efi: bool,
    secure_boot: bool,
    controllers: Vec<VmxController>,
    /// The disks the .vmx places.
    disks: Vec<VmxDisk>,
}

impl Hardware {
    fn of(vmx: Option<&VmxFile>) -> Result<Self> {
        let cpus = match vmx {
            Some(v) => v.num_cpus()?,
            None => 1,
        };
        // A topology that does not divide the CPUs cannot power on, and vSphere refuses such
        // an OVF: it is left out, which means one core per socket.
        let cores = match vmx {
            Some(v) => v.cores_per_socket()?.filter(|c| cpus % c == 0),
            None => None,
        };
        let memory_mb = match vmx {
            Some(v) => v.memory_mb()?.unwrap_or(1024),
            None => 1024,
        };
        let version = match vmx {
            Some(v) => v.hw_version()?,
            None => None,
        };
        let efi = vmx
            .and_then(|v| v.firmware())
            .is_some_and(|f| f.eq_ignore_ascii_case("efi"));
        Ok(Hardware {
            cpus,
            cores,
            memory_mb,
            version,
            efi,
            secure_boot: efi && vmx.is_some_and(|v| v.secure_boot()),
            controllers: vmx.map(|v| v.controllers()).unwrap_or_default(),
            disks: vmx.map(|v| v.disks()).unwrap_or_default(),
        })
    }
}

/// `<References>`: one file per disk.
fn references(s: &mut String, disks: &[OvaDisk]) {
    s.push_str("  <References>\n");
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>",
            x(&d.file),
            i + 1,
            d.size
        );
    }
    s.push_str("  </References>\n");
}

/// `<DiskSection>`: each disk's capacity and populated size.
fn disk_section(s: &mut String, disks: &[OvaDisk]) {
    s.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" \
             ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\" \
             ovf:populatedSize=\"{}\"/>",
            d.capacity,
            d.populated,
            n = i + 1
        );
    }
    s.push_str("  </DiskSection>\n");
}

/// `<NetworkSection>`: every network a NIC is on, once, in NIC order; none without NICs.
fn network_section(s: &mut String, nic_networks: &[(String, String)]) {
    let mut networks: Vec<&(String, String)> = Vec::new();
    for n in nic_networks {
        if !networks.iter().any(|m| m.0 == n.0) {
            networks.push(n);
        }
    }
    if networks.is_empty() {
        return;
    }
    s.push_str("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n");
    for (name, description) in &networks {
        let _ = writeln!(
            s,
            "    <Network ovf:name=\"{}\">\n      <Description>{}</Description>\n    </Network>",
            x(name),
            x(description)
        );
    }
    s.push_str("  </NetworkSection>\n");
}

/// The opening of `<VirtualSystem>`: its id, name and guest operating system.
fn virtual_system_head(s: &mut String, name: &str, vmx: Option<&VmxFile>) {
    let _ = writeln!(
        s,
        "  <VirtualSystem ovf:id=\"{}\">\n    <Info>A virtual machine</Info>\n    <Name>{}</Name>",
        x(name),
        x(vmx.and_then(|v| v.display_name()).unwrap_or(name))
    );
    if let Some(os) = vmx.and_then(|v| v.guest_os()) {
        // vSphere reads vmw:osType, other importers ovf:id: both from VMware's key table.
        let g = guest_os::lookup(os);
        let _ = writeln!(
            s,
            "    <OperatingSystemSection ovf:id=\"{}\" vmw:osType=\"{}\">\n      \
             <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>",
            g.cim.0,
            x(g.vsphere_id)
        );
    }
}

/// The `<Item>`s of the VirtualHardwareSection, numbered (`InstanceID`) in the order written.
struct Items<'s> {
    s: &'s mut String,
    /// The next InstanceID (0 is the System).
    id: u32,
}

impl Items<'_> {
    fn next_id(&mut self) -> String {
        let i = self.id;
        self.id += 1;
        i.to_string()
    }

    fn cpu_and_memory(&mut self, hw: &Hardware) {
        let (cpus, mem) = (hw.cpus, hw.memory_mb);
        let cores_xml: Vec<String> = hw
            .cores
            .map(|c| format!("<vmw:CoresPerSocket ovf:required=\"false\">{c}</vmw:CoresPerSocket>"))
            .into_iter()
            .collect();
        let cpu_id = self.next_id();
        item(
            self.s,
            &mut [
                ("AllocationUnits", "hertz * 10^6".into()),
                ("Description", "Number of Virtual CPUs".into()),
                ("ElementName", format!("{cpus} virtual CPU(s)")),
                ("InstanceID", cpu_id),
                ("ResourceType", "3".into()),
                ("VirtualQuantity", cpus.to_string()),
            ],
            &cores_xml,
        );
        let mem_id = self.next_id();
        item(
            self.s,
            &mut [
                ("AllocationUnits", "byte * 2^20".into()),
                ("Description", "Memory Size".into()),
                ("ElementName", format!("{mem}MB of memory")),
                ("InstanceID", mem_id),
                ("ResourceType", "4".into()),
                ("VirtualQuantity", mem.to_string()),
            ],
            &[],
        );
    }

    /// Controllers: those of the .vmx; an LSI Logic one when there is none to hold the disks.
    /// Returns each one's (bus, index, InstanceID).
    fn controllers(&mut self, vmx: &[VmxController], has_disks: bool) -> Vec<(Bus, u32, String)> {
        let mut ctls = vmx
            .iter()
            .map(|c| (c.bus, c.index, c.virtual_dev.clone()))
            .collect::<Vec<_>>();
        if ctls.is_empty() && has_disks {
            ctls.push((Bus::Scsi, 0, None));
        }
        let mut ctl_ids = Vec::new();
        for (bus, index, dev) in &ctls {
            let (rt, sub, label) = controller_kind(*bus, dev.as_deref());
            let iid = self.next_id();
            let mut f = vec![
                ("Address", index.to_string()),
                ("Description", format!("{label} {index}")),
                ("ElementName", format!("{label} {index}")),
                ("InstanceID", iid.clone()),
                ("ResourceType", rt.to_string()),
            ];
            if !sub.is_empty() {
                f.push(("ResourceSubType", sub.to_string()));
            }
            item(self.s, &mut f, &[]);
            ctl_ids.push((*bus, *index, iid));
        }
        ctl_ids
    }

    /// Disks: placed where the .vmx had them; disks the .vmx does not name go on the first
    /// controller's free units (7 is the SCSI controller's own).
    fn disks(
        &mut self,
        vm: &str,
        vmx_disks: &[VmxDisk],
        disks: &[OvaDisk],
        ctl_ids: &[(Bus, u32, String)],
    ) -> Result<()> {
        let mut used: Vec<(Bus, u32, u32)> = vmx_disks
            .iter()
            .map(|d| (d.bus, d.controller, d.unit))
            .collect();
        for (i, d) in disks.iter().enumerate() {
            let place = vmx_disks
                .iter()
                .find(|v| v.device.eq_ignore_ascii_case(&d.device))
                .map(|v| (v.bus, v.controller, v.unit))
                .or_else(|| {
                    let (bus, c, _) = ctl_ids.first()?;
                    let unit = (0..64u32)
                        .filter(|u| *bus != Bus::Scsi || *u != 7)
                        .find(|u| !used.contains(&(*bus, *c, *u)))?;
                    used.push((*bus, *c, unit));
                    Some((*bus, *c, unit))
                });
            let Some((bus, c, unit)) = place else {
                return Err(Error::Usage(format!(
                    "vm {vm:?}: no controller for disk {:?} in the OVF",
                    d.device
                )));
            };
            let parent = ctl_ids
                .iter()
                .find(|(b, n, _)| *b == bus && *n == c)
                .map(|(_, _, id)| id.clone())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "vm {vm:?}: disk {:?} is on {bus}{c}, which the .vmx does not declare",
                        d.device
                    ))
                })?;
            let iid = self.next_id();
            item(
                self.s,
                &mut [
                    ("AddressOnParent", unit.to_string()),
                    ("ElementName", format!("Hard Disk {}", i + 1)),
                    ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
                    ("InstanceID", iid),
                    ("Parent", parent),
                    ("ResourceType", "17".into()),
                ],
                &[],
            );
        }
        Ok(())
    }

    /// Network adapters, each on its network (see [`nic_network`]).
    fn nics(&mut self, nics: &[VmxNic], nic_networks: &[(String, String)]) {
        for (i, (n, (network, _))) in nics.iter().zip(nic_networks).enumerate() {
            let iid = self.next_id();
            item(
                self.s,
                &mut [
                    ("AddressOnParent", (7 + i).to_string()),
                    // Connected at power-on: `startConnected`.
                    ("AutomaticAllocation", n.start_connected.to_string()),
                    ("Connection", network.clone()),
                    ("ElementName", format!("Network adapter {}", i + 1)),
                    ("InstanceID", iid),
                    ("ResourceSubType", nic_kind(n.virtual_dev.as_deref()).into()),
                    ("ResourceType", "10".into()),
                ],
                &[],
            );
        }
    }
}

/// The stem of the OVA's file name and of its members' names (`<stem>.ova`, `<stem>.ovf`,
/// `<stem>.mf`, `<stem>-diskN.vmdk`) for VM `name`: `name` with `_` for each character that
/// is unsafe in a file name on a common system or special in XML or a shell: `<`, `>`, `"`,
/// `&`, `:`, `\`, `/`, `|`, `?`, `*` and control characters.
pub(crate) fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '<' | '>' | '"' | '&' | ':' | '\\' | '/' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// A ustar header for a member of `size` bytes: mode 0644, owner and group 0, `mtime`.
fn member_header(size: u64, mtime: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(kind);
    h
}

/// One PAX extended header record: `<length> <key>=<value>\n`, where `<length>` is the
/// record's byte count, its own digits included (POSIX.1-2008, pax "extended header").
fn pax_record(key: &str, value: &str) -> String {
    let rest = key.len() + value.len() + 3; // the space, the `=` and the newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// How many bytes of a long name's end [`ustar_name`] keeps: the member suffix with its disk
/// number (`-disk12.vmdk`), so that members stay distinct and keep their extension.
const USTAR_NAME_TAIL_BYTES: usize = 16;

/// What a reader without PAX support sees as the name of member `name`: ASCII (others as
/// `_`), at most [`USTAR_NAME_BYTES`]: the start and the last [`USTAR_NAME_TAIL_BYTES`].
fn ustar_name(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    if ascii.len() <= USTAR_NAME_BYTES {
        return ascii;
    }
    // ASCII: every byte offset is a character boundary.
    let tail = &ascii[ascii.len() - USTAR_NAME_TAIL_BYTES..];
    format!(
        "{}{tail}",
        &ascii[..USTAR_NAME_BYTES - USTAR_NAME_TAIL_BYTES]
    )
}

/// Appends member `name` of `size` bytes from `data`: a ustar entry, preceded by a PAX
/// extended header carrying the full name when the name is longer than the ustar field or
/// not ASCII.
fn append_member<W: Write>(
    tb: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let short = ustar_name(name);
    if short != name {
        let records = pax_record("path", name);
        let mut h = member_header(records.len() as u64, mtime, tar::EntryType::XHeader);
        h.set_path(format!("PaxHeaders/{short}"))?;
        h.set_cksum();
        tb.append(&h, records.as_bytes())?;
    }
    let mut h = member_header(size, mtime, tar::EntryType::Regular);
    h.set_path(&short)?;
    h.set_cksum();
    tb.append(&h, data)
}

/// Writes the OVA: `<stem>.ovf`, `<stem>.mf`, then the disks in References order. Members get
/// mode 0644, owner 0 and `mtime`. `output` names `w` in errors; a [`Positioned`] under `w`
/// adds the byte offset.
pub(crate) fn write_ova(
    w: &mut dyn Write,
    output: &Path,
    stem: &str,
    mtime: u64,
    ovf_text: &str,
    disks: &mut [OvaDisk],
) -> Result<()> {
    let ovf_name = format!("{stem}.ovf");
    let mf_name = format!("{stem}.mf");
    let tar_err = |e: io::Error| located(output, e);
    // OVF 1.x manifest syntax: `SHA256(name)= hex`, one line per file. The disks are
    // spooled, so their digests are known before the first byte goes out.
    let mut mf = String::new();
    let _ = writeln!(
        mf,
        "SHA256({ovf_name})= {}",
        hex(&Sha256::digest(ovf_text.as_bytes()))
    );
    for d in disks.iter() {
        let _ = writeln!(mf, "SHA256({})= {}", d.file, d.sha256);
    }
    let mut tb = tar::Builder::new(w);
    append_member(
        &mut tb,
        &ovf_name,
        mtime,
        ovf_text.len() as u64,
        ovf_text.as_bytes(),
    )
    .map_err(tar_err)?;
    append_member(&mut tb, &mf_name, mtime, mf.len() as u64, mf.as_bytes()).map_err(tar_err)?;
    for d in disks.iter_mut() {
        d.spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("OVA spool of {}", d.file), Some(0), e))?;
        let spool = SpoolReader {
            member: &d.file,
            file: &mut d.spool,
            at: 0,
        };
        append_member(&mut tb, &d.file, mtime, d.size, spool).map_err(tar_err)?;
    }
    tb.into_inner().map_err(tar_err)?.flush().map_err(tar_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(file: &str, bytes: &[u8]) -> OvaDisk {
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(bytes).unwrap();
        OvaDisk {
            device: "scsi0:0".into(),
            file: file.into(),
            capacity: 1 << 20,
            populated: bytes.len() as u64,
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
            spool,
        }
    }

    fn ovf_for(vmx_text: &str) -> String {
        let vmx = VmxFile::parse(Path::new("vm.vmx"), vmx_text).unwrap();
        ovf("vm", Some(&vmx), &[]).unwrap()
    }

    /// The `<Item>` holding `needle`.
    fn item_with<'a>(ovf: &'a str, needle: &str) -> &'a str {
        ovf.split("<Item>")
            .map(|i| i.split("</Item>").next().unwrap())
            .find(|i| i.contains(needle))
            .unwrap_or_else(|| panic!("no item with {needle}: {ovf}"))
    }

    /// Issue 14 item 2: `ubuntu-64` was written `ubuntu_64Guest` with `ovf:id="102"`.
    #[test]
    fn r14_guest_os_comes_from_the_table() {
        for (key, want) in [
            ("ubuntu-64", "ovf:id=\"94\" vmw:osType=\"ubuntu64Guest\""),
            ("other-64", "ovf:id=\"102\" vmw:osType=\"otherGuest64\""),
            (
                "windows9srv-64",
                "ovf:id=\"115\" vmw:osType=\"windows9Server64Guest\"",
            ),
            (
                "otherlinux-64",
                "ovf:id=\"101\" vmw:osType=\"otherLinux64Guest\"",
            ),
            (
                "centos7-64",
                "ovf:id=\"107\" vmw:osType=\"centos7_64Guest\"",
            ),
            // Unknown keys: the documented fallbacks.
            (
                "arm-ubuntu-64",
                "ovf:id=\"102\" vmw:osType=\"otherGuest64\"",
            ),
            ("beos", "ovf:id=\"1\" vmw:osType=\"otherGuest\""),
        ] {
            let o = ovf_for(&format!("guestOS = \"{key}\"\n"));
            assert!(
                o.contains(&format!("<OperatingSystemSection {want}>")),
                "{key}: {o}"
            );
        }
        assert!(!ovf_for("numvcpus = \"1\"\n").contains("OperatingSystemSection"));
    }

    /// Issue 14 item 3: `firmware = "efi"` and secure boot were not carried into the OVF, so
    /// the VM deployed with BIOS.
    #[test]
    fn r14_firmware_and_secure_boot_are_carried() {
        let config = |o: &str, key: &str| {
            let at = o
                .find(&format!("vmw:key=\"{key}\""))
                .unwrap_or_else(|| panic!("no {key}: {o}"));
            o[at..].split('"').nth(3).unwrap().to_string()
        };
        let o = ovf_for("firmware = \"efi\"\nuefi.secureBoot.enabled = \"TRUE\"\n");
        assert_eq!(config(&o, "firmware"), "efi");
        assert_eq!(config(&o, "bootOptions.efiSecureBootEnabled"), "true");
        assert!(o.contains(
            "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n"
        ));
        let o = ovf_for("firmware = \"efi\"\n");
        assert_eq!(config(&o, "firmware"), "efi");
        assert_eq!(config(&o, "bootOptions.efiSecureBootEnabled"), "false");
        // BIOS: secure boot needs EFI, whatever the .vmx says.
        let o = ovf_for("uefi.secureBoot.enabled = \"TRUE\"\n");
        assert_eq!(config(&o, "firmware"), "bios");
        assert_eq!(config(&o, "bootOptions.efiSecureBootEnabled"), "false");
        let o = ovf("vm", None, &[]).unwrap();
        assert_eq!(config(&o, "firmware"), "bios");
        // After the last Item, inside the VirtualHardwareSection.
        let fw = o.find("vmw:key=\"firmware\"").unwrap();
        assert!(o.rfind("</Item>").unwrap() < fw);
        assert!(fw < o.find("</VirtualHardwareSection>").unwrap());
    }

    /// Issue 14 item 4: `cpuid.coresPerSocket` was dropped.
    #[test]
    fn r14_cores_per_socket_is_carried() {
        let o = ovf_for("numvcpus = \"4\"\ncpuid.coresPerSocket = \"2\"\n");
        let cpu = item_with(&o, "<rasd:ResourceType>3<");
        assert!(
            cpu.contains("<rasd:VirtualQuantity>4</rasd:VirtualQuantity>\n        <vmw:CoresPerSocket ovf:required=\"false\">2</vmw:CoresPerSocket>"),
            "{cpu}"
        );
        // A topology that cannot power on is left out (one core per socket).
        let o = ovf_for("numvcpus = \"4\"\ncpuid.coresPerSocket = \"3\"\n");
        assert!(!o.contains("CoresPerSocket"), "{o}");
        assert!(!ovf_for("numvcpus = \"4\"\n").contains("CoresPerSocket"));
    }

    /// Issue 14 item 4: a disconnected NIC was marked `AutomaticAllocation` true, and a NIC on
    /// a distributed switch was put on "VM Network".
    #[test]
    fn r14_nic_connection_state_and_network() {
        let o = ovf_for(
            "ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\n\
             ethernet0.networkName = \"Prod\"\nethernet0.startConnected = \"FALSE\"\n\
             ethernet1.present = \"TRUE\"\nethernet1.virtualDev = \"e1000e\"\n\
             ethernet1.dvs.switchId = \"50 1c 2d 3e\"\n\
             ethernet1.dvs.portgroupId = \"dvportgroup-1001\"\n\
             ethernet2.present = \"TRUE\"\nethernet2.networkName = \"Prod\"\n\
             ethernet2.dvs.portgroupId = \"dvportgroup-7\"\n\
             ethernet3.present = \"TRUE\"\n",
        );
        let nic = |n: usize| item_with(&o, &format!("Network adapter {n}<")).to_string();
        assert!(
            nic(1).contains("<rasd:AutomaticAllocation>false<"),
            "{}",
            nic(1)
        );
        assert!(nic(1).contains("<rasd:Connection>Prod<"));
        assert!(
            nic(2).contains("<rasd:AutomaticAllocation>true<"),
            "{}",
            nic(2)
        );
        assert!(nic(2).contains("<rasd:Connection>dvportgroup-1001<"));
        // networkName wins over the port group key.
        assert!(nic(3).contains("<rasd:Connection>Prod<"));
        assert!(nic(4).contains("<rasd:Connection>VM Network<"));
        let section = o
            .split("<NetworkSection>")
            .nth(1)
            .unwrap()
            .split("</NetworkSection>")
            .next()
            .unwrap();
        let names: Vec<&str> = section
            .split("<Network ovf:name=\"")
            .skip(1)
            .map(|n| n.split('"').next().unwrap())
            .collect();
        assert_eq!(names, ["Prod", "dvportgroup-1001", "VM Network"]);
        assert!(
            section.contains("Distributed port group dvportgroup-1001 of distributed switch 50 1c 2d 3e: the .vmx names the port group by its key only"),
            "{section}"
        );
    }

    #[test]
    fn file_stem_replaces_unsafe_characters_only() {
        assert_eq!(
            file_stem("a<b>\"c\"&d:e\\f/g|h?i*j\u{7}k\tl"),
            "a_b__c__d_e_f_g_h_i_j_k_l"
        );
        assert_eq!(file_stem("web prod (eu) é.1"), "web prod (eu) é.1");
    }

    #[test]
    fn ustar_name_keeps_start_and_suffix() {
        assert_eq!(ustar_name("vm-disk1.vmdk"), "vm-disk1.vmdk");
        assert_eq!(ustar_name("vé.ovf"), "v_.ovf");
        let long = format!("{}-disk12.vmdk", "v".repeat(120));
        let short = ustar_name(&long);
        assert_eq!(short.len(), 100);
        assert!(
            short.ends_with("vvvv-disk12.vmdk") && short.starts_with("vvv"),
            "{short}"
        );
        assert_ne!(ustar_name(&long.replace("12", "13")), short);
    }

    #[test]
    fn pax_record_counts_its_own_length() {
        assert_eq!(pax_record("path", "a"), "9 path=a\n");
        for n in [1, 80, 88, 89, 90, 91, 200, 990, 995, 1000] {
            let r = pax_record("path", &"x".repeat(n));
            let (len, _) = r.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{n}");
        }
    }

    /// The members of an OVA: (type flag, name in the ustar header) per header, in order.
    fn headers(ova: &[u8]) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= ova.len() && ova[at..at + 512].iter().any(|&b| b != 0) {
            let h = &ova[at..at + 512];
            let name = String::from_utf8_lossy(&h[..100])
                .trim_end_matches('\0')
                .to_string();
            let size = std::str::from_utf8(&h[124..136])
                .unwrap()
                .trim_matches(|c: char| c == '\0' || c == ' ');
            let size = u64::from_str_radix(size, 8).unwrap() as usize;
            assert_eq!(&h[257..263], b"ustar\0", "{name}: not a POSIX ustar header");
            out.push((h[156], name));
            at += 512 + size.div_ceil(512) * 512;
        }
        out
    }

    /// Issue 14 item 4: names over 100 bytes went into GNU `././@LongLink` entries, and the
    /// manifest came last.
    #[test]
    fn r14_ustar_with_pax_names_and_the_manifest_second() {
        let stem = format!("{}-é", "v".repeat(110));
        let file = format!("{stem}-disk1.vmdk");
        let mut disks = [spooled(&file, &[5u8; 3000])];
        let mut out = Vec::new();
        write_ova(&mut out, Path::new("x.ova"), &stem, 7, "<ovf/>", &mut disks).unwrap();
        let h = headers(&out);
        let flags: Vec<u8> = h.iter().map(|(f, _)| *f).collect();
        // Each member: a PAX header ('x') with its full name, then the entry ('0').
        assert_eq!(flags, b"x0x0x0");
        assert!(
            h.iter().all(|(_, n)| n.len() <= 100 && n.is_ascii()),
            "{h:?}"
        );
        assert!(
            h[1].1.ends_with(".ovf") && h[5].1.ends_with(".vmdk"),
            "{h:?}"
        );
        // Read back (the tar crate honours PAX `path`): descriptor, manifest, disk.
        let mut ar = tar::Archive::new(&out[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [format!("{stem}.ovf"), format!("{stem}.mf"), file.clone()]
        );

        // Short ASCII names: plain ustar entries, no extended header.
        let mut disks = [spooled("vm-disk1.vmdk", &[5u8; 3000])];
        let mut out = Vec::new();
        write_ova(&mut out, Path::new("x.ova"), "vm", 7, "<ovf/>", &mut disks).unwrap();
        let h = headers(&out);
        let want: Vec<(u8, String)> = ["vm.ovf", "vm.mf", "vm-disk1.vmdk"]
            .iter()
            .map(|n| (b'0', n.to_string()))
            .collect();
        assert_eq!(h, want);
    }

    /// A device that takes `room` bytes, then is full.
    struct Fills {
        room: usize,
    }

    impl Write for Fills {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Issue 13 item 7: a full file system under an OVA was "OVA output: No space left on
    /// device", naming neither the file nor the byte.
    #[test]
    fn r13_a_failed_ova_write_names_file_and_byte() {
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(&[7u8; 100_000]).unwrap();
        let mut disks = [OvaDisk {
            device: "scsi0:0".into(),
            file: "vm-disk1.vmdk".into(),
            capacity: 1 << 20,
            populated: 1 << 20,
            size: 100_000,
            sha256: String::new(),
            spool,
        }];
        let mut w = io::BufWriter::with_capacity(4096, Positioned::new(Fills { room: 50_000 }));
        let out = Path::new("vm.ova.partial");
        let e = write_ova(&mut w, out, "vm", 0, "<ovf/>", &mut disks).unwrap_err();
        assert!(
            matches!(&e, Error::Io { path, offset: Some(50_000), .. } if path == out),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.starts_with("vm.ova.partial: byte 0xc350: "), "{text}");
        assert!(text.contains("os error 28"), "{text}");
    }
}
