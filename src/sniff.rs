//! What a file that is not what a command expected looks like, for error messages: a user who
//! hands `restore` a VMDK or `inspect` an archive is told what they gave, not shown its bytes.
//!
//! A leaf module: it knows the leading magics of every format vdar reads or writes and nothing
//! else, so the archive reader and the descriptor parser can both use it.

/// First 8 bytes of every vdar archive: blake3("vdar archive v1")[..8], the on-disk identity
/// of format v1 (formats/ARCHIVE.md; DO NOT MODIFY). It lives here, below both the archive
/// and the input side, because both name an archive handed to the wrong command.
pub const ARCHIVE_MAGIC_V1: [u8; 8] = [0xe7, 0x48, 0xfc, 0xc4, 0x59, 0x5f, 0xbb, 0x54];

/// Longest excerpt of a line quoted in an error.
const MAX_EXCERPT_CHARS: usize = 40;

/// What the first bytes of a file look like, as `it looks like …`, or `None` when they match
/// no format vdar knows. Only leading magics and first lines are checked: 64 bytes suffice.
pub fn looks_like(head: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(&head[..head.len().min(64)]).unwrap_or("");
    let text = text.trim_start();
    let what = if head.starts_with(&ARCHIVE_MAGIC_V1) {
        "it looks like a vdar archive"
    } else if head.starts_with(b"KDMV") {
        "it looks like a VMDK sparse extent"
    } else if head.starts_with(b"COWD") {
        "it looks like a VMDK vmfsSparse (COWD) redo log"
    } else if head.starts_with(&[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0]) {
        "it looks like a VMDK SEsparse extent"
    } else if text.starts_with("# Disk DescriptorFile") || text.starts_with("version=") {
        "it looks like a VMDK descriptor"
    } else if text.starts_with(".encoding") || text.starts_with("config.version") {
        "it looks like a VM configuration file (.vmx)"
    } else if head.starts_with(&[0x1f, 0x8b]) {
        "it looks like gzip-compressed data"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "it looks like zstd-compressed data"
    } else {
        return None;
    };
    Some(what)
}

/// A line of a text file quoted in an error: escaped, at most 40 characters, or `binary data`
/// when it holds control characters (a binary file read as text would fill a terminal with
/// garbage and could move its cursor).
pub fn excerpt(line: &str) -> String {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return "binary data".into();
    }
    let cut: String = line.chars().take(MAX_EXCERPT_CHARS).collect();
    let more = if cut.len() < line.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_formats() {
        assert_eq!(
            looks_like(b"# Disk DescriptorFile\nversion=1\n"),
            Some("it looks like a VMDK descriptor")
        );
        assert_eq!(
            looks_like(b"KDMV\x01\0\0\0"),
            Some("it looks like a VMDK sparse extent")
        );
        assert_eq!(
            looks_like(&ARCHIVE_MAGIC_V1),
            Some("it looks like a vdar archive")
        );
        assert_eq!(looks_like(b"\x00\x01garbage"), None);
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("hello"), "\"hello\"");
        assert_eq!(excerpt("a\u{1}b"), "binary data");
        let long = "x".repeat(100);
        assert_eq!(excerpt(&long), format!("\"{}\"…", "x".repeat(40)));
        assert_eq!(excerpt("caf\u{e9} \"q\""), "\"caf\u{e9} \\\"q\\\"\"");
    }
}
