//! `vdar-fixture`: writes the VMDK layer files qemu-img cannot create (ESX flat bases, COWD and
//! SEsparse redo logs with their descriptors, VMware-layout streamOptimized files) and the
//! bundled sample VM. Thin CLI over `vdar::fixture`.
//!
//! Sizes and offsets accept K/M/G suffixes and 0x hex. Regions:
//!   D:OFF:LEN:SEED   mixed data from `fixture::pattern(SEED, ...)`
//!   F:OFF:LEN:HH     every byte 0xHH
//!   S:OFF:LEN:SRC:PATH  LEN bytes of the file PATH from byte SRC (real data for benchmarks)
//!   Z:OFF:LEN        explicit zero grains
//!   U:OFF:LEN        unmapped grains (SEsparse only)

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vdar::fixture::{self, Content, ExtentLine, Region};
use vdar::input::layer::Layer;
use vdar::input::{FileTable, LocalOpener};

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("vdar-fixture: error: {e:#}");
        std::process::exit(2);
    }
}

const USAGE: &str = "usage:
  vdar-fixture flat DIR/NAME SIZE REGION...                 ESX base (createType vmfs)
  vdar-fixture delta cowd|sesparse DIR/NAME PARENT.vmdk [--grain SECTORS] [--first-grain N] [--hint H] REGION...
  vdar-fixture streamopt RAW OUT.vmdk                        VMware-layout streamOptimized
  vdar-fixture sample-vm DIR                                 the bundled sample VM
  vdar-fixture lun-rig VMDIR OUTDIR [--luns N] [--pe SIZE] [--block SIZE] [--seed N] [--max-extent BLOCKS]
                      [--eager-zeroed] [--fill-free 0xHH]    VM files on LUN images + block map";

fn run(args: Vec<String>) -> Result<()> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["flat", name, size, regions @ ..] => {
            let regions = regions
                .iter()
                .map(|r| parse_region(r))
                .collect::<Result<Vec<_>>>()?;
            write_flat(Path::new(name), parse_num(size)?, &regions)
        }
        ["delta", kind, name, parent, rest @ ..] => {
            let mut grain = 1u32;
            let mut first_grain = 0u64;
            let mut hint = None;
            let mut regions = Vec::new();
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match *arg {
                    "--grain" => grain = parse_num(it.next().context("--grain N")?)? as u32,
                    "--first-grain" => {
                        first_grain = parse_num(it.next().context("--first-grain N")?)?
                    }
                    "--hint" => hint = Some(it.next().context("--hint PATH")?.to_string()),
                    r => regions.push(parse_region(r)?),
                }
            }
            write_delta(
                kind,
                Path::new(name),
                Path::new(parent),
                grain,
                first_grain,
                hint,
                &regions,
            )
        }
        ["streamopt", raw, out] => {
            let image = fs::read(raw).with_context(|| raw.to_string())?;
            let out = Path::new(out);
            let name = out
                .file_name()
                .context("output name")?
                .to_string_lossy()
                .into_owned();
            fixture::streamopt::write_vmware_streamopt(out, &image, &name)
                .with_context(|| out.display().to_string())
        }
        ["sample-vm", dir] => sample_vm(Path::new(dir)),
        ["lun-rig", vm, out, rest @ ..] => {
            let mut o = fixture::lunrig::RigOptions::default();
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                let mut val = || {
                    it.next()
                        .context("option needs a value")
                        .and_then(|v| parse_num(v))
                };
                match *arg {
                    "--eager-zeroed" => o.zero_runs = fixture::lunrig::ZeroRuns::Data,
                    "--fill-free" => o.fill_free = Some(val()? as u8),
                    "--luns" => o.luns = val()? as usize,
                    "--pe" => o.pe_bytes = val()?,
                    "--block" => o.block = val()?,
                    "--seed" => o.seed = val()?,
                    "--max-extent" => o.max_extent_blocks = val()?,
                    "--spread" => o.spread = val()?,
                    other => bail!("unknown lun-rig option {other:?}\n{USAGE}"),
                }
            }
            let r = fixture::lunrig::lay_out(Path::new(vm), Path::new(out), &o)?;
            let runs: usize = r.map.files.iter().map(|f| f.runs.len()).sum();
            println!(
                "{} LUNs, {} files, {runs} runs ({} data runs cross a PE boundary) -> {}",
                r.luns.len(),
                r.map.files.len(),
                r.pe_crossings,
                r.map_path.display()
            );
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn parse_num(s: &str) -> Result<u64> {
    let (digits, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => digits.parse(),
    }
    .with_context(|| format!("bad number {s:?}"))?;
    v.checked_mul(mul).context("number overflows")
}

fn parse_region(s: &str) -> Result<Region> {
    let parts: Vec<&str> = s.split(':').collect();
    let (offset, len) = match parts.get(1..3) {
        Some([o, l]) => (parse_num(o)?, parse_num(l)?),
        _ => bail!("bad region {s:?}"),
    };
    if parts[0] == "S" {
        let (Some(src), Some(path), None) = (parts.get(3), parts.get(4), parts.get(5)) else {
            bail!("bad region {s:?}: S:OFF:LEN:SRC:PATH")
        };
        let mut buf = vec![0u8; len as usize];
        let f = fs::File::open(path).with_context(|| path.to_string())?;
        f.read_exact_at(&mut buf, parse_num(src)?)
            .with_context(|| format!("{path}: read {len} bytes at {src}"))?;
        return Ok(Region {
            offset,
            len,
            content: Content::Data(buf),
        });
    }
    let content = match (parts[0], parts.get(3)) {
        ("D", Some(seed)) => {
            Content::Data(fixture::pattern(parse_num(seed)?, offset, len as usize))
        }
        ("F", Some(b)) => Content::Data(vec![u8::from_str_radix(b, 16)?; len as usize]),
        ("Z", None) => Content::Zero,
        ("U", None) => Content::Unmapped,
        _ => bail!("bad region {s:?}"),
    };
    Ok(Region {
        offset,
        len,
        content,
    })
}

/// A CID derived from the file name, so regenerated fixtures are identical.
fn cid_for(name: &Path) -> u32 {
    let h = blake3::hash(name.file_name().unwrap_or_default().as_encoded_bytes());
    let cid = u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap());
    if cid >= 0xffff_fffe {
        0x1234_5678
    } else {
        cid
    }
}

fn stem(name: &Path) -> String {
    name.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn ddb(uuid_seed: &Path, thin: bool) -> Vec<(String, String)> {
    let h = blake3::hash(uuid_seed.as_os_str().as_encoded_bytes());
    let b = h.as_bytes();
    let uuid = format!(
        "{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}-{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    );
    let mut v = vec![
        ("ddb.adapterType".to_string(), "lsilogic".to_string()),
        ("ddb.geometry.cylinders".into(), "1044".into()),
        ("ddb.geometry.heads".into(), "255".into()),
        ("ddb.geometry.sectors".into(), "63".into()),
        (
            "ddb.longContentID".into(),
            format!("{}{:08x}", &h.to_hex()[..24], cid_for(uuid_seed)),
        ),
        ("ddb.uuid".into(), uuid),
        ("ddb.virtualHWVersion".into(), "13".into()),
    ];
    if thin {
        v.push(("ddb.thinProvisioned".into(), "1".into()));
    }
    v
}

fn write_descriptor(
    path: &Path,
    create_type: &str,
    parent_cid: u32,
    hint: Option<&str>,
    ext: ExtentLine,
    thin: bool,
) -> Result<()> {
    let ddb = ddb(path, thin);
    let ddb: Vec<(&str, &str)> = ddb.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let text = fixture::descriptor_text(create_type, cid_for(path), parent_cid, hint, &[ext], &ddb);
    fs::write(path, text).with_context(|| path.display().to_string())
}

/// `NAME.vmdk` (createType vmfs) and a sparse `NAME-flat.vmdk` holding the data regions.
fn write_flat(name: &Path, size: u64, regions: &[Region]) -> Result<()> {
    if size % 512 != 0 {
        bail!("size {size} is not a multiple of 512");
    }
    let flat = PathBuf::from(format!("{}-flat.vmdk", name.display()));
    let f = fs::File::create(&flat).with_context(|| flat.display().to_string())?;
    f.set_len(size)?;
    for r in regions {
        match &r.content {
            Content::Data(d) => f.write_all_at(d, r.offset)?,
            _ => bail!("a flat base has no zero or unmapped grains; leave the range out"),
        }
    }
    write_descriptor(
        &PathBuf::from(format!("{}.vmdk", name.display())),
        "vmfs",
        0xffff_ffff,
        None,
        ExtentLine {
            access: "RW",
            sectors: size / 512,
            kind: "VMFS",
            file: Some(format!("{}-flat.vmdk", stem(name))),
            offset: None,
        },
        false,
    )
}

fn write_delta(
    kind: &str,
    name: &Path,
    parent: &Path,
    grain: u32,
    first_grain: u64,
    hint: Option<String>,
    regions: &[Region],
) -> Result<()> {
    let mut files = FileTable::default();
    let layer = Layer::open(parent, &LocalOpener::default(), &mut files)?;
    let capacity = layer.capacity;
    let hint = hint.unwrap_or_else(|| stem(parent));
    let desc = PathBuf::from(format!("{}.vmdk", name.display()));
    let (suffix, create_type, ext_kind) = match kind {
        "cowd" => ("delta", "vmfsSparse", "VMFSSPARSE"),
        "sesparse" => ("sesparse", "seSparse", "SESPARSE"),
        k => bail!("unknown delta kind {k:?} (cowd or sesparse)"),
    };
    let file = PathBuf::from(format!("{}-{suffix}.vmdk", name.display()));
    match kind {
        "cowd" => fixture::cowd::write_cowd(&file, capacity, grain, regions),
        _ => fixture::sesparse::write_sesparse(
            &file,
            capacity,
            regions,
            &fixture::sesparse::SeSparseOptions {
                first_grain_index: first_grain,
                ..Default::default()
            },
        ),
    }
    .with_context(|| file.display().to_string())?;
    write_descriptor(
        &desc,
        create_type,
        layer.descriptor.cid,
        Some(&hint),
        ExtentLine {
            access: "RW",
            sectors: capacity,
            kind: ext_kind,
            file: Some(format!("{}-{suffix}.vmdk", stem(name))),
            offset: None,
        },
        kind == "sesparse",
    )
}

/// The bundled sample VM: an ESX-style folder with a 256 MiB thin vmfs base, a vmfsSparse
/// snapshot and an SEsparse snapshot above it, the .vmx naming the top and a .vmsd naming each
/// snapshot's frozen disk.
fn sample_vm(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let n = |s: &str| dir.join(s);
    let r = |s: &str| parse_region(s).expect("invariant: literal regions parse");
    // Base: a boot area, a "filesystem" with scattered files, and a large duplicate range.
    write_flat(
        &n("sample"),
        256 << 20,
        &[
            r("D:0:256K:1"),
            r("D:16M:512K:1"),
            r("D:100M:128K:1"),
            r("D:200M:128K:1"),
            r("F:255M:1M:00"),
        ],
    )?;
    write_delta(
        "cowd",
        &n("sample-000001"),
        &n("sample.vmdk"),
        1,
        0,
        None,
        &[
            r("D:0x1010000:128K:2"),
            r("D:100M:4K:2"),
            r("Z:200M:64K"),
            r("D:120M:512:2"),
        ],
    )?;
    write_delta(
        "sesparse",
        &n("sample-000002"),
        &n("sample-000001.vmdk"),
        8,
        4900,
        None,
        &[
            r("D:0:64K:3"),
            r("D:0x1020000:64K:3"),
            r("Z:16M:64K"),
            r("U:100M:64K"),
            r("D:150M:256K:3"),
        ],
    )?;
    fs::write(n("sample.vmx"), SAMPLE_VMX)?;
    fs::write(n("sample.vmsd"), SAMPLE_VMSD)?;
    fs::write(n("sample.vmxf"), "<?xml version=\"1.0\"?>\n<Foundry>\n<VM>\n<VMId type=\"string\">52 8e 1a 9c 3f 0d 61 2b-a4 77 90 12 de 5b 3c 01</VMId>\n<ClientMetaData>\n<clientMetaDataAttributes/>\n<HistoryEventList/></ClientMetaData>\n<vmxPathName type=\"string\">sample.vmx</vmxPathName></VM></Foundry>\n")?;
    fs::write(n("sample.nvram"), fixture::pattern(9, 0, 8684))?;
    Ok(())
}

const SAMPLE_VMX: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "13"
displayName = "sample"
guestOS = "debian10-64"
numvcpus = "2"
memSize = "2048"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "sample-000002.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "/vmfs/volumes/iso/debian-10.iso"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:a1:b2:c3"
nvram = "sample.nvram"
uuid.bios = "56 4d 9e 2a 10 33 c5 87-4a 0e 8b 6f 2c 1d 9a 55"
vc.uuid = "50 1c 2d 3e 4f 50 61 72-83 94 a5 b6 c7 d8 e9 fa"
"#;

const SAMPLE_VMSD: &str = r#".encoding = "UTF-8"
snapshot.lastUID = "2"
snapshot.current = "2"
snapshot0.uid = "1"
snapshot0.filename = "sample-Snapshot1.vmsn"
snapshot0.displayName = "before-patch"
snapshot0.createTimeHigh = "376943"
snapshot0.createTimeLow = "-1438510192"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "sample.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot1.uid = "2"
snapshot1.filename = "sample-Snapshot2.vmsn"
snapshot1.parent = "1"
snapshot1.displayName = "after-patch"
snapshot1.createTimeHigh = "376950"
snapshot1.createTimeLow = "1104357120"
snapshot1.numDisks = "1"
snapshot1.disk0.fileName = "sample-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot.numSnapshots = "2"
"#;
