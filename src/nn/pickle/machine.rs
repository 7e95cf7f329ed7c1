//! The opcode interpreter of the pickle reader: runs a program over the value stack and memo,
//! calling only what `globals` allows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::globals::{
    build_array, build_dtype, new_object, persistent_storage, reduce, resolve_global,
};
use super::{Program, StorageRef, Value};

/// The pickle virtual machine: a stack, a memo and the program text.
pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
    storages: Vec<StorageRef>,
}

impl<'a> Machine<'a> {
    /// A machine at the start of `data`, with an empty stack and memo.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            storages: Vec::new(),
        }
    }

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
        let b = self.take(n)?.to_vec();
        Ok(Value::Bytes(Rc::new(b)))
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

    /// Runs the program to its STOP and returns the value on top of the stack.
    pub(super) fn run(mut self) -> Result<Program, String> {
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
                b'.' => {
                    return Ok(Program {
                        value: self.pop()?,
                        len: self.pos,
                        storages: self.storages,
                    })
                }
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
                0x88 | 0x89 => self.stack.push(Value::Bool(op == 0x88)),
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
                0x96 => {
                    let n = self.le_uint(8)? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                0x8e => {
                    let n = self.le_uint(8)? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
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
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    resolve_global(&module, &name)?;
                    return Err(format!(
                        "refused pickle INST of {module}.{name} at byte {at}: objects are not \
                         constructed"
                    ));
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = new_object(class, args).map_err(|e| format!("{e} at byte {at}"))?;
                    self.stack.push(v);
                }
                b'o' | 0x92 => {
                    let name = if op == b'o' { "OBJ" } else { "NEWOBJ_EX" };
                    return Err(format!(
                        "refused pickle {name} at byte {at}: objects are not constructed"
                    ));
                }
                0x82..=0x84 => {
                    return Err(format!(
                        "refused pickle EXT{} at byte {at}: the extension registry names \
                         callables, which are not accepted",
                        [1, 2, 4][(op - 0x82) as usize]
                    ))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let c = resolve_global(m, n)?;
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
                    let state = self.pop()?;
                    match self.top()? {
                        // OrderedDict state (the `_metadata` attribute of a state dict).
                        Value::Dict(_) => {}
                        Value::Namespace(d) => match &state {
                            Value::Dict(s) => {
                                let items = s.borrow().clone();
                                d.borrow_mut().extend(items)
                            }
                            other => {
                                return Err(format!(
                                    "argparse.Namespace state is a {} at byte {at}, not a dict",
                                    other.kind()
                                ))
                            }
                        },
                        Value::Array(a) => build_array(&mut a.borrow_mut(), state)?,
                        Value::Dtype(d) => build_dtype(&mut d.borrow_mut(), state)?,
                        other => {
                            return Err(format!(
                                "refused pickle BUILD on a {} at byte {at}: only the state \
                                 of a dict, a namespace or a numpy array is accepted",
                                other.kind()
                            ))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = persistent_storage(pid)?;
                    self.storages.push(s.clone());
                    self.stack.push(Value::Storage(s));
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
