//! Event flattening: walking an event (a `serde_json::Value` or raw JSON bytes)
//! along the paths that rules read, and handing each scalar found there to a
//! [`Sink`] together with its array trail.
//!
//! The walk is guided by a [`PathTrie`] of every path any rule names, so a field
//! no rule reads is never looked at again: in a `Value` it is passed over, and in
//! raw bytes it is only validated (a fast byte loop), never decoded. Keys that
//! contain dots are split, so an event field `"a.b"` and a nested `a` → `b` reach
//! the same path, as they do in the reference interpreter.

use super::hash::FxHashMap;
use super::parse::Scalar;
use serde_json::Value;

pub(crate) const NO_PATH: u32 = u32::MAX;

/// serde_json's own nesting limit, so both front doors refuse the same inputs.
const MAX_DEPTH: u32 = 128;

#[derive(Default)]
struct TrieNode {
    children: FxHashMap<Box<[u8]>, u32>,
    path: u32,
}

/// The field-name automaton: one node per path prefix, one edge per key segment.
pub(crate) struct PathTrie {
    nodes: Vec<TrieNode>,
}

impl PathTrie {
    pub fn new() -> PathTrie {
        PathTrie {
            nodes: vec![TrieNode {
                children: FxHashMap::default(),
                path: NO_PATH,
            }],
        }
    }

    pub fn insert(&mut self, path: &str, id: u32) {
        let mut node = 0usize;
        for seg in path.split('.') {
            let next = self.nodes.len() as u32;
            let child = *self.nodes[node]
                .children
                .entry(seg.as_bytes().into())
                .or_insert(next);
            if child == next {
                self.nodes.push(TrieNode {
                    children: FxHashMap::default(),
                    path: NO_PATH,
                });
            }
            node = child as usize;
        }
        self.nodes[node].path = id;
    }

    #[inline]
    pub fn step(&self, node: u32, key: &[u8]) -> Option<u32> {
        let children = &self.nodes[node as usize].children;
        if !key.contains(&b'.') {
            return children.get(key).copied();
        }
        let mut at = node;
        for seg in key.split(|&b| b == b'.') {
            at = *self.nodes[at as usize].children.get(seg)?;
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

/// Scans raw JSON, validating all of it, decoding only what rules read.
pub(crate) fn scan_json(
    trie: &PathTrie,
    json: &[u8],
    trail: &mut Trail,
    sink: &mut impl Sink,
) -> R {
    if std::str::from_utf8(json).is_err() {
        return Err(Malformed);
    }
    let mut s = Scanner {
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

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    buf: Vec<u8>,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn expect(&mut self, c: u8) -> R {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
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
        self.i += 1; // '{'
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Malformed);
            }
            let (start, end, escaped) = self.string_span()?;
            let child = if escaped {
                self.unescape(start, end)?;
                trie.step(node, &self.buf)
            } else {
                trie.step(node, &self.b[start..end])
            };
            self.ws();
            self.expect(b':')?;
            self.ws();
            match child {
                Some(c) => self.value(trie, c, depth + 1, trail, sink)?,
                None => self.skip_value(depth + 1)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
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
    fn skip_value(&mut self, depth: u32) -> R {
        match self.peek() {
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(Malformed);
                    }
                    self.skip_string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Malformed),
                    }
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Malformed),
                    }
                }
            }
            Some(b'"') => self.skip_string(),
            Some(b't') => self.skip_word(b"true"),
            Some(b'f') => self.skip_word(b"false"),
            Some(b'n') => self.skip_word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.skip_number(),
            _ => Err(Malformed),
        }
    }

    fn skip_word(&mut self, word: &[u8]) -> R {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    #[inline]
    fn skip_string(&mut self) -> R {
        self.string_span().map(|_| ())
    }

    /// At an opening quote: the raw contents' span and whether it has escapes;
    /// leaves the position after the closing quote.
    #[inline]
    fn string_span(&mut self) -> Result<(usize, usize, bool), Malformed> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        let b = self.b;
        let mut i = self.i;
        loop {
            let Some(&c) = b.get(i) else {
                return Err(Malformed);
            };
            match c {
                b'"' => {
                    self.i = i + 1;
                    return Ok((start, i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let hex = b.get(i + 2..i + 6).ok_or(Malformed)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Malformed);
                            }
                            i += 6;
                        }
                        _ => return Err(Malformed),
                    }
                }
                0..=0x1f => return Err(Malformed),
                _ => i += 1,
            }
        }
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
                    let hi = hex4(&b[i..i + 4])?;
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
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = b.get(i) {
                    i += 1;
                }
            }
            _ => return Err(Malformed),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Malformed);
            }
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Malformed);
            }
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
        }
        self.i = i;
        Ok(())
    }
}

fn hex4(h: &[u8]) -> Result<u32, Malformed> {
    let s = std::str::from_utf8(h).map_err(|_| Malformed)?;
    u32::from_str_radix(s, 16).map_err(|_| Malformed)
}
