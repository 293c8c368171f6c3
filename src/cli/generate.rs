//! `vdar completions SHELL` and `vdar man` (hidden, and the same in `vdar-restore`): a shell
//! completion script and the man page, generated from the clap definitions so they never drift
//! from the flags, and printed to stdout. tools/make-deb.sh runs them to put both into the
//! .deb; a `cargo install` user runs them once by hand (README "Install").
//!
//! They are subcommands of the shipped binaries rather than a build script or a separate
//! generator: a build.rs would have to compile the CLI a second time (the `Cli` types live in
//! the library, in `src/cli/args.rs`, and a build script runs before the library is built),
//! and a generator binary would be one more `[[bin]]` that `cargo install` puts on PATH.
//! ripgrep ships its man page and completions the same way (`rg --generate`).
//!
//! One page per binary, every command in it. clap_mangen would rather write a page per
//! subcommand, named git-style (`vdar-backup.1`), but `vdar restore`'s page would then be
//! `vdar-restore.1`, the name the `vdar-restore` binary's own page needs.

use std::io;
use std::process::ExitCode;

use anyhow::Context;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::args::{CompletionsArgs, EXIT_CODES};
use super::stdout;

/// Prints the completion script for `cmd` (a whole binary's command) to stdout.
pub fn completions(mut cmd: clap::Command, a: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, name, &mut script);
    print(script)
}

/// Prints the man page of `cmd` (a whole binary's command) to stdout; `see_also` names the
/// other binary's page.
pub fn man(cmd: clap::Command, see_also: &str) -> anyhow::Result<ExitCode> {
    // Built once here so every subcommand knows its full name ("vdar backup"), which the
    // synopsis lines use; `help` is clap's, not ours, and is left out.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut page = Vec::new();
    render(&cmd, see_also, &mut page)?;
    print(page)
}

/// Writes `text` to stdout in one piece through `stdout::line`, so a closed pipe is an error
/// rather than a panic.
fn print(text: Vec<u8>) -> anyhow::Result<ExitCode> {
    let text = String::from_utf8(text).context("generated text is not UTF-8")?;
    stdout::line(format_args!("{}", text.trim_end()))?;
    Ok(ExitCode::SUCCESS)
}

/// clap_mangen's sections for the command itself, then a COMMANDS section holding, for every
/// command that runs something (`vdar backup`, `vdar blockmap import`), its synopsis,
/// description and options; then EXIT STATUS (the conventional name: clap_mangen would print
/// `after_help` under "EXTRA"), SEE ALSO and VERSION.
fn render(cmd: &clap::Command, see_also: &str, w: &mut dyn io::Write) -> io::Result<()> {
    let man = Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.to_writer(w)?;
    for sub in leaves(cmd) {
        render_command(sub, w)?;
    }
    let mut roff = Roff::new();
    #[cfg(feature = "s3")]
    {
        // The object store's settings live in the library, beside the code that reads them.
        roff.control("SH", ["ENVIRONMENT"]);
        for (var, what) in crate::objstore::config::ENVIRONMENT {
            roff.control("TP", []);
            roff.text([bold(*var)]);
            roff.text([roman(*what)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(EXIT_CODES.trim_start_matches("Exit codes: "))]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold(see_also), roman("(1)")]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// The visible commands under `cmd` that have no subcommands of their own, in order.
fn leaves(cmd: &clap::Command) -> Vec<&clap::Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.has_subcommands() {
            out.extend(leaves(sub));
        } else {
            out.push(sub);
        }
    }
    out
}

/// One command as a subsection of COMMANDS: clap_mangen's synopsis, description and options
/// sections for it, each without its `.SH` heading.
fn render_command(sub: &clap::Command, w: &mut dyn io::Write) -> io::Result<()> {
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    let mut roff = Roff::new();
    roff.control("SS", [name]);
    roff.to_writer(w)?;
    let man = Man::new(sub.clone());
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    man.render_synopsis_section(&mut parts[0])?;
    man.render_description_section(&mut parts[1])?;
    man.render_options_section(&mut parts[2])?;
    for (i, part) in parts.into_iter().enumerate() {
        let text = String::from_utf8(part).map_err(io::Error::other)?;
        if i > 0 {
            w.write_all(b".PP\n")?;
        }
        w.write_all(without_heading(&text).as_bytes())?;
    }
    Ok(())
}

/// `text`, one section as clap_mangen renders it, without the preamble every rendering starts
/// with and without its `.SH` line, so it can sit inside an `.SS` subsection. A further `.SH`
/// (an option group with its own help heading) becomes an `.SS`.
fn without_heading(text: &str) -> String {
    let preamble = Roff::new().render();
    let body = text.strip_prefix(&preamble).unwrap_or(text);
    let mut out = String::new();
    for (i, line) in body.lines().enumerate() {
        match line.strip_prefix(".SH ") {
            Some(_) if i == 0 => continue,
            Some(heading) => out.push_str(&format!(".SS {heading}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
