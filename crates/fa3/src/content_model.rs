//! Matching a sequence of child elements against a content model (sequence, choice,
//! occurrence bounds), and finding where a mismatch starts and what was expected there.
//!
//! Matching works on sets of positions rather than an expanded automaton: `maxOccurs="50000"`
//! would blow up an unrolled automaton. The sets are bit sets for child lists of up to 127
//! elements (nearly all of them; one word up to 63) and sorted lists beyond; all give the same
//! answers (tested).

use crate::xsd_schema::{ElemId, Particle, Term};

/// A sorted, duplicate-free set of positions in the child list, for child lists too long for
/// [`Bits`]. Small sets live inline.
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

/// A set of positions in the child list, as the matcher needs it. Two representations give the
/// same sets: a bit set for child lists of up to 127 elements (nearly all of
/// them; no allocation, unions are an `or`), and the sorted list for longer ones.
trait PosSet: Clone {
    fn empty() -> Self;
    fn single(p: u32) -> Self;
    fn is_empty(&self) -> bool;
    fn contains(&self, p: u32) -> bool;
    fn union(&self, other: &Self) -> Self;
    /// The positions of `self` not in `other`.
    fn minus(&self, other: &Self) -> Self;
    /// Adds `other` to `self`.
    fn absorb(&mut self, other: &Self) {
        *self = self.union(other);
    }
    /// One element `id` matched from each position (and, in prefix mode, the end kept).
    fn step(&self, m: &Matcher<'_>, id: ElemId) -> Self;
}

impl PosSet for Positions {
    fn empty() -> Self {
        Positions::default()
    }

    fn single(p: u32) -> Self {
        Positions::from_sorted([p])
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn contains(&self, p: u32) -> bool {
        self.as_slice().binary_search(&p).is_ok()
    }

    fn union(&self, other: &Self) -> Self {
        union(self.as_slice(), other.as_slice())
    }

    fn minus(&self, other: &Self) -> Self {
        Positions::from_sorted(self.as_slice().iter().copied().filter(|&x| !PosSet::contains(other, x)))
    }

    /// Positions beyond the last one held are appended (linear over many repetitions).
    fn absorb(&mut self, other: &Self) {
        match (self.as_slice().last(), other.as_slice().first()) {
            (Some(&last), Some(&first)) if last >= first => *self = self.union(other),
            _ => {
                for &x in other.as_slice() {
                    self.push(x);
                }
            }
        }
    }

    fn step(&self, m: &Matcher<'_>, id: ElemId) -> Self {
        let mut out = Positions::default();
        for &p in self.as_slice() {
            if p == m.n() {
                if m.prefix {
                    out.push(p);
                }
            } else if m.kids[p as usize] == Some(id) {
                out.push(p + 1);
            }
        }
        out
    }
}

/// Positions as the bits of one integer: `Bits<u64>` for child lists of up to 63 elements,
/// `Bits<u128>` up to 127 (positions run to the length itself).
#[derive(Clone, Copy)]
struct Bits<T>(T);

macro_rules! bit_set {
    ($t:ty) => {
        impl Bits<$t> {
            const MAX_KIDS: usize = <$t>::BITS as usize - 1;
        }

        impl PosSet for Bits<$t> {
            fn empty() -> Self {
                Bits(0)
            }

            fn single(p: u32) -> Self {
                Bits(1 << p)
            }

            fn is_empty(&self) -> bool {
                self.0 == 0
            }

            fn contains(&self, p: u32) -> bool {
                self.0 >> p & 1 == 1
            }

            fn union(&self, other: &Self) -> Self {
                Bits(self.0 | other.0)
            }

            fn minus(&self, other: &Self) -> Self {
                Bits(self.0 & !other.0)
            }

            fn step(&self, m: &Matcher<'_>, id: ElemId) -> Self {
                let (mut rest, mut out): ($t, $t) = (self.0, 0);
                while rest != 0 {
                    let p = rest.trailing_zeros();
                    rest &= rest - 1;
                    if p == m.n() {
                        if m.prefix {
                            out |= 1 << p;
                        }
                    } else if m.kids[p as usize] == Some(id) {
                        out |= 1 << (p + 1);
                    }
                }
                Bits(out)
            }
        }
    };
}

bit_set!(u64);
bit_set!(u128);

struct Matcher<'a> {
    kids: &'a [Kid],
    /// When set, running out of input counts as success: "could this still become valid?".
    prefix: bool,
}

impl Matcher<'_> {
    fn n(&self) -> u32 {
        self.kids.len() as u32
    }

    fn term<S: PosSet>(&self, t: &Term, from: &S) -> S {
        match t {
            Term::Element(id) => from.step(self, *id),
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
                let mut out = S::empty();
                for part in parts {
                    let got = self.particle(part, from);
                    if !got.is_empty() {
                        out = out.union(&got);
                    }
                }
                out
            }
        }
    }

    fn particle<S: PosSet>(&self, p: &Particle, from: &S) -> S {
        // Most particles are one element at most once: the loop below reduces to "where we
        // were (if optional), plus one step"; the same sets, without the bookkeeping.
        if let (Term::Element(id), 1, 0 | 1) = (&p.term, p.max, p.min) {
            let stepped = from.step(self, *id);
            return if p.min == 0 { from.union(&stepped) } else { stepped };
        }
        let mut result = if p.min == 0 { from.clone() } else { S::empty() };
        let mut frontier = from.clone();
        let mut k: u32 = 0;
        while k < p.max && !frontier.is_empty() {
            k += 1;
            let next = self.term(&p.term, &frontier);
            if k < p.min {
                // In prefix mode the end of input may come before the minimum is reached.
                if self.prefix && next.contains(self.n()) {
                    result = result.union(&S::single(self.n()));
                }
                frontier = next;
                continue;
            }
            // A position reached again after more repetitions has fewer left: nothing new.
            let fresh = next.minus(&result);
            if fresh.is_empty() {
                break;
            }
            result.absorb(&fresh);
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

fn accepts_with<S: PosSet>(particle: &Particle, kids: &[Kid], prefix: bool) -> bool {
    let m = Matcher { kids, prefix };
    m.particle(particle, &S::single(0)).contains(kids.len() as u32)
}

fn accepts(particle: &Particle, kids: &[Kid], prefix: bool) -> bool {
    if kids.len() <= Bits::<u64>::MAX_KIDS {
        accepts_with::<Bits<u64>>(particle, kids, prefix)
    } else if kids.len() <= Bits::<u128>::MAX_KIDS {
        accepts_with::<Bits<u128>>(particle, kids, prefix)
    } else {
        accepts_with::<Positions>(particle, kids, prefix)
    }
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

    /// The bit sets and the sorted lists accept exactly the same child lists, in both modes, on
    /// every content model of the real schema with random children drawn from its names.
    #[test]
    fn bit_sets_and_sorted_lists_agree() {
        let schema = crate::xsd_schema::fa3();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let (mut accepted, mut compared) = (0, 0);
        for ct in &schema.complex {
            let crate::xsd_schema::Content::Elements { particle, names } = &ct.content else {
                continue;
            };
            for _ in 0..40 {
                // Mostly short lists; some long enough for the two-word bit set.
                let len = if next(5) == 0 { 64 + next(64) } else { next(12) };
                let mut kids: Vec<Kid> = Vec::with_capacity(len);
                for _ in 0..len {
                    // Mostly names of this model, in schema order runs, sometimes a stranger.
                    kids.push(if next(10) == 0 {
                        None
                    } else {
                        Some(names.ids[next(names.ids.len())])
                    });
                }
                if next(2) == 0 {
                    kids.sort();
                }
                for prefix in [false, true] {
                    let bits = accepts_with::<Bits<u128>>(particle, &kids, prefix);
                    let list = accepts_with::<Positions>(particle, &kids, prefix);
                    assert_eq!(bits, list, "{kids:?} prefix={prefix}");
                    if len <= Bits::<u64>::MAX_KIDS {
                        assert_eq!(accepts_with::<Bits<u64>>(particle, &kids, prefix), list, "{kids:?} prefix={prefix}");
                    }
                    accepted += usize::from(bits);
                    compared += 1;
                }
            }
        }
        // Both outcomes occur, so the comparison is not trivially of rejections.
        assert!(accepted > 100 && accepted < compared, "{accepted} of {compared}");
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
