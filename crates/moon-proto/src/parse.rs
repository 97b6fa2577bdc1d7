//! Incremental request parser.
//!
//! Requests arrive in arbitrary pieces. [`RequestParser::next_request`] is called whenever new
//! bytes were appended to the connection's read buffer; it returns a complete request, `None`
//! when more bytes are needed, or a [`ProtocolError`] after which the connection must be closed.
//! A partially received multibulk request keeps its progress (offsets into the buffer), so a
//! large request trickling in is scanned once, not once per read.
//!
//! Zero copy: a complete multibulk request is split off the buffer and frozen, and every
//! argument is a `Bytes` slice of that one allocation.

use std::cell::RefCell;

use bytes::{Buf, Bytes, BytesMut};

/// Argument lists given back once their command ran ([`recycle_args`]), for the next requests
/// parsed on this thread. A pipeline of 16 requests allocated 16 lists and freed them after
/// its batch: more than glibc's per-thread cache keeps, so each went to the arena (1.5 % of a
/// shard's CPU under `-P 16` GETs, more with two shards).
const SPARE_LISTS: usize = 256;
/// A list longer than this is not kept (a rare huge command's memory goes back).
const SPARE_LIST_CAPACITY: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<Vec<Bytes>>> = const { RefCell::new(Vec::new()) };
}

/// Gives back a command's argument list once it ran, for the next request parsed on this
/// thread. Its arguments are dropped here.
pub fn recycle_args(mut args: Vec<Bytes>) {
    if args.capacity() == 0 || args.capacity() > SPARE_LIST_CAPACITY {
        return;
    }
    args.clear();
    // (`try_with`: nothing to keep while the thread shuts down.)
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_LISTS {
            s.push(args);
        }
    });
}

/// An empty list for `n` arguments: a spare one if it is big enough (a smaller one stays for
/// a shorter command).
fn args_list(n: usize) -> Vec<Bytes> {
    if n <= SPARE_LIST_CAPACITY {
        let spare = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            match s.last() {
                Some(v) if v.capacity() >= n => s.pop(),
                _ => None,
            }
        });
        if let Ok(Some(v)) = spare {
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Size limits, as in Redis.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest single argument (default 512 MB).
    pub max_bulk_len: usize,
    /// The largest argument count of one multibulk request (1,048,576).
    pub max_multibulk_len: usize,
    /// The longest inline request or header line (64 KB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed request. `Display` gives Redis's reply text (without `ERR `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Progress through a multibulk request that is not complete yet. Offsets are relative to the
/// front of the read buffer once the requests before it (empty ones included) were taken off;
/// nothing is consumed until the request is complete.
#[derive(Debug, Default)]
struct Partial {
    expected: usize,
    /// Where the next argument header starts.
    pos: usize,
}

/// Offsets kept for the next request when a request had at most this many arguments; a
/// larger vector is given back, so one huge request does not stick to the connection.
const KEPT_OFFSETS: usize = 64;

/// Parser state for one connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
    /// (start, end) of each argument of the request being read. One vector serves every
    /// request of the connection (a request's own allocation was one of a dozen per
    /// unpipelined GET).
    offsets: Vec<(usize, usize)>,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            partial: None,
            offsets: Vec::new(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Empty requests (`*0`, `*-1`, blank inline lines) are consumed and skipped, as Redis does.
    pub fn next_request(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'*' {
                    match self.parse_inline(buf)? {
                        Some(args) if args.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
                let Some(eol) = find_crlf(buf, 0) else {
                    if buf.len() > self.limits.max_inline_len {
                        return Err(ProtocolError::TooBigMbulkCount);
                    }
                    return Ok(None);
                };
                let count = parse_int(&buf[1..eol]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                if count > self.limits.max_multibulk_len as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count <= 0 {
                    buf.advance(eol + 2);
                    continue;
                }
                let count = count as usize;
                // Do not trust the count for the allocation: grow as arguments arrive.
                self.offsets.clear();
                self.offsets.reserve(count.min(KEPT_OFFSETS));
                self.partial = Some(Partial {
                    expected: count,
                    pos: eol + 2,
                });
            }
            return self.continue_multibulk(buf);
        }
    }

    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(partial) = self.partial.as_mut() else {
            return Ok(None);
        };
        while self.offsets.len() < partial.expected {
            let pos = partial.pos;
            if pos >= buf.len() {
                return Ok(None);
            }
            if buf[pos] != b'$' {
                let got = buf[pos] as char;
                self.partial = None;
                return Err(ProtocolError::ExpectedDollar(got));
            }
            let Some(eol) = find_crlf(buf, pos) else {
                if buf.len() - pos > self.limits.max_inline_len {
                    self.partial = None;
                    return Err(ProtocolError::TooBigBulkCount);
                }
                return Ok(None);
            };
            let len = match parse_int(&buf[pos + 1..eol]) {
                Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 => n as usize,
                _ => {
                    self.partial = None;
                    return Err(ProtocolError::InvalidBulkLength);
                }
            };
            let start = eol + 2;
            let end = start + len;
            if buf.len() < end + 2 {
                // Grow toward the argument in bounded steps: the length is untrusted until
                // the bytes actually arrive.
                buf.reserve((end + 2 - buf.len()).min(1 << 20));
                return Ok(None);
            }
            self.offsets.push((start, end));
            partial.pos = end + 2;
        }
        let Some(partial) = self.partial.take() else {
            return Ok(None);
        };
        let frame = buf.split_to(partial.pos).freeze();
        // Each argument is a view of the request's bytes. The last one is the request's own
        // handle cut down to it: a `slice` would count one more reference and dropping `frame`
        // one less, two atomic operations per request on the read buffer's shared count.
        let mut args = args_list(self.offsets.len());
        if let Some((&(last_start, last_end), rest)) = self.offsets.split_last() {
            args.extend(rest.iter().map(|&(s, e)| frame.slice(s..e)));
            if last_start == last_end {
                // An empty one holds nothing, as an empty `slice` does (review nit: it would
                // keep the read buffer alive, e.g. `PUBLISH ch ""` queued to a slow reader).
                args.push(Bytes::new());
            } else {
                let mut last = frame;
                last.truncate(last_end);
                last.advance(last_start);
                args.push(last);
            }
        }
        if self.offsets.capacity() > KEPT_OFFSETS {
            self.offsets = Vec::new();
        }
        Ok(Some(args))
    }

    /// The inline form: one line, arguments separated by spaces, with Redis's quoting rules.
    fn parse_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::TooBigInline);
        }
        let line = buf.split_to(nl + 1);
        let mut body = &line[..nl];
        if body.last() == Some(&b'\r') {
            body = &body[..body.len() - 1];
        }
        split_args(body).map(Some)
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i + 1..].iter().position(|&b| b == b'\n') {
            Some(off) => {
                let nl = i + 1 + off;
                if buf[nl - 1] == b'\r' {
                    return Some(nl - 1);
                }
                i = nl;
            }
            None => return None,
        }
    }
    None
}

/// Parses a decimal integer header field strictly (no sign on lengths besides '-', no spaces).
pub fn parse_int(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let (neg, rest) = match digits[0] {
        b'-' => (true, &digits[1..]),
        _ => (false, digits),
    };
    if rest.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// Splits an inline request like Redis's `sdssplitargs`: whitespace separates arguments,
/// `"..."` supports `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` supports `\'`. A closing
/// quote must be followed by whitespace or the end of the line.
pub fn split_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if c.is_ascii_whitespace() => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(cur));
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_recycled_argument_list_is_reused_empty_and_a_long_one_is_not_kept() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"[..]);
        let first = parser.next_request(&mut buf).unwrap().unwrap();
        let at = first.as_ptr();
        recycle_args(first);
        buf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let second = parser.next_request(&mut buf).unwrap().unwrap();
        assert_eq!(second.as_ptr(), at, "the list came back");
        assert_eq!(second, [&b"GET"[..], &b"k"[..]]);
        // A spare too small for the next request stays for a shorter one.
        recycle_args(Vec::with_capacity(1));
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
        let third = parser.next_request(&mut buf).unwrap().unwrap();
        assert_eq!(third.len(), 3);
        assert_eq!(
            SPARE.with(|s| s.borrow().last().map(Vec::capacity)),
            Some(1)
        );
        let long: Vec<Bytes> = Vec::with_capacity(SPARE_LIST_CAPACITY + 1);
        recycle_args(long);
        assert!(SPARE.with(|s| s
            .borrow()
            .iter()
            .all(|v| v.capacity() <= SPARE_LIST_CAPACITY)));
    }

    fn parse_all(
        parser: &mut RequestParser,
        buf: &mut BytesMut,
    ) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(req) = parser.next_request(buf)? {
            out.push(req.iter().map(|b| b.to_vec()).collect());
        }
        Ok(out)
    }

    fn one(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(input);
        parse_all(&mut p, &mut buf)
    }

    fn v(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_offsets_kept_between_requests_stay_small_after_a_large_one() {
        // One vector of offsets serves every request of a connection; a request with many
        // arguments must not leave its large vector behind, nor its offsets in the next one.
        let mut wire = Vec::new();
        wire.extend_from_slice(b"*1000\r\n");
        for i in 0..1000 {
            let arg = i.to_string();
            wire.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        wire.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&wire[..]);
        let reqs = parse_all(&mut p, &mut buf).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].len(), 1000);
        assert_eq!(reqs[0][999], b"999".to_vec());
        assert_eq!(reqs[1], vec![b"GET".to_vec(), b"k".to_vec()]);
        assert!(p.offsets.capacity() <= KEPT_OFFSETS);
    }

    #[test]
    fn multibulk_and_inline() {
        assert_eq!(
            one(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n").unwrap(),
            vec![v(&["GET", "a"])]
        );
        assert_eq!(one(b"PING\r\n").unwrap(), vec![v(&["PING"])]);
        assert_eq!(
            one(b"set k \"a b\\n\" 'c\\'d'\n").unwrap(),
            vec![v(&["set", "k", "a b\n", "c'd"])]
        );
        assert_eq!(
            one(b"echo \"\\x41\\x42\"\r\n").unwrap(),
            vec![v(&["echo", "AB"])]
        );
        // Empty requests are skipped.
        assert_eq!(
            one(b"\r\n*0\r\n*-1\r\nPING\r\n").unwrap(),
            vec![v(&["PING"])]
        );
        // Binary-safe values, including CRLF inside a bulk.
        assert_eq!(
            one(b"*1\r\n$4\r\na\r\nb\r\n").unwrap(),
            vec![v(&["a\r\nb"])]
        );
    }

    #[test]
    fn incomplete_returns_none_and_keeps_bytes() {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r"[..]);
        assert_eq!(p.next_request(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\na\r\n");
        let req = p.next_request(&mut buf).unwrap().unwrap();
        assert_eq!(req, vec![Bytes::from("GET"), Bytes::from("a")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn errors_and_limits() {
        assert_eq!(one(b"*abc\r\n"), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(
            one(b"*1048577\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert!(
            one(b"*1048576\r\n").unwrap().is_empty(),
            "the maximum count is accepted"
        );
        assert_eq!(one(b"*1\r\n$-5\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(one(b"*1\r\n$x\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(
            one(b"*1\r\n$536870913\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert!(
            one(b"*1\r\n$536870912\r\n").unwrap().is_empty(),
            "512 MB is accepted"
        );
        assert_eq!(
            one(b"*1\r\n:5\r\n"),
            Err(ProtocolError::ExpectedDollar(':'))
        );
        assert_eq!(one(b"set \"abc\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(one(b"set \"a\"b\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            one(&vec![b'a'; 70 * 1024]),
            Err(ProtocolError::TooBigInline)
        );
        let mut long_header = b"*".to_vec();
        long_header.extend(vec![b'1'; 70 * 1024]);
        assert_eq!(one(&long_header), Err(ProtocolError::TooBigMbulkCount));
        let mut p = RequestParser::new(Limits {
            max_bulk_len: 10,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert_eq!(
            p.next_request(&mut buf),
            Err(ProtocolError::InvalidBulkLength)
        );
    }

    #[test]
    fn error_texts() {
        let texts: Vec<String> = [
            ProtocolError::InvalidMultibulkLength,
            ProtocolError::InvalidBulkLength,
            ProtocolError::ExpectedDollar('x'),
            ProtocolError::TooBigInline,
            ProtocolError::UnbalancedQuotes,
        ]
        .iter()
        .map(|e| e.to_string())
        .collect();
        insta::assert_debug_snapshot!(texts);
    }

    fn pipeline() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n");
        p.extend_from_slice(b"PING\r\n");
        p.extend_from_slice(b"*0\r\n");
        p.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
        p.extend_from_slice(b"echo 'quoted arg' \"x\\ty\"\n");
        p.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        p
    }

    /// Feeding a pipeline split at any byte gives the same requests as feeding it whole.
    #[test]
    fn split_at_every_boundary_gives_same_result() {
        let input = pipeline();
        let whole = one(&input).unwrap();
        assert_eq!(whole.len(), 5);
        for cut in 0..=input.len() {
            let mut p = RequestParser::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(piece);
                got.extend(parse_all(&mut p, &mut buf).unwrap());
            }
            assert_eq!(got, whole, "split at {cut}");
            assert!(buf.is_empty());
        }
        // And one byte at a time.
        let mut p = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &input {
            buf.extend_from_slice(&[*b]);
            got.extend(parse_all(&mut p, &mut buf).unwrap());
        }
        assert_eq!(got, whole);
    }

    proptest! {
        /// Arbitrary binary arguments, encoded as multibulk and fed in random pieces, come back
        /// unchanged; arbitrary garbage never panics.
        #[test]
        fn random_requests_roundtrip(reqs in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5), 1..8), cuts in prop::collection::vec(0usize..400, 0..6)) {
            let mut wire = Vec::new();
            for r in &reqs {
                wire.extend_from_slice(format!("*{}\r\n", r.len()).as_bytes());
                for a in r {
                    wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    wire.extend_from_slice(a);
                    wire.extend_from_slice(b"\r\n");
                }
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort();
            let mut p = RequestParser::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain(std::iter::once(wire.len())) {
                buf.extend_from_slice(&wire[last..c]);
                last = c;
                got.extend(parse_all(&mut p, &mut buf).unwrap());
            }
            prop_assert_eq!(got, reqs);
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut p = RequestParser::default();
            let mut buf = BytesMut::from(&data[..]);
            let _ = parse_all(&mut p, &mut buf);
        }
    }
}
