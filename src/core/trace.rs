//! Why a member's view changed: who accused whom, whose probe failed, which verdict was
//! accepted and why. Off unless the driver asks (`swimd simulate --explain`); a core that
//! does not trace pays one branch per step.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use crate::wire::{Incarnation, NodeName};

/// Entries kept between two drains; older ones are dropped when the driver is slow.
const MAX_ENTRIES: usize = 4096;

/// One step in the story of a member, as this member saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// When (driver's clock).
    pub at: Instant,
    /// The member the step is about.
    pub subject: NodeName,
    /// What happened.
    pub step: Step,
}

/// What happened to a member in this member's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Our probe got no ack in time (`nacks` relays answered that they could not reach it).
    ProbeFailed {
        /// Relays that answered with a nack.
        nacks: u32,
    },
    /// A suspicion started.
    Suspected {
        /// Who accused it.
        accuser: NodeName,
        /// The peer the accusation came through (`None`: our own probe).
        via: Option<NodeName>,
        /// The incarnation accused.
        incarnation: Incarnation,
    },
    /// Another member's accusation counted as an independent confirmation.
    Confirmed {
        /// Who accused it.
        accuser: NodeName,
        /// The peer the accusation came through.
        via: Option<NodeName>,
        /// Confirmations now.
        confirmations: u32,
    },
    /// A `failed` verdict arrived; it counts now or once the suspicion is older.
    VerdictHeard {
        /// Who gave the verdict.
        accuser: NodeName,
        /// The peer it came through.
        via: Option<NodeName>,
        /// Accepted at once.
        accepted: bool,
    },
    /// Our own verdict waits: our links are in doubt.
    VerdictHeld,
    /// The suspicion ran out: declared failed.
    Failed {
        /// Independent confirmations it had.
        confirmations: u32,
    },
    /// Alive again at a higher incarnation (a refutation or a restart).
    Alive {
        /// The new incarnation.
        incarnation: Incarnation,
        /// The peer it came through.
        via: Option<NodeName>,
    },
    /// Our link check ended (accused while our own probes failed: we refute only if
    /// nearly all of its pings are answered).
    LinkCheck {
        /// Pings answered.
        acks: u32,
        /// Enough answers to refute.
        passed: bool,
    },
    /// We refute an accusation of ourselves.
    Refuting {
        /// The incarnation the accusation named.
        claimed: Incarnation,
        /// Who accused us.
        accuser: NodeName,
        /// The peer it came through.
        via: Option<NodeName>,
        /// Held until a link check passes.
        after_link_check: bool,
    },
    /// Our own packets to the member drew "port unreachable" twice, the second after we
    /// pinged it again: nothing listens on its port.
    PortClosed,
    /// Members (its observers) found its port closed: declared failed at once.
    ClosedVerdict {
        /// The members that found the port closed.
        witnesses: Vec<NodeName>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = |v: &Option<NodeName>| match v {
            Some(v) => format!(" via {v}"),
            None => String::new(),
        };
        match self {
            Step::ProbeFailed { nacks } => write!(f, "our probe failed ({nacks} nacks)"),
            Step::Suspected {
                accuser,
                via: v,
                incarnation,
            } => write!(
                f,
                "suspected at incarnation {} by {accuser}{}",
                incarnation.0,
                via(v)
            ),
            Step::Confirmed {
                accuser,
                via: v,
                confirmations,
            } => write!(
                f,
                "confirmed by {accuser}{} ({confirmations} confirmations)",
                via(v)
            ),
            Step::VerdictHeard {
                accuser,
                via: v,
                accepted,
            } => write!(
                f,
                "verdict failed from {accuser}{}: {}",
                via(v),
                if *accepted { "accepted" } else { "deferred" }
            ),
            Step::VerdictHeld => write!(f, "our verdict held: our links are in doubt"),
            Step::Failed { confirmations } => {
                write!(
                    f,
                    "failed: suspicion ran out ({confirmations} confirmations)"
                )
            }
            Step::LinkCheck { acks, passed } => write!(
                f,
                "our link check {} ({acks} acks)",
                if *passed { "passed" } else { "failed" }
            ),
            Step::Alive {
                incarnation,
                via: v,
            } => {
                write!(f, "alive at incarnation {}{}", incarnation.0, via(v))
            }
            Step::Refuting {
                claimed,
                accuser,
                via: v,
                after_link_check,
            } => write!(
                f,
                "refuting incarnation {} accused by {accuser}{}{}",
                claimed.0,
                via(v),
                if *after_link_check {
                    " once a link check passes"
                } else {
                    ""
                }
            ),
            Step::PortClosed => write!(f, "our packets to it drew port unreachable"),
            Step::ClosedVerdict { witnesses } => {
                let names: Vec<&str> = witnesses.iter().map(NodeName::as_str).collect();
                write!(f, "failed: port closed for {}", names.join(", "))
            }
        }
    }
}

/// The bounded log a core keeps while tracing is on.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    entries: Option<VecDeque<TraceEntry>>,
}

impl Trace {
    pub(crate) fn enable(&mut self, on: bool) {
        self.entries = on.then(VecDeque::new);
    }

    /// Records a step (built only when tracing is on).
    pub(crate) fn record(&mut self, at: Instant, subject: &NodeName, step: impl FnOnce() -> Step) {
        if let Some(entries) = self.entries.as_mut() {
            if entries.len() == MAX_ENTRIES {
                entries.pop_front();
            }
            entries.push_back(TraceEntry {
                at,
                subject: subject.clone(),
                step: step(),
            });
        }
    }

    pub(crate) fn poll(&mut self) -> Option<TraceEntry> {
        self.entries.as_mut().and_then(VecDeque::pop_front)
    }
}
