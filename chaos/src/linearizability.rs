//! Linearizability checking of recorded key-value histories.
//!
//! The verdict is decided by the linearizability tester of the `stateright` crate
//! ([`stateright::semantics::LinearizabilityTester`]) against a sequential register specification
//! implemented here ([`SequentialSpec`]). This module only prepares its input:
//!
//! * **Per-key split (P-compositionality).** Linearizability is local: a history is linearizable
//!   iff the sub-history of every key is. Each key is checked on its own.
//! * **Real-time order.** Invocations and returns are fed to the tester in timestamp order, so the
//!   tester's happens-before relation is exactly "A returned before B was invoked". Operations
//!   whose timestamps tie are treated as concurrent.
//! * **Indeterminate operations** (timeout, connection error, 5xx) may or may not have taken
//!   effect. Reads are dropped: they cannot change state. Writes, CAS and deletes are recorded as
//!   operations that return at the very end of the history with a wildcard return value. Such an
//!   operation can be linearized anywhere after its invocation; "never took effect" is the
//!   linearization after every other operation, where its effect is unobservable.
//! * **Virtual threads.** The tester needs each thread's operations to be sequential. Operations
//!   are packed onto virtual threads (an operation may follow any operation that returned before
//!   its invocation); real-time constraints come from the timestamps alone, so this loses nothing
//!   and keeps the number of threads at the peak concurrency. Process ids are not used.
//!
//! The tester performs a depth-first search without memoisation, which is exponential on
//! concurrent histories. The specification therefore prunes partial linearizations that provably
//! cannot be completed; see [`RegisterSpec`]. Both prunings keep the verdict unchanged (a unit test
//! cross-checks them against the unpruned search). The search runs in a worker thread with a
//! deadline and yields [`Verdict::Unknown`] rather than hanging.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// A register value. Every written value is unique within a history.
pub type Value = u64;

/// An operation on the register of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Read,
    Write(Value),
    Cas { expect: Value, new: Value },
    Delete,
}

/// The value returned by a completed [`Op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    Read(Option<Value>),
    WriteOk,
    CasOk,
    CasFailed,
    Deleted { existed: bool },
}

/// How a recorded operation ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The operation completed with `ret` at `return_ns`.
    Ok { ret: Ret, return_ns: u64 },
    /// Timed out / connection error / 5xx: it may or may not have taken effect.
    Indeterminate,
}

/// One recorded operation of a test client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    /// Logical client id. A client whose operation became indeterminate never issues another
    /// operation under the same id.
    pub process: u64,
    pub key: String,
    pub op: Op,
    /// Monotonic time of invocation (one clock: the test process's).
    pub invoke_ns: u64,
    pub outcome: Outcome,
}

/// Limits of a check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckConfig {
    /// Time allowed to the search of one key. When the history is not linearizable, the same
    /// amount again may be spent locating the failure.
    pub max_time_per_key: Duration,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self { max_time_per_key: Duration::from_secs(60) }
    }
}

/// Result of a check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        detail: String,
    },
    /// The check could not decide (time limit, malformed history).
    Unknown {
        key: String,
        reason: String,
    },
}

/// Verdict plus statistics of a check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: usize,
    pub operations: usize,
    pub indeterminate: usize,
    pub elapsed: Duration,
}

/// Checks that `history` is linearizable with respect to a map of independent registers.
///
/// Keys are checked one after the other in key order; the first non-linearizable key ends the
/// check. Otherwise an undecided key makes the verdict [`Verdict::Unknown`].
pub fn check(history: &[Operation], cfg: &CheckConfig) -> Report {
    let started = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(operation.key.as_str()).or_default().push(operation);
    }
    let indeterminate = history.iter().filter(|o| o.outcome == Outcome::Indeterminate).count();
    let mut first_unknown = None;
    let mut verdict = Verdict::Linearizable;
    for (key, ops) in &by_key {
        match check_key(ops, cfg.max_time_per_key, SearchOptions::PRUNED) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable(detail) => {
                verdict = Verdict::NotLinearizable { key: (*key).to_string(), detail };
                break;
            }
            KeyVerdict::Unknown(reason) => {
                if first_unknown.is_none() {
                    first_unknown = Some(Verdict::Unknown { key: (*key).to_string(), reason });
                }
            }
        }
    }
    if verdict == Verdict::Linearizable
        && let Some(unknown) = first_unknown
    {
        verdict = unknown;
    }
    Report { verdict, keys: by_key.len(), operations: history.len(), indeterminate, elapsed: started.elapsed() }
}

// ---------------------------------------------------------------------------------------------
// Sequential specification handed to stateright
// ---------------------------------------------------------------------------------------------

/// Operation as seen by the tester: the recorded op plus its rank in invocation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpecOp {
    id: u32,
    op: Op,
}

/// Return value as seen by the tester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecRet {
    Known(Ret),
    /// Indeterminate outcome: any return value is acceptable.
    Indeterminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SearchOptions {
    /// Reject overwriting a value that completed reads or CAS still have to observe.
    prune_dead_values: bool,
    /// Order runs of state-preserving operations by invocation rank.
    canonical_runs: bool,
    /// Try proving linearizability segment by segment first.
    segment: bool,
}

impl SearchOptions {
    const PRUNED: Self = Self { prune_dead_values: true, canonical_runs: true, segment: true };
    #[cfg(test)]
    const PLAIN: Self = Self { prune_dead_values: false, canonical_runs: false, segment: false };
}

/// Marker payload used to unwind the tester's search when the deadline passes.
struct SearchCancelled;

/// Data shared by all copies of the specification during one search.
#[derive(Debug)]
struct SpecShared {
    /// Per value: number of determinate operations that observe it (reads returning it, CAS that
    /// succeeded expecting it). Empty when dead-value pruning is off.
    observers: HashMap<Value, u32>,
    canonical_runs: bool,
    deadline: Instant,
    steps: Cell<u64>,
}

/// A register `Option<Value>`, initially `None`, with two sound prunings of the search.
///
/// Both rest on facts about every linearization, so rejecting a partial linearization that
/// violates them never changes the verdict:
///
/// * *Dead values.* Written values are unique, so once the register moves away from `Some(u)`,
///   `u` never comes back. If some completed read of `u` (or successful CAS expecting `u`) is not
///   yet linearized at that point, the partial linearization cannot be completed. Disabled for a
///   key whose history writes some value twice.
/// * *Canonical runs.* Two adjacent operations that both leave the state unchanged (reads, failed
///   CAS, deletes of an absent value) can be swapped. Swapping them into invocation order never
///   breaks real-time order (an operation cannot return before an operation invoked earlier is
///   invoked), so some linearization, if any exists, orders every such run by invocation rank.
///   Runs in any other order are rejected.
#[derive(Debug, Clone)]
struct RegisterSpec {
    value: Option<Value>,
    /// Observers of the current value linearized so far.
    observed: u32,
    /// Rank of the last operation of the current run of state-preserving operations.
    run_last: Option<u32>,
    shared: Rc<SpecShared>,
}

impl RegisterSpec {
    fn apply(value: &mut Option<Value>, op: Op) -> Ret {
        match op {
            Op::Read => Ret::Read(*value),
            Op::Write(v) => {
                *value = Some(v);
                Ret::WriteOk
            }
            Op::Cas { expect, new } => {
                if *value == Some(expect) {
                    *value = Some(new);
                    Ret::CasOk
                } else {
                    Ret::CasFailed
                }
            }
            Op::Delete => Ret::Deleted { existed: value.take().is_some() },
        }
    }

    fn check_deadline(&self) {
        let steps = self.shared.steps.get().wrapping_add(1);
        self.shared.steps.set(steps);
        if steps.is_multiple_of(256) && Instant::now() >= self.shared.deadline {
            // Unwinds through the tester without invoking the panic hook; caught in `run_search`.
            resume_unwind(Box::new(SearchCancelled));
        }
    }
}

impl SequentialSpec for RegisterSpec {
    type Op = SpecOp;
    type Ret = SpecRet;

    fn invoke(&mut self, op: &SpecOp) -> SpecRet {
        SpecRet::Known(Self::apply(&mut self.value, op.op))
    }

    fn is_valid_step(&mut self, op: &SpecOp, ret: &SpecRet) -> bool {
        self.check_deadline();
        let before = self.value;
        let actual = Self::apply(&mut self.value, op.op);
        if let SpecRet::Known(expected) = ret
            && *expected != actual
        {
            return false;
        }
        let observes = matches!((ret, actual), (SpecRet::Known(_), Ret::Read(Some(_)) | Ret::CasOk));
        if observes {
            self.observed = self.observed.saturating_add(1);
        }
        if self.value == before {
            if self.shared.canonical_runs {
                if self.run_last.is_some_and(|last| op.id < last) {
                    return false;
                }
                self.run_last = Some(op.id);
            }
        } else {
            if let Some(old) = before
                && self.observed < self.shared.observers.get(&old).copied().unwrap_or(0)
            {
                return false;
            }
            self.observed = 0;
            self.run_last = None;
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Per-key check
// ---------------------------------------------------------------------------------------------

/// One operation of a key's history, normalised.
#[derive(Debug, Clone, Copy)]
struct Rec {
    process: u64,
    op: Op,
    invoke_ns: u64,
    /// `None` for an indeterminate outcome.
    ret: Option<(Ret, u64)>,
    /// For an indeterminate operation: if it took effect, it did so before this time, because a
    /// completed operation returning at this time observed the value it wrote. `u64::MAX` if
    /// unknown.
    effect_by_ns: u64,
}

impl Rec {
    fn describe(&self, id: usize) -> String {
        match self.ret {
            Some((ret, return_ns)) => {
                format!(
                    "#{id} process {} [{} .. {}] {:?} -> {:?}",
                    self.process, self.invoke_ns, return_ns, self.op, ret
                )
            }
            None => format!("#{id} process {} [{} .. ?] {:?} -> indeterminate", self.process, self.invoke_ns, self.op),
        }
    }
}

enum KeyVerdict {
    Linearizable,
    NotLinearizable(String),
    Unknown(String),
}

enum SearchResult {
    /// Linearizable, leaving the register with this value in the linearization found.
    Linearizable(Option<Value>),
    NotLinearizable,
    TimedOut,
    Failed(String),
}

fn check_key(ops: &[&Operation], budget: Duration, options: SearchOptions) -> KeyVerdict {
    let mut recs = Vec::with_capacity(ops.len());
    for o in ops {
        let ret = match &o.outcome {
            Outcome::Ok { ret, return_ns } => {
                if *return_ns < o.invoke_ns {
                    return KeyVerdict::Unknown(format!(
                        "malformed history: operation returns before it is invoked: {o:?}"
                    ));
                }
                Some((*ret, *return_ns))
            }
            // An indeterminate read cannot have changed the state.
            Outcome::Indeterminate if o.op == Op::Read => continue,
            Outcome::Indeterminate => None,
        };
        recs.push(Rec { process: o.process, op: o.op, invoke_ns: o.invoke_ns, ret, effect_by_ns: u64::MAX });
    }
    recs.sort_by_key(|r| r.invoke_ns);
    let deadline = Instant::now() + budget;
    let mut reduced = None;
    if options.prune_dead_values && writes_are_unique(&recs) {
        bound_indeterminate_effects(&mut recs);
        // Indeterminate writes or CAS whose value nobody observed are left out, i.e. taken as never
        // taking effect. A linearization of that history extends to the full one by appending
        // them, so success decides the verdict; failure does not.
        let is_unobserved = |r: &Rec| r.ret.is_none() && r.effect_by_ns == u64::MAX && r.op != Op::Delete;
        if recs.iter().any(is_unobserved) {
            reduced = Some(recs.iter().filter(|r| !is_unobserved(r)).copied().collect::<Vec<_>>());
        }
    }
    let mut result = None;
    if options.segment {
        let attempt = reduced.as_deref().unwrap_or(&recs);
        let segments = segments(attempt);
        let definitive = reduced.is_none() && segments.len() == 1;
        match search_segments(&segments, deadline, options) {
            SearchResult::NotLinearizable if !definitive => {}
            other => result = Some(other),
        }
    }
    // The search of the whole history decides when the shortcuts above could not.
    let result = match result {
        Some(result) => result,
        None => run_search(&recs, None, deadline, options),
    };
    match result {
        SearchResult::Linearizable(_) => KeyVerdict::Linearizable,
        SearchResult::NotLinearizable => KeyVerdict::NotLinearizable(explain_failure(&recs, budget, options)),
        SearchResult::TimedOut => KeyVerdict::Unknown(format!(
            "search did not finish within {budget:?} ({} operations, {} indeterminate)",
            recs.len(),
            recs.iter().filter(|r| r.ret.is_none()).count()
        )),
        SearchResult::Failed(reason) => KeyVerdict::Unknown(reason),
    }
}

/// Runs the stateright tester on `recs` (sorted by invocation) in a worker thread.
fn run_search(recs: &[Rec], initial: Option<Value>, deadline: Instant, options: SearchOptions) -> SearchResult {
    let recs = recs.to_vec();
    // The tester recurses once per operation.
    let stack_size = (64 << 20) + recs.len().saturating_mul(4 << 10);
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("linearizability-search".to_string()).stack_size(stack_size).spawn(
        move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| search(&recs, initial, deadline, options)));
            let result = match outcome {
                Ok(result) => result,
                Err(payload) if payload.is::<SearchCancelled>() => SearchResult::TimedOut,
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_default();
                    SearchResult::Failed(format!("linearizability search panicked: {message}"))
                }
            };
            // The receiver may have given up already; nothing left to do then.
            let _ = tx.send(result);
        },
    );
    if let Err(e) = spawned {
        return SearchResult::Failed(format!("cannot spawn search thread: {e}"));
    }
    // The search cancels itself at the deadline; the grace period covers one slow step. Should it
    // still not answer, the thread is left behind rather than blocking the caller.
    let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
    match rx.recv_timeout(wait) {
        Ok(result) => result,
        Err(_) => SearchResult::TimedOut,
    }
}

fn search(recs: &[Rec], initial: Option<Value>, deadline: Instant, options: SearchOptions) -> SearchResult {
    let mut observers: HashMap<Value, u32> = HashMap::new();
    if options.prune_dead_values && writes_are_unique(recs) {
        for r in recs {
            match (r.op, r.ret) {
                (Op::Read, Some((Ret::Read(Some(v)), _))) | (Op::Cas { expect: v, .. }, Some((Ret::CasOk, _))) => {
                    *observers.entry(v).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    let Ok(count) = u32::try_from(recs.len()) else {
        return SearchResult::Failed("too many operations for one key".to_string());
    };
    let spec = RegisterSpec {
        value: initial,
        observed: 0,
        run_last: None,
        shared: Rc::new(SpecShared {
            observers,
            canonical_runs: options.canonical_runs,
            deadline,
            steps: Cell::new(0),
        }),
    };

    // Virtual threads: an operation may follow any operation that returned before its invocation
    // on the same thread, since real time orders them anyway. Reusing threads keeps their number
    // at the peak concurrency, which the tester's cost grows with. Indeterminate operations occupy
    // their thread until the time their effect is bounded by, possibly forever.
    let mut thread_of = vec![0u32; recs.len()];
    let mut busy_until: Vec<u64> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let end = r.ret.map_or(r.effect_by_ns, |(_, t)| t);
        let thread = match busy_until.iter().position(|&t| t < r.invoke_ns) {
            Some(free) => {
                busy_until[free] = end;
                free
            }
            None => {
                busy_until.push(end);
                busy_until.len() - 1
            }
        };
        thread_of[i] = thread as u32;
    }

    // Events in real-time order; at equal timestamps invocations come first (ties are concurrent).
    // Indeterminate operations return after everything else.
    let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(recs.len() * 2);
    for (id, r) in (0..count).zip(recs) {
        events.push((r.invoke_ns, false, id));
        events.push((r.ret.map_or(r.effect_by_ns, |(_, t)| t), true, id));
    }
    events.sort_unstable();

    let mut tester = LinearizabilityTester::new(spec);
    for (_, is_return, id) in events {
        let i = id as usize;
        let rec = &recs[i];
        let fed = if is_return {
            let ret = rec.ret.map_or(SpecRet::Indeterminate, |(ret, _)| SpecRet::Known(ret));
            tester.on_return(thread_of[i], ret).map(|_| ())
        } else {
            tester.on_invoke(thread_of[i], SpecOp { id, op: rec.op }).map(|_| ())
        };
        if let Err(e) = fed {
            return SearchResult::Failed(format!("history rejected by the tester: {e}"));
        }
    }
    match tester.serialized_history() {
        Some(order) => {
            let mut value = initial;
            for (op, _) in &order {
                RegisterSpec::apply(&mut value, op.op);
            }
            SearchResult::Linearizable(value)
        }
        None => SearchResult::NotLinearizable,
    }
}

/// Sets `effect_by_ns` of indeterminate writes and CAS whose value a completed operation observed.
/// Written values must be unique.
fn bound_indeterminate_effects(recs: &mut [Rec]) {
    let mut first_observed: HashMap<Value, u64> = HashMap::new();
    for r in recs.iter() {
        if let (Op::Read, Some((Ret::Read(Some(v)), t))) | (Op::Cas { expect: v, .. }, Some((Ret::CasOk, t))) =
            (r.op, r.ret)
        {
            let entry = first_observed.entry(v).or_insert(t);
            *entry = (*entry).min(t);
        }
    }
    for r in recs.iter_mut().filter(|r| r.ret.is_none()) {
        if let Op::Write(v) | Op::Cas { new: v, .. } = r.op
            && let Some(&t) = first_observed.get(&v)
        {
            r.effect_by_ns = t.max(r.invoke_ns);
        }
    }
}

/// Splits `recs` (sorted by invocation) at instants no operation spans, into segments of at
/// least `SEGMENT_MIN` operations. Every operation of a segment precedes, in real time, every
/// operation of the next one.
fn segments(recs: &[Rec]) -> Vec<&[Rec]> {
    const SEGMENT_MIN: usize = 200;
    let mut out = Vec::new();
    let (mut start, mut busy_until) = (0, 0u64);
    for (i, r) in recs.iter().enumerate() {
        if i - start >= SEGMENT_MIN && busy_until < r.invoke_ns {
            out.push(&recs[start..i]);
            start = i;
        }
        busy_until = busy_until.max(r.ret.map_or(r.effect_by_ns, |(_, t)| t));
    }
    out.push(&recs[start..]);
    out
}

/// Checks segments one after the other, each starting from the state the linearization found for
/// the previous one left. Concatenated linearizations are one of the whole history, so success is
/// definitive. Failure is only definitive for a single segment: another linearization of an
/// earlier segment might have left a different state.
fn search_segments(segments: &[&[Rec]], deadline: Instant, options: SearchOptions) -> SearchResult {
    let mut value = None;
    for segment in segments {
        match run_search(segment, value, deadline, options) {
            SearchResult::Linearizable(end) => value = end,
            other => return other,
        }
    }
    SearchResult::Linearizable(value)
}

fn writes_are_unique(recs: &[Rec]) -> bool {
    let mut seen = std::collections::HashSet::new();
    recs.iter().all(|r| match r.op {
        Op::Write(v) | Op::Cas { new: v, .. } => seen.insert(v),
        Op::Read | Op::Delete => true,
    })
}

/// Finds the shortest non-linearizable prefix (cut at a return) and describes the operations
/// around its last return. Operations still pending at the cut count as indeterminate.
fn explain_failure(recs: &[Rec], budget: Duration, options: SearchOptions) -> String {
    let deadline = Instant::now() + budget;
    let indeterminate = recs.iter().filter(|r| r.ret.is_none()).count();
    let mut out = format!("{} operations ({indeterminate} indeterminate) have no linearization.", recs.len());

    let mut returns: Vec<(u64, usize)> =
        recs.iter().enumerate().filter_map(|(i, r)| r.ret.map(|(_, t)| (t, i))).collect();
    returns.sort_unstable();
    let prefix = |cut: usize| -> Vec<Rec> {
        let (cut_ns, cut_id) = returns[cut];
        recs.iter()
            .enumerate()
            .filter(|(_, r)| r.invoke_ns <= cut_ns)
            .filter_map(|(i, r)| match r.ret {
                Some((_, t)) if (t, i) <= (cut_ns, cut_id) => Some(*r),
                _ if r.op == Op::Read => None,
                _ => {
                    Some(Rec { ret: None, effect_by_ns: if r.ret.is_some() { u64::MAX } else { r.effect_by_ns }, ..*r })
                }
            })
            .collect()
    };
    // Invariant: the prefix ending at `returns[hi]` is not linearizable (the whole history is not),
    // and prefixes ending before `returns[lo]` are.
    let (mut lo, mut hi) = (0, returns.len().saturating_sub(1));
    let mut located = true;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match run_search(&prefix(mid), None, deadline, options) {
            SearchResult::NotLinearizable => hi = mid,
            SearchResult::Linearizable(_) => lo = mid + 1,
            SearchResult::TimedOut | SearchResult::Failed(_) => {
                located = false;
                break;
            }
        }
    }
    let Some(&(cut_ns, culprit)) = returns.get(hi) else {
        return out;
    };
    let culprit_rec = recs[culprit];
    let headline = if located {
        "The shortest non-linearizable prefix ends with the return of"
    } else {
        "Locating the failure ran out of time; the history ends with the return of"
    };
    let _ = write!(
        out,
        " {headline} {}. Operations overlapping it and the latest ones before it \
         (process, [invoke .. return] ns, op -> result):",
        culprit_rec.describe(culprit)
    );
    let overlapping = recs.iter().enumerate().filter(|(i, r)| {
        *i != culprit && r.invoke_ns <= cut_ns && r.ret.is_none_or(|(_, t)| t >= culprit_rec.invoke_ns)
    });
    let mut before: Vec<(u64, usize)> = recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.ret.and_then(|(_, t)| (t < culprit_rec.invoke_ns).then_some((t, i))))
        .collect();
    before.sort_unstable();
    let mut listed: Vec<usize> = before.iter().rev().take(8).map(|&(_, i)| i).collect();
    listed.extend(overlapping.map(|(i, _)| i).take(40));
    listed.push(culprit);
    listed.sort_unstable_by_key(|&i| (recs[i].invoke_ns, i));
    listed.dedup();
    for i in listed {
        let marker = if i == culprit && located { "  <== fails here" } else { "" };
        let _ = write!(out, "\n  {}{marker}", recs[i].describe(i));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Synthetic histories
// ---------------------------------------------------------------------------------------------

/// Parameters of [`synthetic_history`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticParams {
    pub seed: u64,
    pub operations: usize,
    pub processes: usize,
    pub keys: usize,
    /// Share of writes, CAS and deletes that end indeterminate (half of them take effect).
    pub indeterminate_ratio: f64,
}

/// Generates a linearizable history by simulating a correct store: every operation takes effect
/// at a random instant inside its interval. For tests and benchmarks of the checker.
pub fn synthetic_history(params: &SyntheticParams) -> Vec<Operation> {
    struct Planned {
        index: usize,
        key: usize,
        effect_ns: u64,
        applies: bool,
    }
    let mut rng = SplitMix64(params.seed);
    let keys = params.keys.max(1);
    let mut process_ids: Vec<u64> = (0..params.processes.max(1) as u64).collect();
    let mut next_process = process_ids.len() as u64;
    let mut free_at: Vec<u64> = vec![0; process_ids.len()];
    let mut next_value: Value = 1;
    let mut recent: Vec<Vec<Value>> = vec![Vec::new(); keys];
    let mut history = Vec::with_capacity(params.operations);
    let mut planned = Vec::with_capacity(params.operations);

    for index in 0..params.operations {
        let slot = (0..free_at.len()).min_by_key(|&s| free_at[s]).unwrap_or(0);
        let invoke_ns = free_at[slot] + rng.below(2_000);
        let duration = if rng.below(50) == 0 { 1_000 + rng.below(50_000) } else { 100 + rng.below(5_000) };
        let key = rng.below(keys as u64) as usize;
        let op = match rng.below(100) {
            0..50 => Op::Read,
            50..75 => {
                next_value += 1;
                recent[key].push(next_value);
                Op::Write(next_value)
            }
            75..93 => {
                next_value += 1;
                let candidates = &recent[key][recent[key].len().saturating_sub(3)..];
                let expect = match candidates.len() {
                    0 => next_value + 1_000_000,
                    n => candidates[rng.below(n as u64) as usize],
                };
                recent[key].push(next_value);
                Op::Cas { expect, new: next_value }
            }
            _ => Op::Delete,
        };
        let ratio = if op == Op::Read { params.indeterminate_ratio / 5.0 } else { params.indeterminate_ratio };
        let indeterminate = rng.unit() < ratio;
        let applies = !indeterminate || rng.below(2) == 0;
        planned.push(Planned { index, key, effect_ns: invoke_ns + rng.below(duration + 1), applies });
        history.push(Operation {
            process: process_ids[slot],
            key: format!("key-{key}"),
            op,
            invoke_ns,
            outcome: if indeterminate {
                Outcome::Indeterminate
            } else {
                Outcome::Ok { ret: Ret::CasFailed, return_ns: invoke_ns + duration }
            },
        });
        free_at[slot] = invoke_ns + duration;
        if indeterminate {
            process_ids[slot] = next_process;
            next_process += 1;
        }
    }

    planned.sort_by_key(|p| (p.effect_ns, p.index));
    let mut registers: Vec<Option<Value>> = vec![None; keys];
    for p in planned.iter().filter(|p| p.applies) {
        let ret = RegisterSpec::apply(&mut registers[p.key], history[p.index].op);
        if let Outcome::Ok { ret: recorded, .. } = &mut history[p.index].outcome {
            *recorded = ret;
        }
    }
    history
}

/// Small deterministic generator (SplitMix64), enough for synthetic histories.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k";

    fn ok(process: u64, op: Op, invoke_ns: u64, ret: Ret, return_ns: u64) -> Operation {
        Operation { process, key: KEY.to_string(), op, invoke_ns, outcome: Outcome::Ok { ret, return_ns } }
    }

    fn lost(process: u64, op: Op, invoke_ns: u64) -> Operation {
        Operation { process, key: KEY.to_string(), op, invoke_ns, outcome: Outcome::Indeterminate }
    }

    fn cfg() -> CheckConfig {
        CheckConfig { max_time_per_key: Duration::from_secs(60) }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history, &cfg()).verdict
    }

    fn assert_linearizable(history: &[Operation]) {
        let report = check(history, &cfg());
        assert_eq!(report.verdict, Verdict::Linearizable, "{history:#?}");
    }

    fn assert_violation(history: &[Operation]) -> String {
        match verdict(history) {
            Verdict::NotLinearizable { detail, .. } => detail,
            other => panic!("expected a violation, got {other:?} for {history:#?}"),
        }
    }

    fn params(seed: u64, operations: usize) -> SyntheticParams {
        SyntheticParams { seed, operations, processes: 12, keys: 5, indeterminate_ratio: 0.05 }
    }

    #[test]
    fn empty_history_is_linearizable() {
        let report = check(&[], &cfg());
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert_eq!((report.keys, report.operations), (0, 0));
    }

    #[test]
    fn sequential_history_of_every_operation_passes() {
        assert_linearizable(&[
            ok(1, Op::Read, 0, Ret::Read(None), 5),
            ok(1, Op::Delete, 6, Ret::Deleted { existed: false }, 8),
            ok(1, Op::Write(1), 10, Ret::WriteOk, 20),
            ok(2, Op::Read, 30, Ret::Read(Some(1)), 40),
            ok(2, Op::Cas { expect: 1, new: 2 }, 50, Ret::CasOk, 60),
            ok(1, Op::Cas { expect: 1, new: 3 }, 70, Ret::CasFailed, 80),
            ok(1, Op::Read, 90, Ret::Read(Some(2)), 100),
            ok(2, Op::Delete, 110, Ret::Deleted { existed: true }, 120),
            ok(1, Op::Read, 130, Ret::Read(None), 140),
        ]);
    }

    #[test]
    fn concurrent_history_passes() {
        // Two overlapping writes; readers disagree while they overlap, then agree on the winner.
        assert_linearizable(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 100),
            ok(2, Op::Write(2), 10, Ret::WriteOk, 110),
            ok(3, Op::Read, 20, Ret::Read(Some(2)), 30),
            ok(4, Op::Read, 25, Ret::Read(None), 35),
            ok(3, Op::Read, 40, Ret::Read(Some(1)), 50),
            ok(4, Op::Cas { expect: 1, new: 3 }, 45, Ret::CasOk, 120),
            ok(3, Op::Read, 130, Ret::Read(Some(3)), 140),
            ok(1, Op::Delete, 125, Ret::Deleted { existed: true }, 150),
            ok(2, Op::Read, 160, Ret::Read(None), 170),
        ]);
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let detail = assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(1, Op::Write(2), 20, Ret::WriteOk, 30),
            ok(2, Op::Read, 40, Ret::Read(Some(1)), 50),
        ]);
        assert!(detail.contains("Read -> Read(Some(1))  <== fails here"), "{detail}");
        assert!(detail.contains("Write(2) -> WriteOk"), "{detail}");
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        assert_violation(&[ok(1, Op::Write(1), 0, Ret::WriteOk, 10), ok(2, Op::Read, 20, Ret::Read(None), 30)]);
        assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(2, Op::Write(2), 5, Ret::WriteOk, 15),
            ok(3, Op::Read, 20, Ret::Read(Some(1)), 30),
            ok(3, Op::Read, 40, Ret::Read(Some(3)), 50),
        ]);
    }

    #[test]
    fn cas_against_overwritten_value_is_caught() {
        assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(2, Op::Write(2), 20, Ret::WriteOk, 30),
            ok(3, Op::Cas { expect: 1, new: 3 }, 40, Ret::CasOk, 50),
        ]);
    }

    #[test]
    fn read_of_value_never_written_is_caught() {
        assert_violation(&[ok(1, Op::Write(1), 0, Ret::WriteOk, 10), ok(2, Op::Read, 5, Ret::Read(Some(42)), 15)]);
    }

    #[test]
    fn new_then_old_read_is_caught() {
        // The write of 2 overlaps both reads, but the reads do not overlap each other.
        let detail = assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(2, Op::Write(2), 20, Ret::WriteOk, 100),
            ok(3, Op::Read, 30, Ret::Read(Some(2)), 40),
            ok(4, Op::Read, 50, Ret::Read(Some(1)), 60),
        ]);
        assert!(detail.contains("#3 process 4 [50 .. 60] Read -> Read(Some(1))  <== fails here"), "{detail}");
    }

    #[test]
    fn wrong_delete_and_failed_cas_results_are_caught() {
        assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(2, Op::Delete, 20, Ret::Deleted { existed: false }, 30),
        ]);
        assert_violation(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            ok(2, Op::Cas { expect: 1, new: 2 }, 20, Ret::CasFailed, 30),
        ]);
    }

    #[test]
    fn indeterminate_write_that_took_effect_passes() {
        assert_linearizable(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            lost(2, Op::Write(2), 20),
            ok(3, Op::Read, 100, Ret::Read(Some(1)), 110),
            ok(3, Op::Read, 200, Ret::Read(Some(2)), 210),
            ok(4, Op::Cas { expect: 2, new: 3 }, 300, Ret::CasOk, 310),
        ]);
        // An indeterminate delete that took effect.
        assert_linearizable(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            lost(2, Op::Delete, 20),
            ok(3, Op::Read, 100, Ret::Read(None), 110),
        ]);
    }

    #[test]
    fn indeterminate_write_that_never_took_effect_passes() {
        assert_linearizable(&[
            ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
            lost(2, Op::Write(2), 20),
            lost(3, Op::Cas { expect: 1, new: 3 }, 25),
            lost(4, Op::Delete, 26),
            ok(5, Op::Read, 100, Ret::Read(Some(1)), 110),
            ok(5, Op::Read, 200, Ret::Read(Some(1)), 210),
        ]);
    }

    #[test]
    fn indeterminate_write_cannot_take_effect_before_its_invocation() {
        assert_violation(&[ok(1, Op::Read, 0, Ret::Read(Some(2)), 10), lost(2, Op::Write(2), 20)]);
        // Nor twice: once the value is overwritten it cannot reappear.
        assert_violation(&[
            lost(1, Op::Write(2), 0),
            ok(2, Op::Read, 10, Ret::Read(Some(2)), 20),
            ok(2, Op::Write(3), 30, Ret::WriteOk, 40),
            ok(2, Op::Read, 50, Ret::Read(Some(2)), 60),
        ]);
    }

    #[test]
    fn indeterminate_reads_are_ignored() {
        let report = check(
            &[
                ok(1, Op::Write(1), 0, Ret::WriteOk, 10),
                lost(2, Op::Read, 20),
                ok(3, Op::Read, 30, Ret::Read(Some(1)), 40),
            ],
            &cfg(),
        );
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert_eq!((report.operations, report.indeterminate), (3, 1));
    }

    #[test]
    fn process_reusing_its_id_after_an_indeterminate_operation_is_tolerated() {
        assert_linearizable(&[
            lost(1, Op::Write(1), 0),
            ok(1, Op::Write(2), 10, Ret::WriteOk, 20),
            ok(1, Op::Read, 30, Ret::Read(Some(1)), 40),
        ]);
    }

    #[test]
    fn violations_are_reported_per_key() {
        let mut history = vec![ok(1, Op::Write(1), 0, Ret::WriteOk, 10), ok(1, Op::Read, 20, Ret::Read(Some(1)), 30)];
        // Key "b" on its own would read 1 of key "k": not allowed.
        history.push(Operation { key: "b".to_string(), ..ok(2, Op::Read, 40, Ret::Read(Some(1)), 50) });
        let report = check(&history, &cfg());
        assert_eq!(report.keys, 2);
        assert!(matches!(report.verdict, Verdict::NotLinearizable { ref key, .. } if key == "b"), "{report:?}");
    }

    #[test]
    fn malformed_history_is_unknown() {
        let verdict = verdict(&[ok(1, Op::Write(1), 10, Ret::WriteOk, 5)]);
        assert!(matches!(verdict, Verdict::Unknown { .. }), "{verdict:?}");
    }

    #[test]
    fn search_past_its_time_limit_is_unknown() {
        let history = synthetic_history(&params(7, 3_000));
        let report = check(&history, &CheckConfig { max_time_per_key: Duration::ZERO });
        assert!(matches!(report.verdict, Verdict::Unknown { ref reason, .. } if reason.contains("did not finish")));
    }

    #[test]
    fn history_round_trips_through_json() -> Result<(), serde_json::Error> {
        let history = synthetic_history(&params(3, 200));
        let json = serde_json::to_string(&history)?;
        let back: Vec<Operation> = serde_json::from_str(&json)?;
        assert_eq!(back, history);
        Ok(())
    }

    #[test]
    fn synthetic_histories_pass() {
        for seed in 0..6 {
            let history = synthetic_history(&SyntheticParams { processes: 8, ..params(seed, 1_000) });
            let report = check(&history, &cfg());
            assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}");
            assert!(report.indeterminate > 0, "seed {seed}");
        }
    }

    /// Makes one read return a value that was overwritten, in real time, before the read began:
    /// `W(u)` returns before `W'(x)` is invoked, `W'(x)` returns before the read is invoked.
    fn corrupt_one_read(history: &mut [Operation], rng: &mut SplitMix64) -> Option<usize> {
        let setter = |o: &Operation| match (o.op, &o.outcome) {
            (Op::Write(v), Outcome::Ok { return_ns, .. }) => Some((v, *return_ns)),
            (Op::Cas { new, .. }, Outcome::Ok { ret: Ret::CasOk, return_ns }) => Some((new, *return_ns)),
            _ => None,
        };
        for _ in 0..1_000 {
            let r = rng.below(history.len() as u64) as usize;
            let read = &history[r];
            let Outcome::Ok { ret: Ret::Read(current), .. } = read.outcome else {
                continue;
            };
            let earlier: Vec<(Value, u64, u64)> = history
                .iter()
                .filter(|o| o.key == read.key)
                .filter_map(|o| setter(o).map(|(v, ret)| (v, o.invoke_ns, ret)))
                .filter(|&(_, _, ret)| ret < read.invoke_ns)
                .collect();
            let Some(&(x, x_invoke, _)) = earlier.iter().max_by_key(|&&(_, _, ret)| ret) else {
                continue;
            };
            let Some(&(u, _, _)) = earlier.iter().rev().find(|&&(v, _, ret)| ret < x_invoke && v != x) else {
                continue;
            };
            if current == Some(u) {
                continue;
            }
            let return_ns = read.outcome_return_ns();
            history[r].outcome = Outcome::Ok { ret: Ret::Read(Some(u)), return_ns };
            return Some(r);
        }
        None
    }

    impl Operation {
        fn outcome_return_ns(&self) -> u64 {
            match self.outcome {
                Outcome::Ok { return_ns, .. } => return_ns,
                Outcome::Indeterminate => u64::MAX,
            }
        }
    }

    #[test]
    fn corrupted_synthetic_histories_are_caught() {
        let mut rng = SplitMix64(99);
        for seed in 0..8 {
            // Refuting needs the unsegmented search, which does not scale (see the module docs).
            let mut history = synthetic_history(&SyntheticParams { processes: 6, keys: 3, ..params(seed, 400) });
            let Some(index) = corrupt_one_read(&mut history, &mut rng) else {
                panic!("seed {seed}: no read to corrupt");
            };
            let report = check(&history, &cfg());
            let Verdict::NotLinearizable { key, detail } = &report.verdict else {
                panic!("seed {seed}: corrupted read #{index} not caught: {report:?}");
            };
            assert_eq!(key, &history[index].key);
            assert!(detail.contains("<== fails here"), "{detail}");
        }
    }

    /// The pruned search must agree with stateright's unpruned search. Small random histories,
    /// half of them with one random return value altered.
    #[test]
    fn pruned_search_agrees_with_plain_search() {
        let mut rng = SplitMix64(5);
        let (mut valid, mut invalid) = (0, 0);
        for seed in 0..300 {
            let mut history = synthetic_history(&SyntheticParams {
                seed,
                operations: 14,
                processes: 4,
                keys: 1,
                indeterminate_ratio: 0.25,
            });
            if seed % 2 == 1 {
                let i = rng.below(history.len() as u64) as usize;
                let ret = match history[i].op {
                    Op::Read => Ret::Read([None, Some(rng.below(8))][rng.below(2) as usize]),
                    Op::Write(_) => Ret::WriteOk,
                    Op::Cas { .. } => [Ret::CasOk, Ret::CasFailed][rng.below(2) as usize],
                    Op::Delete => Ret::Deleted { existed: rng.below(2) == 0 },
                };
                if let Outcome::Ok { ret: recorded, .. } = &mut history[i].outcome {
                    *recorded = ret;
                }
            }
            let ops: Vec<&Operation> = history.iter().collect();
            let budget = Duration::from_secs(30);
            let pruned = check_key(&ops, budget, SearchOptions::PRUNED);
            let plain = check_key(&ops, budget, SearchOptions::PLAIN);
            match (pruned, plain) {
                (KeyVerdict::Linearizable, KeyVerdict::Linearizable) => valid += 1,
                (KeyVerdict::NotLinearizable(_), KeyVerdict::NotLinearizable(_)) => invalid += 1,
                _ => panic!("seed {seed}: pruned and plain searches disagree on {history:#?}"),
            }
        }
        assert!(valid > 100 && invalid > 30, "valid {valid}, invalid {invalid}");

        // Longer histories, so that the segmented search is exercised too.
        for seed in 0..6 {
            let mut history = synthetic_history(&SyntheticParams {
                seed,
                operations: 450,
                processes: 4,
                keys: 1,
                indeterminate_ratio: 0.05,
            });
            if seed % 2 == 1 && corrupt_one_read(&mut history, &mut rng).is_none() {
                panic!("seed {seed}: no read to corrupt");
            }
            let ops: Vec<&Operation> = history.iter().collect();
            let budget = Duration::from_secs(60);
            let pruned = check_key(&ops, budget, SearchOptions::PRUNED);
            let plain = check_key(&ops, budget, SearchOptions::PLAIN);
            match (seed % 2, pruned, plain) {
                (0, KeyVerdict::Linearizable, KeyVerdict::Linearizable) => {}
                (1, KeyVerdict::NotLinearizable(_), KeyVerdict::NotLinearizable(_)) => {}
                _ => panic!("seed {seed}: unexpected verdicts"),
            }
        }
    }

    /// Timings on synthetic valid histories:
    /// `cargo test --release -- --ignored --nocapture bench_synthetic`
    #[test]
    #[ignore]
    fn bench_synthetic() {
        for operations in [2_000, 10_000, 50_000] {
            let history = synthetic_history(&params(42, operations));
            let report = check(&history, &cfg());
            println!(
                "pruned: {operations:>6} ops, {} keys, {} indeterminate: {:?} in {:?}",
                report.keys, report.indeterminate, report.verdict, report.elapsed
            );
        }
        for operations in [200, 500, 2_000] {
            let history = synthetic_history(&params(42, operations));
            let started = Instant::now();
            let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
            for o in &history {
                by_key.entry(&o.key).or_default().push(o);
            }
            let mut outcome = "linearizable".to_string();
            for ops in by_key.values() {
                match check_key(ops, Duration::from_secs(20), SearchOptions::PLAIN) {
                    KeyVerdict::Linearizable => {}
                    KeyVerdict::NotLinearizable(_) => outcome = "NOT linearizable".to_string(),
                    KeyVerdict::Unknown(reason) => outcome = format!("unknown: {reason}"),
                }
            }
            println!("plain stateright: {operations:>6} ops: {outcome} in {:?}", started.elapsed());
        }
    }
}
