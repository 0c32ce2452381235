//! Refusing to run beside `xl save` / `xl migrate` of the same domain.
//!
//! Both use the domain's log-dirty bitmap (migrate) or pause and suspend it (save); a
//! fetch-and-clear by xckpt in the middle of a migration would make the migration miss pages.
//! libxl runs the memory copy in `libxl-save-helper --save-domain <fd> <domid> …`, and `xl`
//! itself names the domain on its command line; either is found in `/proc`.

use std::path::Path;

/// The command line of a process that saves or migrates domain `domid` (named `name`) now.
pub fn busy_with(proc_root: &Path, domid: u32, name: &str) -> Option<String> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    let id = domid.to_string();
    // Not this process: it is no `xl`, and its command line is read from its own memory, under
    // the lock that its other threads' mappings of guest memory take.
    let own = std::process::id().to_string();
    for e in entries.flatten() {
        let pid = e.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && *p != own)
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&str> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .filter_map(|a| std::str::from_utf8(a).ok())
            .collect();
        if conflicts(&args, &id, name) {
            return Some(format!("pid {pid}: {}", args.join(" ")));
        }
    }
    None
}

fn conflicts(args: &[&str], domid: &str, name: &str) -> bool {
    let prog = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    match prog {
        "libxl-save-helper" => args.get(1) == Some(&"--save-domain") && args.get(3) == Some(&domid),
        "xl" => {
            let verb = args
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .copied()
                .unwrap_or("");
            matches!(verb, "save" | "migrate" | "remus")
                && args.iter().skip(2).any(|a| *a == domid || *a == name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_save_helpers_and_xl_verbs_for_this_domain_only() {
        // Whatever release's tools directory the helper runs from.
        for helper in [
            "/usr/lib/xen-4.17/bin/libxl-save-helper",
            "/usr/lib/xen-4.20/bin/libxl-save-helper",
        ] {
            assert!(conflicts(
                &[helper, "--save-domain", "8", "3", "0"],
                "3",
                "g"
            ));
        }
        assert!(!conflicts(
            &["libxl-save-helper", "--save-domain", "8", "4"],
            "3",
            "g"
        ));
        assert!(!conflicts(
            &["libxl-save-helper", "--restore-domain", "8", "3"],
            "3",
            "g"
        ));
        assert!(conflicts(&["xl", "save", "-c", "g", "/tmp/f"], "3", "g"));
        assert!(conflicts(
            &["/usr/sbin/xl", "-v", "migrate", "3", "localhost"],
            "3",
            "g"
        ));
        assert!(!conflicts(&["xl", "list", "g"], "3", "g"));
        assert!(!conflicts(&["xl", "save", "other", "/tmp/f"], "3", "g"));
    }

    #[test]
    fn scans_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("4242");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("cmdline"), b"xl\0migrate\0guest1\0host\0").unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        assert!(busy_with(dir.path(), 3, "guest1")
            .unwrap()
            .contains("pid 4242"));
        assert!(busy_with(dir.path(), 3, "guest2").is_none());
    }
}
