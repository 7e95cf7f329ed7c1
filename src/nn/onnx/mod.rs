//! A minimal reader of ONNX model files (protocol-buffer wire format, no code generation).
//!
//! It decodes the parts of `ModelProto` that running a graph needs: the opset imports, the
//! graph's nodes (with attributes), initializers, inputs and outputs. Tensor payloads borrow
//! from the file's bytes; [`TensorProto::to_f32`] converts FLOAT, FLOAT16 and DOUBLE data.
//! Unknown fields are skipped, as protobuf readers do.

use crate::error::{Error, Result};
use std::path::Path;

/// A decoding failure: what was being read, and why.
type WireResult<T> = std::result::Result<T, String>;

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: a sub-message, string, bytes or packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// Sequential reader of protobuf fields.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "varint longer than 10 bytes ending at byte {}",
            self.pos
        ))
    }

    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field number and value, or `None` at the end of the message.
    fn next_field(&mut self) -> WireResult<Option<(u64, Wire<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            t => return Err(format!("unsupported wire type {t} for field {field}")),
        };
        Ok(Some((field, wire)))
    }
}

fn expect_bytes<'a>(wire: Wire<'a>, what: &str) -> WireResult<&'a [u8]> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        other => Err(format!(
            "{what}: expected a length-delimited field, got {other:?}"
        )),
    }
}

fn expect_str<'a>(wire: Wire<'a>, what: &str) -> WireResult<&'a str> {
    std::str::from_utf8(expect_bytes(wire, what)?).map_err(|e| format!("{what}: {e}"))
}

fn expect_varint(wire: Wire<'_>, what: &str) -> WireResult<u64> {
    match wire {
        Wire::Varint(v) => Ok(v),
        other => Err(format!("{what}: expected a varint, got {other:?}")),
    }
}

/// Appends a repeated integer field, packed or not (int32/int64 use two's complement varints).
fn push_ints(wire: Wire<'_>, out: &mut Vec<i64>, what: &str) -> WireResult<()> {
    match wire {
        Wire::Varint(v) => out.push(v as i64),
        Wire::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint().map_err(|e| format!("{what}: {e}"))? as i64);
            }
        }
        other => return Err(format!("{what}: expected integers, got {other:?}")),
    }
    Ok(())
}

/// Appends a repeated float field, packed or not.
fn push_floats(wire: Wire<'_>, out: &mut Vec<f32>, what: &str) -> WireResult<()> {
    match wire {
        Wire::Fixed32(v) => out.push(f32::from_bits(v)),
        Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
        ),
        other => return Err(format!("{what}: expected floats, got {other:?}")),
    }
    Ok(())
}

/// Prefixes a decoding error with the field path it occurred in.
fn within<T>(what: impl std::fmt::Display, r: WireResult<T>) -> WireResult<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Element types of `TensorProto.data_type` that this reader converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// 32-bit float (1).
    Float,
    /// Unsigned byte (2).
    Uint8,
    /// 32-bit integer (6).
    Int32,
    /// 64-bit integer (7).
    Int64,
    /// IEEE half precision (10).
    Float16,
    /// 64-bit float (11).
    Double,
    /// Any other code.
    Other(i32),
}

impl DataType {
    fn from_code(code: i32) -> Self {
        match code {
            1 => DataType::Float,
            2 => DataType::Uint8,
            6 => DataType::Int32,
            7 => DataType::Int64,
            10 => DataType::Float16,
            11 => DataType::Double,
            c => DataType::Other(c),
        }
    }
}

/// A tensor (initializer or attribute value); payloads borrow from the model bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorProto<'a> {
    /// Tensor name (initializers are referenced by it).
    pub name: &'a str,
    /// Shape.
    pub dims: Vec<i64>,
    /// Element type.
    pub data_type: DataType,
    raw_data: Option<&'a [u8]>,
    float_data: Vec<f32>,
    int32_data: Vec<i64>,
    external: bool,
}

impl<'a> TensorProto<'a> {
    fn parse(buf: &'a [u8]) -> WireResult<Self> {
        let mut t = TensorProto {
            name: "",
            dims: Vec::new(),
            data_type: DataType::Other(0),
            raw_data: None,
            float_data: Vec::new(),
            int32_data: Vec::new(),
            external: false,
        };
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.next_field()? {
            match field {
                1 => push_ints(wire, &mut t.dims, "dims")?,
                2 => t.data_type = DataType::from_code(expect_varint(wire, "data_type")? as i32),
                4 => push_floats(wire, &mut t.float_data, "float_data")?,
                5 => push_ints(wire, &mut t.int32_data, "int32_data")?,
                8 => t.name = expect_str(wire, "name")?,
                9 => t.raw_data = Some(expect_bytes(wire, "raw_data")?),
                14 => t.external = expect_varint(wire, "data_location")? == 1,
                _ => {}
            }
        }
        Ok(t)
    }

    /// Number of elements given by `dims` (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d.max(0) as usize).product()
    }

    /// Shape as `usize`s.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d.max(0) as usize).collect()
    }

    fn checked<T>(&self, values: Vec<T>) -> std::result::Result<Vec<T>, String> {
        if values.len() != self.numel() {
            return Err(format!(
                "tensor {:?} holds {} values but its shape {:?} needs {}",
                self.name,
                values.len(),
                self.dims,
                self.numel()
            ));
        }
        Ok(values)
    }

    /// Decodes little-endian elements of `N` bytes from `raw_data`.
    fn decode_raw<const N: usize, T>(
        &self,
        raw: &[u8],
        decode: impl Fn([u8; N]) -> T,
    ) -> std::result::Result<Vec<T>, String> {
        if !raw.len().is_multiple_of(N) {
            return Err(format!(
                "tensor {:?}: raw_data of {} bytes is not a multiple of {N}",
                self.name,
                raw.len()
            ));
        }
        Ok(raw
            .chunks_exact(N)
            .map(|c| decode(c.try_into().unwrap()))
            .collect())
    }

    /// The values as `f32` (FLOAT as is, FLOAT16 and raw DOUBLE converted), checked against the
    /// shape.
    pub fn to_f32(&self) -> std::result::Result<Vec<f32>, String> {
        if self.external {
            return Err(format!(
                "tensor {:?} keeps its data in an external file, which is not supported",
                self.name
            ));
        }
        let values = match (self.data_type, self.raw_data) {
            (DataType::Float, Some(raw)) => self.decode_raw(raw, f32::from_le_bytes)?,
            (DataType::Float, None) => self.float_data.clone(),
            (DataType::Float16, Some(raw)) => {
                self.decode_raw(raw, |b| half::f16::from_le_bytes(b).to_f32())?
            }
            // FLOAT16 values without raw_data are stored as their bit patterns in int32_data.
            (DataType::Float16, None) => self
                .int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f32())
                .collect(),
            (DataType::Double, Some(raw)) => {
                self.decode_raw(raw, |b| f64::from_le_bytes(b) as f32)?
            }
            (t, _) => {
                return Err(format!(
                    "tensor {:?} has element type {t:?}, not a floating-point type",
                    self.name
                ))
            }
        };
        self.checked(values)
    }
}

/// The value of a node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue<'a> {
    /// A float.
    Float(f32),
    /// An integer.
    Int(i64),
    /// A byte string.
    String(&'a [u8]),
    /// A tensor.
    Tensor(TensorProto<'a>),
    /// A sub-graph (control-flow bodies).
    Graph(Box<Graph<'a>>),
    /// Floats.
    Floats(Vec<f32>),
    /// Integers.
    Ints(Vec<i64>),
    /// Byte strings.
    Strings(Vec<&'a [u8]>),
}

/// A named node attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute<'a> {
    /// Attribute name.
    pub name: &'a str,
    /// Attribute value.
    pub value: AttributeValue<'a>,
}

impl<'a> Attribute<'a> {
    fn parse(buf: &'a [u8]) -> WireResult<Self> {
        let mut name = "";
        let (mut f, mut i, mut s, mut t, mut g) = (None, None, None, None, None);
        let (mut floats, mut ints, mut strings) = (Vec::new(), Vec::new(), Vec::new());
        let mut declared = 0u64;
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.next_field()? {
            match field {
                1 => name = expect_str(wire, "name")?,
                2 => {
                    let mut v = Vec::new();
                    push_floats(wire, &mut v, "f")?;
                    f = v.first().copied();
                }
                3 => i = Some(expect_varint(wire, "i")? as i64),
                4 => s = Some(expect_bytes(wire, "s")?),
                5 => t = Some(within("t", TensorProto::parse(expect_bytes(wire, "t")?))?),
                6 => g = Some(within("g", Graph::parse(expect_bytes(wire, "g")?))?),
                7 => push_floats(wire, &mut floats, "floats")?,
                8 => push_ints(wire, &mut ints, "ints")?,
                9 => strings.push(expect_bytes(wire, "strings")?),
                20 => declared = expect_varint(wire, "type")?,
                _ => {}
            }
        }
        // AttributeType codes: FLOAT 1, INT 2, STRING 3, TENSOR 4, GRAPH 5, FLOATS 6, INTS 7,
        // STRINGS 8. Without a declared type (old writers) the populated field decides.
        let value = match declared {
            1 => AttributeValue::Float(f.unwrap_or(0.0)),
            2 => AttributeValue::Int(i.unwrap_or(0)),
            3 => AttributeValue::String(s.unwrap_or(b"")),
            4 => AttributeValue::Tensor(t.ok_or("TENSOR attribute without a tensor")?),
            5 => AttributeValue::Graph(Box::new(g.ok_or("GRAPH attribute without a graph")?)),
            6 => AttributeValue::Floats(floats),
            7 => AttributeValue::Ints(ints),
            8 => AttributeValue::Strings(strings),
            _ => match (f, i, s, t, g) {
                (Some(v), ..) => AttributeValue::Float(v),
                (_, Some(v), ..) => AttributeValue::Int(v),
                (_, _, Some(v), ..) => AttributeValue::String(v),
                (_, _, _, Some(v), _) => AttributeValue::Tensor(v),
                (.., Some(v)) => AttributeValue::Graph(Box::new(v)),
                _ if !floats.is_empty() => AttributeValue::Floats(floats),
                _ if !strings.is_empty() => AttributeValue::Strings(strings),
                _ => AttributeValue::Ints(ints),
            },
        };
        Ok(Attribute { name, value })
    }
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    /// Node name (may be empty).
    pub name: &'a str,
    /// Operator, e.g. `Conv`.
    pub op_type: &'a str,
    /// Operator domain; empty for the default ONNX domain.
    pub domain: &'a str,
    /// Input value names (an empty name is an omitted optional input).
    pub inputs: Vec<&'a str>,
    /// Output value names.
    pub outputs: Vec<&'a str>,
    /// Attributes.
    pub attributes: Vec<Attribute<'a>>,
}

impl<'a> Node<'a> {
    fn parse(buf: &'a [u8]) -> WireResult<Self> {
        let mut n = Node {
            name: "",
            op_type: "",
            domain: "",
            inputs: Vec::new(),
            outputs: Vec::new(),
            attributes: Vec::new(),
        };
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.next_field()? {
            match field {
                1 => n.inputs.push(expect_str(wire, "input")?),
                2 => n.outputs.push(expect_str(wire, "output")?),
                3 => n.name = expect_str(wire, "name")?,
                4 => n.op_type = expect_str(wire, "op_type")?,
                5 => {
                    let k = n.attributes.len();
                    let a = Attribute::parse(expect_bytes(wire, "attribute")?);
                    n.attributes
                        .push(within(format_args!("attribute[{k}]"), a)?);
                }
                7 => n.domain = expect_str(wire, "domain")?,
                _ => {}
            }
        }
        Ok(n)
    }

    /// The attribute called `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue<'a>> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    /// An integer-list attribute, or `default` when absent.
    pub fn ints(&self, name: &str, default: &[i64]) -> std::result::Result<Vec<i64>, String> {
        match self.attribute(name) {
            None => Ok(default.to_vec()),
            Some(AttributeValue::Ints(v)) => Ok(v.clone()),
            Some(other) => Err(self.describe_mismatch(name, "integers", other)),
        }
    }

    /// An integer attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> std::result::Result<i64, String> {
        match self.attribute(name) {
            None => Ok(default),
            Some(AttributeValue::Int(v)) => Ok(*v),
            Some(other) => Err(self.describe_mismatch(name, "an integer", other)),
        }
    }

    fn describe_mismatch(&self, name: &str, expected: &str, got: &AttributeValue) -> String {
        format!(
            "{} node {:?}: attribute {name} should be {expected}, got {got:?}",
            self.op_type, self.name
        )
    }
}

/// A computation graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph<'a> {
    /// Graph name.
    pub name: &'a str,
    /// Nodes in file order (ONNX requires topological order, but not every writer obeys).
    pub nodes: Vec<Node<'a>>,
    /// Constant tensors (weights).
    pub initializers: Vec<TensorProto<'a>>,
    /// Names of the graph inputs (may include initializers in old files).
    pub inputs: Vec<&'a str>,
    /// Names of the graph outputs.
    pub outputs: Vec<&'a str>,
}

/// The `name` field of a `ValueInfoProto`.
fn value_info_name(buf: &[u8]) -> WireResult<&str> {
    let mut r = Reader::new(buf);
    while let Some((field, wire)) = r.next_field()? {
        if field == 1 {
            return expect_str(wire, "name");
        }
    }
    Ok("")
}

impl<'a> Graph<'a> {
    fn parse(buf: &'a [u8]) -> WireResult<Self> {
        let mut g = Graph::default();
        let mut r = Reader::new(buf);
        while let Some((field, wire)) = r.next_field()? {
            match field {
                1 => {
                    let k = g.nodes.len();
                    let n = Node::parse(expect_bytes(wire, "node")?);
                    g.nodes.push(within(format_args!("node[{k}]"), n)?);
                }
                2 => g.name = expect_str(wire, "name")?,
                5 => {
                    let k = g.initializers.len();
                    let t = TensorProto::parse(expect_bytes(wire, "initializer")?);
                    g.initializers
                        .push(within(format_args!("initializer[{k}]"), t)?);
                }
                11 => g.inputs.push(within(
                    "input",
                    value_info_name(expect_bytes(wire, "input")?),
                )?),
                12 => g.outputs.push(within(
                    "output",
                    value_info_name(expect_bytes(wire, "output")?),
                )?),
                _ => {}
            }
        }
        Ok(g)
    }

    /// The initializer called `name`, if any.
    pub fn initializer(&self, name: &str) -> Option<&TensorProto<'a>> {
        self.initializers.iter().find(|t| t.name == name)
    }
}

/// A whole model file.
#[derive(Debug, Clone, PartialEq)]
pub struct Model<'a> {
    /// ONNX IR version.
    pub ir_version: i64,
    /// Operator-set imports: (domain, version); an empty domain is the default ONNX domain.
    pub opsets: Vec<(&'a str, i64)>,
    /// Name of the exporter.
    pub producer_name: &'a str,
    /// The main graph.
    pub graph: Graph<'a>,
}

impl<'a> Model<'a> {
    /// Decodes a model from the bytes of an `.onnx` file; `path` names the file in errors.
    pub fn parse(bytes: &'a [u8], path: &Path) -> Result<Self> {
        Self::parse_wire(bytes).map_err(|e| Error::parse(path, format!("ONNX model: {e}")))
    }

    fn parse_wire(bytes: &'a [u8]) -> WireResult<Self> {
        let mut m = Model {
            ir_version: 0,
            opsets: Vec::new(),
            producer_name: "",
            graph: Graph::default(),
        };
        let mut has_graph = false;
        let mut r = Reader::new(bytes);
        while let Some((field, wire)) = r.next_field()? {
            match field {
                1 => m.ir_version = expect_varint(wire, "ir_version")? as i64,
                2 => m.producer_name = expect_str(wire, "producer_name")?,
                7 => {
                    m.graph = within("graph", Graph::parse(expect_bytes(wire, "graph")?))?;
                    has_graph = true;
                }
                8 => m.opsets.push(within(
                    "opset_import",
                    parse_opset(expect_bytes(wire, "opset_import")?),
                )?),
                _ => {}
            }
        }
        if !has_graph {
            return Err("no graph (is this an ONNX model file?)".into());
        }
        Ok(m)
    }

    /// The version of the default ONNX operator set, if imported.
    pub fn opset(&self) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| d.is_empty() || *d == "ai.onnx")
            .map(|&(_, v)| v)
    }
}

fn parse_opset(buf: &[u8]) -> WireResult<(&str, i64)> {
    let (mut domain, mut version) = ("", 0);
    let mut r = Reader::new(buf);
    while let Some((field, wire)) = r.next_field()? {
        match field {
            1 => domain = expect_str(wire, "domain")?,
            2 => version = expect_varint(wire, "version")? as i64,
            _ => {}
        }
    }
    Ok((domain, version))
}

#[cfg(test)]
mod tests;
