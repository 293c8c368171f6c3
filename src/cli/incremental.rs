//! The incremental side of the command line: `backup --base`, `--base` of restore and verify,
//! `consolidate` and `catalog`. The rules live in [`crate::base`]; this reads the files the
//! flags name and prints what was chosen.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::base::catalog;
use crate::base::{BaseChain, BaseImage};
use crate::job::changes::{self, ChangedAreas};
use crate::output::{OutputSpec, StreamOut};
use crate::pipeline::{BackupOptions, BackupSummary, Incremental, VmInput};

use super::args::{CatalogArgs, ConsolidateArgs, IncrementalArgs};
use super::stdout::output_error;
use super::units::human;

/// The bases named by `--base` (archives, and the catalog of the base restored in
/// `--base-image DIR`), opened; `None` without any.
pub fn bases(
    paths: &[PathBuf],
    image_dir: Option<&Path>,
) -> anyhow::Result<Option<crate::restore::Bases>> {
    if paths.is_empty() && image_dir.is_none() {
        return Ok(None);
    }
    let (mut catalogs, mut archives) = (Vec::new(), Vec::new());
    for p in paths {
        if is_catalog(p)? {
            catalogs.push(p.clone());
        } else {
            archives.push(p.clone());
        }
    }
    let mut chain = BaseChain::default();
    for p in &archives {
        chain.add_archive(p, super::archive_input::seekable(p)?)?;
    }
    match (image_dir, &catalogs[..]) {
        (None, []) => {}
        (None, [c, ..]) => anyhow::bail!(
            "{}: a catalog holds no chunks; give the archive, or --base-image DIR where the \
             archive it describes was restored",
            c.display()
        ),
        (Some(dir), [c]) => {
            let image = read_catalog(c)?;
            let files = crate::restore::raw_image_paths(&image.manifest, dir)
                .into_iter()
                .map(|p| std::fs::File::open(&p).ok().map(|f| (p, f)))
                .collect::<Vec<_>>();
            if files.iter().all(Option::is_none) {
                anyhow::bail!(
                    "{}: holds no raw image of the archive {} describes (restore it there with \
                     --format raw first)",
                    dir.display(),
                    c.display()
                );
            }
            chain.add_restored(dir, image, files);
        }
        (Some(dir), _) => anyhow::bail!(
            "--base-image {} needs exactly one --base CATALOG: the catalog of the archive \
             restored there",
            dir.display()
        ),
    }
    Ok(Some(Arc::new(Mutex::new(chain))))
}

/// The base of `restore --in-place --to DIR`: DIR, and the catalog among `paths`.
pub fn in_place(
    paths: &[PathBuf],
    dir: &Path,
) -> anyhow::Result<Arc<crate::restore::in_place::InPlaceBase>> {
    let [p] = paths else {
        anyhow::bail!(
            "--in-place needs exactly one --base CATALOG: the catalog of the archive restored \
             in {}",
            dir.display()
        );
    };
    Ok(Arc::new(crate::restore::in_place::InPlaceBase {
        dir: dir.to_path_buf(),
        image: read_catalog(p)?,
    }))
}

/// Whether `path` (a file or an object) is a catalog (else an archive).
fn is_catalog(path: &Path) -> anyhow::Result<bool> {
    let mut input = super::archive_input::seekable(path)?;
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(e).with_context(|| format!("base {}", path.display())),
        }
    }
    Ok(catalog::is_catalog(&head[..n]))
}

/// Largest catalog read (about 48 bytes per chunk: millions of chunks).
const MAX_CATALOG_BYTES: u64 = 1 << 30;

/// The catalog at `path`, a file or an object.
fn read_catalog(path: &Path) -> anyhow::Result<BaseImage> {
    let mut bytes = Vec::new();
    super::archive_input::seekable(path)?
        .take(MAX_CATALOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("base {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_CATALOG_BYTES,
        "base {}: larger than a catalog can be ({MAX_CATALOG_BYTES} bytes)",
        path.display()
    );
    Ok(catalog::decode(&bytes, path)?)
}

/// The image of `path` (a file or an object): a catalog, or an archive whose headers are read.
pub fn base_image(path: &Path) -> anyhow::Result<BaseImage> {
    if is_catalog(path)? {
        return read_catalog(path);
    }
    let mut input = super::archive_input::seekable(path)?;
    Ok(BaseImage::from_archive(&mut *input, path)?)
}

/// Makes `opts` an incremental of `--base`, planning every disk of `vms`. Prints, per disk,
/// where its changes come from, and why a hint was not used. Without `--changed-areas`, the
/// list is asked of `server` (a vSphere backup's), given the base.
pub fn plan(
    args: &IncrementalArgs,
    vms: &mut [VmInput],
    opts: &mut BackupOptions,
    chunk_size_given: bool,
    server: &dyn Fn(&BaseImage) -> Option<ChangedAreas>,
) -> anyhow::Result<()> {
    opts.catalog = args.catalog.is_some();
    let Some(path) = &args.base else {
        if let Some(c) = &args.changed_areas {
            changes::record_change_ids(vms, &ChangedAreas::read(c)?)?;
        }
        return Ok(());
    };
    let base = base_image(path)?;
    if !chunk_size_given {
        opts.chunk_size = base.manifest.chunk_size;
    }
    let cbt = match &args.changed_areas {
        Some(p) => Some(ChangedAreas::read(p)?),
        // A dedup incremental reads every chunk whatever a list says.
        None if args.read_all => None,
        None => server(&base),
    };
    let how = changes::PlanOptions {
        chunk_size: opts.chunk_size,
        read_all: args.read_all,
    };
    let plans = changes::plan(&base, vms, cbt.as_ref(), how)?;
    let names = vms.iter().flat_map(|v| {
        v.disks
            .iter()
            .map(move |d| format!("{}/{}", v.name, d.name))
    });
    for (name, p) in names.zip(&plans) {
        let read = p
            .changed
            .as_ref()
            .map(|s| format!(", {} to read", human(s.bytes())))
            .unwrap_or_default();
        log::info!(
            "{name}: incremental of {}, changes from {}{read}",
            crate::base::id_short(&base.id),
            match p.source {
                Some(crate::base::plan::ChangeSource::Cbt) => "the changed-areas list",
                Some(crate::base::plan::ChangeSource::RedoLog) => "the redo logs on the base",
                _ => "reading every chunk",
            }
        );
        if let Some(why) = &p.fallback {
            log::warn!("{name}: read whole: {why}");
        }
    }
    // A dedup incremental made from the base archive itself (not its catalog) patches the
    // blocks that differ from the base's chunk, read from the archive.
    let dedup = plans
        .iter()
        .any(|p| p.changed.is_none() && p.base_disk.is_some());
    let bytes = if dedup && !is_catalog(path)? {
        let mut chain = BaseChain::default();
        chain.add_archive(path, super::archive_input::seekable(path)?)?;
        Some(Arc::new(Mutex::new(chain)))
    } else {
        None
    };
    opts.incremental = Some(Incremental {
        base: Arc::new(base),
        plans,
        bytes,
    });
    Ok(())
}

/// Writes the catalog of a finished backup, when `--catalog` asked for one.
pub fn write_catalog(path: Option<&Path>, summary: &BackupSummary) -> anyhow::Result<()> {
    let (Some(path), Some(m)) = (path, &summary.manifest) else {
        return Ok(());
    };
    let id = crate::base::chain::parse_id(&summary.id).context("archive identity")?;
    catalog::write(path, &id, m, &summary.places)?;
    Ok(())
}

/// `vdar consolidate`.
pub fn consolidate(args: &ConsolidateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.archives.is_empty(), "no archive given");
    let mut inputs = args
        .archives
        .iter()
        .map(|p| Ok((p.clone(), super::archive_input::seekable(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let newest = crate::base::consolidate::newest(&mut inputs)?;
    let (top, mut input) = inputs.remove(newest);
    let mut bases = BaseChain::default();
    for (p, r) in inputs {
        bases.add_archive(&p, r)?;
    }
    let spec = OutputSpec {
        path: &args.output,
        force: args.force,
        what: "an archive",
    };
    let name = spec.name();
    let mut out = StreamOut::open(&spec, crate::output::StreamOptions::default())?;
    let cancel = super::signals::on_interrupt()?;
    let s = crate::base::consolidate::consolidate(
        &mut *input,
        &top.display().to_string(),
        &mut bases,
        out.writer(),
        &name,
        &cancel,
    )
    .map_err(|e| output_error(&name, e.into()))?;
    out.writer()
        .flush()
        .map_err(|e| output_error(&name, e.into()))?;
    out.commit().map_err(|e| output_error(&name, e.into()))?;
    if let (Some(c), Some(m)) = (&args.catalog, &s.manifest) {
        let id = crate::base::chain::parse_id(&s.id).context("archive identity")?;
        catalog::write(c, &id, m, &s.places)?;
    }
    if args.json {
        let json = super::json::to_string("consolidate", &s)?;
        if args.output == Path::new("-") {
            eprintln!("{json}");
        } else {
            super::stdout::line(format_args!("{json}"))?;
        }
    } else {
        log::info!(
            "consolidated {} into {name}: {} chunks ({} from bases), {} references, {}",
            top.display(),
            s.chunks_stored,
            s.chunks_from_bases,
            s.chunks_dedup,
            human(s.bytes_written)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vdar catalog`.
pub fn catalog(args: &CatalogArgs) -> anyhow::Result<ExitCode> {
    let img = base_image(&args.archive)?;
    catalog::write(&args.output, &img.id, &img.manifest, &img.places())?;
    log::info!(
        "{}: catalog of archive {} ({} chunk places)",
        args.output.display(),
        crate::base::id_hex(&img.id),
        img.len()
    );
    Ok(ExitCode::SUCCESS)
}
