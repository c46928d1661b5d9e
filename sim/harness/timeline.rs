//! A run's timeline as one self-contained HTML page (inline SVG, no script, nothing
//! fetched): `SIM_TIMELINE=FILE.html` with `SIM_SEED` or `SIM_PLAN`.
//!
//! ```text
//!  time axis ──────────────────────────────────────────────────── heal │
//!  faults     [crash n2 ......]   [partition {n1} | {n2,n3} ....]      │
//!  n1  r1     follower t2 ][ LEADER t3 ..........][ down ][ follower t4
//!      r2     ...                                                      │
//!  c1         ▭▭ ▭ ▭▭▭  (one bar per operation, invoke to complete)    │
//!  violation  ─────────────────────────────────────────────── ┃ (red)
//! ```
//!
//! One lane per node with a row per range: its role (colour) and term (text) over
//! time, the node's down and paused spans; the faults as bands (a fault on one node
//! also over that node's lane); each client's operations from invoke to complete,
//! coloured by outcome, the text of each in its tooltip; each checker's finding as a
//! red line (and the history window it concerns as a red band).
//!
//! Collecting costs nothing unless enabled: the replay sets `ENABLED`, and only then
//! does a run record (role and term changes, node events, the history) on its seed's
//! thread; every hook is one relaxed atomic load otherwise.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rangedb::env::sim_hooks::{LogTerm, Observer};
use rangedb::raft::{NodeId, Role, Term};
use rangedb::range::descriptor::RangeId;

use super::checkers::raft_safety::Safety;
use super::checkers::Violation;
use super::history::{Call, Op, Outcome};
use super::now_ms;
use super::run::SeedReport;
use super::schedule::{Fault, Plan};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The recording of the last run, handed from its seed's thread to the writer.
static FINISHED: Mutex<Option<Recording>> = Mutex::new(None);

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// What a run recorded for its timeline, in simulated ms since its start.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// (ms, node index, range, term, role): a role or term change of a replica.
    pub roles: Vec<(u64, usize, u64, Term, Role)>,
    /// (ms, node index, what): "crash", "stop", "restart", "pause", "resume", "wipe".
    pub node_events: Vec<(u64, usize, &'static str)>,
    /// Schedule position -> the node a leader fault found (IsolateLeader, ...).
    pub resolved: BTreeMap<usize, usize>,
    /// When each raft_safety violation was found, in order.
    pub safety_violations_ms: Vec<u64>,
    pub history: Vec<Op>,
    /// The last simulated ms seen (where a panic is marked).
    pub last_ms: u64,
    pub start: Option<tokio::time::Instant>,
}

/// With `SIM_TIMELINE` set, turns recording on for the runs of this process and
/// returns the page's path.
pub fn enable_from_env() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("SIM_TIMELINE")?);
    enable();
    Some(path)
}

/// Turns recording on for the runs of this process (tests).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn with(f: impl FnOnce(&mut Recording, u64)) {
    if !enabled() {
        return;
    }
    RECORDING.with(|recording| {
        if let Some(recording) = recording.borrow_mut().as_mut() {
            let ms = recording.start.map_or(0, now_ms);
            recording.last_ms = recording.last_ms.max(ms);
            f(recording, ms);
        }
    });
}

/// A run starts on this thread (`run::simulate`): records it if enabled. Wraps the
/// run's observer to see role and term changes; returns it unchanged otherwise.
pub fn begin(
    start: tokio::time::Instant,
    observer: Box<dyn Observer>,
    safety: &Arc<Mutex<Safety>>,
) -> Box<dyn Observer> {
    if !enabled() {
        return observer;
    }
    RECORDING.with(|recording| {
        *recording.borrow_mut() = Some(Recording { start: Some(start), ..Recording::default() })
    });
    Box::new(Recorder { inner: observer, safety: safety.clone(), terms: BTreeMap::new() })
}

/// A node of the cluster was crashed, stopped, restarted, paused, resumed or wiped.
pub fn node_event(node: usize, what: &'static str) {
    with(|r, ms| r.node_events.push((ms, node, what)));
}

/// The fault at schedule position `step` found its node (a range's leader).
pub fn resolved(step: usize, node: Option<usize>) {
    if let Some(node) = node {
        with(|r, _| {
            r.resolved.insert(step, node);
        });
    }
}

/// The run on this thread ended with `history`: the recording is handed to `write`.
pub fn finish(history: &[Op]) {
    if !enabled() {
        return;
    }
    let recording = RECORDING.with(|recording| recording.borrow_mut().take());
    if let Some(mut recording) = recording {
        recording.history = history.to_vec();
        *FINISHED.lock().unwrap_or_else(|p| p.into_inner()) = Some(recording);
    }
}

/// The recording of the last run that finished (once).
pub fn take() -> Option<Recording> {
    FINISHED.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Writes the timeline of the run just reported to `path`, and says so.
pub fn write(path: &Path, report: &SeedReport) {
    let recording = take().unwrap_or_default();
    let page = render(&report.plan, report, &recording);
    match std::fs::write(path, page) {
        Ok(()) => println!("timeline: {}", path.display()),
        Err(error) => println!("timeline: could not write {}: {error}", path.display()),
    }
}

/// Forwards every event to the run's observer and records role and term changes and
/// when the safety checker finds a violation.
struct Recorder {
    inner: Box<dyn Observer>,
    safety: Arc<Mutex<Safety>>,
    terms: BTreeMap<(NodeId, RangeId), (Term, Role)>,
}

impl Recorder {
    fn after(&mut self) {
        let found = self.safety.lock().map_or(0, |s| s.violations.len());
        with(|r, ms| {
            while r.safety_violations_ms.len() < found {
                r.safety_violations_ms.push(ms);
            }
        });
    }

    fn change(&mut self, node: NodeId, range: RangeId, term: Term, role: Option<Role>) {
        let last = self.terms.get(&(node, range)).copied();
        let role = role.or(last.map(|(_, role)| role)).unwrap_or(Role::Follower);
        if last != Some((term, role)) {
            self.terms.insert((node, range), (term, role));
            let index = node.0 as usize - 1;
            with(|r, ms| r.roles.push((ms, index, range.0, term, role)));
        }
    }
}

impl Observer for Recorder {
    fn applied(&mut self, node: NodeId, range: RangeId, index: u64, term: Term, data: &[u8]) {
        self.inner.applied(node, range, index, term, data);
        self.after();
    }
    fn snapshot_restored(&mut self, node: NodeId, range: RangeId, index: u64, term: Term) {
        self.inner.snapshot_restored(node, range, index, term);
        self.after();
    }
    fn hard_state_synced(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64) {
        self.inner.hard_state_synced(node, range, term, commit);
        self.change(node, range, term, None);
        self.after();
    }
    fn vote_synced(&mut self, node: NodeId, range: RangeId, term: Term, vote: Option<NodeId>) {
        self.inner.vote_synced(node, range, term, vote);
    }
    fn role_changed(&mut self, node: NodeId, range: RangeId, term: Term, role: Role) {
        self.inner.role_changed(node, range, term, role);
        self.change(node, range, term, Some(role));
        self.after();
    }
    fn leader_membership(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        membership: &rangedb::raft::Membership,
        committed: bool,
    ) {
        self.inner.leader_membership(node, range, term, membership, committed);
    }
    // The checks fed by these run whether or not a timeline is recorded.
    fn heard_leader(&mut self, node: NodeId, range: RangeId, term: Term, leader: NodeId) {
        self.inner.heard_leader(node, range, term, leader);
    }
    fn lease_held(
        &mut self,
        node: NodeId,
        range: RangeId,
        held: Option<(Term, tokio::time::Instant)>,
        membership: &rangedb::raft::Membership,
    ) {
        self.inner.lease_held(node, range, held, membership);
        self.after();
    }
    fn timeout_now_sent(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        to: NodeId,
        last: (Term, u64),
    ) {
        self.inner.timeout_now_sent(node, range, term, to, last);
    }
    fn transfer_campaign(
        &mut self,
        node: NodeId,
        range: RangeId,
        from: NodeId,
        term: Term,
        last: (Term, u64),
    ) {
        self.inner.transfer_campaign(node, range, from, term, last);
        self.after();
    }
    fn follower_commit(
        &mut self,
        node: NodeId,
        range: RangeId,
        term: Term,
        vouched: u64,
        before: u64,
        after: u64,
    ) {
        self.inner.follower_commit(node, range, term, vouched, before, after);
        self.after();
    }

    fn node_started(&mut self, node: NodeId) {
        self.inner.node_started(node);
    }

    fn conf_applied(
        &mut self,
        node: NodeId,
        range: RangeId,
        index: u64,
        membership: &rangedb::raft::Membership,
    ) {
        self.inner.conf_applied(node, range, index, membership);
    }

    fn became_leader(&mut self, node: NodeId, range: RangeId, term: Term, log_term: LogTerm<'_>) {
        self.inner.became_leader(node, range, term, log_term);
        self.after();
    }
    fn storage_damaged(&mut self, node: NodeId, range: RangeId, term: Term, commit: u64) {
        self.inner.storage_damaged(node, range, term, commit);
        self.change(node, range, term, None);
        self.after();
    }
    fn settings_applied(
        &mut self,
        node: NodeId,
        range: RangeId,
        index: u64,
        settings: rangedb::range::settings::RangeSettings,
    ) {
        self.inner.settings_applied(node, range, index, settings);
        self.after();
    }
    fn spans_changed(
        &mut self,
        node: NodeId,
        spans: &[(RangeId, rangedb::range::descriptor::Span)],
    ) {
        self.inner.spans_changed(node, spans);
        self.after();
    }
    fn node_settings(&mut self, node: NodeId, revision: u64, entries: u64) {
        self.inner.node_settings(node, revision, entries);
        self.after();
    }
}

// ---- rendering ----

const LEFT_PX: f64 = 150.0;
const ROW_PX: f64 = 14.0;
const OP_ROW_PX: f64 = 7.0;

/// The page: a header with the plan and the result, then one SVG.
pub fn render(plan: &Plan, report: &SeedReport, recording: &Recording) -> String {
    let end_ms = report.sim_ms.max(recording.last_ms).max(plan.fault_ms) + 200;
    let mut svg = Svg::new(end_ms);
    svg.axis(plan.fault_ms);
    svg.faults(plan, recording);
    svg.nodes(plan, recording, end_ms);
    svg.clients(&recording.history);
    svg.violations(&report.violations, recording, report.sim_ms);
    let result = if report.ok() {
        "<p class=\"ok\">no violation</p>".to_string()
    } else {
        let items: String = report
            .violations
            .iter()
            .map(|v| format!("<li><b>{}</b>: {}</li>", v.checker, escape(&v.message)))
            .collect();
        format!("<ul class=\"failed\">{items}</ul>")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rangedb sim seed {seed} \
         timeline</title><style>{STYLE}</style></head><body>\n<h1>seed {seed} ({scenario}): \
         {verdict}</h1>\n{result}\n<pre>{plan_text}</pre>\n{LEGEND}\n<div class=\"scroll\">{svg}</div>\n\
         </body></html>\n",
        seed = plan.seed,
        scenario = plan.scenario.name(),
        verdict = if report.ok() { "ok" } else { "FAILED" },
        plan_text = escape(&plan.describe()),
        svg = svg.finish(),
    )
}

const STYLE: &str = "body{font:12px sans-serif;margin:8px}pre{font-size:11px}\
.scroll{overflow-x:auto;border:1px solid #ccc}text{font:10px sans-serif}\
.label{font-weight:bold}.leader{fill:#2e9d4a}.candidate{fill:#f0a030}\
.precandidate{fill:#f5d76e}.follower{fill:#b8cce4}.down{fill:#444}.paused{fill:#999;opacity:.6}\
.fault{fill:#d9534f;opacity:.18}.faultbar{fill:#d9534f;opacity:.55}\
.op-ok{fill:#3c8d3c}.op-read{fill:#3a6fb0}.op-failed{fill:#aaa}.op-unknown{fill:#e08a00}\
.violation{stroke:#e00;stroke-width:2}.violationband{fill:#e00;opacity:.15}\
.heal{stroke:#000;stroke-dasharray:4 3}.grid{stroke:#eee}.failed{color:#c00}.ok{color:#060}\
.legend span{display:inline-block;padding:1px 6px;margin-right:4px;color:#fff}";

const LEGEND: &str = "<p class=\"legend\">roles: <span style=\"background:#2e9d4a\">leader\
</span><span style=\"background:#f0a030\">candidate</span><span style=\"background:#f5d76e;\
color:#000\">pre-candidate</span><span style=\"background:#b8cce4;color:#000\">follower</span>\
<span style=\"background:#444\">node down</span><span style=\"background:#999\">paused</span> \
operations: <span style=\"background:#3c8d3c\">write ok</span><span style=\"background:#3a6fb0\">\
read ok</span><span style=\"background:#aaa\">failed</span><span style=\"background:#e08a00\">\
unknown</span> <span style=\"background:#d9534f\">fault</span> <span style=\"background:#e00\">\
violation</span> (hover for details; t = term)</p>";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SVG being built, top to bottom.
struct Svg {
    body: String,
    y: f64,
    end_ms: u64,
    /// px per simulated ms.
    scale: f64,
    /// (top, bottom) of each node's lane, for faults on one node.
    lanes: BTreeMap<usize, (f64, f64)>,
    /// Where the client lanes start.
    clients_top: f64,
}

impl Svg {
    fn new(end_ms: u64) -> Svg {
        Svg {
            body: String::new(),
            y: 0.0,
            end_ms,
            scale: 0.2,
            lanes: BTreeMap::new(),
            clients_top: 0.0,
        }
    }

    fn x(&self, ms: u64) -> f64 {
        LEFT_PX + ms as f64 * self.scale
    }

    fn width(&self) -> f64 {
        self.x(self.end_ms) + 20.0
    }

    fn rect(&mut self, class: &str, from: u64, to: u64, y: f64, h: f64, title: &str) {
        let (x0, x1) = (self.x(from), self.x(to.max(from)));
        let _ = write!(
            self.body,
            "<rect class=\"{class}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\">\
             <title>{}</title></rect>",
            (x1 - x0).max(1.0),
            escape(title)
        );
    }

    fn text(&mut self, x: f64, y: f64, class: &str, text: &str) {
        let _ = write!(
            self.body,
            "<text class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\">{}</text>",
            escape(text)
        );
    }

    fn axis(&mut self, heal_ms: u64) {
        self.y = 14.0;
        let mut ms = 0;
        while ms <= self.end_ms {
            let x = self.x(ms);
            let _ = write!(
                self.body,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"4\" x2=\"{x:.1}\" y2=\"100%\"/>"
            );
            self.text(x + 2.0, 12.0, "axis", &format!("{:.1} s", ms as f64 / 1000.0));
            ms += 500;
        }
        let x = self.x(heal_ms);
        let _ = write!(self.body, "<line class=\"heal\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"100%\"><title>heal: every fault off, every node up</title></line>");
        self.text(x + 2.0, 24.0, "label", "heal");
        self.y = 30.0;
    }

    /// One row per fault: a band from start to end, its text beside it.
    fn faults(&mut self, plan: &Plan, recording: &Recording) {
        self.text(4.0, self.y + 10.0, "label", "faults");
        for (i, step) in plan.steps.iter().enumerate() {
            let mut title =
                format!("fault #{} {}..{} ms: {}", step.id, step.start_ms, step.end_ms, step.fault);
            if let Some(node) = recording.resolved.get(&i) {
                title.push_str(&format!(" (found n{})", node + 1));
            }
            let y = self.y;
            self.rect(
                "faultbar fault-step",
                step.start_ms,
                step.end_ms,
                y + 2.0,
                ROW_PX - 4.0,
                &title,
            );
            let label = format!("#{} {}", step.id, step.fault);
            self.text(self.x(step.start_ms) + 2.0, y + ROW_PX - 4.0, "faulttext", &label);
            self.y += ROW_PX;
        }
        self.y += 6.0;
    }

    /// One lane per node, a row per range: the role and term over time.
    fn nodes(&mut self, plan: &Plan, recording: &Recording, end_ms: u64) {
        let ranges: Vec<u64> = {
            let mut ranges: Vec<u64> = recording.roles.iter().map(|r| r.2).collect();
            ranges.sort_unstable();
            ranges.dedup();
            ranges
        };
        for node in 0..plan.nodes {
            let top = self.y;
            self.text(4.0, top + 11.0, "label lane", &format!("n{}", node + 1));
            for range in &ranges {
                self.text(40.0, self.y + 11.0, "range", &format!("r{range}"));
                self.range_row(node, *range, recording, end_ms);
                self.y += ROW_PX;
            }
            let bottom = self.y.max(top + ROW_PX);
            self.y = bottom;
            self.lanes.insert(node, (top, bottom));
            self.down_spans(node, recording, end_ms, top, bottom);
            self.node_faults(plan, recording, node, top, bottom);
            let _ = write!(
                self.body,
                "<line class=\"grid\" x1=\"0\" y1=\"{b:.1}\" x2=\"{w:.1}\" y2=\"{b:.1}\"/>",
                b = bottom + 2.0,
                w = self.width()
            );
            self.y += 5.0;
        }
    }

    /// A replica's role and term from change to change; a restart makes it a
    /// follower of the term it had (the Raft core starts as one).
    fn range_row(&mut self, node: usize, range: u64, recording: &Recording, end_ms: u64) {
        let mut changes: Vec<(u64, Option<(Term, Role)>)> = recording
            .roles
            .iter()
            .filter(|r| r.1 == node && r.2 == range)
            .map(|r| (r.0, Some((r.3, r.4))))
            .collect();
        let restarts = recording.node_events.iter().filter(|e| e.1 == node && e.2 == "restart");
        changes.extend(restarts.map(|e| (e.0, None)));
        changes.sort_by_key(|(ms, change)| (*ms, change.is_some()));
        let y = self.y;
        let mut term = 0;
        for (k, (from, change)) in changes.iter().enumerate() {
            let role = match change {
                Some((new_term, role)) => {
                    term = *new_term;
                    *role
                }
                None => Role::Follower,
            };
            let to = changes.get(k + 1).map_or(end_ms, |next| next.0);
            let (class, name) = match role {
                Role::Leader => ("leader", "leader"),
                Role::Candidate => ("candidate", "candidate"),
                Role::PreCandidate => ("precandidate", "pre-candidate"),
                Role::Follower => ("follower", "follower"),
            };
            let title = format!("n{} r{range} {name} term {term}, {from}..{to} ms", node + 1);
            self.rect(&format!("role {class}"), *from, to, y + 1.0, ROW_PX - 2.0, &title);
            if (to - from) as f64 * self.scale > 28.0 {
                self.text(self.x(*from) + 2.0, y + ROW_PX - 3.0, "term", &format!("t{term}"));
            }
        }
    }

    /// The node's down (crashed, stopped) and paused spans over its whole lane.
    fn down_spans(
        &mut self,
        node: usize,
        recording: &Recording,
        end_ms: u64,
        top: f64,
        bottom: f64,
    ) {
        let mut down: Option<(u64, &str)> = None;
        let mut paused: Option<u64> = None;
        let events: Vec<(u64, &str)> =
            recording.node_events.iter().filter(|e| e.1 == node).map(|e| (e.0, e.2)).collect();
        for (ms, what) in events {
            match what {
                "crash" | "stop" | "wipe" if down.is_none() => down = Some((ms, what)),
                "restart" => {
                    if let Some((from, why)) = down.take() {
                        let title = format!("n{} down ({why}) {from}..{ms} ms", node + 1);
                        self.rect("down", from, ms, top, bottom - top, &title);
                    }
                    paused = None;
                }
                "pause" if paused.is_none() => paused = Some(ms),
                "resume" => {
                    if let Some(from) = paused.take() {
                        let title = format!("n{} paused {from}..{ms} ms", node + 1);
                        self.rect("paused", from, ms, top, bottom - top, &title);
                    }
                }
                _ => {}
            }
        }
        if let Some((from, why)) = down {
            self.rect(
                "down",
                from,
                end_ms,
                top,
                bottom - top,
                &format!("n{} down ({why}) from {from} ms", node + 1),
            );
        }
        if let Some(from) = paused {
            self.rect(
                "paused",
                from,
                end_ms,
                top,
                bottom - top,
                &format!("n{} paused from {from} ms", node + 1),
            );
        }
    }

    /// Faults on this node (named, or a leader fault that found it) as bands over it.
    fn node_faults(
        &mut self,
        plan: &Plan,
        recording: &Recording,
        node: usize,
        top: f64,
        bottom: f64,
    ) {
        for (i, step) in plan.steps.iter().enumerate() {
            let on = match &step.fault {
                Fault::Partition { a, .. } => a.contains(&node),
                Fault::OneWay { from, .. } => *from == node,
                Fault::Kill { node: n, .. }
                | Fault::Pause { node: n }
                | Fault::DiskEio { node: n, .. }
                | Fault::Wipe { node: n }
                | Fault::DiskRot { node: n }
                | Fault::ClockSkew { node: n, .. } => *n == node,
                _ => recording.resolved.get(&i) == Some(&node),
            };
            if on {
                let title = format!("fault #{} on n{}: {}", step.id, node + 1, step.fault);
                self.rect("fault", step.start_ms, step.end_ms, top, bottom - top, &title);
            }
        }
    }

    /// One lane per client; its operations packed into rows so none overlap.
    fn clients(&mut self, history: &[Op]) {
        self.clients_top = self.y;
        let mut by_client: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for op in history {
            by_client.entry(op.client).or_default().push(op);
        }
        for (client, ops) in by_client {
            let top = self.y;
            let name = if client >= 1000 { "probe".to_string() } else { format!("c{client}") };
            self.text(4.0, top + 10.0, "label lane", &name);
            let mut rows_end: Vec<u64> = Vec::new();
            for op in ops {
                let row = match rows_end.iter().position(|end| *end < op.invoke_ms) {
                    Some(row) => row,
                    None => {
                        rows_end.push(0);
                        rows_end.len() - 1
                    }
                };
                rows_end[row] = op.complete_ms.max(op.invoke_ms + 1);
                let class = match (&op.outcome, &op.call) {
                    (Outcome::Failed(_), _) => "op op-failed",
                    (Outcome::Unknown(_), _) => "op op-unknown",
                    (_, Call::Get { .. } | Call::Scan { .. }) => "op op-read",
                    _ => "op op-ok",
                };
                let y = top + 1.0 + row as f64 * OP_ROW_PX;
                self.rect(class, op.invoke_ms, op.complete_ms, y, OP_ROW_PX - 1.0, &op.to_string());
            }
            self.y = top + (rows_end.len().max(1) as f64 * OP_ROW_PX).max(ROW_PX) + 4.0;
        }
    }

    /// A red line per finding; a history finding's window as a band over the clients.
    fn violations(&mut self, violations: &[Violation], recording: &Recording, sim_ms: u64) {
        let mut safety = recording.safety_violations_ms.iter();
        for violation in violations {
            let at = match (&violation.focus, violation.checker) {
                (Some((_, from, to)), _) => {
                    let (top, h) = (self.clients_top, self.y - self.clients_top);
                    let title = format!("{}: {}", violation.checker, violation.message);
                    self.rect("violationband", *from, *to, top, h, &title);
                    *to
                }
                (None, "raft_safety") => safety.next().copied().unwrap_or(sim_ms),
                (None, "panic") => recording.last_ms,
                (None, _) => sim_ms,
            };
            let x = self.x(at);
            let _ = write!(
                self.body,
                "<line class=\"violation\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{:.1}\"><title>{} at {at} ms: {}</title></line>",
                self.y,
                violation.checker,
                escape(&violation.message)
            );
            self.text(x + 3.0, self.y - 2.0, "violationtext", violation.checker);
        }
    }

    fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\">{}</svg>",
            self.width(),
            self.y + 10.0,
            self.body
        )
    }
}
