//! Linearizability checking of recorded key-value histories, decided by `porcupine-rs`.
//!
//! Same public API and semantics as [`crate::linearizability`], but the verdict comes from the
//! `porcupine-rs` crate, a Rust port of Porcupine (Wing & Gong's search as extended by Lowe: a
//! depth-first search over linearization orders, memoised on the pair (set of linearized
//! operations, register state)). This module only prepares its input:
//!
//! * **Per-key split (P-compositionality).** Linearizability is local: a history is linearizable
//!   iff the sub-history of every key is. Each key is handed to the checker on its own, so that the
//!   failing key can be named and each key gets its own time limit.
//! * **Real-time order.** Timestamps are replaced by their rank among all timestamps of the key
//!   (which also keeps `u64` nanoseconds clear of the checker's `i64` times). The checker sorts
//!   calls before returns at equal times, so operations whose timestamps tie are concurrent.
//! * **Indeterminate operations** (timeout, connection error, 5xx) may or may not have taken
//!   effect. Reads are dropped: they cannot change state. Writes, CAS and deletes are given a
//!   return time after every other event of the history and accept any return value, as
//!   Porcupine does. Such an operation can be linearized anywhere after its invocation; "never took
//!   effect" is the linearization after every other operation, where its effect is unobservable.
//!   One exact refinement: a write or CAS whose (unique) value a completed operation observed
//!   returns when its first observer returns instead (see [`to_porcupine`]). Without it, refuting
//!   a history with a few dozen indeterminate operations per key takes exponential time.
//!   Process ids are not used: real-time order comes from the timestamps alone.
//!
//! The search runs under the checker's own time limit and yields [`Verdict::Unknown`] when it
//! runs out. When a key is not linearizable, a second search collects the checker's longest
//! partial linearization, which names the operation the search got stuck on.

use crate::rng::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, Model};

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
        match check_key(ops, cfg.max_time_per_key) {
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
// Sequential specification handed to porcupine-rs
// ---------------------------------------------------------------------------------------------

/// Applies `op` to a register and returns what a correct register answers.
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

/// A register `Option<Value>`, initially `None`.
#[derive(Debug, Clone, Copy)]
struct RegisterModel;

/// An operation with its recorded return value; `None` (indeterminate) accepts any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelOp {
    op: Op,
    ret: Option<Ret>,
}

impl Model for RegisterModel {
    type State = Option<Value>;
    type Op = ModelOp;
    type Metadata = ();

    fn init() -> Option<Value> {
        None
    }

    fn step(state: &Option<Value>, op: &ModelOp) -> (bool, Option<Value>) {
        let mut next = *state;
        let actual = apply(&mut next, op.op);
        (op.ret.is_none_or(|expected| expected == actual), next)
    }
}

type History = Vec<porcupine_rs::Operation<RegisterModel>>;

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

/// Drops indeterminate reads and sorts by invocation; rejects malformed operations.
fn normalise(ops: &[&Operation]) -> Result<Vec<Rec>, String> {
    let mut recs = Vec::with_capacity(ops.len());
    for o in ops {
        let ret = match &o.outcome {
            Outcome::Ok { ret, return_ns } => {
                if *return_ns < o.invoke_ns {
                    return Err(format!("malformed history: operation returns before it is invoked: {o:?}"));
                }
                Some((*ret, *return_ns))
            }
            // An indeterminate read cannot have changed the state.
            Outcome::Indeterminate if o.op == Op::Read => continue,
            Outcome::Indeterminate => None,
        };
        recs.push(Rec { process: o.process, op: o.op, invoke_ns: o.invoke_ns, ret });
    }
    recs.sort_by_key(|r| r.invoke_ns);
    Ok(recs)
}

fn check_key(ops: &[&Operation], budget: Duration) -> KeyVerdict {
    let started = Instant::now();
    let recs = match normalise(ops) {
        Ok(recs) => recs,
        Err(reason) => return KeyVerdict::Unknown(reason),
    };
    let history = to_porcupine(&recs, Encoding::BoundObserved);
    let timed_out = || {
        KeyVerdict::Unknown(format!(
            "search did not finish within {budget:?} ({} operations, {} indeterminate)",
            recs.len(),
            recs.iter().filter(|r| r.ret.is_none()).count()
        ))
    };
    // Preparing the input counts against the budget; an exhausted budget gives no search at all.
    let Some(remaining) = budget.checked_sub(started.elapsed()).filter(|d| !d.is_zero()) else {
        return timed_out();
    };
    match catch_unwind(AssertUnwindSafe(|| porcupine_rs::check_operations_timeout(&history, remaining))) {
        Ok(CheckResult::Ok) => KeyVerdict::Linearizable,
        Ok(CheckResult::Unknown) => timed_out(),
        Ok(CheckResult::Illegal) => KeyVerdict::NotLinearizable(explain_failure(&recs, &history, budget)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            KeyVerdict::Unknown(format!("linearizability search panicked: {message}"))
        }
    }
}

/// How indeterminate writes and CAS are handed to the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Porcupine's own way: every indeterminate operation returns at the end of the history.
    /// Kept for the tests, which compare it with [`Encoding::BoundObserved`].
    #[cfg(test)]
    EndOfHistory,
    /// As [`Encoding::EndOfHistory`], except that an indeterminate write or CAS whose value a
    /// completed operation observed returns when the first such observer returns.
    BoundObserved,
}

/// Converts `recs` to the checker's operations, index for index. Times become ranks among all
/// timestamps (ties stay ties); indeterminate operations return after everything else.
///
/// With [`Encoding::BoundObserved`] and unique written values, an indeterminate write or CAS of a
/// value `v` that a completed read (or successful CAS expecting `v`) returning at `t` observed
/// returns at `t` instead (or at its invocation if that is later). No other operation writes
/// `v`, so every linearization places it before that observer, hence before `t`: the bound
/// removes no linearization and adds none, and the verdict is unchanged. It matters for
/// refutation: an operation pending until the end of the history doubles the configurations
/// (set of linearized operations, register value) the search must exhaust, and the checker's
/// memoisation cannot merge them.
fn to_porcupine(recs: &[Rec], encoding: Encoding) -> History {
    let mut first_observed: HashMap<Value, u64> = HashMap::new();
    if encoding == Encoding::BoundObserved && writes_are_unique(recs) {
        for r in recs {
            if let (Op::Read, Some((Ret::Read(Some(v)), t))) | (Op::Cas { expect: v, .. }, Some((Ret::CasOk, t))) =
                (r.op, r.ret)
            {
                let first = first_observed.entry(v).or_insert(t);
                *first = (*first).min(t);
            }
        }
    }
    let effect_by = |r: &Rec| match r.op {
        Op::Write(v) | Op::Cas { new: v, .. } => first_observed.get(&v).map(|&t| t.max(r.invoke_ns)),
        Op::Read | Op::Delete => None,
    };
    let mut times: Vec<u64> = recs.iter().flat_map(|r| [Some(r.invoke_ns), r.ret.map(|(_, t)| t)]).flatten().collect();
    times.sort_unstable();
    times.dedup();
    let rank = |t: u64| times.partition_point(|&x| x < t) as i64;
    let end_of_history = times.len() as i64;
    recs.iter()
        .map(|r| porcupine_rs::Operation {
            client_id: None,
            call_time: rank(r.invoke_ns),
            return_time: match r.ret {
                Some((_, t)) => rank(t),
                None => effect_by(r).map_or(end_of_history, rank),
            },
            op: ModelOp { op: r.op, ret: r.ret.map(|(ret, _)| ret) },
            metadata: None,
        })
        .collect()
}

fn writes_are_unique(recs: &[Rec]) -> bool {
    let mut seen = HashSet::new();
    recs.iter().all(|r| match r.op {
        Op::Write(v) | Op::Cas { new: v, .. } => seen.insert(v),
        Op::Read | Op::Delete => true,
    })
}

/// Describes why `recs` (known not to be linearizable) fail, from the checker's longest partial
/// linearization: the operation it gets stuck on is the one returning first among those left
/// out, since the search backtracks when it reaches the return of an operation it cannot place.
fn explain_failure(recs: &[Rec], history: &History, budget: Duration) -> String {
    let started = Instant::now();
    // The verdict is already known: only the partial linearizations are used (on a timeout the
    // checker reports `Illegal` with whatever it collected so far).
    let info = catch_unwind(AssertUnwindSafe(|| porcupine_rs::check_operations_info_timeout(history, budget).1)).ok();
    let located = started.elapsed() < budget && info.is_some();
    let longest: Vec<usize> = info
        .iter()
        .flat_map(|info| info.partial_linearizations.iter().flatten())
        .fold(None::<&Vec<usize>>, |best, seq| match best {
            Some(best) if best.len() >= seq.len() => Some(best),
            _ => Some(seq),
        })
        .cloned()
        .unwrap_or_default();

    let indeterminate = recs.iter().filter(|r| r.ret.is_none()).count();
    let mut out = format!("{} operations ({indeterminate} indeterminate) have no linearization.", recs.len());
    let mut placed = vec![false; recs.len()];
    for &i in &longest {
        if let Some(p) = placed.get_mut(i) {
            *p = true;
        }
    }
    // The checker orders returns by time, then by index.
    let culprit = history
        .iter()
        .enumerate()
        .filter(|&(i, _)| !placed[i])
        .map(|(i, o)| (o.return_time, i))
        .min()
        .map(|(_, i)| i)
        .or_else(|| recs.len().checked_sub(1));
    let Some(culprit) = culprit else {
        return out;
    };
    let culprit_rec = recs[culprit];
    let culprit_text = match culprit_rec.ret {
        Some(_) => culprit_rec.describe(culprit),
        None => format!(
            "{} (it must take effect before the first completed operation observing its value returns)",
            culprit_rec.describe(culprit)
        ),
    };

    let mut value = None;
    let mut steps = Vec::with_capacity(longest.len());
    for &i in &longest {
        let ret = apply(&mut value, recs[i].op);
        steps.push((i, ret, value));
    }
    let _ = write!(
        out,
        " The longest partial linearization {} places {} of them and leaves the register at {value:?}",
        if located { "found" } else { "found before the time limit" },
        longest.len()
    );
    if located {
        let _ = write!(out, "; no operation left can follow it before {culprit_text} returns.");
    } else {
        let _ =
            write!(out, "; locating the failure ran out of time, the first operation it leaves out is {culprit_text}.");
    }
    if !steps.is_empty() {
        let shown = steps.len().min(8);
        let _ = write!(out, "\nIts last {shown} steps (operation as linearized -> register value after it):");
        for &(i, ret, after) in &steps[steps.len() - shown..] {
            let _ = write!(out, "\n  #{i} {:?} -> {ret:?} => {after:?}", recs[i].op);
        }
    }
    let _ = write!(
        out,
        "\nOperations overlapping #{culprit} and the latest ones before it \
         (process, [invoke .. return] ns, op -> result):"
    );
    let cut_ns = culprit_rec.ret.map_or(u64::MAX, |(_, t)| t);
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
        let marker = if i == culprit && located {
            "  <== fails here"
        } else if placed[i] {
            "  (linearized)"
        } else {
            ""
        };
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
    let mut rng = Rng::new(params.seed);
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
        let ret = apply(&mut registers[p.key], history[p.index].op);
        if let Outcome::Ok { ret: recorded, .. } = &mut history[p.index].outcome {
            *recorded = ret;
        }
    }
    history
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
    fn corrupt_one_read(history: &mut [Operation], rng: &mut Rng) -> Option<usize> {
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
        let mut rng = Rng::new(99);
        for seed in 0..8 {
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

    /// Reference: exhaustive search without memoisation, independent of `porcupine-rs`. An
    /// operation may come next iff no operation still to place returned before its invocation.
    fn plain_search(history: &[Operation]) -> bool {
        fn go(ops: &[(Op, u64, Option<Ret>, u64)], done: &mut [bool], value: Option<Value>) -> bool {
            let Some(first_return) = (0..ops.len()).filter(|&i| !done[i]).map(|i| ops[i].3).min() else {
                return true;
            };
            for i in 0..ops.len() {
                let (op, invoke_ns, ret, _) = ops[i];
                if done[i] || invoke_ns > first_return {
                    continue;
                }
                let mut next = value;
                let actual = apply(&mut next, op);
                if ret.is_some_and(|expected| expected != actual) {
                    continue;
                }
                done[i] = true;
                let found = go(ops, done, next);
                done[i] = false;
                if found {
                    return true;
                }
            }
            false
        }
        let ops: Vec<(Op, u64, Option<Ret>, u64)> = history
            .iter()
            .filter_map(|o| match o.outcome {
                Outcome::Ok { ret, return_ns } => Some((o.op, o.invoke_ns, Some(ret), return_ns)),
                Outcome::Indeterminate if o.op == Op::Read => None,
                Outcome::Indeterminate => Some((o.op, o.invoke_ns, None, u64::MAX)),
            })
            .collect();
        go(&ops, &mut vec![false; ops.len()], None)
    }

    /// porcupine-rs must agree with an exhaustive search. Small random histories, half of them
    /// with one random return value altered.
    #[test]
    fn porcupine_search_agrees_with_plain_search() {
        let mut rng = Rng::new(5);
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
            let recs = normalise(&ops).expect("well-formed history");
            let unbounded = porcupine_rs::check_operations(&to_porcupine(&recs, Encoding::EndOfHistory));
            match (check_key(&ops, budget), plain_search(&history), unbounded) {
                (KeyVerdict::Linearizable, true, true) => valid += 1,
                (KeyVerdict::NotLinearizable(_), false, false) => invalid += 1,
                _ => panic!("seed {seed}: porcupine-rs and the plain search disagree on {history:#?}"),
            }
        }
        assert!(valid > 100 && invalid > 30, "valid {valid}, invalid {invalid}");

        // Longer histories, beyond the reach of the plain search: every corrupted one is refuted.
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
            match (seed % 2, check_key(&ops, Duration::from_secs(60))) {
                (0, KeyVerdict::Linearizable) | (1, KeyVerdict::NotLinearizable(_)) => {}
                _ => panic!("seed {seed}: unexpected verdict"),
            }
        }
    }

    /// Refutation at the scale of real test runs, out of reach of the stateright-based checker.
    #[test]
    fn corrupted_large_synthetic_histories_are_caught() {
        let mut rng = Rng::new(17);
        for seed in 0..3 {
            let mut history = synthetic_history(&params(seed, 2_000));
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

    /// Timings on synthetic histories, valid and with one corrupted read:
    /// `cargo test --release -- --ignored --nocapture bench_synthetic`
    #[test]
    #[ignore]
    fn bench_synthetic() {
        let mut rng = Rng::new(1234);
        for operations in [2_000, 10_000, 50_000] {
            let history = synthetic_history(&params(42, operations));
            let report = check(&history, &cfg());
            println!(
                "porcupine-rs: {operations:>6} ops, {} keys, {} indeterminate: {:?} in {:?}",
                report.keys, report.indeterminate, report.verdict, report.elapsed
            );
            let mut corrupted = history.clone();
            let Some(index) = corrupt_one_read(&mut corrupted, &mut rng) else {
                panic!("no read to corrupt");
            };
            let report = check(&corrupted, &cfg());
            let outcome = match &report.verdict {
                Verdict::NotLinearizable { key, detail } => format!(
                    "NOT linearizable on {key} ({})",
                    if detail.contains("<== fails here") { "located" } else { "not located" }
                ),
                other => format!("{other:?}"),
            };
            // The verdict alone, without locating the failure, on the corrupted key.
            let key_ops: Vec<&Operation> = corrupted.iter().filter(|o| o.key == corrupted[index].key).collect();
            let recs = normalise(&key_ops).expect("well-formed history");
            let started = Instant::now();
            let history = to_porcupine(&recs, Encoding::BoundObserved);
            let result = porcupine_rs::check_operations_timeout(&history, cfg().max_time_per_key);
            let verdict_only = started.elapsed();
            println!(
                "porcupine-rs: {operations:>6} ops, one corrupted read: {outcome} in {:?} \
                 (verdict alone, {} ops of the key: {result:?} in {verdict_only:?})",
                report.elapsed,
                recs.len()
            );
            // Porcupine's own encoding of indeterminate operations, for comparison.
            let budget = Duration::from_secs(30);
            let started = Instant::now();
            let result = porcupine_rs::check_operations_timeout(&to_porcupine(&recs, Encoding::EndOfHistory), budget);
            println!(
                "  same key, every indeterminate operation returning at the end (limit {budget:?}): {result:?} in {:?}",
                started.elapsed()
            );
        }
    }
}
