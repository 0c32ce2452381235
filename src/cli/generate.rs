//! `xckpt __generate DIR`: man pages and shell completions from the clap definition, for
//! packaging (`tools/build-deb`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// `xckpt __generate DIR`
#[derive(Debug, Args)]
pub struct GenerateCmd {
    /// Directory to write `man/*.1` and `completions/*` into (created).
    dir: PathBuf,
}

/// The verbs an operator sees (hidden ones left out).
pub fn visible_verbs(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

/// The man page of `cmd` (roff).
pub fn man_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

impl GenerateCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let man = self.dir.join("man");
        let comp = self.dir.join("completions");
        for d in [&man, &comp] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut cmd = Cli::command();
        cmd.build();
        write(&man.join("xckpt.1"), &man_page(cmd.clone())?)?;
        for name in visible_verbs(&cmd).into_iter().filter(|n| n != "help") {
            if let Some(sub) = cmd.find_subcommand(&name) {
                let page = sub.clone().name(format!("xckpt-{name}"));
                write(&man.join(format!("xckpt-{name}.1")), &man_page(page)?)?;
            }
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut Cli::command(), "xckpt", &comp)
                .with_context(|| format!("cannot write {shell} completions"))?;
        }
        println!(
            "wrote man pages to {} and completions to {}",
            man.display(),
            comp.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verb an operator can run is in `xckpt --help` and in the man page; new verbs are
    /// covered as soon as they are added to the clap definition.
    #[test]
    fn help_and_man_page_list_every_verb() {
        let mut cmd = Cli::command();
        cmd.build();
        let verbs = visible_verbs(&cmd);
        assert!(verbs.len() >= 9, "{verbs:?}");
        let help = cmd.render_help().to_string();
        let man = String::from_utf8(man_page(cmd.clone()).unwrap()).unwrap();
        for v in &verbs {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(v.as_str())),
                "--help lacks {v}:\n{help}"
            );
            // clap_mangen escapes '-' as '\-' in roff.
            let roff = v.replace('-', "\\-");
            assert!(man.contains(&roff), "man page lacks {v}");
        }
        for hidden in ["__watchdog", "__generate"] {
            assert!(!help.contains(hidden), "--help shows {hidden}");
        }
        assert!(man.contains("\\-\\-config"), "man page lacks --config");
    }

    #[test]
    fn generate_writes_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        GenerateCmd {
            dir: dir.path().to_path_buf(),
        }
        .run()
        .unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        for v in visible_verbs(&cmd).into_iter().filter(|v| v != "help") {
            let p = dir.path().join(format!("man/xckpt-{v}.1"));
            assert!(p.exists(), "{}", p.display());
        }
        for f in ["xckpt.bash", "_xckpt", "xckpt.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains("checkpoint"), "{f}");
            for flag in ["metrics-file", "progress", "quiet"] {
                assert!(text.contains(flag), "{f} lacks --{flag}");
            }
        }
        // The operator's flags are in the pages of the verbs that take them.
        let page =
            |v: &str| std::fs::read_to_string(dir.path().join(format!("man/{v}.1"))).unwrap();
        assert!(page("xckpt-checkpoint").contains("\\-\\-metrics\\-file"));
        for v in [
            "checkpoint",
            "restore",
            "export",
            "import",
            "merge",
            "prune",
        ] {
            assert!(
                page(&format!("xckpt-{v}")).contains("\\-\\-json"),
                "{v} lacks --json"
            );
        }
        assert!(page("xckpt").contains("\\-\\-progress"));
        assert!(
            !page("xckpt-checkpoint").contains("\\-\\-sim"),
            "--sim is hidden"
        );
    }
}
