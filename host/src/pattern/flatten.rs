//! Event flattening: walking an event (a `serde_json::Value` or raw JSON bytes)
//! along the paths that rules read, and handing each scalar found there to a
//! [`Sink`] together with its array trail.
//!
//! The walk is guided by a [`PathTrie`] of every path any rule names, so a field
//! no rule reads is never looked at again: in a `Value` it is passed over, and in
//! raw bytes it is only validated, never decoded. Validation is as strict as
//! serde_json's and runs mostly eight bytes at a time: strings up to the next
//! quote, backslash, control or non-ASCII byte; digit runs; a skipped number up
//! to its delimiter. Keys that contain dots are split, so an event field `"a.b"`
//! and a nested `a` → `b` reach the same path, as they do in the reference
//! interpreter.

use super::hash::FxHashMap;
use super::parse::Scalar;
use serde_json::Value;

pub(crate) const NO_PATH: u32 = u32::MAX;

/// serde_json's own nesting limit, so both front doors refuse the same inputs.
const MAX_DEPTH: u32 = 128;

/// Up to this many children, a node finds a key by comparing lengths and bytes
/// in a short list, which beats hashing the key; wider nodes use a hash map.
const LINEAR_CHILDREN: usize = 8;

#[derive(Default)]
struct TrieNode {
    children: Vec<(Box<[u8]>, u32)>,
    /// Filled only when `children` outgrows [`LINEAR_CHILDREN`].
    wide: FxHashMap<Box<[u8]>, u32>,
    path: u32,
}

impl TrieNode {
    #[inline]
    fn child(&self, key: &[u8]) -> Option<u32> {
        if self.wide.is_empty() {
            self.children
                .iter()
                .find(|(k, _)| k.len() == key.len() && **k == *key)
                .map(|&(_, c)| c)
        } else {
            self.wide.get(key).copied()
        }
    }
}

/// The field-name automaton: one node per path prefix, one edge per key segment.
pub(crate) struct PathTrie {
    nodes: Vec<TrieNode>,
}

impl PathTrie {
    pub fn new() -> PathTrie {
        PathTrie {
            nodes: vec![TrieNode {
                path: NO_PATH,
                ..TrieNode::default()
            }],
        }
    }

    pub fn insert(&mut self, path: &str, id: u32) {
        let mut node = 0usize;
        for seg in path.split('.') {
            let seg = seg.as_bytes();
            node = match self.nodes[node].child(seg) {
                Some(c) => c as usize,
                None => {
                    let next = self.nodes.len() as u32;
                    self.nodes.push(TrieNode {
                        path: NO_PATH,
                        ..TrieNode::default()
                    });
                    let parent = &mut self.nodes[node];
                    parent.children.push((seg.into(), next));
                    if parent.children.len() > LINEAR_CHILDREN {
                        parent.wide = parent.children.iter().cloned().collect();
                    }
                    next as usize
                }
            };
        }
        self.nodes[node].path = id;
    }

    /// The node reached from `node` by the event key `key`. Trie edges never
    /// contain dots, so a dotted key (`"a.b"`) can only match segment by segment;
    /// looking for the dot is left to the (common) case where the key is not a
    /// child as it stands.
    #[inline]
    pub fn step(&self, node: u32, key: &[u8]) -> Option<u32> {
        let found = self.nodes[node as usize].child(key);
        if found.is_some() || !key.contains(&b'.') {
            return found;
        }
        self.step_segments(node, key)
    }

    /// [`PathTrie::step`] for a key whose scan already told whether it has a dot.
    #[inline]
    pub fn step_dotted(&self, node: u32, key: &[u8], dotted: bool) -> Option<u32> {
        if dotted {
            self.step_segments(node, key)
        } else {
            self.nodes[node as usize].child(key)
        }
    }

    fn step_segments(&self, node: u32, key: &[u8]) -> Option<u32> {
        let mut at = node;
        for seg in key.split(|&b| b == b'.') {
            at = self.nodes[at as usize].child(seg)?;
        }
        Some(at)
    }

    #[inline]
    pub fn path(&self, node: u32) -> u32 {
        self.nodes[node as usize].path
    }

    #[inline]
    pub fn has_children(&self, node: u32) -> bool {
        !self.nodes[node as usize].children.is_empty()
    }
}

/// The (array, element) pairs from the root to the current position.
#[derive(Default)]
pub(crate) struct Trail {
    pub stack: Vec<(u32, u32)>,
    next_array: u32,
    /// Bumped on every change, so a sink can cache one snapshot per element.
    pub version: u32,
}

impl Trail {
    pub fn reset(&mut self) {
        self.stack.clear();
        self.next_array = 0;
        self.version = self.version.wrapping_add(1);
    }

    #[inline]
    fn open(&mut self) {
        self.stack.push((self.next_array, 0));
        self.next_array += 1;
        self.version = self.version.wrapping_add(1);
    }

    #[inline]
    fn element(&mut self, index: u32) {
        if let Some(top) = self.stack.last_mut() {
            top.1 = index;
        }
        self.version = self.version.wrapping_add(1);
    }

    #[inline]
    fn close(&mut self) {
        self.stack.pop();
        self.version = self.version.wrapping_add(1);
    }
}

pub(crate) trait Sink {
    /// A scalar at a path some rule reads.
    fn leaf(&mut self, path: u32, value: Scalar<'_>, trail: &Trail);
    /// An object inside an array on a read path: from now on, fields found in
    /// different elements must be kept apart.
    fn object_in_array(&mut self);
}

pub(crate) fn walk_value(trie: &PathTrie, event: &Value, trail: &mut Trail, sink: &mut impl Sink) {
    if let Value::Object(map) = event {
        walk_object(trie, 0, map, trail, sink);
    }
}

fn walk_object(
    trie: &PathTrie,
    node: u32,
    map: &serde_json::Map<String, Value>,
    trail: &mut Trail,
    sink: &mut impl Sink,
) {
    for (k, v) in map {
        if let Some(child) = trie.step(node, k.as_bytes()) {
            walk(trie, child, v, trail, sink);
        }
    }
}

fn walk(trie: &PathTrie, node: u32, v: &Value, trail: &mut Trail, sink: &mut impl Sink) {
    match v {
        Value::Object(map) => {
            if trie.has_children(node) {
                walk_object(trie, node, map, trail, sink);
            }
        }
        Value::Array(items) => {
            trail.open();
            for (i, item) in items.iter().enumerate() {
                trail.element(i as u32);
                if item.is_object() {
                    sink.object_in_array();
                }
                walk(trie, node, item, trail, sink);
            }
            trail.close();
        }
        scalar => {
            let path = trie.path(node);
            if path != NO_PATH
                && let Some(s) = Scalar::from_value(scalar)
            {
                sink.leaf(path, s, trail);
            }
        }
    }
}

/// Malformed input; the caller asks serde_json for the precise error.
pub(crate) struct Malformed;

type R = Result<(), Malformed>;

/// Scans raw JSON, decoding only what rules read.
///
/// Untrusted (`TRUSTED` false), all of it is validated. UTF-8 is checked only
/// inside strings: outside them the grammar admits ASCII alone, so a stray byte
/// above 0x7f is refused there anyway, and a string made of ASCII (nearly all of
/// them) needs no check beyond the scan that finds its end.
///
/// Trusted (bytes busbar serialized itself, from an event validated at ingest),
/// a value no rule reads is passed over by finding its end (`skip.rs`) without
/// checking its grammar; what rules read is decoded exactly as before, so on
/// valid JSON both modes see the same values.
pub(crate) fn scan_json<const TRUSTED: bool>(
    trie: &PathTrie,
    json: &[u8],
    trail: &mut Trail,
    sink: &mut impl Sink,
) -> R {
    let mut s = Scanner::<TRUSTED> {
        b: json,
        i: 0,
        buf: Vec::new(),
    };
    s.ws();
    if s.peek() == Some(b'{') {
        s.object(trie, 0, 0, trail, sink)?;
    } else {
        s.skip_value(0)?;
    }
    s.ws();
    if s.i != json.len() {
        return Err(Malformed);
    }
    Ok(())
}

struct Scanner<'a, const TRUSTED: bool> {
    b: &'a [u8],
    i: usize,
    buf: Vec<u8>,
}

impl<const TRUSTED: bool> Scanner<'_, TRUSTED> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        // Compact JSON has no whitespace: one compare settles the usual case.
        if self.peek().is_some_and(|c| c > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn object(
        &mut self,
        trie: &PathTrie,
        node: u32,
        depth: u32,
        trail: &mut Trail,
        sink: &mut impl Sink,
    ) -> R {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        // The position lives in a local between calls out, so the loop over
        // members no rule reads keeps it in a register.
        let b = self.b;
        let mut i = ws_at(b, self.i + 1);
        if b.get(i) == Some(&b'}') {
            self.i = i + 1;
            return Ok(());
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(Malformed);
            }
            let start = i + 1;
            let (end, escaped, dotted) = if TRUSTED {
                super::skip::key_at(b, i).ok_or(Malformed)?
            } else {
                string_at::<true>(b, i)?
            };
            let child = if escaped {
                self.unescape(start, end)?;
                trie.step(node, &self.buf)
            } else {
                trie.step_dotted(node, &b[start..end], dotted)
            };
            i = ws_at(b, end + 1);
            if b.get(i) != Some(&b':') {
                return Err(Malformed);
            }
            i = ws_at(b, i + 1);
            i = match child {
                Some(c) => {
                    self.i = i;
                    self.value(trie, c, depth + 1, trail, sink)?;
                    self.i
                }
                // Most skipped members are plain strings or numbers: spare them
                // the general skipper's set-up.
                None if TRUSTED => super::skip::value_end(b, i).ok_or(Malformed)?,
                None => match b.get(i) {
                    Some(b'"') => string_at::<false>(b, i)?.0 + 1,
                    Some(b'-' | b'0'..=b'9') => skip_number_at(b, i)?,
                    _ => skip_value_at(b, i, depth + 1)?,
                },
            };
            i = ws_at(b, i);
            match b.get(i) {
                Some(b',') => i = ws_at(b, i + 1),
                Some(b'}') => {
                    self.i = i + 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn value(
        &mut self,
        trie: &PathTrie,
        node: u32,
        depth: u32,
        trail: &mut Trail,
        sink: &mut impl Sink,
    ) -> R {
        let path = trie.path(node);
        match self.peek() {
            Some(b'{') => {
                if trie.has_children(node) {
                    self.object(trie, node, depth, trail, sink)
                } else {
                    self.skip_value(depth)
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                self.i += 1;
                self.ws();
                trail.open();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    trail.close();
                    return Ok(());
                }
                let mut index = 0u32;
                loop {
                    trail.element(index);
                    if self.peek() == Some(b'{') {
                        sink.object_in_array();
                    }
                    self.value(trie, node, depth + 1, trail, sink)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                            index += 1;
                        }
                        Some(b']') => {
                            self.i += 1;
                            trail.close();
                            return Ok(());
                        }
                        _ => return Err(Malformed),
                    }
                }
            }
            Some(b'"') => {
                if path == NO_PATH {
                    return self.skip_string();
                }
                let (start, end, escaped) = self.string_span()?;
                if escaped {
                    self.unescape(start, end)?;
                    let s = std::str::from_utf8(&self.buf).map_err(|_| Malformed)?;
                    sink.leaf(path, Scalar::Str(s), trail);
                } else {
                    let s = std::str::from_utf8(&self.b[start..end]).map_err(|_| Malformed)?;
                    sink.leaf(path, Scalar::Str(s), trail);
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true", path, Scalar::Bool(true), trail, sink),
            Some(b'f') => self.literal(b"false", path, Scalar::Bool(false), trail, sink),
            Some(b'n') => self.literal(b"null", path, Scalar::Null, trail, sink),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                if path == NO_PATH && TRUSTED {
                    self.i = number_end(self.b, start);
                    return Ok(());
                }
                self.skip_number()?;
                if path != NO_PATH {
                    let text =
                        std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Malformed)?;
                    let n: f64 = text.parse().map_err(|_| Malformed)?;
                    if !n.is_finite() {
                        return Err(Malformed);
                    }
                    sink.leaf(path, Scalar::Num(n), trail);
                }
                Ok(())
            }
            _ => Err(Malformed),
        }
    }

    fn literal(
        &mut self,
        word: &[u8],
        path: u32,
        v: Scalar<'_>,
        trail: &Trail,
        sink: &mut impl Sink,
    ) -> R {
        if !self.b[self.i..].starts_with(word) {
            return Err(Malformed);
        }
        self.i += word.len();
        if path != NO_PATH {
            sink.leaf(path, v, trail);
        }
        Ok(())
    }

    /// Validates without decoding.
    #[inline]
    fn skip_value(&mut self, depth: u32) -> R {
        self.i = if TRUSTED {
            super::skip::value_end(self.b, self.i).ok_or(Malformed)?
        } else {
            skip_value_at(self.b, self.i, depth)?
        };
        Ok(())
    }

    #[inline]
    fn skip_string(&mut self) -> R {
        self.i = if TRUSTED {
            super::skip::string_end(self.b, self.i).ok_or(Malformed)?
        } else {
            string_at::<false>(self.b, self.i)?.0 + 1
        };
        Ok(())
    }

    /// At an opening quote: the raw contents' span and whether it has escapes;
    /// leaves the position after the closing quote.
    #[inline]
    fn string_span(&mut self) -> Result<(usize, usize, bool), Malformed> {
        let start = self.i + 1;
        let (end, escaped, _) = string_at::<false>(self.b, self.i)?;
        self.i = end + 1;
        Ok((start, end, escaped))
    }

    /// Decodes the escapes of an already validated span into `buf`.
    fn unescape(&mut self, start: usize, end: usize) -> R {
        self.buf.clear();
        let b = self.b;
        let mut i = start;
        while i < end {
            let c = b[i];
            if c != b'\\' {
                self.buf.push(c);
                i += 1;
                continue;
            }
            let e = b[i + 1];
            i += 2;
            let ch = match e {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => {
                    // Bounded: on trusted bytes this span was never validated.
                    let hi = hex4(b.get(i..i + 4).ok_or(Malformed)?)?;
                    i += 4;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') || i + 6 > end {
                            return Err(Malformed);
                        }
                        let lo = hex4(&b[i + 2..i + 6])?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(Malformed);
                        }
                        i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00..0xE000).contains(&hi) {
                        return Err(Malformed);
                    } else {
                        hi
                    };
                    char::from_u32(code).ok_or(Malformed)?
                }
            };
            let mut tmp = [0u8; 4];
            self.buf
                .extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
        }
        Ok(())
    }

    fn skip_number(&mut self) -> R {
        self.i = number_at(self.b, self.i)?;
        Ok(())
    }
}

#[inline]
fn ws_at(b: &[u8], mut i: usize) -> usize {
    // Compact JSON has no whitespace: one compare settles the usual case.
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

#[inline]
fn word_at(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Malformed> {
    match b.get(i..i + word.len()) {
        Some(w) if w == word => Ok(i + word.len()),
        _ => Err(Malformed),
    }
}

/// Validates the value starting at `i` without decoding it and returns where
/// it ends. Iterative, so a deep or wide subtree is one tight loop; the stack of
/// open containers is a bit per level (the depth limit keeps it within 128).
fn skip_value_at(b: &[u8], mut i: usize, depth: u32) -> Result<usize, Malformed> {
    // Bit 0 is the innermost open container, set for an object.
    let mut objects: u128 = 0;
    let mut level: u32 = 0;
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(b'-' | b'0'..=b'9') => i = skip_number_at(b, i)?,
            Some(b'"') => i = string_at::<false>(b, i)?.0 + 1,
            Some(b'[') => {
                if depth + level >= MAX_DEPTH {
                    return Err(Malformed);
                }
                i = ws_at(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    objects <<= 1;
                    level += 1;
                    continue;
                }
            }
            Some(b'{') => {
                if depth + level >= MAX_DEPTH {
                    return Err(Malformed);
                }
                i = ws_at(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    objects = (objects << 1) | 1;
                    level += 1;
                    i = member_key_at(b, i)?;
                    continue;
                }
            }
            Some(b't') => i = word_at(b, i, b"true")?,
            Some(b'f') => i = word_at(b, i, b"false")?,
            Some(b'n') => i = word_at(b, i, b"null")?,
            _ => return Err(Malformed),
        }
        // A value ended: close containers until one goes on.
        'close: loop {
            if level == 0 {
                return Ok(i);
            }
            i = ws_at(b, i);
            let in_object = objects & 1 != 0;
            match b.get(i) {
                Some(b',') => {
                    i = ws_at(b, i + 1);
                    if in_object {
                        i = member_key_at(b, i)?;
                    } else {
                        // Runs of numbers (coordinates, samples) go round
                        // this short loop rather than the general one.
                        while let Some(b'-' | b'0'..=b'9') = b.get(i) {
                            i = skip_number_at(b, i)?;
                            if b.get(i) != Some(&b',') {
                                continue 'close;
                            }
                            i = ws_at(b, i + 1);
                        }
                    }
                    break;
                }
                Some(b']') if !in_object => {
                    i += 1;
                    level -= 1;
                    objects >>= 1;
                }
                Some(b'}') if in_object => {
                    i += 1;
                    level -= 1;
                    objects >>= 1;
                }
                _ => return Err(Malformed),
            }
        }
    }
}

/// A skipped member's `"key" :`; returns the start of its value.
#[inline]
fn member_key_at(b: &[u8], i: usize) -> Result<usize, Malformed> {
    if b.get(i) != Some(&b'"') {
        return Err(Malformed);
    }
    let i = ws_at(b, string_at::<false>(b, i)?.0 + 1);
    if b.get(i) != Some(&b':') {
        return Err(Malformed);
    }
    Ok(ws_at(b, i + 1))
}

/// At the opening quote `i`: the position of the closing quote, whether the
/// contents have escapes and (when `DOTS`) whether they have a raw `.`. Eight
/// bytes at a time while no quote, backslash, control or non-ASCII byte (nor dot)
/// turns up; contents with non-ASCII bytes are then checked as UTF-8.
#[inline]
fn string_at<const DOTS: bool>(b: &[u8], i: usize) -> Result<(usize, bool, bool), Malformed> {
    let start = i + 1;
    let mut i = start;
    let (mut escaped, mut dotted, mut ascii) = (false, false, true);
    loop {
        if let Some(word) = b.get(i..i + 8) {
            let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let mut stop = zero_bytes(x ^ (ONES * b'"' as u64))
                | zero_bytes(x ^ (ONES * b'\\' as u64))
                | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
                | (x & HIGH);
            if DOTS {
                stop |= zero_bytes(x ^ (ONES * b'.' as u64));
            }
            if stop == 0 {
                i += 8;
                continue;
            }
            // The lowest flagged byte is exact (false flags only sit above a
            // true one), so the bytes before it are plain.
            i += (stop.trailing_zeros() / 8) as usize;
        }
        let Some(&c) = b.get(i) else {
            return Err(Malformed);
        };
        match c {
            b'"' => {
                if !ascii && std::str::from_utf8(&b[start..i]).is_err() {
                    return Err(Malformed);
                }
                return Ok((i, escaped, dotted));
            }
            b'\\' => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        // serde_json refuses lone surrogates even in values it
                        // would not keep; so does the scanner.
                        let unit = hex4(b.get(i + 2..i + 6).ok_or(Malformed)?)?;
                        i += 6;
                        if (0xD800..0xDC00).contains(&unit) {
                            let low = match b.get(i..i + 6) {
                                Some([b'\\', b'u', hex @ ..]) => hex4(hex)?,
                                _ => return Err(Malformed),
                            };
                            if !(0xDC00..0xE000).contains(&low) {
                                return Err(Malformed);
                            }
                            i += 6;
                        } else if (0xDC00..0xE000).contains(&unit) {
                            return Err(Malformed);
                        }
                    }
                    _ => return Err(Malformed),
                }
            }
            0..=0x1f => return Err(Malformed),
            0x80.. => {
                ascii = false;
                i += 1;
            }
            b'.' => {
                dotted = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// At a number's first byte: where the number ends, for a number that is only
/// skipped. The end is found as the next byte that may follow a number in valid
/// JSON, and the grammar is checked apart: the next step needs only the end, so
/// the check of one number overlaps the scan of the following ones instead of
/// each digit run waiting for the previous.
#[inline(always)]
fn skip_number_at(b: &[u8], i: usize) -> Result<usize, Malformed> {
    let end = number_end(b, i);
    if number_at(b, i)? != end {
        return Err(Malformed);
    }
    Ok(end)
}

/// The first `,`, `]`, `}`, whitespace or control byte after `i`, or the end.
#[inline(always)]
pub(super) fn number_end(b: &[u8], mut i: usize) -> usize {
    while let Some(pair) = b.get(i..i + 16) {
        let stop = |w: &[u8]| {
            let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            // `]` and `}` differ only in bit 5.
            zero_bytes(x ^ (ONES * b',' as u64))
                | zero_bytes((x | (ONES * 0x20)) ^ (ONES * b'}' as u64))
                | (x.wrapping_sub(ONES * 0x21) & !x & HIGH)
        };
        let (lo, hi) = (stop(&pair[..8]), stop(&pair[8..]));
        if lo != 0 {
            return i + (lo.trailing_zeros() / 8) as usize;
        }
        if hi != 0 {
            return i + 8 + (hi.trailing_zeros() / 8) as usize;
        }
        i += 16;
    }
    while let Some(&c) = b.get(i) {
        if c == b',' || c == b']' || c == b'}' || c <= b' ' {
            break;
        }
        i += 1;
    }
    i
}

/// At a number's first byte: where the number ends, by JSON's grammar
/// (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
#[inline(always)]
fn number_at(b: &[u8], mut i: usize) -> Result<usize, Malformed> {
    let start = i;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(b, i + 1),
        _ => return Err(Malformed),
    }
    // serde_json refuses numbers beyond the doubles' range; only a long integer
    // part or an exponent can get there.
    let mut check_range = i - start > 300;
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return Err(Malformed);
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return Err(Malformed);
        }
        i = end;
        check_range = true;
    }
    if check_range && !finite(&b[start..i]) {
        return Err(Malformed);
    }
    Ok(i)
}

/// Whether the text of a valid JSON number is within the doubles' range.
#[cold]
fn finite(number: &[u8]) -> bool {
    std::str::from_utf8(number)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every zero byte of `x`; exact for the lowest one (a borrow
/// can flag bytes above a true zero, never below).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// The end of the run of ASCII digits starting at `i`, eight bytes at a time.
#[inline]
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8) {
        let t = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ (ONES * b'0' as u64);
        // A digit leaves 0..=9 after the xor; adding 0x76 to the low seven bits
        // of anything above 9 sets the high bit without carrying into the next
        // byte, and a byte that had its high bit set is no digit either.
        let not_digit = (((t & !HIGH) + ONES * 0x76) | t) & HIGH;
        if not_digit != 0 {
            return i + (not_digit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

fn hex4(h: &[u8]) -> Result<u32, Malformed> {
    h.iter().try_fold(0, |acc, &c| {
        let d = (c as char).to_digit(16).ok_or(Malformed)?;
        Ok(acc << 4 | d)
    })
}
