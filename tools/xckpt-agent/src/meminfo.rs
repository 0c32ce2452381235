//! The guest's own memory figures.

/// MemTotal, MemFree and Cached + Buffers, KiB.
pub struct MemInfo {
    pub total_kib: u64,
    pub free_kib: u64,
    pub cache_kib: u64,
}

/// Read `/proc/meminfo`.
pub fn read() -> Result<MemInfo, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    Ok(parse(&text))
}

fn parse(text: &str) -> MemInfo {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    MemInfo {
        total_kib: field("MemTotal"),
        free_kib: field("MemFree"),
        cache_kib: field("Cached") + field("Buffers"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_fields_it_needs() {
        let m = super::parse(
            "MemTotal:  500 kB\nMemFree: 100 kB\nBuffers: 5 kB\nCached: 20 kB\nSwapCached: 9 kB\n",
        );
        assert_eq!((m.total_kib, m.free_kib, m.cache_kib), (500, 100, 25));
    }
}
