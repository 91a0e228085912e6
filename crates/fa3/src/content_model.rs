//! Matching a sequence of child elements against a content model (sequence, choice,
//! occurrence bounds), and finding where a mismatch starts and what was expected there.
//!
//! Matching works on sets of positions rather than an expanded automaton: `maxOccurs="50000"`
//! would blow up an unrolled automaton, while the set of positions stays tiny because the
//! schema is deterministic (Unique Particle Attribution).

use crate::xsd_schema::{ElemId, Particle, Term};

/// A sorted, duplicate-free set of positions in the child list.
type Positions = Vec<u32>;

/// A child element: the declaration its name resolves to in this content model, if any.
pub type Kid = Option<ElemId>;

struct Matcher<'a> {
    kids: &'a [Kid],
    /// When set, running out of input counts as success: "could this still become valid?".
    prefix: bool,
}

impl Matcher<'_> {
    fn n(&self) -> u32 {
        self.kids.len() as u32
    }

    fn term(&self, t: &Term, from: &Positions) -> Positions {
        match t {
            Term::Element(id) => {
                let mut out: Positions = Vec::new();
                for &p in from {
                    if p == self.n() {
                        if self.prefix {
                            out.push(p);
                        }
                    } else if self.kids[p as usize] == Some(*id) {
                        out.push(p + 1);
                    }
                }
                out
            }
            Term::Sequence(parts) => {
                let mut cur = from.clone();
                for part in parts {
                    if cur.is_empty() {
                        break;
                    }
                    cur = self.particle(part, &cur);
                }
                cur
            }
            Term::Choice(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    out = union(&out, &self.particle(part, from));
                }
                out
            }
        }
    }

    fn particle(&self, p: &Particle, from: &Positions) -> Positions {
        let mut result = if p.min == 0 { from.clone() } else { Vec::new() };
        let mut frontier = from.clone();
        let mut k: u32 = 0;
        while k < p.max && !frontier.is_empty() {
            k += 1;
            let next = self.term(&p.term, &frontier);
            if k < p.min {
                // In prefix mode the end of input may come before the minimum is reached.
                if self.prefix && next.contains(&self.n()) {
                    result = union(&result, &[self.n()]);
                }
                frontier = next;
                continue;
            }
            // A position reached again after more repetitions has fewer left: nothing new.
            let fresh: Positions = next.into_iter().filter(|x| result.binary_search(x).is_err()).collect();
            if result.last().zip(fresh.first()).is_some_and(|(a, b)| a < b) {
                result.extend_from_slice(&fresh);
            } else {
                result = union(&result, &fresh);
            }
            frontier = fresh;
        }
        result
    }
}

fn union(a: &[u32], b: &[u32]) -> Positions {
    // Repetitions move forward, so the common case is a plain append.
    match (a.last(), b.first()) {
        (_, None) => return a.to_vec(),
        (None, _) => return b.to_vec(),
        (Some(x), Some(y)) if x < y => {
            let mut out = a.to_vec();
            out.extend_from_slice(b);
            return out;
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(_), Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => unreachable!(),
        };
        out.push(next);
    }
    out
}

fn accepts(particle: &Particle, kids: &[Kid], prefix: bool) -> bool {
    let m = Matcher { kids, prefix };
    m.particle(particle, &vec![0]).contains(&(kids.len() as u32))
}

/// Where a child list departs from its content model.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The child at this index cannot appear there.
    Unexpected { index: usize, expected: Vec<ElemId> },
    /// A required field is missing just before the child at this index.
    MissingBefore { index: usize, missing: Vec<ElemId> },
    /// All children fit, but the content is incomplete.
    Incomplete { expected: Vec<ElemId> },
}

/// Checks a child list; `None` when it is valid.
pub fn check(particle: &Particle, candidates: &[ElemId], kids: &[Kid]) -> Option<Mismatch> {
    if accepts(particle, kids, false) {
        return None;
    }
    // The longest prefix that can still be completed (viability is monotone, so bisect).
    let (mut lo, mut hi) = (0usize, kids.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if accepts(particle, &kids[..mid], true) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut probe: Vec<Kid> = kids[..lo].to_vec();
    let mut expected = Vec::new();
    for &c in candidates {
        probe.push(Some(c));
        if accepts(particle, &probe, true) {
            expected.push(c);
        }
        probe.pop();
    }
    Some(if lo < kids.len() {
        // A required field left out shows up as its successor being "unexpected": say what is
        // missing when inserting one expected field would let the successor in.
        let mut missing = Vec::new();
        for &c in &expected {
            probe.push(Some(c));
            probe.push(kids[lo]);
            if accepts(particle, &probe, true) {
                missing.push(c);
            }
            probe.pop();
            probe.pop();
        }
        if missing.is_empty() {
            Mismatch::Unexpected { index: lo, expected }
        } else {
            Mismatch::MissingBefore { index: lo, missing }
        }
    } else {
        Mismatch::Incomplete { expected }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(id: usize, min: u32, max: u32) -> Particle {
        Particle {
            min,
            max,
            term: Term::Element(id),
        }
    }

    fn names(seq: &[usize]) -> Vec<Kid> {
        seq.iter().map(|&i| Some(i)).collect()
    }

    #[test]
    fn sequences_choices_and_bounds() {
        // (a, (b | c){1,3}, a?)
        let p = Particle {
            min: 1,
            max: 1,
            term: Term::Sequence(vec![
                el(0, 1, 1),
                Particle {
                    min: 1,
                    max: 3,
                    term: Term::Choice(vec![el(1, 1, 1), el(2, 1, 1)]),
                },
                el(0, 0, 1),
            ]),
        };
        let cands = [0, 1, 2];
        assert_eq!(check(&p, &cands, &names(&[0, 1, 2, 1, 0])), None);
        assert_eq!(check(&p, &cands, &names(&[0, 2])), None);
        assert_eq!(
            check(&p, &cands, &names(&[0, 1, 2, 1, 2])),
            Some(Mismatch::Unexpected {
                index: 4,
                expected: vec![0]
            })
        );
        assert_eq!(check(&p, &cands, &names(&[0])), Some(Mismatch::Incomplete { expected: vec![1, 2] }));
        assert_eq!(
            check(&p, &cands, &names(&[1])),
            Some(Mismatch::MissingBefore {
                index: 0,
                missing: vec![0]
            })
        );
    }

    #[test]
    fn large_bounds_stay_linear() {
        let p = el(0, 1, 10_000);
        let many = vec![Some(0); 10_000];
        assert_eq!(check(&p, &[0], &many), None);
        let too_many = vec![Some(0); 10_001];
        assert_eq!(
            check(&p, &[0], &too_many),
            Some(Mismatch::Unexpected {
                index: 10_000,
                expected: vec![]
            })
        );
    }
}
