//! Running a snapshot tool (`lvcreate`, `qemu-img`, a user hook) with a time limit.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// Run `cmd` and return its standard output, or one line saying why it failed: it could not
/// start, it ran longer than `limit` (it is then killed), or it exited non-zero (with the
/// first line of its standard error).
pub fn run(mut cmd: Command, limit: Duration) -> Result<String, String> {
    let shown = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = match child.wait_timeout(limit) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{shown} did not finish within {} s and was killed",
                limit.as_secs_f64()
            ));
        }
        Err(e) => return Err(format!("waiting for {shown}: {e}")),
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("{shown} failed ({status}): {first}"));
    }
    Ok(stdout)
}

/// The last non-empty line of `out`, trimmed.
pub fn last_line(out: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn returns_output_or_says_why_not() {
        let out = run(sh("echo one; echo two"), Duration::from_secs(5)).unwrap();
        assert_eq!(last_line(&out).as_deref(), Some("two"));
        let e = run(sh("echo oops >&2; exit 3"), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("oops") && e.contains('3'), "{e}");
        let e = run(sh("sleep 5"), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        let e = run(Command::new("/nonexistent/tool"), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
