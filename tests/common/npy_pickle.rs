//! A tiny writer of protocol-2 pickles of nested dicts of float32 numpy arrays, laid out
//! exactly as `pickle.dump(obj, f, protocol=2)` writes them with numpy (minus memo entries):
//! `numpy.core.multiarray._reconstruct`, a `numpy.dtype('f4')` with its byte-order state,
//! and the data as `_codecs.encode(<latin-1 text>, 'latin1')`.
#![allow(dead_code)]

/// A value to pickle.
pub enum Obj {
    /// A float32 array (shape, row-major values).
    Array(Vec<usize>, Vec<f32>),
    /// A string.
    Str(String),
    /// A dict with string keys, in order.
    Dict(Vec<(String, Obj)>),
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

fn int(out: &mut Vec<u8>, v: i32) {
    out.push(b'J');
    out.extend_from_slice(&v.to_le_bytes());
}

/// `_codecs.encode(text, 'latin1')` for raw bytes.
fn latin1_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    global(out, "_codecs", "encode");
    let text: String = bytes.iter().map(|&b| b as char).collect();
    unicode(out, &text);
    unicode(out, "latin1");
    out.push(0x86);
    out.push(b'R');
}

fn write(out: &mut Vec<u8>, obj: &Obj) {
    match obj {
        Obj::Str(s) => unicode(out, s),
        Obj::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    unicode(out, k);
                    write(out, v);
                }
                out.push(b'u');
            }
        }
        Obj::Array(shape, values) => {
            global(out, "numpy.core.multiarray", "_reconstruct");
            global(out, "numpy", "ndarray");
            int(out, 0);
            out.push(0x85);
            latin1_bytes(out, b"b");
            out.push(0x87);
            out.push(b'R');
            // State: (1, shape, dtype, fortran, data).
            out.push(b'(');
            int(out, 1);
            out.push(b'(');
            for &d in shape {
                int(out, d as i32);
            }
            out.push(b't');
            global(out, "numpy", "dtype");
            unicode(out, "f4");
            out.push(0x89);
            out.push(0x88);
            out.push(0x87);
            out.push(b'R');
            out.push(b'(');
            int(out, 3);
            unicode(out, "<");
            out.extend_from_slice(b"NNN");
            int(out, -1);
            int(out, -1);
            int(out, 0);
            out.push(b't');
            out.push(b'b');
            out.push(0x89);
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            latin1_bytes(out, &data);
            out.push(b't');
            out.push(b'b');
        }
    }
}

/// The protocol-2 pickle of `obj`.
pub fn dumps(obj: &Obj) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    write(&mut out, obj);
    out.push(b'.');
    out
}
