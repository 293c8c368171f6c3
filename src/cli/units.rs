//! Human-readable sizes for command output (shared by `vdar` and `vdar-restore`).

/// Bytes in binary units with one decimal (`0 B`, `1023 B`, `1.5 KiB`, `6.0 GiB`). Printed by
/// bytesize (no dependencies, IEC units with `iB` by default): the units qemu-img shows and
/// parse-size reads back, so a size a user reads can be typed as an option.
pub fn human(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`. UTC, not local time: archives move between
/// machines and time zones, and the manifest stores UTC.
pub fn utc(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::utc_fields(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_instants() {
        // Cross-checked with `date -u -d @SECS`.
        for (secs, want) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (1_700_000_000, "2023-11-14 22:13:20 UTC"),
            (1_795_853_392, "2026-11-28 08:09:52 UTC"),
            (4_107_542_399, "2100-02-28 23:59:59 UTC"),
            (4_107_542_400, "2100-03-01 00:00:00 UTC"),
        ] {
            assert_eq!(utc(secs), want, "{secs}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(6 << 30), "6.0 GiB");
        assert_eq!(human(3_500_000_000), "3.3 GiB");
    }
}
