//! The study's pickled numpy arrays (`train.pk`, `test.pk`, `unlabeled.pk` or `X*.pk`).
//!
//! A small pickle machine of our own rather than serde-pickle: serde-pickle drops the
//! numpy dtype of an array (and fails on protocol 5's `_frombuffer`), and it copies
//! every byte string, while a 2.7 GB image array must stay a view into the mapped
//! file. This reader understands protocols 0-5 as written by Python 2 and 3 for
//! dicts, lists, tuples, scalars and numpy arrays (`_reconstruct` + BUILD,
//! `_frombuffer`, `_codecs.encode` for protocol-2 byte strings) and refuses anything
//! else with a message. Lengths read from the file are checked against the file's
//! size before use, so a hostile file cannot make it allocate without bound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::layout::{self, PixelOrder};
use super::{numbered_classes, Dataset, ImageSet, OpenOptions, Part, Shape, Source};
use crate::error::{Error, Result};

/// Bytes inside the pickle: a range of the file, or decoded bytes.
#[derive(Clone, Debug)]
pub enum Blob {
    /// `len` bytes of the file at `start`.
    Slice {
        /// Offset in the file.
        start: usize,
        /// Length.
        len: usize,
    },
    /// Bytes that had to be decoded (latin-1 strings of protocol-2 pickles).
    Owned(Rc<Vec<u8>>),
}

/// A Python object as far as this reader needs to know it.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (within i64).
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str` (Python 3) or `unicode` (Python 2).
    Str(Rc<String>),
    /// `bytes`, `bytearray`, or a Python 2 `str`.
    Bytes(Blob),
    /// `tuple`.
    Tuple(Rc<Vec<Value>>),
    /// `list`.
    List(Rc<RefCell<Vec<Value>>>),
    /// `dict` (insertion order).
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A global name (`module.name`).
    Global(Rc<(String, String)>),
    /// An object built by calling a global: class, arguments, and BUILD state.
    Object(Rc<RefCell<Object>>),
}

/// An object made by REDUCE/NEWOBJ, with the state BUILD gave it.
#[derive(Debug)]
pub struct Object {
    /// `module.name` of the callable.
    pub class: (String, String),
    /// Arguments of the call.
    pub args: Vec<Value>,
    /// State set by BUILD.
    pub state: Option<Value>,
}

/// A decoded numpy array header plus where its bytes are.
#[derive(Debug)]
pub struct NdArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// numpy type code, e.g. `u1`, `i8`, `f4`.
    pub dtype: String,
    /// True for big-endian data.
    pub big_endian: bool,
    /// Where the element bytes are.
    pub data: Blob,
}

struct Machine<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl<'a> Machine<'a> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::bad(self.path, format!("pickle at byte {}: {what}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(self.err(format!(
                "needs {n} more bytes but the file ends (truncated?)"
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated text line"))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| self.err("text line is not UTF-8"))
    }

    fn blob(&mut self, n: u64) -> Result<Blob> {
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        let start = self.pos;
        self.take(n)?;
        Ok(Blob::Slice { start, len: n })
    }

    fn text(&mut self, n: u64) -> Result<Value> {
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))?;
        Ok(Value::Str(Rc::new(s.to_owned())))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK"))?;
        if m > self.stack.len() {
            return Err(self.err("MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let e = self.err("stack underflow");
        self.stack.last_mut().ok_or(e)
    }

    fn memo_get(&self, k: u64) -> Result<Value> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| self.err(format!("memo key {k} is unset")))
    }

    fn memo_put(&mut self, k: u64) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("PUT on empty stack"))?;
        self.memo.insert(k, v);
        Ok(())
    }

    fn call(&self, f: Value, args: Vec<Value>) -> Result<Value> {
        let Value::Global(g) = f else {
            return Err(self.err("call of a non-global"));
        };
        let (module, name) = (&g.0, &g.1);
        match (module.as_str(), name.as_str()) {
            ("_codecs", "encode") => {
                let s = match args.first() {
                    Some(Value::Str(s)) => s,
                    _ => return Err(self.err("_codecs.encode without a string")),
                };
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                let bytes = bytes.ok_or_else(|| self.err("latin-1 string out of range"))?;
                Ok(Value::Bytes(Blob::Owned(Rc::new(bytes))))
            }
            ("__builtin__" | "builtins", "bytearray" | "bytes") => match args.first() {
                Some(v @ Value::Bytes(_)) => Ok(v.clone()),
                None => Ok(Value::Bytes(Blob::Owned(Rc::new(Vec::new())))),
                Some(other) => self.call(
                    Value::Global(Rc::new(("_codecs".into(), "encode".into()))),
                    vec![other.clone()],
                ),
            },
            _ => Ok(Value::Object(Rc::new(RefCell::new(Object {
                class: (module.clone(), name.clone()),
                args,
                state: None,
            })))),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let p = self.take(1)?[0];
                    if p > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {p}")));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.uint(1)?
                    } else {
                        self.uint(4)?
                    } as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err("integer wider than 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'I' | b'L' => {
                    let l = self.line()?.trim_end_matches('L');
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(l.parse().map_err(|_| self.err("bad integer"))?),
                    };
                    self.stack.push(v);
                }
                b'F' => {
                    let v = self.line()?.parse().map_err(|_| self.err("bad float"))?;
                    self.stack.push(Value::Float(v));
                }
                b'G' => {
                    let v = f64::from_bits(u64::from_be_bytes(self.take(8)?.try_into().unwrap()));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.uint(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.uint(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.uint(8)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'V' => {
                    let l = self.line()?;
                    if l.contains('\\') {
                        return Err(self.err("escaped protocol-0 unicode is not supported"));
                    }
                    self.stack.push(Value::Str(Rc::new(l.to_owned())));
                }
                b'T' | b'B' => {
                    let n = self.uint(4)?;
                    let b = self.blob(n)?;
                    self.stack.push(Value::Bytes(b));
                }
                b'U' | b'C' => {
                    let n = self.uint(1)?;
                    let b = self.blob(n)?;
                    self.stack.push(Value::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    let b = self.blob(n)?;
                    self.stack.push(Value::Bytes(b));
                }
                b'S' => {
                    let l = self.line()?;
                    let inner = l
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .filter(|s| !s.contains('\\'))
                        .ok_or_else(|| self.err("escaped protocol-0 strings are not supported"))?;
                    self.stack.push(Value::Bytes(Blob::Owned(Rc::new(
                        inner.as_bytes().to_vec(),
                    ))));
                }
                0x98 => {}
                0x97 => return Err(self.err("out-of-band buffers (NEXT_BUFFER) are not supported")),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self.stack.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::default());
                    self.stack.push(d);
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                0x8f => self.stack.push(Value::List(Rc::default())),
                0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'c' => {
                    let m = self.line()?.to_owned();
                    let n = self.line()?.to_owned();
                    self.stack.push(Value::Global(Rc::new((m, n))));
                }
                0x93 => {
                    let n = self.pop()?;
                    let m = self.pop()?;
                    match (m, n) {
                        (Value::Str(m), Value::Str(n)) => self
                            .stack
                            .push(Value::Global(Rc::new((m.to_string(), n.to_string())))),
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let Value::Tuple(args) = args else {
                        return Err(self.err("REDUCE arguments are not a tuple"));
                    };
                    let v = self.call(f, args.to_vec())?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a.to_vec(),
                        _ => return Err(self.err("NEWOBJ arguments are not a tuple")),
                    };
                    let v = self.call(cls, args)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a.to_vec(),
                        _ => return Err(self.err("NEWOBJ_EX arguments are not a tuple")),
                    };
                    let v = self.call(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.refuse_cycle(&target, std::slice::from_ref(&state))?;
                    match target {
                        Value::Object(o) => o.borrow_mut().state = Some(state),
                        _ => return Err(self.err("BUILD on something that is not an object")),
                    }
                }
                b'p' => {
                    let k = self.line()?.parse().map_err(|_| self.err("bad PUT key"))?;
                    self.memo_put(k)?;
                }
                b'q' => {
                    let k = self.uint(1)?;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.uint(4)?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'g' => {
                    let k = self.line()?.parse().map_err(|_| self.err("bad GET key"))?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'h' => {
                    let k = self.uint(1)?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.uint(4)?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                other => return Err(self.err(format!("unsupported pickle opcode 0x{other:02x}"))),
            }
        }
    }

    /// Refuses to put `items` into `target` when one of them holds `target`: the
    /// shared pointers of such a cycle would never be freed. Iterative, so a deeply
    /// nested value cannot overflow the stack.
    fn refuse_cycle(&self, target: &Value, items: &[Value]) -> Result<()> {
        let id = container_id(target);
        if id.is_none() {
            return Ok(());
        }
        let mut todo: Vec<Value> = items.to_vec();
        let mut seen = std::collections::HashSet::new();
        while let Some(v) = todo.pop() {
            let Some(this) = container_id(&v) else {
                continue;
            };
            if Some(this) == id {
                return Err(self.err("a container that holds itself (cyclic pickle)"));
            }
            if !seen.insert(this) {
                continue;
            }
            match &v {
                Value::Tuple(t) => todo.extend(t.iter().cloned()),
                Value::List(l) => todo.extend(l.borrow().iter().cloned()),
                Value::Dict(d) => {
                    for (k, x) in d.borrow().iter() {
                        todo.push(k.clone());
                        todo.push(x.clone());
                    }
                }
                Value::Object(o) => {
                    let o = o.borrow();
                    todo.extend(o.args.iter().cloned());
                    todo.extend(o.state.iter().cloned());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.top()?.clone();
        self.refuse_cycle(&target, &items)?;
        match target {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            _ => Err(self.err("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of dict items"));
        }
        let target = self.top()?.clone();
        self.refuse_cycle(&target, &items)?;
        match target {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            _ => Err(self.err("SETITEM on something that is not a dict")),
        }
    }
}

/// Address of a container's shared allocation (None for plain values).
fn container_id(v: &Value) -> Option<usize> {
    match v {
        Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
        Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
        Value::Object(o) => Some(Rc::as_ptr(o) as *const () as usize),
        _ => None,
    }
}

/// Runs the pickle in `buf` (the bytes of `path`) and returns the object it holds.
pub fn load(path: &Path, buf: &[u8]) -> Result<Value> {
    Machine {
        path,
        buf,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

/// Text of a `str` or a Python 2 byte string.
fn text(v: &Value, buf: &[u8]) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(blob_bytes(b, buf)).into_owned()),
        _ => None,
    }
}

/// The bytes of a blob.
pub fn blob_bytes<'a>(b: &'a Blob, buf: &'a [u8]) -> &'a [u8] {
    match b {
        Blob::Slice { start, len } => &buf[*start..*start + *len],
        Blob::Owned(v) => v,
    }
}

fn int_list(v: &Value) -> Option<Vec<usize>> {
    let items: Vec<Value> = match v {
        Value::Tuple(t) => t.to_vec(),
        Value::List(l) => l.borrow().clone(),
        Value::Int(i) => vec![Value::Int(*i)],
        _ => return None,
    };
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        })
        .collect()
}

/// dtype code and byte order of a `numpy.dtype` object.
fn dtype_of(v: &Value, buf: &[u8]) -> Option<(String, bool)> {
    let Value::Object(o) = v else { return None };
    let o = o.borrow();
    if o.class.1 != "dtype" {
        return None;
    }
    let code = text(o.args.first()?, buf)?;
    let big = match &o.state {
        Some(Value::Tuple(t)) => t.get(1).and_then(|e| text(e, buf)).as_deref() == Some(">"),
        _ => false,
    };
    let code = match code.as_str() {
        "uint8" | "B" => "u1".into(),
        "int64" => "i8".into(),
        "int32" => "i4".into(),
        _ => code.trim_start_matches(['<', '>', '|', '=']).to_string(),
    };
    Some((code, big))
}

/// Reads `v` as a numpy array, if it is one.
pub fn as_array(v: &Value, buf: &[u8]) -> Option<std::result::Result<NdArray, String>> {
    let Value::Object(o) = v else { return None };
    let o = o.borrow();
    let is_np = o.class.0.starts_with("numpy");
    match o.class.1.as_str() {
        "_reconstruct" if is_np => {
            let Some(Value::Tuple(st)) = &o.state else {
                return Some(Err("numpy array without state".into()));
            };
            // (version, shape, dtype, is_fortran, data) or, in old numpy, without version.
            let st: &[Value] = if st.len() == 5 { &st[1..] } else { &st[..] };
            if st.len() != 4 {
                return Some(Err("numpy array state of unexpected length".into()));
            }
            let Some(shape) = int_list(&st[0]) else {
                return Some(Err("numpy array shape is not a tuple of ints".into()));
            };
            let Some((dtype, big_endian)) = dtype_of(&st[1], buf) else {
                return Some(Err("numpy array dtype unreadable".into()));
            };
            if matches!(st[2], Value::Bool(true) | Value::Int(1)) && shape.len() > 1 {
                return Some(Err(
                    "Fortran-ordered arrays are not supported (save np.ascontiguousarray(x))"
                        .into(),
                ));
            }
            let data = match &st[3] {
                Value::Bytes(b) => b.clone(),
                Value::Str(s) => match s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
                {
                    Some(b) => Blob::Owned(Rc::new(b)),
                    None => return Some(Err("array data string is not latin-1".into())),
                },
                _ => return Some(Err("object arrays are not supported".into())),
            };
            Some(Ok(NdArray {
                shape,
                dtype,
                big_endian,
                data,
            }))
        }
        "_frombuffer" if is_np => {
            let (Some(Value::Bytes(data)), Some(dt), Some(shape)) =
                (o.args.first(), o.args.get(1), o.args.get(2))
            else {
                return Some(Err("_frombuffer with unexpected arguments".into()));
            };
            let Some((dtype, big_endian)) = dtype_of(dt, buf) else {
                return Some(Err("numpy array dtype unreadable".into()));
            };
            let Some(shape) = int_list(shape) else {
                return Some(Err("numpy array shape is not a tuple of ints".into()));
            };
            if o.args.get(3).and_then(|v| text(v, buf)).as_deref() == Some("F") && shape.len() > 1 {
                return Some(Err(
                    "Fortran-ordered arrays are not supported (save np.ascontiguousarray(x))"
                        .into(),
                ));
            }
            Some(Ok(NdArray {
                shape,
                dtype,
                big_endian,
                data: data.clone(),
            }))
        }
        _ => None,
    }
}

/// Element size of an integer dtype code, and whether it is signed.
fn int_dtype(code: &str) -> Option<(usize, bool)> {
    let (kind, size) = code.split_at(1);
    let size: usize = size.parse().ok()?;
    match (kind, size) {
        ("u", 1 | 2 | 4 | 8) => Some((size, false)),
        ("i", 1 | 2 | 4 | 8) => Some((size, true)),
        _ => None,
    }
}

/// A pickle file's images (and labels, if it holds them).
pub struct PickledSet {
    /// The images, unlabelled: the label base is a property of the whole dataset,
    /// decided by [`open_dataset`] from every label file ([`PickledSet::labelled`]).
    pub images: ImageSet,
    /// Labels as stored, one per image.
    pub labels: Option<Vec<i64>>,
    /// What was decided about the pixel order.
    pub note: String,
}

impl PickledSet {
    /// The images with their labels read from `base` (0 or 1): label `base` becomes
    /// class 0.
    pub fn labelled(self, base: u8) -> Result<ImageSet> {
        let Some(l) = self.labels else {
            return Ok(self.images);
        };
        let path = self.images.name().to_path_buf();
        let labels = l
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let shifted = v
                    .checked_sub(i64::from(base))
                    .and_then(|x| u8::try_from(x).ok());
                shifted.ok_or_else(|| {
                    let why = if v == 0 && base == 1 {
                        " (the dataset's labels are read as 1-based)".to_string()
                    } else {
                        String::new()
                    };
                    Error::bad(
                        &path,
                        format!("label {v} of image {i} is out of range{why}"),
                    )
                })
            })
            .collect::<Result<Vec<u8>>>()?;
        self.images.with_labels(labels)
    }
}

/// Reads labels from an int array or a list of ints.
fn labels_of(path: &Path, v: &Value, buf: &[u8]) -> Result<Vec<i64>> {
    if let Value::List(l) = v {
        return l
            .borrow()
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => Err(Error::bad(path, "labels list holds a non-integer")),
            })
            .collect();
    }
    let a = match as_array(v, buf) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(Error::bad(path, format!("labels: {e}"))),
        None => return Err(Error::bad(path, "labels `y` are not a numpy array or list")),
    };
    let (size, signed) = int_dtype(&a.dtype).ok_or_else(|| {
        Error::bad(
            path,
            format!("labels have dtype {}; expected integers", a.dtype),
        )
    })?;
    let n: usize = a.shape.iter().product();
    if a.shape.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(Error::bad(path, format!("labels have shape {:?}", a.shape)));
    }
    let bytes = blob_bytes(&a.data, buf);
    if bytes.len() != n * size {
        return Err(Error::bad(
            path,
            format!("labels hold {} bytes for {n} x {size}", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| {
            let mut v: u64 = 0;
            for k in 0..size {
                let b = if a.big_endian { c[k] } else { c[size - 1 - k] };
                v = (v << 8) | u64::from(b);
            }
            if signed && size < 8 && v >> (8 * size - 1) & 1 == 1 {
                (v as i64) - (1i64 << (8 * size))
            } else {
                v as i64
            }
        })
        .collect())
}

/// Opens one pickle file of images (a dict with `X` and maybe `y`, or a bare array).
pub fn open_file(path: &Path, order: Option<PixelOrder>) -> Result<PickledSet> {
    let src = Arc::new(Source::map(path)?);
    let buf = src.bytes();
    if buf.is_empty() {
        return Err(Error::bad(path, "empty file"));
    }
    let root = load(path, buf)?;
    let (x, y) = match &root {
        Value::Dict(d) => {
            let d = d.borrow();
            let find = |names: &[&str]| {
                d.iter()
                    .find(|(k, _)| text(k, buf).is_some_and(|t| names.contains(&t.as_str())))
                    .map(|(_, v)| v.clone())
            };
            let x = find(&["X", "x", "data", "images"]).ok_or_else(|| {
                Error::bad(path, "pickled dict has no `X` (or `data`) array of images")
            })?;
            (x, find(&["y", "Y", "labels"]))
        }
        other => (other.clone(), None),
    };
    let a = match as_array(&x, buf) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(Error::bad(path, format!("images: {e}"))),
        None => return Err(Error::bad(path, "does not hold a numpy array of images")),
    };
    let elem = match a.dtype.as_str() {
        "u1" => 1,
        "f4" => 4,
        "f8" => 8,
        other => {
            return Err(Error::bad(
                path,
                format!("images have dtype {other}; expected uint8, float32 or float64"),
            ))
        }
    };
    let (n, shape, fixed) = image_shape(path, &a.shape, order)?;
    let data = blob_bytes(&a.data, buf);
    let need = n
        .checked_mul(shape.pixels())
        .and_then(|v| v.checked_mul(elem));
    if need != Some(data.len()) {
        return Err(Error::bad(
            path,
            format!(
                "array data has {} bytes; shape {:?} of {} needs {}",
                data.len(),
                a.shape,
                a.dtype,
                need.map_or("more than memory holds".into(), |v| v.to_string())
            ),
        ));
    }
    let labels = match y {
        None => None,
        Some(y) => Some(labels_of(path, &y, buf)?),
    };
    let (source, offset) = match &a.data {
        _ if elem > 1 => {
            let px = float_pixels(path, data, elem, a.big_endian, shape.pixels())?;
            (Arc::new(Source::Owned(px)), 0)
        }
        Blob::Slice { start, .. } => (src.clone(), *start),
        Blob::Owned(v) => (Arc::new(Source::Owned(v.to_vec())), 0),
    };
    let (order, note) = match (order, fixed) {
        (Some(o), _) => (o, format!("pixel order {} (from config)", o.name())),
        (None, Some(o)) => (
            o,
            format!("pixel order {} (from the array shape)", o.name()),
        ),
        (None, None) => {
            let k = n.min(64);
            let recs: Vec<&[u8]> = (0..k)
                .map(|i| &source.bytes()[offset + i * shape.pixels()..][..shape.pixels()])
                .collect();
            let (o, scores) = layout::detect(&recs, shape);
            let s: Vec<String> = scores
                .iter()
                .map(|(o, r)| format!("{} {r:.1}", o.name()))
                .collect();
            (
                o,
                format!(
                    "pixel order {} detected (neighbour roughness: {})",
                    o.name(),
                    s.join(", ")
                ),
            )
        }
    };
    let labels = match labels {
        None => None,
        Some(l) => Some(check_labels(path, l, n)?),
    };
    let part = Part::new(source, offset, shape.pixels(), n);
    let images = ImageSet::new(path, vec![part], shape, order, None)?;
    Ok(PickledSet {
        images,
        labels,
        note: format!("{}: {note}", path.display()),
    })
}

/// Float images as bytes: values in [0, 1] are scaled by 255, values in [0, 255] kept
/// (both rounded). NaN, Inf or values outside both ranges are refused, naming the image.
fn float_pixels(
    path: &Path,
    data: &[u8],
    elem: usize,
    big_endian: bool,
    pixels: usize,
) -> Result<Vec<u8>> {
    let value = |c: &[u8]| -> f64 {
        match (elem, big_endian) {
            (4, false) => f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64,
            (4, true) => f32::from_be_bytes(c.try_into().expect("4 bytes")) as f64,
            (_, false) => f64::from_le_bytes(c.try_into().expect("8 bytes")),
            (_, true) => f64::from_be_bytes(c.try_into().expect("8 bytes")),
        }
    };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (k, c) in data.chunks_exact(elem).enumerate() {
        let v = value(c);
        if !v.is_finite() {
            return Err(Error::bad(
                path,
                format!(
                    "image {} holds {v} at value {} (NaN or Inf in the data)",
                    k / pixels.max(1),
                    k % pixels.max(1)
                ),
            ));
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let scale = if lo >= 0.0 && hi <= 1.0 {
        255.0
    } else if lo >= 0.0 && hi <= 255.0 {
        1.0
    } else {
        let k = data
            .chunks_exact(elem)
            .position(|c| !(0.0..=255.0).contains(&value(c)))
            .unwrap_or(0);
        return Err(Error::bad(
            path,
            format!(
                "float pixels span [{lo}, {hi}] (image {} first leaves [0, 255]); \
                 expected values in [0, 1] or [0, 255]",
                k / pixels.max(1)
            ),
        ));
    };
    Ok(data
        .chunks_exact(elem)
        .map(|c| (value(c) * scale).round() as u8)
        .collect())
}

/// Checks one label per image; their range is checked once the dataset's label base
/// is known ([`PickledSet::labelled`]), and not at all for unlabeled images.
fn check_labels(path: &Path, l: Vec<i64>, n: usize) -> Result<Vec<i64>> {
    if l.len() != n {
        return Err(Error::bad(
            path,
            format!("{} labels for {n} images", l.len()),
        ));
    }
    Ok(l)
}

/// The label base of a dataset from all its label files together: 1-based only when
/// no file holds a 0 (so a test file that lacks class 0 cannot shift on its own).
fn label_base(files: &[&PickledSet]) -> (u8, String) {
    let names: Vec<String> = files
        .iter()
        .filter(|f| f.labels.is_some())
        .map(|f| {
            f.images
                .name()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect();
    if names.is_empty() {
        return (0, "labels: none in the train and test files".into());
    }
    let zero = files
        .iter()
        .find(|f| f.labels.as_ref().is_some_and(|l| l.contains(&0)));
    match zero {
        Some(f) => (
            0,
            format!(
                "labels: 0-based (label 0 appears in {})",
                f.images.name().display()
            ),
        ),
        None => (
            1,
            format!(
                "labels: 1-based (no label 0 in {}), read as 0-based; set data.label_base = 0 if \
                 class 0 is simply absent",
                names.join(" or ")
            ),
        ),
    }
}

/// Number of images, their shape, and the pixel order if the shape fixes it.
///
/// `N x 3 x H x 3` reads either way; the configured order (`planar` for a colour
/// plane first, else interleaved) settles it, and without one it is refused.
fn image_shape(
    path: &Path,
    dims: &[usize],
    order: Option<PixelOrder>,
) -> Result<(usize, Shape, Option<PixelOrder>)> {
    let bad = || {
        Error::bad(
            path,
            format!(
                "image array has shape {dims:?}; expected N x 3*S*S, N x S x S x 3 or N x 3 x S x S"
            ),
        )
    };
    if let [_, .., h, w] = *dims {
        // Checked before any size is multiplied out: shapes come from the file.
        if h == 0 || w == 0 || h.checked_mul(w).and_then(|v| v.checked_mul(3)).is_none() {
            return Err(bad());
        }
    }
    match *dims {
        [n, d] if d % 3 == 0 => {
            let side = ((d / 3) as f64).sqrt().round() as usize;
            if side * side * 3 != d || side == 0 {
                return Err(bad());
            }
            Ok((n, Shape::rgb(side), None))
        }
        [_, 3, _, 3] if order.is_none() => Err(Error::bad(
            path,
            format!(
                "image array shape {dims:?} reads as N x H x W x 3 and as N x 3 x H x W; \
                 set data.pixel_order to say which"
            ),
        )),
        // Planar when the shape says so, or when the config does for N x 3 x H x 3.
        [n, 3, h, w] if w != 3 || matches!(order, Some(PixelOrder::Chw | PixelOrder::Cwh)) => Ok((
            n,
            Shape {
                height: h,
                width: w,
                channels: 3,
            },
            Some(PixelOrder::Chw),
        )),
        [n, h, w, 3] => Ok((
            n,
            Shape {
                height: h,
                width: w,
                channels: 3,
            },
            Some(PixelOrder::Hwc),
        )),
        _ => Err(bad()),
    }
}

/// Finds `stem.pk` / `stem.pkl` / `stem.pickle` in `dir`.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    ["pk", "pkl", "pickle"]
        .iter()
        .map(|e| dir.join(format!("{stem}.{e}")))
        .find(|p| p.exists())
}

/// Opens a folder of the study's pickles.
pub fn open_dataset(dir: &Path, opts: &OpenOptions) -> Result<Dataset> {
    let train_path = find(dir, "train").ok_or_else(|| Error::bad(dir, "no train.pk"))?;
    let test_path = find(dir, "test").ok_or_else(|| Error::bad(dir, "no test.pk"))?;
    let order = opts.pixel_order;
    let train = open_file(&train_path, order)?;
    // Every file of a dataset shares the training file's order unless the shape fixes it.
    let order = order.or(Some(train.images.order()));
    let test = open_file(&test_path, order)?;
    let mut notes = vec![train.note.clone(), test.note.clone()];
    let (base, why) = match opts.label_base {
        Some(b) => (b, format!("labels: {b}-based (from config)")),
        None => label_base(&[&train, &test]),
    };
    notes.push(why);
    let train_images = train.images.clone();
    let (train, test) = (train.labelled(base)?, test.labelled(base)?);
    let unlabeled = if let Some(p) = find(dir, "unlabeled") {
        let u = open_file(&p, order)?;
        notes.push(u.note);
        u.images
    } else {
        let mut parts: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(Error::io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let k = name
                    .strip_prefix('X')?
                    .split('.')
                    .next()?
                    .parse::<u64>()
                    .ok()?;
                Some((k, e.path()))
            })
            .collect();
        parts.sort();
        if parts.is_empty() {
            notes.push("no unlabeled pickle; patches come from train".into());
            train_images
        } else {
            let sets: Vec<ImageSet> = parts
                .iter()
                .map(|(_, p)| open_file(p, order).map(|s| s.images))
                .collect::<Result<_>>()?;
            notes.push(format!("unlabeled: {} X*.pk parts", sets.len()));
            concat(dir, sets)?
        }
    };
    let k = [&train, &test]
        .iter()
        .filter_map(|s| s.labels())
        .flat_map(|l| l.iter().copied())
        .max()
        .map_or(10, |m| (m as usize + 1).max(10));
    Ok(Dataset {
        unlabeled,
        classes: numbered_classes(k),
        train,
        test,
        notes,
    })
}

/// Joins image sets of one shape and order into one.
fn concat(dir: &Path, sets: Vec<ImageSet>) -> Result<ImageSet> {
    let shape = sets[0].shape();
    let order = sets[0].order();
    let mut parts = Vec::new();
    for s in sets {
        if s.shape() != shape {
            return Err(Error::bad(
                s.name(),
                "image shape differs from the other parts",
            ));
        }
        parts.extend(s.parts);
    }
    ImageSet::new(dir, parts, shape, order, None)
}
