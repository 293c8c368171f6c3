//! Fuzz target: the accounting rule under damage. A small archive of known disks is damaged by
//! the input (a list of flips, cuts, repeats and a truncation), restored with salvage, seekable
//! and piped, into memory; every byte that differs from the original disk must lie in a
//! reported lost range, and each disk's restored, zero and lost bytes must add up to its
//! capacity.
#![no_main]

use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock};

use vdar::fixture::memdisk::MemDisk;
use vdar::pipeline::{backup, BackupOptions, DiskInput, DiskMeta, VmInput};
use vdar::restore::{
    restore_seekable_to, restore_stream_to, Dest, DiskSink, RestoreOptions, RestoreReport,
    SinkFactory,
};

const CS: u64 = 64 << 10;
/// Largest image restored into memory; a damaged manifest may claim anything.
const MAX_IMAGE: u64 = 4 << 20;

/// (vm, disk, contents) of each disk, and the archive.
fn original() -> &'static (Vec<(String, String, Vec<u8>)>, Vec<u8>) {
    static ORIGINAL: OnceLock<(Vec<(String, String, Vec<u8>)>, Vec<u8>)> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let pattern = |seed: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 9) as u8)
                .collect()
        };
        let mut a = pattern(3, (4 * CS + 1024) as usize);
        a[(2 * CS) as usize..(3 * CS) as usize].copy_from_slice(&pattern(3, CS as usize));
        let b = pattern(7, (2 * CS) as usize);
        let disks = vec![
            ("vm".to_string(), "a".to_string(), a.clone(), vec![(CS, CS)]),
            ("vm".to_string(), "b".to_string(), b, vec![]),
        ];
        let mut expect = Vec::new();
        let mut inputs = Vec::new();
        for (vm, name, data, zeros) in disks {
            let disk = MemDisk::new(&name, data, &zeros);
            expect.push((vm, name.clone(), disk.contents().to_vec()));
            inputs.push(DiskInput {
                name,
                meta: DiskMeta {
                    capacity: disk.contents().len() as u64,
                    ..Default::default()
                },
                disk: Box::new(disk),
            });
        }
        let vms = vec![VmInput {
            origin: None,
            name: "vm".into(),
            files: vec![],
            disks: inputs,
        }];
        let opts = BackupOptions {
            chunk_size: CS,
            threads: 1,
            created: Some(0),
            ..Default::default()
        };
        let mut out = Vec::new();
        backup(vms, &opts, &mut out, None).expect("backup of the fuzz corpus");
        (expect, out)
    })
}

/// Applies the input's operations (4 bytes each: kind, position / 256 of the archive,
/// length, value) to a copy of the archive.
fn damage(ar: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut d = ar.to_vec();
    for op in ops.chunks_exact(4).take(6) {
        if d.is_empty() {
            break;
        }
        let at = (op[1] as usize * d.len() / 256).min(d.len() - 1);
        let len = 1 + op[2] as usize * 16;
        let end = (at + len).min(d.len());
        match op[0] % 4 {
            0 => d[at] ^= op[3] | 1,
            1 => {
                d.drain(at..end);
            }
            2 => {
                let copy = d[at..end].to_vec();
                d.splice(end..end, copy);
            }
            _ => d.truncate(at + op[3] as usize),
        }
    }
    d
}

/// A disk restored into memory.
struct Memory(Arc<Mutex<Vec<u8>>>);

impl DiskSink for Memory {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> vdar::Result<()> {
        let mut img = self.0.lock().unwrap();
        let end = offset as usize + data.len();
        if img.len() < end {
            img.resize(end, 0);
        }
        img[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn write_zero(&mut self, offset: u64, len: u64) -> vdar::Result<()> {
        let mut img = self.0.lock().unwrap();
        let end = (offset + len) as usize;
        if img.len() < end {
            img.resize(end, 0);
        }
        img[offset as usize..end].fill(0);
        Ok(())
    }
    fn finish(&mut self) -> vdar::Result<()> {
        Ok(())
    }
    fn random_access(&self) -> bool {
        true
    }
}

struct MemoryFactory(Arc<Mutex<Vec<u8>>>);

impl SinkFactory for MemoryFactory {
    fn create(self: Box<Self>, _: &str, _: &str, cap: u64) -> vdar::Result<Box<dyn DiskSink>> {
        if cap > MAX_IMAGE {
            return Err(vdar::Error::Usage(
                "image too large for the fuzz target".into(),
            ));
        }
        self.0.lock().unwrap().resize(cap as usize, 0);
        Ok(Box::new(Memory(self.0)))
    }
}

fn check(report: &RestoreReport, vm: &str, disk: &str, got: &[u8], want: &[u8]) {
    for d in &report.disks {
        assert_eq!(
            d.restored_bytes + d.zero_bytes + d.lost_bytes,
            d.capacity,
            "{d:?}"
        );
    }
    if !report.disks.iter().any(|d| d.vm == vm && d.disk == disk) {
        return;
    }
    let lost: Vec<(u64, u64)> = report
        .lost
        .iter()
        .filter(|l| l.vm == vm && l.disk == disk)
        .map(|l| (l.start, l.end))
        .collect();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let i = i as u64;
        assert!(
            g == w || lost.iter().any(|&(s, e)| s <= i && i < e),
            "{vm}/{disk} byte {i:#x} differs and is not reported lost: {report:#?}"
        );
    }
}

libfuzzer_sys::fuzz_target!(|ops: &[u8]| {
    let (expect, ar) = original();
    let d = damage(ar, ops);
    for (vm, disk, want) in expect {
        for seekable in [false, true] {
            let img = Arc::new(Mutex::new(Vec::new()));
            let dest = Dest::Sink(Box::new(MemoryFactory(img.clone())));
            let opts = RestoreOptions {
                vm: Some(vm.clone()),
                disk: Some(disk.clone()),
                salvage: true,
                ..Default::default()
            };
            let r = if seekable {
                restore_seekable_to(&mut Cursor::new(&d), dest, &opts)
            } else {
                restore_stream_to(&mut &d[..], dest, &opts)
            };
            if let Ok(r) = r {
                check(&r, vm, disk, &img.lock().unwrap(), want);
            }
        }
    }
});
