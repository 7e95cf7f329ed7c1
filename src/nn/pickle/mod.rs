//! A restricted pickle reader for PyTorch state dicts and pickled numpy arrays (detectron2's
//! `.pkl` checkpoints): it never executes code.
//!
//! It understands the opcodes that `torch.save` and `pickle.dump` write for dicts of tensors
//! or arrays (protocols 2 to 5) and accepts only the globals such files need:
//! `collections.OrderedDict`, the tensor and parameter rebuild functions of `torch._utils`,
//! the typed storage classes named in persistent ids, and numpy's array reconstruction
//! (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`, plus
//! `_codecs.encode` which protocol 2 uses for bytes). Training checkpoints pickle a few more
//! plain objects beside the weights, and these are built as inert values without calling
//! anything: `argparse.Namespace` (ReferFormer's `args`, only through NEWOBJ with no
//! arguments, its attributes set by BUILD from a dict) and `collections.Counter` (the
//! `milestones` of a `MultiStepLR` state, a plain dict). Any other global (for example
//! `os.system` or `builtins.eval`) is refused with an error naming it, before anything could
//! be called.
//! Reached by GLOBAL, STACK_GLOBAL or INST, a refused global is named; object construction
//! (OBJ, NEWOBJ_EX, the extension registry, NEWOBJ of anything but an argument-less
//! `argparse.Namespace`) is refused by opcode. Tuples are shared, not copied,
//! when the memo repeats them, and dropping a deeply nested value does not recurse, so neither
//! memo references nor nesting can exhaust memory or stack.

use std::cell::RefCell;
use std::rc::Rc;

use super::dtype::TensorDType;

mod globals;
mod machine;

use machine::Machine;

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
    /// `numpy.core.multiarray._reconstruct(numpy.ndarray, shape, b'b')`: an empty array that a
    /// following BUILD fills.
    NumpyReconstruct,
    /// The class `numpy.ndarray` (only as `_reconstruct`'s argument).
    NumpyNdarray,
    /// `numpy.dtype(code, align, copy)`: a dtype that a following BUILD may give a byte order.
    NumpyDtype,
    /// `numpy.core.multiarray.scalar(dtype, bytes)`: a numpy scalar (kept opaque).
    NumpyScalar,
    /// `_codecs.encode(text, 'latin1')`: bytes, as protocol 2 writes them.
    CodecsEncode,
    /// The class `argparse.Namespace` (only as NEWOBJ's class, with no arguments).
    Namespace,
    /// `collections.Counter(dict)`: a plain dict of the same items.
    Counter,
}

/// A numpy dtype: the type code (`f4`, `i8`, ...) and byte order (`<`, `>`, `|`, `=`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NumpyDtype {
    /// Type code without byte order.
    pub code: String,
    /// Byte order character.
    pub order: char,
}

/// A numpy array as pickled: dtype, shape, memory order and raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NumpyArray {
    /// Element type; `None` until BUILD has run.
    pub dtype: Option<NumpyDtype>,
    /// Shape.
    pub shape: Vec<usize>,
    /// Column-major (Fortran) data.
    pub fortran: bool,
    /// Raw element bytes.
    pub data: Rc<Vec<u8>>,
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
    /// Storage key (record name of a zip `.pth`, storage id of the legacy format).
    pub key: String,
    /// Element type.
    pub dtype: TensorDType,
    /// Number of elements.
    pub len: usize,
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
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(DictRef),
    Callable(Callable),
    Storage(StorageRef),
    Tensor(TensorRef),
    Bool(bool),
    Bytes(Rc<Vec<u8>>),
    Dtype(Rc<RefCell<NumpyDtype>>),
    Array(Rc<RefCell<NumpyArray>>),
    /// An `argparse.Namespace`: its attributes as a dict, never looked into by a loader.
    Namespace(DictRef),
    /// Internal stack marker.
    Mark,
}

impl Drop for Value {
    /// Dismantles nested containers with a work list instead of recursion.
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut v) = pending.pop() {
            v.take_children(&mut pending);
        }
    }
}

impl Value {
    /// Moves the children of a container that nothing else shares into `out`.
    fn take_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(t) => {
                if let Some(items) = Rc::get_mut(t) {
                    out.append(items);
                }
            }
            Value::List(l) => {
                if let Some(items) = Rc::get_mut(l) {
                    out.append(items.get_mut());
                }
            }
            Value::Dict(d) | Value::Namespace(d) => {
                if let Some(items) = Rc::get_mut(d) {
                    for (k, v) in items.get_mut().drain(..) {
                        out.push(k);
                        out.push(v);
                    }
                }
            }
            _ => {}
        }
    }

    /// The Python kind of the value, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
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
            Value::Bool(_) => "bool",
            Value::Bytes(_) => "bytes",
            Value::Dtype(_) => "numpy dtype",
            Value::Array(_) => "numpy array",
            Value::Namespace(_) => "argparse.Namespace",
            Value::Mark => "mark",
        }
    }
}

/// Reads one pickle program and returns the value it builds.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, String> {
    Machine::new(data).run().map(|p| p.value)
}

/// One pickle program read from the front of a stream of several (the legacy `torch.save`
/// format writes five in a row).
pub(crate) struct Program {
    /// The value the program builds.
    pub value: Value,
    /// Bytes the program took, up to and including its STOP.
    pub len: usize,
    /// Every storage its persistent ids named, in order.
    pub storages: Vec<StorageRef>,
}

/// Reads the pickle program at the start of `data`; what follows its STOP is left unread.
pub(crate) fn unpickle_front(data: &[u8]) -> Result<Program, String> {
    Machine::new(data).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_dict_and_refuses_code() {
        // {'a': 1, 'b': (2, 'x')} in protocol 2.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00x\x86u.";
        let v = unpickle(p).unwrap();
        let Value::Dict(d) = &v else {
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
