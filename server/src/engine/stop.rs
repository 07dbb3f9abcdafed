//! Stop strings over streamed text.
//!
//! Text that could be the beginning of a stop string is held back until it either completes
//! the stop string (generation ends, and neither the stop string nor anything after it is
//! emitted) or stops matching (it is released). Matches spanning several tokens are found
//! because the held-back text is kept across pushes.

/// What a push released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (possibly empty); no stop string was found.
    Emit(String),
    /// A stop string was found: emit this text (what preceded the stop string) and end.
    Stopped(String),
}

#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored (validation refuses them before this point).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Emit(text.to_owned());
        }
        self.held.push_str(text);
        // The earliest stop string wins (and, at the same position, the longest).
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                self.held
                    .find(s.as_str())
                    .map(|at| (at, usize::MAX - s.len()))
            })
            .min();
        if let Some((at, _)) = found {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return StopOutcome::Stopped(before);
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// Releases whatever is held back (at the end of generation, when no stop string came).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let h = &self.held;
        self.stops
            .iter()
            .flat_map(|s| {
                // Suffixes of `h` starting at char boundaries, shorter than `s`.
                h.char_indices()
                    .map(|(i, _)| i)
                    .filter(move |&i| h.len() - i < s.len() && s.starts_with(&h[i..]))
                    .map(move |i| h.len() - i)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Emit(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_one_piece_cuts_before_it() {
        assert_eq!(run(&["END"], &["hello END world"]), ("hello ".into(), true));
    }

    #[test]
    fn stop_across_pieces_is_found_and_never_emitted() {
        let stops = vec!["\n\n".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("Paris.\n"), StopOutcome::Emit("Paris.".into()));
        assert_eq!(m.push("\nMore"), StopOutcome::Stopped(String::new()));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let stops = vec!["STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("a ST"), StopOutcome::Emit("a ".into()));
        assert_eq!(m.push("ay"), StopOutcome::Emit("STay".into()));
        assert_eq!(run(&["STOP"], &["a ST", "O"]), ("a STO".into(), false));
    }

    #[test]
    fn earliest_stop_wins() {
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        assert_eq!(run(&["éé"], &["café", "é!"]), ("caf".into(), true));
        assert_eq!(run(&["éx"], &["café", "!"]), ("café!".into(), false));
    }
}
