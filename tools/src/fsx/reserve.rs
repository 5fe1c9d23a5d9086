//! The reservation map: the block ranges of the ops in flight, so that an
//! op overlapping one of them waits for it. With at most `--qd` entries a
//! linear scan beats any tree.

/// Ranges `(start, end)` held by op number.
#[derive(Debug, Default)]
pub struct Reservations {
    held: Vec<(u64, u64, u64)>,
}

impl Reservations {
    pub fn new() -> Reservations {
        Reservations::default()
    }

    /// Whether any of `spans` overlaps a held range.
    pub fn overlaps(&self, spans: &[(u64, u64)]) -> bool {
        spans
            .iter()
            .any(|&(s, e)| self.held.iter().any(|&(a, b, _)| s < b && a < e))
    }

    /// Holds `spans` for op `i`.
    pub fn take(&mut self, i: u64, spans: &[(u64, u64)]) {
        self.held.extend(spans.iter().map(|&(s, e)| (s, e, i)));
    }

    /// Lets go of op `i`'s ranges.
    pub fn release(&mut self, i: u64) {
        self.held.retain(|&(_, _, x)| x != i);
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_release() {
        let mut r = Reservations::new();
        r.take(1, &[(10, 20), (30, 31)]);
        assert!(r.overlaps(&[(19, 25)]));
        assert!(r.overlaps(&[(30, 31)]));
        assert!(!r.overlaps(&[(20, 30)]));
        assert!(!r.overlaps(&[]));
        r.release(1);
        assert!(r.is_empty() && !r.overlaps(&[(0, 100)]));
    }
}
