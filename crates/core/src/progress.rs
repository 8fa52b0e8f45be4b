//! Progress bars (indicatif) for the long runs: `gen`, `verify`, `replay`, `bench` and
//! the streamer. They draw on stderr only when stderr is a terminal; anywhere else (a
//! log file, a pipe, a container, the tests) every bar is hidden and stderr carries the
//! log lines alone, byte for byte as without bars.
//!
//! Log lines and bars share stderr: every bar belongs to one process-wide
//! `MultiProgress`, and [`write_log`] (which `telemetry::Stderr` writes each log line
//! through) clears the bars, writes the line and draws them again below it. So under
//! `weathervane up` the four roles' lines scroll above the streamer's bar instead of
//! being cut into it.

use std::io::{self, IsTerminal, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use indicatif::ProgressBar;
use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};

/// Every bar of the process, and whether they are drawn (stderr is a terminal).
struct Bars {
    multi: MultiProgress,
    drawn: bool,
}

static BARS: OnceLock<Bars> = OnceLock::new();
/// Set when drawing failed once (indicatif panics on a failed write to the terminal):
/// from then on log lines go straight to stderr, so that logging still cannot stop a
/// role.
static BROKEN: AtomicBool = AtomicBool::new(false);

/// Where bars draw: stderr on a terminal, nowhere otherwise.
fn draw_target(terminal: bool) -> ProgressDrawTarget {
    if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

fn bars() -> &'static Bars {
    BARS.get_or_init(|| {
        let drawn = io::stderr().is_terminal();
        Bars {
            multi: MultiProgress::with_draw_target(draw_target(drawn)),
            drawn,
        }
    })
}

/// Whether bars are drawn in this process (stderr is a terminal).
pub fn drawn() -> bool {
    bars().drawn
}

/// A bar counting `len` units of `what` (e.g. "rows"), labelled `label`.
pub fn bar(label: &str, len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>9}} [{{bar:32}}] {{human_pos}}/{{human_len}} {what}, {{elapsed}} ({{eta}} left) {{msg}}"
    ))
    .expect("a valid template")
    .progress_chars("=> ");
    add(len, style, label)
}

/// A bar of `len` steps (phases, scenario steps), labelled `label`, its message saying
/// which step it is in.
pub fn steps(label: &str, len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>9} [{bar:32}] {pos}/{len} {elapsed_precise} {wide_msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let bar = add(len, style, label);
    if !bar.is_hidden() {
        // The elapsed time moves between steps too.
        bar.enable_steady_tick(Duration::from_millis(500));
    }
    bar
}

/// Moves a [`steps`] bar on to its next step, `name`: the step under way is its message,
/// the steps done its position (so the first call only names the first step).
pub fn next_step(bar: &ProgressBar, name: String) {
    if !bar.message().is_empty() {
        bar.inc(1);
    }
    bar.set_message(name);
}

/// A bar of `len` joined to the process's bars when they are drawn, hidden otherwise (it
/// still counts, nothing draws it). Made hidden, so that nothing draws it outside the
/// `MultiProgress` before it joins.
fn add(len: u64, style: ProgressStyle, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(label.to_owned());
    let bars = bars();
    if bars.drawn { bars.multi.add(bar) } else { bar }
}

/// Writes one log line to stderr, clearing the bars first and drawing them again after,
/// so that the line is never cut into a bar. A failed write is dropped (as
/// `telemetry::Stderr` promises).
pub fn write_log(line: &[u8]) {
    let direct = || {
        let _ = io::stderr().lock().write_all(line);
    };
    let bars = bars();
    if !bars.drawn || BROKEN.load(Ordering::Relaxed) {
        return direct();
    }
    if catch_unwind(AssertUnwindSafe(|| bars.multi.suspend(direct))).is_err() {
        BROKEN.store(true, Ordering::Relaxed);
        direct();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_bars_are_hidden() {
        assert!(draw_target(false).is_hidden());
        // The test harness's stderr is a pipe or file under cargo and CI; on a developer's
        // terminal the bars would be drawn, and the process-wide check says which.
        if !io::stderr().is_terminal() {
            assert!(!drawn());
            let bar = bar("gen", 10, "rows");
            assert!(bar.is_hidden());
            bar.inc(5);
            assert_eq!((bar.position(), bar.length()), (5, Some(10)));
            let steps = steps("bench", 3);
            assert!(steps.is_hidden());
            next_step(&steps, "first".into());
            next_step(&steps, "second".into());
            assert_eq!((steps.position(), steps.message().as_ref()), (1, "second"));
        }
    }
}
