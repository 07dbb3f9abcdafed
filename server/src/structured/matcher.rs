//! An incremental matcher of JSON bytes against a [`Grammar`]: a pushdown automaton whose
//! stack frames are the values being written (object, key, array, string, number, literal).
//!
//! [`Matcher::feed`] takes one byte and says whether the text so far is still the prefix of a
//! value the schema accepts; [`Matcher::min_close`] says how many bytes complete it at least,
//! which lets the mask force a value closed before the token budget runs out. An `anyOf` whose
//! alternatives start alike is followed along each of them at once (a set of stacks).
//!
//! What is generated is JSON that serde_json parses: strings are valid UTF-8 with valid
//! escapes (no lone surrogates), numbers follow the JSON grammar with bounded digit counts,
//! and whitespace between tokens is at most [`MAX_WS`] bytes (space or newline), so a model
//! cannot loop on spaces.

use std::sync::Arc;

use super::schema::{Grammar, Node, NodeId, ObjectNode};

/// Whitespace bytes allowed between two structural tokens.
pub const MAX_WS: u8 = 1;
/// Frames one stack may hold (nesting depth of the generated value).
pub const MAX_DEPTH: usize = 48;
/// Digits of a number's integer part, fraction and exponent at most. Two
/// exponent digits keep every number the matcher takes a finite f64 (at most
/// about 1e114 in size): with three, `0.1e310` is valid JSON text that
/// parsers reading f64 (serde_json, Python's json gives inf) cannot hold.
const MAX_INT_DIGITS: u8 = 15;
const MAX_FRAC_DIGITS: u8 = 15;
const MAX_EXP_DIGITS: u8 = 2;
/// Marks the key of an additional (undeclared) property in [`ObjPhase::Colon`].
const OTHER: u8 = u8::MAX;

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\n'
}

/// Inside a string: a pending escape, and the UTF-8 continuation bytes still owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StrState {
    esc: Esc,
    /// Continuation bytes still needed, and the range the next one must be in.
    need: u8,
    lo: u8,
    hi: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Esc {
    None,
    Backslash,
    /// `\u` and this many hex digits; `d`: the first was `d`/`D` (a surrogate must not follow).
    Hex {
        seen: u8,
        d: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrStep {
    Continue(StrState),
    Close,
    Reject,
}

impl StrState {
    pub const START: StrState = StrState {
        esc: Esc::None,
        need: 0,
        lo: 0,
        hi: 0,
    };

    /// Bytes that close the string at least (the quote included).
    pub fn pending(&self) -> usize {
        let esc = match self.esc {
            Esc::None => 0,
            Esc::Backslash => 1,
            Esc::Hex { seen, .. } => 4 - seen as usize,
        };
        esc + self.need as usize + 1
    }

    /// Whether a byte of plain text (no quote, backslash or control byte) may come next.
    pub fn plain(&self) -> bool {
        self.esc == Esc::None
    }

    pub fn feed(self, b: u8) -> StrStep {
        let mut s = self;
        if s.need > 0 {
            if b < s.lo || b > s.hi {
                return StrStep::Reject;
            }
            s.need -= 1;
            (s.lo, s.hi) = (0x80, 0xBF);
            return StrStep::Continue(s);
        }
        match s.esc {
            Esc::Backslash => {
                s.esc = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Esc::None,
                    b'u' => Esc::Hex { seen: 0, d: false },
                    _ => return StrStep::Reject,
                };
                StrStep::Continue(s)
            }
            Esc::Hex { seen, d } => {
                if !b.is_ascii_hexdigit() {
                    return StrStep::Reject;
                }
                // \uD800-\uDFFF would be half a surrogate pair: refused (serde_json rejects
                // lone surrogates, and we never need pairs: UTF-8 text says the same).
                if seen == 1 && d && !(b'0'..=b'7').contains(&b) {
                    return StrStep::Reject;
                }
                let d = if seen == 0 { b == b'd' || b == b'D' } else { d };
                s.esc = if seen == 3 {
                    Esc::None
                } else {
                    Esc::Hex { seen: seen + 1, d }
                };
                StrStep::Continue(s)
            }
            Esc::None => {
                let (need, lo, hi) = match b {
                    b'"' => return StrStep::Close,
                    b'\\' => {
                        s.esc = Esc::Backslash;
                        return StrStep::Continue(s);
                    }
                    0..=0x1F => return StrStep::Reject,
                    0x20..=0x7F => return StrStep::Continue(s),
                    0xC2..=0xDF => (1, 0x80, 0xBF),
                    0xE0 => (2, 0xA0, 0xBF),
                    0xED => (2, 0x80, 0x9F),
                    0xE1..=0xEF => (2, 0x80, 0xBF),
                    0xF0 => (3, 0x90, 0xBF),
                    0xF1..=0xF3 => (3, 0x80, 0xBF),
                    0xF4 => (3, 0x80, 0x8F),
                    _ => return StrStep::Reject,
                };
                (s.need, s.lo, s.hi) = (need, lo, hi);
                StrStep::Continue(s)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NumPhase {
    /// After `-`.
    Sign,
    /// A leading `0`.
    Zero,
    Int,
    /// After `.`.
    Dot,
    Frac,
    /// After `e`/`E`.
    E,
    /// After the exponent's sign.
    ESign,
    Exp,
}

impl NumPhase {
    fn accepting(self) -> bool {
        matches!(
            self,
            NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::Exp
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ObjPhase {
    /// After `{`.
    Start,
    /// A key frame is on top.
    InKey,
    /// After the key of property `p` (or [`OTHER`]), before `:`.
    Colon(u8),
    AfterValue,
    AfterComma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArrPhase {
    Start,
    AfterItem,
    AfterComma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Frame {
    /// A value of `node` is due (whitespace may come first).
    Value {
        node: NodeId,
        ws: u8,
    },
    Str(StrState),
    Num {
        integer: bool,
        phase: NumPhase,
        digits: u8,
    },
    /// Options `lo..hi` of a literal node share the `pos` bytes written.
    Lit {
        node: NodeId,
        lo: u32,
        hi: u32,
        pos: u32,
    },
    Obj {
        node: NodeId,
        used: u64,
        phase: ObjPhase,
        ws: u8,
    },
    /// A key of the object below: declared keys `lo..hi` share the `pos` bytes written
    /// (`other`: they no longer do, and this is an additional key).
    Key {
        lo: u8,
        hi: u8,
        pos: u32,
        other: bool,
        s: StrState,
    },
    Arr {
        node: NodeId,
        count: u32,
        phase: ArrPhase,
        ws: u8,
    },
}

type Stack = Vec<Frame>;

enum Step {
    Ok,
    Reject,
    /// The byte began a value along several `anyOf` alternatives: these stacks replace it.
    Fork(Vec<Stack>),
}

/// Where a value stands against its grammar; cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    grammar: Arc<Grammar>,
    /// Every parse the bytes so far allow (usually one); never empty.
    stacks: Vec<Stack>,
}

impl Matcher {
    pub fn new(grammar: Arc<Grammar>) -> Matcher {
        let root = grammar.root();
        Matcher {
            grammar,
            stacks: vec![vec![Frame::Value { node: root, ws: 0 }]],
        }
    }

    pub fn grammar(&self) -> &Arc<Grammar> {
        &self.grammar
    }

    /// Copies `other`'s state into `self`, reusing the allocations.
    pub fn set_from(&mut self, other: &Matcher) {
        if !Arc::ptr_eq(&self.grammar, &other.grammar) {
            self.grammar = other.grammar.clone();
        }
        self.stacks.truncate(other.stacks.len());
        for (dst, src) in self.stacks.iter_mut().zip(&other.stacks) {
            dst.clone_from(src);
        }
        for src in &other.stacks[self.stacks.len()..] {
            self.stacks.push(src.clone());
        }
    }

    /// Takes `b`; false when no value of the grammar starts with the bytes so far and `b`
    /// (the matcher is then in an unspecified state and must be reset or dropped).
    pub fn feed(&mut self, b: u8) -> bool {
        let g = &*self.grammar;
        if self.stacks.len() == 1 {
            return match step(g, &mut self.stacks[0], b) {
                Step::Ok => true,
                Step::Reject => false,
                Step::Fork(v) => {
                    self.stacks = v;
                    dedup(&mut self.stacks);
                    true
                }
            };
        }
        let mut next = Vec::with_capacity(self.stacks.len());
        for mut s in std::mem::take(&mut self.stacks) {
            match step(g, &mut s, b) {
                Step::Ok => next.push(s),
                Step::Reject => {}
                Step::Fork(v) => next.extend(v),
            }
        }
        dedup(&mut next);
        self.stacks = next;
        !self.stacks.is_empty()
    }

    /// [`feed`](Self::feed) for every byte; false at the first rejected one.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(b))
    }

    /// Whether the bytes so far are a whole value (generation may end here).
    pub fn accepting(&self) -> bool {
        self.stacks.iter().any(|s| match s.as_slice() {
            [] => true,
            [Frame::Num { phase, .. }] => phase.accepting(),
            [Frame::Lit { node, lo, hi, pos }] => lit_exact(&self.grammar, *node, *lo, *hi, *pos),
            _ => false,
        })
    }

    /// Whether nothing can follow: the value is closed (only the end may come).
    pub fn closed(&self) -> bool {
        self.stacks.iter().all(Vec::is_empty)
    }

    /// The fewest bytes that complete the value.
    pub fn min_close(&self) -> usize {
        self.stacks
            .iter()
            .map(|s| stack_cost(&self.grammar, s))
            .min()
            .unwrap_or(0)
    }

    /// When the only parse is inside a string whose next byte may be plain text: that
    /// string's state. The mask takes tokens of plain text there without a full simulation.
    pub fn plain_string(&self) -> Option<StrState> {
        match self.stacks.as_slice() {
            [s] => match s.last() {
                Some(Frame::Str(st))
                | Some(Frame::Key {
                    other: true, s: st, ..
                }) if st.plain() => Some(*st),
                _ => None,
            },
            _ => None,
        }
    }
}

fn dedup(stacks: &mut Vec<Stack>) {
    let mut i = 0;
    while i < stacks.len() {
        if stacks[..i].contains(&stacks[i]) {
            stacks.swap_remove(i);
        } else {
            i += 1;
        }
    }
}

fn push(st: &mut Stack, f: Frame) -> Step {
    if st.len() >= MAX_DEPTH {
        return Step::Reject;
    }
    st.push(f);
    Step::Ok
}

fn lit_options(g: &Grammar, node: NodeId) -> &[Vec<u8>] {
    match g.node(node) {
        Node::Literal(opts) => opts,
        other => unreachable!("node {node} is not a literal: {other:?}"),
    }
}

/// Whether one of options `lo..hi` is exactly `pos` bytes long (sorted: it is the first).
fn lit_exact(g: &Grammar, node: NodeId, lo: u32, hi: u32, pos: u32) -> bool {
    lo < hi && lit_options(g, node)[lo as usize].len() == pos as usize
}

/// The options of `lo..hi` whose byte `pos` is `b` (contiguous, the options being sorted).
fn narrow(opts: &[impl AsRef<[u8]>], lo: usize, hi: usize, pos: usize, b: u8) -> (usize, usize) {
    let mut first = hi;
    let mut last = hi;
    for (i, o) in opts.iter().enumerate().take(hi).skip(lo) {
        let hit = o.as_ref().get(pos) == Some(&b);
        if hit && first == hi {
            first = i;
        }
        if !hit && first != hi {
            last = i;
            break;
        }
    }
    if first == hi {
        (hi, hi)
    } else {
        (first, last)
    }
}

/// Begins a value of `node` with its first (non-whitespace) byte `b`.
fn start_value(g: &Grammar, st: &mut Stack, node: NodeId, b: u8) -> Step {
    match g.node(node) {
        Node::AnyOf(alts) => {
            let mut forks = Vec::new();
            for &alt in alts {
                let mut s = st.clone();
                match start_value(g, &mut s, alt, b) {
                    Step::Ok => forks.push(s),
                    Step::Reject => {}
                    Step::Fork(v) => forks.extend(v),
                }
            }
            dedup(&mut forks);
            match forks.len() {
                0 => Step::Reject,
                1 => {
                    *st = forks.pop().expect("one fork");
                    Step::Ok
                }
                _ => Step::Fork(forks),
            }
        }
        Node::Literal(opts) => {
            let (lo, hi) = narrow(opts, 0, opts.len(), 0, b);
            if lo == hi {
                return Step::Reject;
            }
            if hi - lo == 1 && opts[lo].len() == 1 {
                return Step::Ok; // a one-byte literal, done
            }
            push(
                st,
                Frame::Lit {
                    node,
                    lo: lo as u32,
                    hi: hi as u32,
                    pos: 1,
                },
            )
        }
        &Node::Number { integer } => {
            let (phase, digits) = match b {
                b'-' => (NumPhase::Sign, 0),
                b'0' => (NumPhase::Zero, 1),
                b'1'..=b'9' => (NumPhase::Int, 1),
                _ => return Step::Reject,
            };
            push(
                st,
                Frame::Num {
                    integer,
                    phase,
                    digits,
                },
            )
        }
        Node::String if b == b'"' => push(st, Frame::Str(StrState::START)),
        Node::Object(_) if b == b'{' => push(
            st,
            Frame::Obj {
                node,
                used: 0,
                phase: ObjPhase::Start,
                ws: 0,
            },
        ),
        Node::Array { .. } if b == b'[' => push(
            st,
            Frame::Arr {
                node,
                count: 0,
                phase: ArrPhase::Start,
                ws: 0,
            },
        ),
        _ => Step::Reject,
    }
}

/// Whether another key may be added to an object of `o` holding the keys `used`.
fn can_add(o: &ObjectNode, used: u64) -> bool {
    o.additional.is_some() || o.all() & !used != 0
}

fn array_bounds(g: &Grammar, node: NodeId) -> (NodeId, u32, Option<u32>) {
    match *g.node(node) {
        Node::Array { items, min, max } => (items, min, max),
        ref other => unreachable!("node {node} is not an array: {other:?}"),
    }
}

/// One byte through one stack, in place.
fn step(g: &Grammar, st: &mut Stack, b: u8) -> Step {
    loop {
        let depth = st.len();
        let Some(top) = st.last_mut() else {
            return Step::Reject; // the value is complete: nothing may follow
        };
        match *top {
            Frame::Value { node, ws } => {
                if is_ws(b) {
                    if ws >= MAX_WS {
                        return Step::Reject;
                    }
                    *top = Frame::Value { node, ws: ws + 1 };
                    return Step::Ok;
                }
                st.pop();
                return start_value(g, st, node, b);
            }
            Frame::Str(s) => {
                return match s.feed(b) {
                    StrStep::Continue(s) => {
                        *top = Frame::Str(s);
                        Step::Ok
                    }
                    StrStep::Close => {
                        st.pop();
                        Step::Ok
                    }
                    StrStep::Reject => Step::Reject,
                }
            }
            Frame::Num {
                integer,
                phase,
                digits,
            } => {
                use NumPhase::*;
                let next = match (phase, b) {
                    (Sign, b'0') => Some((Zero, 1)),
                    (Sign, b'1'..=b'9') => Some((Int, 1)),
                    (Int, b'0'..=b'9') if digits < MAX_INT_DIGITS => Some((Int, digits + 1)),
                    (Int, b'0'..=b'9') | (Zero, b'0'..=b'9') => return Step::Reject,
                    (Zero | Int, b'.') if !integer => Some((Dot, 0)),
                    (Zero | Int | Frac, b'e' | b'E') if !integer => Some((E, 0)),
                    (Dot, b'0'..=b'9') => Some((Frac, 1)),
                    (Frac, b'0'..=b'9') if digits < MAX_FRAC_DIGITS => Some((Frac, digits + 1)),
                    (Frac, b'0'..=b'9') => return Step::Reject,
                    (E, b'+' | b'-') => Some((ESign, 0)),
                    (E | ESign, b'0'..=b'9') => Some((Exp, 1)),
                    (Exp, b'0'..=b'9') if digits < MAX_EXP_DIGITS => Some((Exp, digits + 1)),
                    (Exp, b'0'..=b'9') => return Step::Reject,
                    _ => None,
                };
                match next {
                    Some((phase, digits)) => {
                        *top = Frame::Num {
                            integer,
                            phase,
                            digits,
                        };
                        return Step::Ok;
                    }
                    None if phase.accepting() => {
                        st.pop(); // the number ended; the byte belongs to what follows
                    }
                    None => return Step::Reject,
                }
            }
            Frame::Lit { node, lo, hi, pos } => {
                let opts = lit_options(g, node);
                let (nlo, nhi) = narrow(opts, lo as usize, hi as usize, pos as usize, b);
                if nlo < nhi {
                    if nhi - nlo == 1 && opts[nlo].len() == pos as usize + 1 {
                        st.pop();
                    } else {
                        *top = Frame::Lit {
                            node,
                            lo: nlo as u32,
                            hi: nhi as u32,
                            pos: pos + 1,
                        };
                    }
                    return Step::Ok;
                }
                if lit_exact(g, node, lo, hi, pos) {
                    st.pop(); // a literal that is a prefix of a longer option ended here
                } else {
                    return Step::Reject;
                }
            }
            Frame::Obj {
                node,
                used,
                phase,
                ws,
            } => {
                let o = g.object(node);
                let with = |phase, ws| Frame::Obj {
                    node,
                    used,
                    phase,
                    ws,
                };
                if is_ws(b) && phase != ObjPhase::InKey {
                    if ws >= MAX_WS {
                        return Step::Reject;
                    }
                    *top = with(phase, ws + 1);
                    return Step::Ok;
                }
                let done = o.required & !used == 0;
                match (phase, b) {
                    (ObjPhase::Start | ObjPhase::AfterComma, b'"') if can_add(o, used) => {
                        *top = with(ObjPhase::InKey, 0);
                        let n = o.props.len() as u8;
                        return push(
                            st,
                            Frame::Key {
                                lo: 0,
                                hi: n,
                                pos: 0,
                                other: n == 0,
                                s: StrState::START,
                            },
                        );
                    }
                    (ObjPhase::Start | ObjPhase::AfterValue, b'}') if done => {
                        st.pop();
                        return Step::Ok;
                    }
                    (ObjPhase::AfterValue, b',') if can_add(o, used) => {
                        *top = with(ObjPhase::AfterComma, 0);
                        return Step::Ok;
                    }
                    (ObjPhase::Colon(p), b':') => {
                        let value = if p == OTHER {
                            o.additional.expect("an additional key needs its schema")
                        } else {
                            o.props[p as usize].value
                        };
                        *top = with(ObjPhase::AfterValue, 0);
                        return push(st, Frame::Value { node: value, ws: 0 });
                    }
                    _ => return Step::Reject,
                }
            }
            Frame::Key {
                lo,
                hi,
                pos,
                other,
                s,
            } => {
                let Some(&Frame::Obj { node, used, .. }) = st.get(depth - 2) else {
                    unreachable!("a key frame sits on an object frame");
                };
                let o = g.object(node);
                let unused = |i: usize| used & (1 << i) == 0;
                if o.additional.is_none() {
                    // Declared keys only, written exactly as serialized.
                    let (lo, hi) = (lo as usize, hi as usize);
                    if b == b'"' {
                        let exact = (lo..hi).find(|&i| o.props[i].key.len() == pos as usize);
                        return match exact {
                            Some(i) if unused(i) => close_key(st, i as u8),
                            _ => Step::Reject,
                        };
                    }
                    let (nlo, nhi) = narrow(&keys(o), lo, hi, pos as usize, b);
                    if !(nlo..nhi).any(unused) {
                        return Step::Reject;
                    }
                    *st.last_mut().expect("the key frame") = Frame::Key {
                        lo: nlo as u8,
                        hi: nhi as u8,
                        pos: pos + 1,
                        other: false,
                        s,
                    };
                    return Step::Ok;
                }
                return match s.feed(b) {
                    StrStep::Reject => Step::Reject,
                    StrStep::Close => {
                        let exact = if other {
                            None
                        } else {
                            (lo as usize..hi as usize)
                                .find(|&i| o.props[i].key.len() == pos as usize)
                        };
                        match exact {
                            Some(i) if unused(i) => close_key(st, i as u8),
                            Some(_) => Step::Reject, // a declared key given twice
                            None => close_key(st, OTHER),
                        }
                    }
                    StrStep::Continue(s) => {
                        let (mut nlo, mut nhi, mut other) = (lo as usize, hi as usize, other);
                        if !other {
                            (nlo, nhi) = narrow(&keys(o), nlo, nhi, pos as usize, b);
                            other = nlo == nhi;
                        }
                        *st.last_mut().expect("the key frame") = Frame::Key {
                            lo: nlo as u8,
                            hi: nhi as u8,
                            pos: pos + 1,
                            other,
                            s,
                        };
                        Step::Ok
                    }
                };
            }
            Frame::Arr {
                node,
                count,
                phase,
                ws,
            } => {
                let (items, min, max) = array_bounds(g, node);
                if is_ws(b) {
                    if ws >= MAX_WS {
                        return Step::Reject;
                    }
                    *top = Frame::Arr {
                        node,
                        count,
                        phase,
                        ws: ws + 1,
                    };
                    return Step::Ok;
                }
                let room = max.is_none_or(|m| count < m);
                match (phase, b) {
                    (ArrPhase::Start | ArrPhase::AfterItem, b']') if count >= min => {
                        st.pop();
                        return Step::Ok;
                    }
                    (ArrPhase::AfterItem, b',') if room => {
                        *top = Frame::Arr {
                            node,
                            count,
                            phase: ArrPhase::AfterComma,
                            ws: 0,
                        };
                        return Step::Ok;
                    }
                    (ArrPhase::Start | ArrPhase::AfterComma, _) if room => {
                        *top = Frame::Arr {
                            node,
                            count: count + 1,
                            phase: ArrPhase::AfterItem,
                            ws: 0,
                        };
                        if let Step::Reject = push(
                            st,
                            Frame::Value {
                                node: items,
                                ws: MAX_WS,
                            },
                        ) {
                            return Step::Reject;
                        }
                        // The byte begins the item: go round again.
                    }
                    _ => return Step::Reject,
                }
            }
        }
    }
}

fn keys(o: &ObjectNode) -> Vec<&[u8]> {
    o.props.iter().map(|p| p.key.as_slice()).collect()
}

/// The key of property `p` (or [`OTHER`]) is closed: pop the key, the object awaits `:`.
fn close_key(st: &mut Stack, p: u8) -> Step {
    st.pop();
    match st.last_mut() {
        Some(Frame::Obj { used, phase, .. }) => {
            if p != OTHER {
                *used |= 1 << p;
            }
            *phase = ObjPhase::Colon(p);
            Step::Ok
        }
        _ => unreachable!("a key frame sits on an object frame"),
    }
}

/// Bytes of `,"key":value` for every required key not in `used`, except `except`.
fn required_rest(g: &Grammar, o: &ObjectNode, used: u64, except: Option<usize>) -> usize {
    (0..o.props.len())
        .filter(|&i| o.required & (1 << i) != 0 && used & (1 << i) == 0 && Some(i) != except)
        .map(|i| 1 + g.member_bytes(o, i))
        .sum()
}

/// The fewest bytes that complete every frame of `st`.
fn stack_cost(g: &Grammar, st: &[Frame]) -> usize {
    let mut total = 0usize;
    for (i, f) in st.iter().enumerate() {
        total = total.saturating_add(match *f {
            Frame::Value { node, .. } => g.min_bytes(node),
            Frame::Str(s) => s.pending(),
            Frame::Num { phase, .. } => usize::from(!phase.accepting()),
            Frame::Lit { node, lo, hi, pos } => lit_options(g, node)[lo as usize..hi as usize]
                .iter()
                .map(|o| o.len() - pos as usize)
                .min()
                .unwrap_or(0),
            Frame::Obj {
                node, used, phase, ..
            } => {
                let o = g.object(node);
                let rest = required_rest(g, o, used, None);
                match phase {
                    // The key frame above counts the rest of the object.
                    ObjPhase::InKey => 0,
                    ObjPhase::Start => rest.max(1),
                    ObjPhase::AfterValue => rest + 1,
                    ObjPhase::AfterComma if rest > 0 => rest,
                    ObjPhase::AfterComma => {
                        let declared = (0..o.props.len())
                            .filter(|&p| used & (1 << p) == 0)
                            .map(|p| g.member_bytes(o, p))
                            .min();
                        let other = o.additional.map(|a| 3 + g.min_bytes(a));
                        declared.into_iter().chain(other).min().unwrap_or(0) + 1
                    }
                    ObjPhase::Colon(p) => {
                        let value = if p == OTHER {
                            o.additional.map_or(0, |a| g.min_bytes(a))
                        } else {
                            g.min_bytes(o.props[p as usize].value)
                        };
                        1 + value + rest + 1
                    }
                }
            }
            Frame::Key {
                lo,
                hi,
                pos,
                other,
                s,
            } => {
                let Some(&Frame::Obj { node, used, .. }) = i.checked_sub(1).map(|j| &st[j]) else {
                    unreachable!("a key frame sits on an object frame");
                };
                let o = g.object(node);
                let declared = if other {
                    None
                } else {
                    (lo as usize..hi as usize)
                        .filter(|&p| used & (1 << p) == 0)
                        .map(|p| {
                            (o.props[p].key.len() - pos as usize)
                                + 2
                                + g.min_bytes(o.props[p].value)
                                + required_rest(g, o, used, Some(p))
                                + 1
                        })
                        .min()
                };
                let additional = o.additional.map(|a| {
                    s.pending() + 1 + g.min_bytes(a) + required_rest(g, o, used, None) + 1
                });
                declared.into_iter().chain(additional).min().unwrap_or(0)
            }
            Frame::Arr {
                node, count, phase, ..
            } => {
                let (items, min, _) = array_bounds(g, node);
                let item = g.min_bytes(items);
                let owed = |n: u32| min.saturating_sub(n) as usize;
                match phase {
                    ArrPhase::Start if min == 0 => 1,
                    ArrPhase::Start => owed(0) * (item + 1),
                    ArrPhase::AfterItem => owed(count) * (item + 1) + 1,
                    ArrPhase::AfterComma => item + owed(count + 1) * (item + 1) + 1,
                }
            }
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn matcher(schema: Value) -> Matcher {
        Matcher::new(Arc::new(Grammar::from_schema(&schema).unwrap()))
    }

    /// Whether `text` is a complete value (every byte taken and accepting at the end).
    fn accepts(schema: &Value, text: &str) -> bool {
        let mut m = matcher(schema.clone());
        m.feed_all(text.as_bytes()) && m.accepting()
    }

    /// Whether `text` is a prefix of some value.
    fn prefix(schema: &Value, text: &str) -> bool {
        matcher(schema.clone()).feed_all(text.as_bytes())
    }

    #[test]
    fn objects_with_required_and_closed_keys() {
        let s = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
            "required": ["name"], "additionalProperties": false});
        assert!(accepts(&s, r#"{"name":"Ann"}"#));
        assert!(accepts(&s, r#"{"age": 3, "name": "B\u00e9\n"}"#));
        assert!(accepts(&s, "{\"tags\":[\"a\",\"b\"],\n\"name\":\"\"}"));
        assert!(!accepts(&s, r#"{"age":3}"#), "name is required");
        assert!(!prefix(&s, r#"{"name":"a","name""#), "no key twice");
        assert!(!prefix(&s, r#"{"nick""#), "no undeclared key");
        assert!(!prefix(&s, r#"{"age":3.5"#), "integers have no fraction");
        assert!(!prefix(&s, r#"{"age":03"#), "no leading zero");
        assert!(!prefix(&s, r#"{"tags":["a","b","#), "maxItems");
        assert!(!prefix(&s, "{  \"name\""), "whitespace is bounded");
        assert!(!prefix(&s, r#"{"name":"a"} "#), "nothing after the value");
        assert!(!prefix(&s, "{\"name\":\"\t"), "control bytes are escaped");
        assert!(!prefix(&s, r#"{"name":"\ud800"#), "no lone surrogate");
    }

    #[test]
    fn utf8_is_checked_byte_by_byte() {
        let s = json!({"type": "string"});
        let mut m = matcher(s.clone());
        assert!(m.feed_all("\"é".as_bytes()) && m.feed(b'"') && m.accepting());
        let mut m = matcher(s.clone());
        assert!(m.feed(b'"') && m.feed(0xC3));
        assert!(!m.clone().feed(b'"'), "a quote cannot end half a character");
        assert_eq!(m.min_close(), 2);
        assert!(
            !matcher(s.clone()).feed_all(&[b'"', 0xC0]),
            "overlong lead byte"
        );
        assert!(!matcher(s).feed_all(&[b'"', 0xED, 0xA0]), "UTF-8 surrogate");
    }

    #[test]
    fn any_of_follows_every_alternative() {
        let s = json!({"anyOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "null"}}, "required": ["b"]},
            {"type": ["string", "null"]}]});
        assert!(accepts(&s, r#"{"a":1}"#));
        assert!(accepts(&s, r#"{"b":null}"#));
        assert!(accepts(&s, r#""x""#));
        assert!(accepts(&s, "null"));
        assert!(!prefix(&s, r#"{"a":null"#));
        assert!(!accepts(&s, "{}"));
    }

    #[test]
    fn enums_consts_and_numbers() {
        let s = json!({"type": "object", "properties": {
            "e": {"enum": ["x", 1, 12, [true], {"k": null}]}, "c": {"const": -0.5},
            "n": {"type": "number"}}, "required": ["e", "c", "n"]});
        assert!(accepts(&s, r#"{"e":1,"c":-0.5,"n":-1.25e+10}"#));
        assert!(accepts(&s, r#"{"e":12,"c":-0.5,"n":0}"#));
        assert!(accepts(&s, r#"{"e":[true],"c":-0.5,"n":3E2}"#));
        assert!(accepts(&s, r#"{"e":{"k":null},"c":-0.5,"n":1.0}"#));
        assert!(!prefix(&s, r#"{"e":13"#));
        assert!(!prefix(&s, r#"{"e":"y""#));
        assert!(!prefix(&s, r#"{"e":1,"c":-0.4"#));
        assert!(!accepts(&s, r#"{"e":1,"c":-0.5,"n":1.}"#));
        // Exponents stop at two digits, so every number fits an f64.
        let n = json!({"type": "number"});
        assert!(accepts(&n, "0.1e99") && accepts(&n, "1E-99"));
        assert!(!prefix(&n, "0.1e310"), "0.1e310 overflows an f64");
        // A number at the root ends with the text.
        assert!(accepts(&json!({"type": "integer"}), "-42"));
        assert!(!accepts(&json!({"type": "integer"}), "-"));
    }

    #[test]
    fn open_objects_take_any_keys_and_values() {
        let g = Arc::new(Grammar::any_object());
        let mut m = Matcher::new(g.clone());
        assert!(m.feed_all(br#"{"a": [1, {"b": null}, "x\"y"], "c": {"d": [true, -2.5e3]}}"#));
        assert!(m.accepting() && m.closed());
        assert!(
            !Matcher::new(g.clone()).feed_all(b"[1]"),
            "json_object is an object"
        );
        let s = json!({"type": "object", "properties": {"id": {"type": "integer"}},
            "additionalProperties": {"type": "string"}});
        assert!(accepts(&s, r#"{"id":1,"idx":"s","i":"t"}"#));
        assert!(
            !prefix(&s, r#"{"id":"x""#),
            "a declared key keeps its schema"
        );
        assert!(
            !prefix(&s, r#"{"idx":1"#),
            "other keys follow additionalProperties"
        );
        assert!(!prefix(&s, r#"{"id":1,"id""#));
    }

    #[test]
    fn min_close_counts_the_shortest_completion() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "b": {"type": "boolean"}}, "required": ["a", "b"], "additionalProperties": false});
        let mut m = matcher(s);
        assert_eq!(m.min_close(), r#"{"a":[0,0],"b":true}"#.len());
        assert!(m.feed_all(br#"{"a":[1"#));
        assert_eq!(m.min_close(), r#",0],"b":true}"#.len());
        assert!(m.feed_all(br#","#));
        assert_eq!(m.min_close(), r#"0],"b":true}"#.len());
        assert!(m.feed_all(br#"5],"b"#));
        assert_eq!(m.min_close(), r#"":true}"#.len());
        assert!(m.feed_all(br#"":fa"#));
        assert_eq!(m.min_close(), r#"lse}"#.len());
        assert!(m.feed_all(br#"lse}"#) && m.accepting() && m.min_close() == 0);
    }

    /// Canonical values of a schema, serialized: the matcher takes every one, and following
    /// the shortest completion from any prefix reaches an accepting state in exactly
    /// `min_close` bytes.
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn schema() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(json!({"type": "string"})),
                Just(json!({"type": "integer"})),
                Just(json!({"type": "number"})),
                Just(json!({"type": "boolean"})),
                Just(json!({"type": "null"})),
                Just(json!({"enum": ["red", "green", 7]})),
                Just(json!({"const": "fixed"})),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    (prop::collection::vec(inner.clone(), 1..4), any::<u8>()).prop_map(
                        |(subs, req)| {
                            let names = ["a", "bc", "b", "name", "x y"];
                            let mut props = serde_json::Map::new();
                            let mut required = Vec::new();
                            for (i, s) in subs.into_iter().enumerate() {
                                props.insert(names[i].to_owned(), s);
                                if req & (1 << i) != 0 {
                                    required.push(names[i]);
                                }
                            }
                            json!({"type": "object", "properties": props,
                                   "required": required, "additionalProperties": false})
                        }
                    ),
                    (inner.clone(), 0u64..3, 0u64..3).prop_map(|(items, min, extra)| json!({
                        "type": "array", "items": items, "minItems": min,
                        "maxItems": min + extra})),
                    prop::collection::vec(inner, 1..3).prop_map(|alts| json!({"anyOf": alts})),
                ]
            })
        }

        /// Follows bytes that lower `min_close` by one until the value is complete.
        fn close(m: &mut Matcher) -> Vec<u8> {
            let mut out = Vec::new();
            while !m.accepting() {
                let want = m.min_close();
                let b = (0u8..=255)
                    .find(|&b| {
                        let mut n = m.clone();
                        n.feed(b) && n.min_close() + 1 == want
                    })
                    .unwrap_or_else(|| {
                        panic!("no byte shortens {:?}", String::from_utf8_lossy(&out))
                    });
                assert!(m.feed(b));
                out.push(b);
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn shortest_completions_are_valid(s in schema(), cut in any::<prop::sample::Index>(),
                                              picks in prop::collection::vec(any::<u8>(), 0..40)) {
                let g = Arc::new(Grammar::from_schema(&s).unwrap());
                // A random valid prefix: bytes chosen among those the matcher takes.
                let mut m = Matcher::new(g.clone());
                let mut text = Vec::new();
                let alphabet = br#"{}[],:"abcdenxy 0123456789.-etrulfs"#;
                for p in picks.iter().take(cut.index(picks.len() + 1)) {
                    let start = *p as usize % alphabet.len();
                    let b = (0..alphabet.len())
                        .map(|k| alphabet[(start + k) % alphabet.len()])
                        .find(|&b| m.clone().feed(b));
                    match b {
                        Some(b) => { assert!(m.feed(b)); text.push(b); }
                        None => break,
                    }
                }
                let before = m.min_close();
                let tail = close(&mut m);
                prop_assert_eq!(tail.len(), before);
                text.extend(tail);
                let v: Value = serde_json::from_slice(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&text))))?;
                prop_assert!(m.accepting());
                let _ = v;
            }
        }
    }
}
