//! A restricted pickle reader for PyTorch state dicts: it never executes code.
//!
//! It understands the opcodes that `torch.save` writes for dicts of tensors (protocols 2 to 5)
//! and accepts only the globals a state dict needs: `collections.OrderedDict`, the tensor and
//! parameter rebuild functions of `torch._utils`, and the typed storage classes named in
//! persistent ids. Any other global (for example `os.system` or `builtins.eval`) is refused with
//! an error naming it, before anything could be called.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::dtype::TensorDType;

/// A callable the reader knows how to evaluate without running Python.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Callable {
    /// `collections.OrderedDict`: builds an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`: the data tensor.
    RebuildParameter,
    /// A typed storage class such as `torch.FloatStorage` (only inside persistent ids).
    Storage(TensorDType),
}

/// A view of a storage, as `_rebuild_tensor_v2` describes it (sizes and strides in elements).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    /// Name of the storage record in the archive (`data/<key>`).
    pub key: String,
    /// Element type of the storage.
    pub dtype: TensorDType,
    /// Number of elements in the storage.
    pub storage_len: usize,
    /// Offset of the first element, in elements.
    pub offset: usize,
    /// Shape of the view.
    pub shape: Vec<usize>,
    /// Strides of the view, in elements.
    pub stride: Vec<usize>,
}

/// A storage named by a persistent id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    key: String,
    dtype: TensorDType,
    len: usize,
}

/// A shared, mutable dict (pickle memo entries alias the objects on the stack).
pub(crate) type DictRef = Rc<RefCell<Vec<(Value, Value)>>>;

/// A Python value as far as a state dict needs one.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A value a state dict never needs to look into (None, bool, float, bytes), by kind.
    Opaque(&'static str),
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(DictRef),
    Callable(Callable),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Internal stack marker.
    Mark,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Opaque(kind) => kind,
            Value::Int(_) => "int",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Callable(_) => "callable",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Mark => "mark",
        }
    }
}

/// Resolves a `module.name` global against the whitelist.
fn resolve_global(module: &str, name: &str) -> Result<Callable, String> {
    let storage = |d| Ok(Callable::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Callable::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Ok(Callable::RebuildParameter),
        ("torch", "FloatStorage") => storage(TensorDType::F32),
        ("torch", "DoubleStorage") => storage(TensorDType::F64),
        ("torch", "HalfStorage") => storage(TensorDType::F16),
        ("torch", "BFloat16Storage") => storage(TensorDType::BF16),
        ("torch", "LongStorage") => storage(TensorDType::I64),
        ("torch", "IntStorage") => storage(TensorDType::I32),
        ("torch", "ShortStorage") => storage(TensorDType::I16),
        ("torch", "CharStorage") => storage(TensorDType::I8),
        ("torch", "ByteStorage") => storage(TensorDType::U8),
        ("torch", "BoolStorage") => storage(TensorDType::Bool),
        ("torch.storage", "_load_from_bytes") => Err(format!(
            "refused global {module}.{name}: legacy (non-zip) PyTorch serialisation is not \
             supported; re-save the file with a current torch.save"
        )),
        _ => Err(format!(
            "refused global {module}.{name}: only state-dict globals (OrderedDict, tensor \
             rebuild, typed storages) are accepted, nothing is executed"
        )),
    }
}

/// Reads one pickle program and returns the value it builds.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, String> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le_uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err(format!("pickle stack underflow at byte {}", self.pos)),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| format!("pickle MARK missing at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Value::Mark) | None => Err(format!("pickle stack underflow at byte {}", self.pos)),
            Some(v) => Ok(v),
        }
    }

    fn text(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| format!("invalid UTF-8 string in pickle at byte {}", self.pos))
    }

    fn bytes(&mut self, n: usize) -> Result<Value, String> {
        self.take(n)?;
        Ok(Value::Opaque("bytes"))
    }

    fn memo_put(&mut self, index: u64) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), String> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("pickle memo entry {index} missing"))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("pickle SETITEMS with an odd number of items".into());
        }
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            other => Err(format!("pickle SETITEM on a {}", other.kind())),
        }
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("pickle APPEND on a {}", other.kind())),
        }
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::Opaque("None")),
                0x88 | 0x89 => self.stack.push(Value::Opaque("bool")),
                b'J' => {
                    let v = self.le_uint(4)? as u32 as i32 as i64;
                    self.stack.push(Value::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.le_uint(2)? as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.le_uint(4)? as usize
                    };
                    if n > 8 {
                        return Err(format!("pickle integer of {n} bytes is too large"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Opaque("float"));
                }
                b'X' => {
                    let n = self.le_uint(4)? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.le_uint(8)? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b'T' | b'B' => {
                    let n = self.le_uint(4)? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                0x8e => {
                    let n = self.le_uint(8)? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
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
                    self.stack.push(Value::Dict(Rc::default()));
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
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.le_uint(4)?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.le_uint(4)?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let c = resolve_global(&module, &name)?;
                    self.stack.push(Value::Callable(c));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let c = resolve_global(&m, &n)?;
                            self.stack.push(Value::Callable(c));
                        }
                        _ => return Err("pickle STACK_GLOBAL without two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(f, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        // OrderedDict state (the `_metadata` attribute of a state dict).
                        Value::Dict(_) => {}
                        other => {
                            return Err(format!(
                                "pickle BUILD on a {} is not accepted",
                                other.kind()
                            ))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_storage(pid)?;
                    self.stack.push(v);
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x} at byte {at} (only state-dict \
                         pickles are accepted)"
                    ))
                }
            }
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative int, found {}",
            other.kind()
        )),
    }
}

fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items.iter().map(|x| as_usize(x, what)).collect(),
        other => Err(format!("{what}: expected a tuple, found {}", other.kind())),
    }
}

/// Evaluates a whitelisted callable on its argument tuple.
fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Callable(c) = f else {
        return Err(format!("pickle REDUCE of a {} is not accepted", f.kind()));
    };
    let Value::Tuple(args) = args else {
        return Err("pickle REDUCE arguments are not a tuple".into());
    };
    match c {
        Callable::OrderedDict => {
            if !args.is_empty() {
                return Err("OrderedDict called with arguments".into());
            }
            Ok(Value::Dict(Rc::default()))
        }
        Callable::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Callable::RebuildTensor => {
            if args.len() < 4 {
                return Err("_rebuild_tensor_v2 with fewer than 4 arguments".into());
            }
            let Value::Storage(s) = &args[0] else {
                return Err(format!(
                    "_rebuild_tensor_v2 on a {} instead of a storage",
                    args[0].kind()
                ));
            };
            let offset = as_usize(&args[1], "tensor storage offset")?;
            let shape = as_usizes(&args[2], "tensor size")?;
            let stride = as_usizes(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                key: s.key.clone(),
                dtype: s.dtype,
                storage_len: s.len,
                offset,
                shape,
                stride,
            }))
        }
        Callable::Storage(_) => Err("a storage class cannot be called".into()),
    }
}

/// Turns a persistent id `('storage', StorageType, key, location, numel)` into a storage.
fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Callable(Callable::Storage(dtype)), Value::Str(key), _, len]
            if tag == "storage" =>
        {
            Ok(Value::Storage(StorageRef {
                key: key.clone(),
                dtype: *dtype,
                len: as_usize(len, "storage size")?,
            }))
        }
        _ => Err("persistent id is not a typed storage reference".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_dict_and_refuses_code() {
        // {'a': 1, 'b': (2, 'x')} in protocol 2.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00x\x86u.";
        let Value::Dict(d) = unpickle(p).unwrap() else {
            panic!("not a dict")
        };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        assert!(matches!(&d[0], (Value::Str(k), Value::Int(1)) if k == "a"));
        assert!(matches!(&d[1].1, Value::Tuple(t) if t.len() == 2));

        let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        let e = unpickle(evil).unwrap_err();
        assert!(e.contains("os.system"), "{e}");
        let evil = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(unpickle(evil).unwrap_err().contains("builtins.eval"));
        // REDUCE of something that is not a whitelisted callable.
        let e = unpickle(b"\x80\x02X\x01\x00\x00\x00a)R.").unwrap_err();
        assert!(e.contains("REDUCE of a str"), "{e}");
        // Truncated program.
        assert!(unpickle(b"\x80\x02X\x09\x00\x00\x00ab")
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn long1_is_signed_little_endian() {
        let v = unpickle(b"\x8a\x02\xff\x7f.").unwrap();
        assert!(matches!(v, Value::Int(0x7fff)));
        let v = unpickle(b"\x8a\x01\xff.").unwrap();
        assert!(matches!(v, Value::Int(-1)));
    }
}
