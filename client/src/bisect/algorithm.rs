//! The bisection itself, pure: candidates are indices `0..n` of a first-parent history, oldest
//! first; the known-good commit sits just before index 0 and the known-bad one is index `n - 1`.
//! [`Bisection::next`] names the candidate to test next, or the outcome once none is left.
//!
//! Skips are handled as `git bisect` handles them in a linear history: a skipped candidate is never
//! tested again, the probe moves to the untested candidate nearest to the middle of what is left,
//! and when only skipped candidates separate the last good from the first bad, the answer is the
//! range they leave ambiguous (the skipped ones and the first bad). Verdicts that contradict each
//! other (a good after a bad) are resolved like git: the first bad bounds the search, and goods
//! after it are ignored.

use serde::Serialize;

/// What one test of a candidate said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The regression is absent.
    Good,
    /// The regression is present.
    Bad,
    /// The candidate could not be tested (missing artifacts, or the command said 125).
    Skip,
}

/// The answer of a finished bisection, as candidate indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This candidate is the first bad one.
    FirstBad(usize),
    /// The first bad candidate is one of these (skipped ones, then the first known bad), oldest
    /// first.
    Ambiguous(Vec<usize>),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Test this candidate.
    Probe(usize),
    /// Nothing is left to test.
    Done(Outcome),
}

/// The verdicts so far over `n` candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bisection {
    verdicts: Vec<Option<Verdict>>,
}

impl Bisection {
    /// `n` candidates (at least one), the last of which is known bad.
    pub fn new(n: usize) -> Bisection {
        assert!(n > 0, "a bisection needs at least the bad commit");
        let mut verdicts = vec![None; n];
        verdicts[n - 1] = Some(Verdict::Bad);
        Bisection { verdicts }
    }

    /// How many candidates.
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    /// Never true: there is always the bad commit.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    /// Record the verdict of candidate `i`.
    pub fn record(&mut self, i: usize, verdict: Verdict) {
        self.verdicts[i] = Some(verdict);
    }

    /// The verdict recorded for candidate `i`, if any.
    pub fn verdict(&self, i: usize) -> Option<Verdict> {
        self.verdicts[i]
    }

    /// `(lo, hi)`: the first bad candidate, and the candidates strictly before it that are after
    /// the last good one (`lo` is the index of the first such candidate).
    fn bounds(&self) -> (usize, usize) {
        let hi = self
            .verdicts
            .iter()
            .position(|v| *v == Some(Verdict::Bad))
            .expect("the last candidate is bad");
        let lo = self.verdicts[..hi]
            .iter()
            .rposition(|v| *v == Some(Verdict::Good))
            .map_or(0, |g| g + 1);
        (lo, hi)
    }

    /// The next candidate to test, or the outcome.
    pub fn next(&self) -> Next {
        let (lo, hi) = self.bounds();
        let untested: Vec<usize> = (lo..hi).filter(|&i| self.verdicts[i].is_none()).collect();
        if untested.is_empty() {
            let skipped: Vec<usize> = (lo..hi)
                .filter(|&i| self.verdicts[i] == Some(Verdict::Skip))
                .collect();
            return Next::Done(if skipped.is_empty() {
                Outcome::FirstBad(hi)
            } else {
                let mut range = skipped;
                range.push(hi);
                Outcome::Ambiguous(range)
            });
        }
        // The middle of the interval between the last good (lo - 1) and the first bad (hi), in
        // doubled units so that no rounding favours either side.
        let middle2 = (lo + hi) as i64 - 1;
        let pick = untested
            .into_iter()
            .min_by_key(|&i| ((2 * i as i64 - middle2).abs(), i))
            .expect("not empty");
        Next::Probe(pick)
    }

    /// The next candidate if candidate `i` turned out `verdict` (what a prefetch warms up).
    pub fn next_if(&self, i: usize, verdict: Verdict) -> Option<usize> {
        let mut then = self.clone();
        then.record(i, verdict);
        match then.next() {
            Next::Probe(j) => Some(j),
            Next::Done(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bisect `n` candidates whose first bad one is `first_bad`, skipping `skip`; returns the
    /// outcome and the candidates tested, in order.
    fn simulate(n: usize, first_bad: usize, skip: &[usize]) -> (Outcome, Vec<usize>) {
        let mut b = Bisection::new(n);
        let mut probes = Vec::new();
        loop {
            match b.next() {
                Next::Probe(i) => {
                    assert!(b.verdict(i).is_none(), "candidate {i} tested twice");
                    probes.push(i);
                    let v = if skip.contains(&i) {
                        Verdict::Skip
                    } else if i >= first_bad {
                        Verdict::Bad
                    } else {
                        Verdict::Good
                    };
                    b.record(i, v);
                }
                Next::Done(outcome) => return (outcome, probes),
            }
        }
    }

    #[test]
    fn without_skips_it_finds_every_first_bad_in_log2_steps() {
        for n in 1..=40usize {
            let bound = (usize::BITS - n.leading_zeros()) as usize; // ceil(log2(n + 1))
            for first_bad in 0..n {
                let (outcome, probes) = simulate(n, first_bad, &[]);
                assert_eq!(
                    outcome,
                    Outcome::FirstBad(first_bad),
                    "n={n} bad={first_bad}"
                );
                assert!(probes.len() <= bound, "n={n} bad={first_bad}: {probes:?}");
            }
        }
    }

    #[test]
    fn the_first_probe_is_the_middle() {
        // 15 candidates: 14 untested before the bad one; the middle of (-1, 14) is 6.5 → 6.
        assert_eq!(Bisection::new(15).next(), Next::Probe(6));
        assert_eq!(Bisection::new(2).next(), Next::Probe(0));
        assert_eq!(Bisection::new(1).next(), Next::Done(Outcome::FirstBad(0)));
    }

    #[test]
    fn a_skipped_middle_moves_the_probe_to_its_nearest_neighbour() {
        let mut b = Bisection::new(15);
        b.record(6, Verdict::Skip);
        assert_eq!(b.next(), Next::Probe(7));
        b.record(7, Verdict::Skip);
        assert_eq!(b.next(), Next::Probe(5));
        assert_eq!(b.next_if(5, Verdict::Good), Some(9));
        assert_eq!(b.next_if(5, Verdict::Bad), Some(2));
    }

    #[test]
    fn skips_next_to_the_first_bad_leave_an_ambiguous_range() {
        // First bad is 10; 9 and 10 cannot be tested: the answer is "9 or 10 or 11".
        let (outcome, _) = simulate(16, 10, &[9, 10]);
        assert_eq!(outcome, Outcome::Ambiguous(vec![9, 10, 11]));
        // A skip before the last good does not matter.
        let (outcome, _) = simulate(16, 10, &[2, 3, 12]);
        assert_eq!(outcome, Outcome::FirstBad(10));
        // Everything skipped: every candidate is a suspect.
        let all: Vec<usize> = (0..7).collect();
        let (outcome, probes) = simulate(8, 3, &all);
        assert_eq!(outcome, Outcome::Ambiguous((0..8).collect()));
        assert_eq!(probes.len(), 7);
    }

    #[test]
    fn every_skip_pattern_keeps_the_answer_right() {
        // Every first bad and every skip set of up to two candidates, over 12 candidates.
        let n = 12;
        for first_bad in 0..n {
            for a in 0..n - 1 {
                for b in a..n - 1 {
                    let skip = [a, b];
                    let (outcome, probes) = simulate(n, first_bad, &skip);
                    match outcome {
                        Outcome::FirstBad(i) => assert_eq!(i, first_bad, "skip {skip:?}"),
                        Outcome::Ambiguous(range) => {
                            assert!(range.contains(&first_bad), "{range:?} skip {skip:?}");
                            let (last, rest) = range.split_last().unwrap();
                            assert!(rest.iter().all(|i| skip.contains(i)), "{range:?}");
                            assert!(*last >= first_bad && !skip.contains(last) || *last == n - 1);
                        }
                    }
                    assert!(
                        probes.len() <= 6,
                        "skip {skip:?} bad {first_bad}: {probes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_good_after_the_first_bad_is_ignored() {
        let mut b = Bisection::new(10);
        b.record(3, Verdict::Bad);
        b.record(6, Verdict::Good);
        b.record(1, Verdict::Good);
        assert_eq!(b.next(), Next::Probe(2));
        b.record(2, Verdict::Good);
        assert_eq!(b.next(), Next::Done(Outcome::FirstBad(3)));
    }
}
