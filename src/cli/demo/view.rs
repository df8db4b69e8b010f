//! What the demo prints: a screen redrawn in place on a terminal, plain lines elsewhere.
//!
//! Plain mode (stdout is not a terminal) prints a header, one line per event as it happens
//! (`[   1.6s] breaker local/* closed -> open: connection_refused, for 0.3s`), one
//! status line per second, and `summary:` lines at the end, so a log reads top to bottom and
//! a test can parse it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use llm_failover::breaker::{Breaker, Registry, State};

use super::Failure;
use super::scenario::{EMBED_ROUTE, FALLBACK, PRIMARY, Phase, ROUTE, TARGETS, Timeline, split};
use super::traffic::{Api, Board, Note, Stamped, Tally};

/// How often the terminal screen is redrawn.
const REDRAW: Duration = Duration::from_millis(200);
/// How often plain mode prints a status line.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// The widest line of the terminal screen (events are cut to it).
const WIDTH: usize = 80;
/// How many recent events the terminal screen lists.
const RECENT: usize = 8;

/// Why the demo stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The set duration passed.
    Duration,
    /// Ctrl-C or SIGTERM.
    Signal,
}

/// Per breaker, what its transitions were.
#[derive(Debug, Clone, Copy, Default)]
struct Moves {
    transitions: u64,
    opened: u64,
}

pub(super) struct View {
    tty: bool,
    color: bool,
    addr: SocketAddr,
    timeline: Timeline,
    registry: Arc<Registry>,
    board: Arc<Board>,
    notes: mpsc::UnboundedReceiver<Stamped>,
    recent: VecDeque<String>,
    moves: BTreeMap<String, Moves>,
    /// Lines of the last frame drawn on the terminal (to move back over).
    drawn: usize,
}

impl View {
    pub(super) fn new(
        tty: bool,
        addr: SocketAddr,
        timeline: Timeline,
        registry: Arc<Registry>,
        board: Arc<Board>,
        notes: mpsc::UnboundedReceiver<Stamped>,
    ) -> Self {
        Self {
            tty,
            color: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            addr,
            timeline,
            registry,
            board,
            notes,
            recent: VecDeque::new(),
            moves: BTreeMap::new(),
            drawn: 0,
        }
    }

    /// Shows the demo until `duration` has passed since the start or `stop` completes.
    pub(super) async fn run(
        &mut self,
        duration: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<Ending, Failure> {
        let start = tokio::time::Instant::from_std(self.board.start());
        let end = tokio::time::sleep_until(start + duration);
        tokio::pin!(end, stop);
        let mut tick = if self.tty {
            tokio::time::interval(REDRAW)
        } else {
            self.emit(&self.header().join("\n"))?;
            tokio::time::interval_at(start + STATUS_EVERY, STATUS_EVERY)
        };
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ending = loop {
            tokio::select! {
                () = &mut end => break Ending::Duration,
                () = &mut stop => break Ending::Signal,
                Some(note) = self.notes.recv() => self.on_note(&note)?,
                _ = tick.tick() => {
                    if self.tty {
                        self.draw()?;
                    } else {
                        let line = self.status_line();
                        self.emit(&line)?;
                    }
                }
            }
        };
        Ok(ending)
    }

    /// After the traffic and the proxy have stopped: the last events, the last frame, and
    /// the summary.
    pub(super) fn finish(mut self, ending: Ending) -> Result<(), Failure> {
        while let Ok(note) = self.notes.try_recv() {
            self.on_note(&note)?;
        }
        if self.tty {
            self.draw()?;
            self.emit("\x1b[?25h")?;
        }
        let summary = self.summary(ending).join("\n");
        self.emit(&summary)
    }

    fn on_note(&mut self, s: &Stamped) -> Result<(), Failure> {
        if let Note::Transition(t) = &s.note {
            let m = self
                .moves
                .entry(format!("{}/{}", t.provider, t.model))
                .or_default();
            m.transitions += 1;
            if t.to == State::Open.as_str() {
                m.opened += 1;
            }
        }
        let line = format!("[{}] {}", stamp(s.at), describe(&s.note));
        if self.tty {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(line);
            Ok(())
        } else {
            self.emit(&line)
        }
    }

    /// Writes `text` and a newline to stdout.
    fn emit(&self, text: &str) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()?;
        Ok(())
    }

    fn header(&self) -> Vec<String> {
        let t = &self.timeline;
        let (primary, _) = split(PRIMARY);
        let (fallback, _) = split(FALLBACK);
        vec![
            format!(
                "llm-failover demo: simulated providers on loopback, {primary} (primary) and \
                 {fallback} (fallback); no network, keys or config. Runs {}; Ctrl-C stops it.",
                secs(t.total)
            ),
            format!(
                "proxy:    http://{}/v1  (model \"{ROUTE}\", embeddings \"{EMBED_ROUTE}\")",
                self.addr
            ),
            format!("clients:  POST {}", Api::ALL.map(Api::path).join(", ")),
            format!("metrics:  curl http://{}/metrics", self.addr),
            format!("status:   curl http://{}/v1/failover/status", self.addr),
            format!(
                "timeline: {primary} host powered off at {}, back at {}; breakers open for {} \
                 at first, doubling up to {}",
                secs(t.outage_at),
                secs(t.recover_at),
                secs(t.open_base),
                secs(t.max_open)
            ),
        ]
    }

    /// The breakers, primary provider first, each provider-wide breaker before its models.
    fn breakers(&self) -> Vec<&Breaker> {
        let (primary, _) = split(PRIMARY);
        let mut all: Vec<&Breaker> = self.registry.iter().collect();
        all.sort_by(|a, b| {
            (
                a.provider() != primary,
                a.provider(),
                a.model() != "*",
                a.model(),
            )
                .cmp(&(
                    b.provider() != primary,
                    b.provider(),
                    b.model() != "*",
                    b.model(),
                ))
        });
        all
    }

    /// Every target that served or may serve, the configured ones first.
    fn targets(tally: &Tally) -> Vec<String> {
        let mut targets: Vec<String> = TARGETS.map(str::to_owned).into();
        for t in tally.served.keys() {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        targets
    }

    fn status_line(&self) -> String {
        let tally = self.board.tally();
        let mut line = format!(
            "[{}] status phase={} requests={} ok={} error={} in_flight={} | served",
            stamp(self.board.elapsed()),
            self.board.phase().name(),
            tally.ok + tally.error,
            tally.ok,
            tally.error,
            self.board.in_flight(),
        );
        for t in Self::targets(&tally) {
            let n: u64 = tally.served.get(&t).map_or(0, |p| p.iter().sum());
            let _ = write!(line, " {t}={n}");
        }
        line.push_str(" | failovers");
        push_counts(&mut line, &tally.failovers);
        line.push_str(" | breakers");
        for b in self.breakers() {
            let _ = write!(line, " {}/{}={}", b.provider(), b.model(), b.state());
        }
        line
    }

    /// Redraws the terminal screen over the last frame.
    fn draw(&mut self) -> Result<(), Failure> {
        let lines = self.frame();
        let mut text = String::new();
        if self.drawn == 0 {
            text.push_str("\x1b[?25l");
        } else {
            let _ = write!(text, "\x1b[{}A\r\x1b[J", self.drawn);
        }
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.drawn = lines.len();
        Ok(())
    }

    fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// The name of `state` padded to `width`, in its colour.
    fn state_cell(&self, state: State, width: usize) -> String {
        let text = format!("{:<width$}", state.as_str());
        let code = match state {
            State::Closed => "32",
            State::Open | State::ForcedOpen => "31",
            State::HalfOpen => "33",
            State::Disabled | State::MetricsOnly => "36",
            _ => "0",
        };
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    }

    fn frame(&self) -> Vec<String> {
        let t = &self.timeline;
        let elapsed = self.board.elapsed().min(t.total);
        let phase = self.board.phase();
        let tally = self.board.tally();
        let mut out = Vec::new();
        out.push(self.bold(&format!(
            "llm-failover demo   {} / {}   (Ctrl-C to stop)",
            secs(elapsed),
            secs(t.total)
        )));
        out.extend(self.header().into_iter().skip(1).take(4));
        out.push(String::new());

        let next = match phase {
            Phase::Healthy => format!(
                " (power off in {})",
                secs(t.outage_at.saturating_sub(elapsed))
            ),
            Phase::Outage => format!(
                " (power on in {})",
                secs(t.recover_at.saturating_sub(elapsed))
            ),
            Phase::Recovered => String::new(),
        };
        out.push(format!(
            "{} {}: {}{next}",
            self.bold("phase"),
            phase.name(),
            phase.describe()
        ));
        out.push(String::new());

        out.push(self.bold("breakers"));
        out.push(format!(
            "  {:<8} {:<16} {:<10} {:<19} {:<13} {}",
            "provider", "model", "state", "reason", "re-admits", "opened"
        ));
        for b in self.breakers() {
            let snap = b.snapshot();
            let reason = match snap.state {
                State::Closed => "-",
                _ => snap.reason.map_or("-", |r| r.as_str()),
            };
            let readmits = match (snap.state, b.closed_in()) {
                (State::HalfOpen, _) => "probing".to_owned(),
                (_, None) => "-".to_owned(),
                (_, Some(Duration::MAX)) => "by operator".to_owned(),
                (_, Some(d)) if d.is_zero() => "next request".to_owned(),
                (_, Some(d)) => format!("in {}", secs(d)),
            };
            let opened = self
                .moves
                .get(&format!("{}/{}", b.provider(), b.model()))
                .map_or(0, |m| m.opened);
            out.push(format!(
                "  {:<8} {:<16} {} {reason:<19} {readmits:<13} {opened}x",
                b.provider(),
                b.model(),
                self.state_cell(snap.state, 10),
            ));
        }
        out.push(String::new());

        let targets = Self::targets(&tally);
        let width = targets.iter().map(String::len).max().unwrap_or_default();
        out.push(self.bold(&format!(
            "{:<w$} {:>9} {:>9} {:>9}",
            "served by",
            Phase::Healthy.name(),
            Phase::Outage.name(),
            Phase::Recovered.name(),
            w = width + 2,
        )));
        for target in targets {
            let n = tally.served.get(&target).copied().unwrap_or_default();
            out.push(format!(
                "  {target:<width$} {:>9} {:>9} {:>9}",
                n[0], n[1], n[2]
            ));
        }
        let mut failovers = String::from("failovers");
        push_counts(&mut failovers, &tally.failovers);
        if tally.failovers.contains_key("breaker_open") {
            failovers.push_str("  (breaker_open: nothing sent)");
        }
        out.push(failovers);
        out.push(format!(
            "requests  ok {}   error {}   ({} streamed, {} not; {} in flight)",
            tally.ok,
            tally.error,
            tally.streamed,
            tally.whole,
            self.board.in_flight()
        ));
        // By client API, under the counts of the requests line.
        let by_api: Vec<String> = Api::ALL
            .iter()
            .map(|a| format!("{} {}", a.name(), tally.by_api[a.index()]))
            .collect();
        out.push(format!("{:10}{}", "", by_api.join("   ")));
        if !tally.errors.is_empty() {
            let mut errors = String::from("errors   ");
            push_counts(&mut errors, &tally.errors);
            out.push(errors);
        }
        out.push(String::new());
        out.push(self.bold("recent events"));
        out.extend(
            self.recent
                .iter()
                .map(|l| format!("  {}", clip(l, WIDTH - 2))),
        );
        out
    }

    fn summary(&self, ending: Ending) -> Vec<String> {
        let tally = self.board.tally();
        let mut out = vec![format!(
            "summary: ran {}, ended by {}, in phase {}",
            secs(self.board.elapsed()),
            match ending {
                Ending::Duration => "the set duration",
                Ending::Signal => "a stop signal",
            },
            self.board.phase().name()
        )];
        let mut requests = format!(
            "summary: requests={} ok={} error={} streamed={} non_streamed={} by_api",
            tally.ok + tally.error,
            tally.ok,
            tally.error,
            tally.streamed,
            tally.whole
        );
        for api in Api::ALL {
            let _ = write!(requests, " {}={}", api.name(), tally.by_api[api.index()]);
        }
        out.push(requests);
        for phase in Phase::ALL {
            let mut line = format!("summary: phase={} served", phase.name());
            for target in Self::targets(&tally) {
                let n = tally.served.get(&target).map_or(0, |p| p[phase.index()]);
                let _ = write!(line, " {target}={n}");
            }
            out.push(line);
        }
        let mut failovers = String::from("summary: failovers");
        push_counts(&mut failovers, &tally.failovers);
        out.push(failovers);
        let mut errors = String::from("summary: errors");
        push_counts(&mut errors, &tally.errors);
        out.push(errors);
        for b in self.breakers() {
            let m = self
                .moves
                .get(&format!("{}/{}", b.provider(), b.model()))
                .copied()
                .unwrap_or_default();
            out.push(format!(
                "summary: breaker {}/{} state={} opened={} transitions={}",
                b.provider(),
                b.model(),
                b.state(),
                m.opened,
                m.transitions
            ));
        }
        out
    }
}

/// ` key=n` for each count, or ` none`.
fn push_counts(line: &mut String, counts: &BTreeMap<String, u64>) {
    if counts.is_empty() {
        line.push_str(" none");
    }
    for (k, n) in counts {
        let _ = write!(line, " {k}={n}");
    }
}

/// What a note says, in one line.
fn describe(note: &Note) -> String {
    match note {
        Note::Phase(p) => format!("phase {}: {}", p.name(), p.describe()),
        Note::Transition(t) => {
            let mut s = format!("breaker {}/{} {} -> {}", t.provider, t.model, t.from, t.to);
            if t.to == State::Open.as_str() {
                let _ = write!(s, ": {}", t.reason);
                if let Some(ms) = t.open_for_ms {
                    let _ = write!(s, ", for {}", secs(Duration::from_millis(ms)));
                }
            }
            s
        }
        Note::ServedBy { target, trail } => {
            // The attempts before the one that answered.
            let before: Vec<&str> = trail.split("; ").collect();
            match before.split_last() {
                Some((_, before)) if !before.is_empty() => {
                    format!("served by {target} now (after {})", before.join("; "))
                }
                _ => format!("served by {target} now"),
            }
        }
        Note::Failed { what, trail } => {
            if trail.is_empty() {
                format!("request failed: {what}")
            } else {
                format!("request failed: {what} (trail: {trail})")
            }
        }
    }
}

/// `line` cut to `width` characters, with an ellipsis when it was longer.
fn clip(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `   1.6s`: the time since the start, for `[...]` stamps.
fn stamp(d: Duration) -> String {
    format!("{:>6.1}s", d.as_secs_f64())
}

/// A duration in seconds, to a precision that fits its size.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.0}s")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tap::Transition;
    use super::*;

    #[test]
    fn notes_read_as_one_line_each() {
        let open = Transition {
            provider: "local".into(),
            model: "*".into(),
            from: "closed".into(),
            to: "open".into(),
            reason: "connection_refused".into(),
            open_for_ms: Some(300),
            ..Transition::default()
        };
        assert_eq!(
            describe(&Note::Transition(open)),
            "breaker local/* closed -> open: connection_refused, for 0.3s"
        );
        let served = |trail: &str| Note::ServedBy {
            target: "cloud/gpt-4o-mini".into(),
            trail: trail.into(),
        };
        assert_eq!(
            describe(&served("local/llama3=breaker_open; cloud/gpt-4o-mini=ok")),
            "served by cloud/gpt-4o-mini now (after local/llama3=breaker_open)"
        );
        assert_eq!(
            describe(&served("cloud/gpt-4o-mini=ok")),
            "served by cloud/gpt-4o-mini now"
        );
        assert_eq!(
            describe(&Note::Phase(Phase::Outage)),
            "phase outage: local host powered off: connections refused"
        );
        assert_eq!(stamp(Duration::from_millis(1600)), "   1.6s");
        assert_eq!(secs(Duration::from_secs(30)), "30s");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
