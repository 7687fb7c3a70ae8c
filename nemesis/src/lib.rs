//! `tessera-nemesis`: runs a workload against a tessera cluster while faults
//! are injected, records the history of every operation and checks it for
//! linearizability and lost writes — our own Jepsen-style harness.
//!
//! - [`history`]: operations, outcomes and the recorder (JSON lines);
//! - [`check`]: per-key linearizability (WGL, todc-utils) and the
//!   nothing-lost check, with a report;
//! - [`cluster`]: the multi-process cluster under test and every fault it
//!   can be put through;
//! - [`workload`]: the clients whose operations make the history;
//! - [`faults`]: the nemeses and their seeded schedule;
//! - `degrade`: the nemeses that slow links and skew clocks;
//! - [`run`]: one run from start to verdict;
//! - [`recovery`]: how fast writes came back after each kind of fault.

pub mod check;
pub mod cluster;
mod degrade;
pub mod faults;
pub mod history;
pub mod recovery;
pub mod run;
pub mod workload;
