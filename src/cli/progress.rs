//! Drawing the library's progress events ([`xckpt::progress`]): indicatif bars on a terminal,
//! or newline-delimited JSON on stderr (`--progress json`). Nothing is drawn when stderr is
//! not a terminal (unless JSON is asked for) or with `--quiet`.
//!
//! A bar shows bytes, rate and an estimate only when the library gave the task's size before
//! it began; otherwise a spinner counts what was done. When a task ends the bar is set to the
//! true count the library reports, and a line with the task's figures is left above the bars.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use xckpt::hv::PAGE_SIZE;
use xckpt::progress::{Event, Observer, Task, Unit};

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, nothing otherwise.
    Auto,
    /// One JSON object per line for each event (for programs that drive xckpt).
    Json,
    /// Nothing.
    None,
}

/// The renderer of the command running now, to clear its bars before a result is printed.
static BARS: Mutex<Option<Arc<Bars>>> = Mutex::new(None);

/// The observer of the command running now: the library's observer is set once per process
/// ([`Switch`]), and `xckpt serve` runs one command after another, each with its own.
static CURRENT: Mutex<Option<Arc<dyn Observer>>> = Mutex::new(None);

/// Whether `--quiet` was given.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--quiet` was given: results only.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// The library's observer: hands each event to the command's ([`CURRENT`]).
struct Switch;

impl Observer for Switch {
    fn event(&self, e: &Event<'_>) {
        let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(o) = current {
            o.event(e);
        }
    }
}

/// Install the observer `mode` asks for (nothing with `quiet`, or `auto` off a terminal), in
/// place of the previous command's.
pub fn install(mode: ProgressMode, quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let mut bars = None;
    let observer: Option<Arc<dyn Observer>> = match mode {
        _ if quiet => None,
        ProgressMode::None => None,
        ProgressMode::Json => Some(Arc::new(JsonLines::default())),
        ProgressMode::Auto if !std::io::stderr().is_terminal() => None,
        ProgressMode::Auto => {
            let b = Arc::new(Bars::new());
            bars = Some(b.clone());
            Some(b)
        }
    };
    *BARS.lock().unwrap_or_else(|p| p.into_inner()) = bars;
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = observer;
    static SWITCH: std::sync::Once = std::sync::Once::new();
    SWITCH.call_once(|| {
        let _ = xckpt::progress::set_observer(Box::new(Switch));
    });
}

/// Remove the bars from the terminal (the lines left above them stay), before a result line.
pub fn clear() {
    let bars = BARS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(b) = bars {
        b.clear();
    }
}

/// Clear the bars and drop the command's observer: nothing of it draws after the command.
pub fn finish() {
    clear();
    *BARS.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// `task` as the words a line shows.
fn task_name(task: Task) -> String {
    match task {
        Task::Round(n) => format!("round {n}"),
        Task::WriteBehind => "write-behind".into(),
        Task::Fold => "fold".into(),
        Task::Verify(id) => format!("verify point {id}"),
        Task::Stream => "stream".into(),
        Task::Import => "import".into(),
    }
}

/// Bytes a count of `task` stands for (pages are 4 KiB).
fn bytes_of(task: Task, n: u64) -> u64 {
    match task.unit() {
        Unit::Pages => n * PAGE_SIZE as u64,
        Unit::Bytes => n,
    }
}

/// `bytes` over `took`, for a line.
fn per_second(bytes: u64, took: Duration) -> HumanBytes {
    HumanBytes((bytes as f64 / took.as_secs_f64().max(1e-6)) as u64)
}

/// One line of the terminal: a domain's or chain's current task.
struct Line {
    bar: ProgressBar,
    task: Task,
    started: Instant,
    /// The figures of the round just finished, printed with its dirty rate.
    round_done: Option<(u64, Duration)>,
}

/// indicatif bars, one per subject.
struct Bars {
    multi: MultiProgress,
    lines: Mutex<HashMap<String, Line>>,
}

impl Observer for Bars {
    fn event(&self, e: &Event<'_>) {
        self.draw(e)
    }
}

fn sized_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} {msg} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn open_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {msg} {bytes} {bytes_per_sec}")
        .expect("valid template")
}

fn stopped_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}").expect("valid template")
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            lines: Mutex::new(HashMap::new()),
        }
    }

    fn clear(&self) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for (_, l) in lines.drain() {
            l.bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    fn say(&self, text: String) {
        let _ = self.multi.println(text);
    }

    fn draw(&self, e: &Event<'_>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        match *e {
            Event::Start {
                subject,
                task,
                total,
            } => {
                let label = if subject.is_empty() { "xckpt" } else { subject };
                let fresh = !lines.contains_key(subject);
                let line = lines.entry(subject.to_string()).or_insert_with(|| Line {
                    bar: ProgressBar::hidden(),
                    task,
                    started: Instant::now(),
                    round_done: None,
                });
                // Styled before it is shown, so no default bar flashes.
                line.bar.reset();
                line.bar.set_prefix(label.to_string());
                match total {
                    Some(t) => {
                        line.bar.set_style(sized_style());
                        line.bar.set_length(bytes_of(task, t));
                    }
                    None => {
                        line.bar.set_style(open_style());
                        line.bar.unset_length();
                    }
                }
                line.bar.set_message(task_name(task));
                if fresh {
                    line.bar = self.multi.add(line.bar.clone());
                }
                line.bar.enable_steady_tick(Duration::from_millis(200));
                line.task = task;
                line.started = Instant::now();
            }
            Event::Advance { subject, delta, .. } => {
                if let Some(l) = lines.get(subject) {
                    l.bar.inc(bytes_of(l.task, delta));
                }
            }
            Event::Finish {
                subject,
                task,
                done,
            } => {
                let Some(l) = lines.get_mut(subject) else {
                    return;
                };
                let bytes = bytes_of(task, done);
                l.bar.set_length(bytes);
                l.bar.set_position(bytes);
                let took = l.started.elapsed();
                if let Task::Round(_) = task {
                    l.round_done = Some((done, took));
                    return;
                }
                let count = match task.unit() {
                    Unit::Pages => format!("{done} pages ({})", HumanBytes(bytes)),
                    Unit::Bytes => format!("{done} bytes ({})", HumanBytes(bytes)),
                };
                let label = if subject.is_empty() { "xckpt" } else { subject };
                // The task is over: its line leaves the bars, its figures stay above them.
                l.bar.finish_and_clear();
                self.multi.remove(&l.bar);
                lines.remove(subject);
                self.say(format!(
                    "{label}: {}: {count} in {:.2} s, {}/s",
                    task_name(task),
                    took.as_secs_f64(),
                    per_second(bytes, took)
                ));
            }
            Event::Dirty {
                subject,
                round,
                dirty,
                rate,
            } => {
                let Some(l) = lines.get_mut(subject) else {
                    return;
                };
                let (sent, took) = l.round_done.take().unwrap_or_default();
                let bytes = sent * PAGE_SIZE as u64;
                self.say(format!(
                    "{subject}: round {round}: {sent} pages sent ({}) in {:.2} s, {}/s; \
                     {dirty} pages dirty again, {:.0} pages/s dirtied",
                    HumanBytes(bytes),
                    took.as_secs_f64(),
                    per_second(bytes, took),
                    rate
                ));
            }
            Event::Paused { subject } => {
                if let Some(l) = lines.get(subject) {
                    // No count to show until the write-behind starts: a spinner and the time.
                    l.bar.reset();
                    l.bar.unset_length();
                    l.bar.set_style(stopped_style());
                    l.bar
                        .set_message("stopped: last dirty pages and vCPU state");
                }
            }
            Event::Resumed { subject, downtime } => {
                self.say(format!(
                    "{subject}: stopped for {:.2} ms, running again",
                    downtime.as_secs_f64() * 1e3
                ));
            }
        }
    }
}

/// `--progress json`: one object per event on stderr. Advances are summed and written at
/// most every 200 ms per subject (and before the task's end), with the running count.
#[derive(Default)]
struct JsonLines {
    state: Mutex<JsonState>,
}

#[derive(Default)]
struct JsonState {
    started: Option<Instant>,
    /// subject -> (units done, last report).
    done: HashMap<String, (u64, Option<Instant>)>,
}

impl JsonLines {
    fn write(&self, st: &mut JsonState, mut v: serde_json::Value) {
        let t0 = *st.started.get_or_insert_with(Instant::now);
        v["t"] = serde_json::json!(t0.elapsed().as_secs_f64());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    }
}

fn task_json(task: Task) -> serde_json::Value {
    let mut v = serde_json::to_value(task).unwrap_or_default();
    v["unit"] = serde_json::to_value(task.unit()).unwrap_or_default();
    v
}

impl Observer for JsonLines {
    fn event(&self, e: &Event<'_>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let with_task = |event: &str, subject: &str, task: Task, extra: serde_json::Value| {
            let mut v = task_json(task);
            v["event"] = event.into();
            v["subject"] = subject.into();
            if let serde_json::Value::Object(m) = extra {
                for (k, x) in m {
                    v[k] = x;
                }
            }
            v
        };
        let v = match *e {
            Event::Start {
                subject,
                task,
                total,
            } => {
                st.done.insert(subject.to_string(), (0, None));
                with_task(
                    "start",
                    subject,
                    task,
                    serde_json::json!({ "total": total }),
                )
            }
            Event::Advance {
                subject,
                task,
                delta,
            } => {
                let entry = st.done.entry(subject.to_string()).or_default();
                entry.0 += delta;
                let due = entry
                    .1
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
                if !due {
                    return;
                }
                entry.1 = Some(Instant::now());
                let done = entry.0;
                with_task(
                    "advance",
                    subject,
                    task,
                    serde_json::json!({ "done": done }),
                )
            }
            Event::Finish {
                subject,
                task,
                done,
            } => {
                st.done.remove(subject);
                with_task("finish", subject, task, serde_json::json!({ "done": done }))
            }
            Event::Dirty {
                subject,
                round,
                dirty,
                rate,
            } => serde_json::json!({
                "event": "dirty", "subject": subject, "round": round, "dirty": dirty,
                "rate_pages_s": rate,
            }),
            Event::Paused { subject } => {
                serde_json::json!({ "event": "paused", "subject": subject })
            }
            Event::Resumed { subject, downtime } => serde_json::json!({
                "event": "resumed", "subject": subject,
                "downtime_ms": downtime.as_secs_f64() * 1e3,
            }),
        };
        self.write(&mut st, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tasks_show_bytes() {
        assert_eq!(bytes_of(Task::Round(0), 2), 8192);
        assert_eq!(bytes_of(Task::Import, 2), 2);
        assert_eq!(task_name(Task::Verify(3)), "verify point 3");
    }

    #[test]
    fn bars_end_at_the_reported_count() {
        let bars = Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            lines: Mutex::new(HashMap::new()),
        };
        let task = Task::Round(0);
        bars.event(&Event::Start {
            subject: "g",
            task,
            total: Some(100),
        });
        bars.event(&Event::Advance {
            subject: "g",
            task,
            delta: 64,
        });
        bars.event(&Event::Finish {
            subject: "g",
            task,
            done: 90,
        });
        let lines = bars.lines.lock().unwrap();
        let bar = &lines["g"].bar;
        assert_eq!(bar.position(), 90 * 4096);
        assert_eq!(bar.length(), Some(90 * 4096));
        drop(lines);
        // Any other task's line goes once it ends.
        bars.event(&Event::Start {
            subject: "g",
            task: Task::WriteBehind,
            total: Some(3),
        });
        bars.event(&Event::Finish {
            subject: "g",
            task: Task::WriteBehind,
            done: 3,
        });
        assert!(bars.lines.lock().unwrap().is_empty());
    }
}
