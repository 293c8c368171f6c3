//! `vdar list DIR|s3://BUCKET/PREFIX/` and `vdar prune`: the inventory of a place and the
//! deletions a keep policy allows there (the rules are [`crate::retention`]'s).

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::args::PruneArgs;
use super::units::{human, utc};
use crate::retention::inventory::{self, ArchiveEntry, Inventory};
use crate::retention::plan::{self, Pruned};
use crate::retention::store::{DirStore, Store};
use crate::retention::Policy;

/// Whether `path` names a place of archives rather than one archive: a directory, or an
/// object-store name with no key or one ending in `/`.
pub(super) fn is_location(path: &Path) -> bool {
    match path.to_str() {
        Some(p) if p.starts_with("s3://") => is_prefix(p),
        _ => path.is_dir(),
    }
}

#[cfg(feature = "s3")]
fn is_prefix(p: &str) -> bool {
    crate::objstore::ObjectUrl::is_prefix(p)
}

#[cfg(not(feature = "s3"))]
fn is_prefix(_: &str) -> bool {
    false
}

fn store(location: &Path) -> anyhow::Result<Box<dyn Store>> {
    let name = location.to_string_lossy();
    if name.starts_with("s3://") {
        return bucket(&name);
    }
    Ok(Box::new(DirStore::new(location)?))
}

#[cfg(feature = "s3")]
fn bucket(name: &str) -> anyhow::Result<Box<dyn Store>> {
    use crate::objstore::{Client, ObjectUrl};
    let place = ObjectUrl::parse_prefix(name)?;
    let client = std::sync::Arc::new(Client::from_env()?);
    Ok(Box::new(crate::retention::store::BucketStore::new(
        client, place,
    )))
}

#[cfg(not(feature = "s3"))]
fn bucket(name: &str) -> anyhow::Result<Box<dyn Store>> {
    anyhow::bail!("{name}: this vdar was built without object storage (feature s3)")
}

/// Lists the archives and catalogs at `location`; exit 1 when something there is damaged.
pub(super) fn list(location: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let inv = inventory::read(&*store(location)?)?;
    let code = if inv.damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if json {
        super::json::print("inventory", &inv)?;
        return Ok(code);
    }
    super::stdout::line(format_args!(
        "{}: {} archives, {} catalogs, {} later volumes, {} other files",
        shown(&inv.location),
        inv.archives.len(),
        inv.catalogs.len(),
        inv.volumes.len(),
        inv.others
    ))?;
    for a in &inv.archives {
        super::stdout::line(format_args!("{}", archive_line(a)))?;
    }
    let described: Vec<&str> = inv
        .archives
        .iter()
        .filter_map(|a| a.id.as_deref())
        .collect();
    for c in inv
        .catalogs
        .iter()
        .filter(|c| !described.contains(&c.id.as_str()))
    {
        super::stdout::line(format_args!(
            "catalog of {} (archive not here)  {}",
            &c.id[..16],
            shown(&c.name)
        ))?;
    }
    for d in &inv.damaged {
        super::stdout::line(format_args!(
            "DAMAGED {} {}: {}",
            d.kind,
            shown(&d.name),
            shown(&d.why)
        ))?;
    }
    for v in &inv.volumes {
        super::stdout::line(format_args!(
            "volume {} of set {}  {}",
            v.number,
            v.set,
            shown(&v.name)
        ))?;
    }
    Ok(code)
}

/// One archive as a line: time, identity, full or incremental, size, VMs, name.
fn archive_line(a: &ArchiveEntry) -> String {
    let id = a.id.as_deref().map_or("incomplete      ", |i| &i[..16]);
    let kind = match &a.base {
        None => "full".to_string(),
        Some(b) => format!("inc of {}", &b.id[..16]),
    };
    let cat = if a.catalogs.is_empty() {
        ""
    } else {
        " +catalog"
    };
    format!(
        "{}  {id}  {kind:<23}  {:>10}  {}  {}{cat}",
        utc(a.created),
        human(a.bytes),
        shown(&a.vms.join(",")),
        shown(&a.name)
    )
}

/// A name as text output shows it: control characters (a newline, an escape) escaped, so a
/// file name can neither forge a line of the listing nor drive the terminal.
fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) {
        name.escape_debug().to_string().into()
    } else {
        name.into()
    }
}

/// What `prune --json` prints.
#[derive(Serialize)]
struct PruneReport<'a> {
    #[serde(flatten)]
    plan: &'a plan::PrunePlan,
    dry_run: bool,
    freed_bytes: u64,
    deleted: Pruned,
}

/// Plans the prune and, unless `--dry-run`, carries it out.
pub(super) fn prune(a: &PruneArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    let store = store(&a.location)?;
    let inv = inventory::read(&*store)?;
    let p = plan::plan(&inv, &policy)?;
    for (who, id) in &p.missing_bases {
        log::warn!(
            "{who} needs the base {id}, which is not in {}",
            inv.location
        );
    }
    let freed = p.freed_bytes(&inv);
    if !a.json {
        print_plan(&p)?;
    }
    let deleted = if a.dry_run {
        Pruned::default()
    } else {
        plan::execute(&*store, &p)?
    };
    if a.json {
        let r = PruneReport {
            plan: &p,
            dry_run: a.dry_run,
            freed_bytes: freed,
            deleted,
        };
        super::json::print("prune", &r)?;
    } else {
        summary(&inv, &p, freed, a.dry_run, &deleted)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(p: &plan::PrunePlan) -> anyhow::Result<()> {
    for d in &p.keep {
        super::stdout::line(format_args!(
            "keep    {}  ({})",
            archive_line(&d.archive),
            d.reasons.join(", ")
        ))?;
    }
    for d in &p.remove {
        super::stdout::line(format_args!("remove  {}", archive_line(&d.archive)))?;
    }
    Ok(())
}

fn summary(
    inv: &Inventory,
    p: &plan::PrunePlan,
    freed: u64,
    dry_run: bool,
    deleted: &Pruned,
) -> anyhow::Result<()> {
    let catalogs: usize = p.remove.iter().map(|d| d.archive.catalogs.len()).sum();
    let (verb, archives, catalogs) = if dry_run {
        ("would delete", p.remove.len(), catalogs)
    } else {
        ("deleted", deleted.archives.len(), deleted.catalogs.len())
    };
    super::stdout::line(format_args!(
        "{verb} {archives} archives and {catalogs} catalogs ({}) from {}; kept {}",
        human(freed),
        inv.location,
        p.keep.len()
    ))
}
