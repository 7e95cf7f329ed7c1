//! A corpus of hostile checkpoints, generated (no Python needed): pickles that would run a
//! command or Python code creating a canary file under `pickle.loads` / `torch.load`, reached
//! through each code-carrying pickle opcode, alone or hidden in a valid zip `.pth`; forged
//! sizes; memo tricks; truncations. Each case states the text the refusal must contain.

use std::io::Write;
use std::path::Path;

/// How a case is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// The pickle is `archive/data.pkl` of a zip `.pth` (with a float storage `archive/data/0`).
    Pth,
    /// The bytes are the whole file.
    Raw,
}

/// One hostile file.
#[derive(Debug, Clone)]
pub struct Case {
    /// File name (without extension).
    pub name: String,
    /// The pickle program (or whole file for [`Container::Raw`]).
    pub bytes: Vec<u8>,
    /// How it is stored.
    pub container: Container,
    /// Text the refusal must contain (what was refused).
    pub refused: &'static str,
    /// Whether the bytes would create the canary under Python's `pickle.loads`.
    pub executes: bool,
}

/// Pickle opcodes spelled out (protocol 2 unless stated).
pub mod op {
    pub const PROTO2: &[u8] = b"\x80\x02";
    pub const PROTO4: &[u8] = b"\x80\x04";
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPEND: u8 = b'a';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const OBJ: u8 = b'o';
    pub const NEWOBJ: u8 = 0x81;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const BINPUT: u8 = b'q';
    pub const BINGET: u8 = b'h';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const POP: u8 = b'0';
    pub const STOP: u8 = b'.';
}

/// A growing pickle program.
#[derive(Debug, Clone, Default)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    /// Starts a program with a PROTO opcode.
    pub fn new(proto: &[u8]) -> Self {
        Pickle(proto.to_vec())
    }
    /// Appends raw opcodes.
    pub fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// GLOBAL `module.name` (text form).
    pub fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// INST `module.name` (calls it on the items since the last MARK).
    pub fn inst(self, module: &str, name: &str) -> Self {
        self.op(format!("i{module}\n{name}\n").as_bytes())
    }
    /// BINUNICODE `s`.
    pub fn str(self, s: &str) -> Self {
        let mut b = vec![b'X'];
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        self.op(&b)
    }
    /// SHORT_BINUNICODE `s` (protocol 4).
    pub fn short_str(self, s: &str) -> Self {
        let mut b = vec![0x8c, s.len() as u8];
        b.extend_from_slice(s.as_bytes());
        self.op(&b)
    }
    /// A non-negative int below 2^63: BININT1, BININT2 or LONG1 (8 signed bytes).
    pub fn int(self, v: u64) -> Self {
        assert!(v < 1 << 63, "LONG1 of 8 bytes is signed");
        if v < 256 {
            self.op(&[b'K', v as u8])
        } else if v < 65536 {
            self.op(&[b'M', v as u8, (v >> 8) as u8])
        } else {
            let mut b = vec![0x8a, 8];
            b.extend_from_slice(&v.to_le_bytes());
            self.op(&b)
        }
    }
    /// The finished program.
    pub fn stop(self) -> Vec<u8> {
        self.op(&[op::STOP]).0
    }
}

/// Pushes the callable `module.name` applied to the one string `arg` (GLOBAL, TUPLE1, REDUCE).
fn call_global(p: Pickle, module: &str, name: &str, arg: &str) -> Pickle {
    p.global(module, name)
        .str(arg)
        .op(&[op::TUPLE1, op::REDUCE])
}

/// The start of a valid state dict: `OrderedDict()` with key `w` bound to a 2x2 float tensor
/// of storage `0`, left on the stack (SETITEMS still open: more key/value pairs may follow).
pub fn state_dict_head(proto: &[u8]) -> Pickle {
    Pickle::new(proto)
        .global("collections", "OrderedDict")
        .op(&[op::EMPTY_TUPLE, op::REDUCE, op::MARK])
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(&[op::MARK, op::MARK])
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .op(&[op::TUPLE, op::BINPERSID])
        .int(0)
        .int(2)
        .int(2)
        .op(&[op::TUPLE2])
        .int(2)
        .int(1)
        .op(&[op::TUPLE2, op::NEWFALSE])
        .global("collections", "OrderedDict")
        .op(&[op::EMPTY_TUPLE, op::REDUCE, op::TUPLE, op::REDUCE])
}

/// A complete valid state dict holding `w`.
pub fn valid_state_dict() -> Vec<u8> {
    state_dict_head(op::PROTO2).op(&[op::SETITEMS]).stop()
}

/// A tensor `_rebuild_tensor_v2` call of storage `0` with the given numbers, in a dict.
fn forged_tensor(storage_len: u64, offset: u64, size: u64, stride: u64) -> Vec<u8> {
    Pickle::new(op::PROTO2)
        .op(&[op::EMPTY_DICT])
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(&[op::MARK, op::MARK])
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(storage_len)
        .op(&[op::TUPLE, op::BINPERSID])
        .int(offset)
        .int(size)
        .op(&[op::TUPLE1])
        .int(stride)
        .op(&[op::TUPLE1, op::TUPLE, op::REDUCE, op::SETITEM])
        .stop()
}

/// The corpus; payloads create `canary` when Python unpickles them.
pub fn cases(canary: &Path) -> Vec<Case> {
    let c = canary.display().to_string();
    let shell = format!("touch '{c}'");
    let py = format!("open({c:?}, 'w').close()");
    let case = |name: &str, bytes: Vec<u8>, container, refused, executes| Case {
        name: name.to_string(),
        bytes,
        container,
        refused,
        executes,
    };
    let mut out = vec![
        // GLOBAL + REDUCE: os.system('touch canary').
        case(
            "global_reduce_os_system",
            call_global(Pickle::new(op::PROTO2), "os", "system", &shell).stop(),
            Container::Pth,
            "os.system",
            true,
        ),
        // The same on Linux's spelling of the module.
        case(
            "global_reduce_posix_system",
            call_global(Pickle::new(op::PROTO2), "posix", "system", &shell).stop(),
            Container::Pth,
            "posix.system",
            true,
        ),
        // STACK_GLOBAL (protocol 4) + REDUCE: builtins.exec(code).
        case(
            "stack_global_builtins_exec",
            Pickle::new(op::PROTO4)
                .short_str("builtins")
                .short_str("exec")
                .op(&[op::STACK_GLOBAL])
                .str(&py)
                .op(&[op::TUPLE1, op::REDUCE])
                .stop(),
            Container::Pth,
            "builtins.exec",
            true,
        ),
        // GLOBAL + REDUCE: builtins.eval(expression).
        case(
            "global_builtins_eval",
            call_global(Pickle::new(op::PROTO2), "builtins", "eval", &py).stop(),
            Container::Pth,
            "builtins.eval",
            true,
        ),
        // INST: subprocess.Popen(['touch', canary]) (and wait for it).
        case(
            "inst_subprocess_popen",
            Pickle::new(op::PROTO2)
                .op(&[op::MARK, op::EMPTY_LIST])
                .str("touch")
                .op(&[op::APPEND])
                .str(&c)
                .op(&[op::APPEND])
                .inst("subprocess", "Popen")
                .stop(),
            Container::Pth,
            "subprocess.Popen",
            true,
        ),
        // OBJ: os.system(command) as a "class" called on the items after the MARK.
        case(
            "obj_os_system",
            Pickle::new(op::PROTO2)
                .op(&[op::MARK])
                .global("os", "system")
                .str(&shell)
                .op(&[op::OBJ])
                .stop(),
            Container::Pth,
            "os.system",
            true,
        ),
        // OBJ on an accepted global is refused by opcode.
        case(
            "obj_ordered_dict",
            Pickle::new(op::PROTO2)
                .op(&[op::MARK])
                .global("collections", "OrderedDict")
                .op(&[op::OBJ])
                .stop(),
            Container::Pth,
            "OBJ",
            false,
        ),
        // NEWOBJ: cls.__new__(cls, *args) on an accepted global, refused by opcode.
        case(
            "newobj_ordered_dict",
            Pickle::new(op::PROTO2)
                .global("collections", "OrderedDict")
                .op(&[op::EMPTY_TUPLE, op::NEWOBJ])
                .stop(),
            Container::Pth,
            "NEWOBJ",
            false,
        ),
        // NEWOBJ of subprocess.Popen: the global is refused first.
        case(
            "newobj_subprocess_popen",
            Pickle::new(op::PROTO2)
                .global("subprocess", "Popen")
                .op(&[op::EMPTY_TUPLE, op::NEWOBJ])
                .stop(),
            Container::Pth,
            "subprocess.Popen",
            false,
        ),
        // NEWOBJ of the one constructed class, argparse.Namespace, with arguments.
        case(
            "newobj_namespace_with_arguments",
            Pickle::new(op::PROTO2)
                .global("argparse", "Namespace")
                .str("x")
                .op(&[op::TUPLE1, op::NEWOBJ])
                .stop(),
            Container::Pth,
            "NEWOBJ of argparse.Namespace",
            false,
        ),
        // REDUCE of argparse.Namespace (only NEWOBJ builds one).
        case(
            "reduce_namespace",
            Pickle::new(op::PROTO2)
                .global("argparse", "Namespace")
                .op(&[op::EMPTY_TUPLE, op::REDUCE])
                .stop(),
            Container::Pth,
            "only built by NEWOBJ",
            false,
        ),
        // A Namespace whose attributes (BUILD state) carry a call: the global is refused.
        case(
            "namespace_state_calls_os_system",
            call_global(
                Pickle::new(op::PROTO2)
                    .global("argparse", "Namespace")
                    .op(&[op::EMPTY_TUPLE, op::NEWOBJ, op::EMPTY_DICT])
                    .str("x"),
                "os",
                "system",
                &shell,
            )
            .op(&[op::SETITEM, op::BUILD])
            .stop(),
            Container::Pth,
            "os.system",
            true,
        ),
        // A Namespace's state that is not a dict.
        case(
            "namespace_state_not_a_dict",
            Pickle::new(op::PROTO2)
                .global("argparse", "Namespace")
                .op(&[op::EMPTY_TUPLE, op::NEWOBJ])
                .str("x")
                .op(&[op::BUILD])
                .stop(),
            Container::Pth,
            "Namespace state is a str",
            false,
        ),
        // collections.Counter on something that is not a dict.
        case(
            "counter_of_a_string",
            call_global(Pickle::new(op::PROTO2), "collections", "Counter", "abc").stop(),
            Container::Pth,
            "Counter is only accepted on one dict",
            false,
        ),
        // The legacy torch.save frame (magic number, protocol 1001, system info) around a
        // payload in the object pickle (torch.load would run it; the demonstration's single
        // pickle load stops after the magic number, hence `executes: false`).
        case(
            "legacy_frame_os_system",
            legacy_frame(call_global(Pickle::new(op::PROTO2), "os", "system", &shell).stop()),
            Container::Raw,
            "os.system",
            false,
        ),
        // BUILD: a state applied to something that is not a dict.
        case(
            "build_on_a_string",
            Pickle::new(op::PROTO2)
                .str("victim")
                .op(&[op::EMPTY_DICT, op::BUILD])
                .stop(),
            Container::Pth,
            "BUILD",
            false,
        ),
        // BUILD whose state carries a call: the call's global is refused.
        case(
            "build_state_calls_os_system",
            call_global(
                Pickle::new(op::PROTO2).op(&[op::EMPTY_DICT]),
                "os",
                "system",
                &shell,
            )
            .op(&[op::BUILD])
            .stop(),
            Container::Pth,
            "os.system",
            true,
        ),
        // REDUCE of something that is not a callable.
        case(
            "reduce_of_a_string",
            Pickle::new(op::PROTO2)
                .str("os.system")
                .str(&shell)
                .op(&[op::TUPLE1, op::REDUCE])
                .stop(),
            Container::Pth,
            "REDUCE of a str",
            false,
        ),
        // A valid state dict with a payload as the value of a second key.
        case(
            "valid_state_dict_with_payload",
            call_global(state_dict_head(op::PROTO2).str("x"), "os", "system", &shell)
                .op(&[op::SETITEMS])
                .stop(),
            Container::Pth,
            "os.system",
            true,
        ),
        // The copyreg extension registry (EXT1) names callables by number.
        case(
            "ext1",
            Pickle::new(op::PROTO2).op(&[0x82, 1]).stop(),
            Container::Pth,
            "EXT1",
            false,
        ),
        // Forged sizes: a storage whose byte size overflows, a view larger than its storage
        // (a zero stride), a view whose extent overflows, a string longer than the file.
        case(
            "huge_storage",
            forged_tensor(1 << 62, 0, 1, 1),
            Container::Pth,
            "overflows",
            false,
        ),
        case(
            "huge_view_zero_stride",
            forged_tensor(4, 0, 1 << 40, 0),
            Container::Pth,
            "larger than its storage",
            false,
        ),
        case(
            "huge_view_offset",
            forged_tensor(4, u64::MAX >> 1, 4, 1 << 62),
            Container::Pth,
            "overflows",
            false,
        ),
        case(
            "huge_string",
            Pickle::new(op::PROTO4)
                .op(&[0x8d])
                .op(&(u64::MAX >> 1).to_le_bytes())
                .op(b"abc")
                .stop(),
            Container::Pth,
            "truncated",
            false,
        ),
        // Memo tricks: a dict that contains itself, a missing memo entry.
        case(
            "dict_containing_itself",
            Pickle::new(op::PROTO2)
                .op(&[op::EMPTY_DICT, op::BINPUT, 0])
                .str("a")
                .op(&[op::BINGET, 0, op::SETITEM])
                .stop(),
            Container::Pth,
            "nested deeper",
            false,
        ),
        // The same as a bare pickle, read as a detectron2-style `.pkl` of numpy arrays.
        case(
            "pkl_dict_containing_itself",
            Pickle::new(op::PROTO2)
                .op(&[op::EMPTY_DICT, op::BINPUT, 0])
                .str("a")
                .op(&[op::BINGET, 0, op::SETITEM])
                .stop(),
            Container::Raw,
            "nested deeper",
            false,
        ),
        case(
            "missing_memo_entry",
            Pickle::new(op::PROTO2).op(&[op::BINGET, 7]).stop(),
            Container::Pth,
            "memo entry 7",
            false,
        ),
        // Legacy and foreign files.
        case(
            "bare_pickle_os_system",
            call_global(Pickle::new(op::PROTO2), "os", "system", &shell).stop(),
            Container::Raw,
            "os.system",
            true,
        ),
        case(
            "random_bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            Container::Raw,
            "not a checkpoint",
            false,
        ),
    ];
    // Memo references doubling a dict 40 times: {'a': d, 'b': d} of the previous d, so 2^40
    // paths lead through shared dicts.
    let mut p = Pickle::new(op::PROTO2).op(&[op::EMPTY_DICT, op::BINPUT, 0, op::POP]);
    for i in 0..40u8 {
        p = p
            .op(&[op::EMPTY_DICT])
            .str("a")
            .op(&[op::BINGET, i, op::SETITEM])
            .str("b")
            .op(&[op::BINGET, i, op::SETITEM, op::BINPUT, i + 1, op::POP]);
    }
    let bomb = p.op(&[op::BINGET, 40]).stop();
    out.push(case(
        "memo_doubling_dicts",
        bomb,
        Container::Pth,
        "dict entries",
        false,
    ));
    out
}

/// The first three pickles of the legacy `torch.save` format (magic number, protocol version
/// 1001, a little-endian system-info dict) followed by `object`.
fn legacy_frame(object: Vec<u8>) -> Vec<u8> {
    let mut b = Pickle::new(op::PROTO2)
        .op(&[
            0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
        ])
        .stop();
    b.extend(Pickle::new(op::PROTO2).int(1001).stop());
    b.extend(
        Pickle::new(op::PROTO2)
            .op(&[op::EMPTY_DICT])
            .str("little_endian")
            .op(&[0x88, op::SETITEM])
            .stop(),
    );
    b.extend(object);
    b
}

/// Writes a case to `dir/<name>.pth`: a zip with `archive/data.pkl`, `archive/data/0`
/// (four floats) and `archive/version`, or the raw bytes.
pub fn write_case(dir: &Path, case: &Case) -> std::path::PathBuf {
    let path = dir.join(format!("{}.pth", case.name));
    match case.container {
        Container::Raw => std::fs::write(&path, &case.bytes).unwrap(),
        Container::Pth => {
            let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            write_zip(
                &path,
                &[
                    ("archive/data.pkl", case.bytes.as_slice()),
                    ("archive/byteorder", b"little"),
                    ("archive/data/0", &storage),
                    ("archive/version", b"3\n"),
                ],
            );
        }
    }
    path
}

/// Writes a stored (uncompressed) zip archive.
pub fn write_zip(path: &Path, records: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in records {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}
