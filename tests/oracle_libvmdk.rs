//! libvmdk (`vmdkmount`, `vmdkinfo`) as a second, independent oracle next to qemu-img: a hosted
//! sparse chain, a COWD delta over an ESX flat base, and a VMware-layout streamOptimized file are
//! each collapsed by `vdar cat` and by libvmdk's FUSE mount, and must agree byte for byte.
//!
//! libvmdk reads two things differently from VMware (VMDK-FORMATS §7.4): a KDMV grain table entry
//! of 1 with the zeroed-grain flag, and a COWD grain table entry of 1, both of which it reads as
//! data at file sector 1 instead of zeros. The fixtures here never produce either: the qemu chain
//! is created without `zeroed_grain`, and the COWD delta has no zero regions. Those cases are
//! covered against qemu (tests/sparse.rs, tests/cowd.rs) and by unit tests.
//!
//! The tests skip, with the reason printed, when `vmdkmount` is missing or the FUSE mount itself
//! fails (no /dev/fuse, no permission, as on many CI runners). Once mounted, any difference fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vdar::fixture::cowd::write_cowd;
use vdar::fixture::streamopt::write_vmware_streamopt;

use crate::cowd::{data, delta_descriptor, esx_base, scattered};
use crate::util::*;

/// A libvmdk FUSE mount, unmounted on drop (also when an assertion fails).
struct Mount {
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // fusermount is not installed; plain umount works as root (VMDK-FORMATS §7.3).
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

impl Mount {
    /// The collapsed disk: libvmdk exposes one `vmdkN` per layer, the highest being the opened
    /// image with its whole chain applied.
    fn top(&self) -> PathBuf {
        let n = std::fs::read_dir(&self.dir)
            .expect("read mountpoint")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("vmdk")?.parse::<u32>().ok()
            })
            .max()
            .expect("no vmdkN in the libvmdk mount");
        self.dir.join(format!("vmdk{n}"))
    }
}

/// Mounts `image` with vmdkmount at `dir/mnt`. `None` (after printing why) when FUSE is not
/// usable here; panics when vmdkmount fails for any other reason.
fn mount(image: &Path, dir: &Path) -> Option<Mount> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: /dev/fuse does not exist");
        return None;
    }
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let out = Command::new("vmdkmount")
        .arg(image)
        .arg(&mnt)
        .output()
        .expect("run vmdkmount");
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // libfuse's own failures ("fuse: device not found", "Unable to create fuse channel")
        // mean the environment cannot mount; anything else is libvmdk refusing the file.
        if err.to_lowercase().contains("fuse") {
            eprintln!("skipped: vmdkmount could not mount (FUSE unusable here): {err}");
            return None;
        }
        panic!("vmdkmount {} failed: {err}", image.display());
    }
    let m = Mount { dir: mnt };
    // vmdkmount daemonises; give the mount a moment to appear.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&m.dir).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            Instant::now() < deadline,
            "vmdkmount {} succeeded but the mount stayed empty",
            image.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(m)
}

/// `vmdkinfo` must accept `image`; returns its output.
fn vmdkinfo(image: &Path) -> String {
    let out = run("vmdkinfo", &[image.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vdar cat image` and libvmdk's collapsed disk must be identical.
fn check(image: &Path, dir: &Path) {
    let ours = dir.join("ours.raw");
    let out = vdar(&["cat", image.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "vdar cat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(m) = mount(image, dir) else {
        return;
    };
    assert_same_file(&ours, &m.top());
}

#[test]
fn libvmdk_hosted_sparse_chain() {
    require!("vmdkmount");
    require!("qemu-img");
    let d = tempdir();
    let base = d.path().join("base.vmdk");
    let child = d.path().join("child.vmdk");
    // No zeroed_grain: libvmdk misreads KDMV GTE 1 (see the module comment).
    qemu_img_create(&["-f", "vmdk", base.to_str().unwrap(), "16M"]);
    qemu_io(
        &base,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 4M 64k",
            "write -P 0xef 16320k 64k",
        ],
    );
    qemu_img_create(&[
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        child.to_str().unwrap(),
    ]);
    // A partial-grain write (copy-on-write of the rest from the base), a whole grain, and a
    // write where the base has nothing.
    qemu_io(
        &child,
        &[
            "write -P 0x11 512k 4k",
            "write -P 0x22 4M 64k",
            "write -P 0x33 8M 64k",
        ],
    );
    let info = vmdkinfo(&child);
    assert!(info.contains("Parent"), "{info}");
    check(&child, d.path());
}

#[test]
fn libvmdk_cowd_over_flat_base() {
    require!("vmdkmount");
    require!("qemu-img");
    let d = tempdir();
    let cap = 3 * 4096 + 777;
    let cid = esx_base(
        d.path(),
        cap,
        &["write -P 0xa1 0 1M", "write -P 0xb2 1M 3M"],
    );
    // Data only: no zero regions, since libvmdk reads COWD GTE 1 as header sector 1.
    let mut regions = vec![
        data(0x41, 0, 64),
        data(0x42, 2 * 4096 - 5, 10),
        data(0x43, cap - 3, 3),
    ];
    regions.extend(scattered(0x44, 300, 1, cap - 3));
    write_cowd(&d.path().join("delta-delta.vmdk"), cap, 1, &regions).expect("write cowd");
    let top = delta_descriptor(
        d.path(),
        "delta",
        "vmfsSparse",
        "VMFSSPARSE",
        "delta-delta.vmdk",
        cap,
        cid,
    );
    vmdkinfo(&top);
    check(&top, d.path());
}

#[test]
fn libvmdk_vmware_stream_optimized() {
    require!("vmdkmount");
    let d = tempdir();
    // Incompressible bytes, a pattern straddling the first grain table (32 MiB), all-zero grains
    // (omitted by the writer) and a partial last grain.
    let sectors = (40 << 20) / 512 + 3;
    let mut img = vec![0u8; sectors * 512];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in &mut img[64 << 10..256 << 10] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    img[(32 << 20) - 4096..(32 << 20) + 4096].fill(0x32);
    let n = img.len();
    img[n - 1024..].fill(0x33);
    // The embedded extent line must name the file itself: libvmdk opens that name.
    let path = d.path().join("so.vmdk");
    write_vmware_streamopt(&path, &img, "so.vmdk").expect("write streamopt");
    let info = vmdkinfo(&path);
    assert!(info.contains("Stream optimized"), "{info}");
    check(&path, d.path());
}

/// `qemu-img create -q ARGS...`.
fn qemu_img_create(args: &[&str]) {
    let mut a = vec!["create", "-q"];
    a.extend_from_slice(args);
    run("qemu-img", &a);
}
