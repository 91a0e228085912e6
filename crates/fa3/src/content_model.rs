//! Matching a sequence of child elements against a content model (sequence, choice,
//! occurrence bounds), and finding where a mismatch starts and what was expected there.
//!
//! Matching works on sets of positions rather than an expanded automaton: `maxOccurs="50000"`
//! would blow up an unrolled automaton, while the set of positions stays tiny because the
//! schema is deterministic (Unique Particle Attribution).

use crate::xsd_schema::{ElemId, Particle, Term};

/// A sorted, duplicate-free set of positions in the child list. Almost always one or two
/// positions (the schema is deterministic), so they live inline and matching allocates nothing.
#[derive(Clone, Default)]
struct Positions {
    len: usize,
    inline: [u32; INLINE],
    heap: Vec<u32>,
}

const INLINE: usize = 4;

impl Positions {
    fn as_slice(&self) -> &[u32] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn contains(&self, p: u32) -> bool {
        self.as_slice().binary_search(&p).is_ok()
    }

    /// Appends a position greater than every one held.
    fn push(&mut self, p: u32) {
        if self.len < INLINE {
            self.inline[self.len] = p;
        } else {
            if self.len == INLINE {
                self.heap = self.inline.to_vec();
            }
            self.heap.push(p);
        }
        self.len += 1;
    }

    fn from_sorted(items: impl IntoIterator<Item = u32>) -> Positions {
        let mut out = Positions::default();
        for p in items {
            out.push(p);
        }
        out
    }
}

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
                let mut out = Positions::default();
                for &p in from.as_slice() {
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
                let mut out = Positions::default();
                for part in parts {
                    let got = self.particle(part, from);
                    if !got.is_empty() {
                        out = union(out.as_slice(), got.as_slice());
                    }
                }
                out
            }
        }
    }

    fn particle(&self, p: &Particle, from: &Positions) -> Positions {
        let mut result = if p.min == 0 { from.clone() } else { Positions::default() };
        let mut frontier = from.clone();
        let mut k: u32 = 0;
        while k < p.max && !frontier.is_empty() {
            k += 1;
            let next = self.term(&p.term, &frontier);
            if k < p.min {
                // In prefix mode the end of input may come before the minimum is reached.
                if self.prefix && next.contains(self.n()) {
                    result = union(result.as_slice(), &[self.n()]);
                }
                frontier = next;
                continue;
            }
            // A position reached again after more repetitions has fewer left: nothing new.
            let fresh = Positions::from_sorted(next.as_slice().iter().copied().filter(|&x| !result.contains(x)));
            if fresh.is_empty() {
                break;
            }
            match result.as_slice().last() {
                Some(&last) if last >= fresh.as_slice()[0] => result = union(result.as_slice(), fresh.as_slice()),
                _ => {
                    for &x in fresh.as_slice() {
                        result.push(x);
                    }
                }
            }
            frontier = fresh;
        }
        result
    }
}

fn union(a: &[u32], b: &[u32]) -> Positions {
    let mut out = Positions::default();
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
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

fn accepts(particle: &Particle, kids: &[Kid], prefix: bool) -> bool {
    let m = Matcher { kids, prefix };
    m.particle(particle, &Positions::from_sorted([0])).contains(kids.len() as u32)
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
