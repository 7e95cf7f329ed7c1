//! Tests of the ONNX reader.

use super::*;

/// Test-only protobuf writer used to hand-build messages.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn put(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn varint(mut self, field: u64, v: u64) -> Self {
        self.put(field << 3);
        self.put(v);
        self
    }
    fn bytes(mut self, field: u64, b: &[u8]) -> Self {
        self.put(field << 3 | 2);
        self.put(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn msg(self, field: u64, m: Msg) -> Self {
        self.bytes(field, &m.0)
    }
    fn fixed32(mut self, field: u64, v: u32) -> Self {
        self.put(field << 3 | 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

#[test]
fn varints_decode_as_in_the_protobuf_specification() {
    // Examples from the protobuf encoding guide: 1 = 01, 150 = 96 01, 300 = ac 02.
    for (bytes, value) in [
        (&[0x01u8][..], 1u64),
        (&[0x96, 0x01], 150),
        (&[0xac, 0x02], 300),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            u64::MAX,
        ),
    ] {
        assert_eq!(Reader::new(bytes).varint().unwrap(), value);
    }
    // -1 as int64 is ten bytes of all ones; it reads back as -1 through `as i64`.
    let mut out = Vec::new();
    push_ints(Wire::Varint(u64::MAX), &mut out, "x").unwrap();
    assert_eq!(out, vec![-1]);
    assert!(Reader::new(&[0x80, 0x80]).varint().is_err());
    assert!(Reader::new(&[0xff; 11]).varint().is_err());
}

#[test]
fn packed_and_unpacked_repeated_fields_are_both_read() {
    // Packed int64s 3, 270, 86942 (encoding guide example: 03 8e 02 9e a7 05).
    let mut ints = Vec::new();
    push_ints(
        Wire::Bytes(&[0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]),
        &mut ints,
        "x",
    )
    .unwrap();
    push_ints(Wire::Varint(7), &mut ints, "x").unwrap();
    assert_eq!(ints, vec![3, 270, 86942, 7]);
    let mut floats = Vec::new();
    let packed: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    push_floats(Wire::Bytes(&packed), &mut floats, "x").unwrap();
    push_floats(Wire::Fixed32(0.25f32.to_bits()), &mut floats, "x").unwrap();
    assert_eq!(floats, vec![1.5, -2.0, 0.25]);
    assert!(push_floats(Wire::Bytes(&[0, 0, 0]), &mut floats, "x").is_err());
}

fn tiny_model() -> Vec<u8> {
    let weight: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let half_bias: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-1.25)]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let conv = Msg::default()
        .bytes(1, b"x")
        .bytes(1, b"w")
        .bytes(1, b"b")
        .bytes(2, b"y")
        .bytes(3, b"conv0")
        .bytes(4, b"Conv")
        // ints attribute, packed, type INTS (7)
        .msg(
            5,
            Msg::default()
                .bytes(1, b"dilations")
                .bytes(8, &[0x02, 0x02])
                .varint(20, 7),
        )
        // int attribute, type INT (2), value -1 (ten-byte varint)
        .msg(
            5,
            Msg::default()
                .bytes(1, b"axis")
                .varint(3, u64::MAX)
                .varint(20, 2),
        )
        // string attribute, no declared type (old writers)
        .msg(5, Msg::default().bytes(1, b"mode").bytes(4, b"linear"));
    let relu = Msg::default()
        .bytes(1, b"y")
        .bytes(2, b"z")
        .bytes(4, b"Relu")
        .msg(
            5,
            Msg::default()
                .bytes(1, b"alpha")
                .fixed32(2, 0.5f32.to_bits()),
        );
    let w = Msg::default()
        .bytes(1, &[0x01, 0x01, 0x02, 0x02])
        .varint(2, 1)
        .bytes(8, b"w")
        .bytes(9, &weight);
    let b = Msg::default()
        .varint(1, 2)
        .varint(2, 10)
        .bytes(8, b"b")
        .bytes(9, &half_bias);
    // FLOAT16 without raw_data: bit patterns in int32_data (0x3c00 = 1.0).
    let c = Msg::default()
        .varint(1, 1)
        .varint(2, 10)
        .bytes(8, b"c")
        .varint(5, 0x3c00);
    let graph = Msg::default()
        .msg(1, conv)
        .msg(1, relu)
        .bytes(2, b"tiny")
        .msg(5, w)
        .msg(5, b)
        .msg(5, c)
        .msg(11, Msg::default().bytes(1, b"x"))
        .msg(12, Msg::default().bytes(1, b"z"))
        .bytes(99, b"ignored unknown field");
    Msg::default()
        .varint(1, 8)
        .bytes(2, b"handmade")
        .msg(7, graph)
        .msg(8, Msg::default().bytes(1, b"").varint(2, 15))
        .0
}

#[test]
fn a_hand_built_model_decodes_completely() {
    let bytes = tiny_model();
    let m = Model::parse(&bytes, Path::new("tiny.onnx")).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.producer_name, "handmade");
    assert_eq!(m.opset(), Some(15));
    let g = &m.graph;
    assert_eq!(g.name, "tiny");
    assert_eq!(
        (g.inputs.clone(), g.outputs.clone()),
        (vec!["x"], vec!["z"])
    );
    assert_eq!(g.nodes.len(), 2);
    let conv = &g.nodes[0];
    assert_eq!((conv.op_type, conv.name), ("Conv", "conv0"));
    assert_eq!(conv.inputs, vec!["x", "w", "b"]);
    assert_eq!(conv.outputs, vec!["y"]);
    assert_eq!(conv.ints("dilations", &[1, 1]).unwrap(), vec![2, 2]);
    assert_eq!(conv.ints("strides", &[1, 1]).unwrap(), vec![1, 1]);
    assert_eq!(conv.int("axis", 0).unwrap(), -1);
    assert_eq!(
        conv.attribute("mode"),
        Some(&AttributeValue::String(b"linear"))
    );
    assert!(conv.int("dilations", 0).is_err());
    assert_eq!(
        g.nodes[1].attribute("alpha"),
        Some(&AttributeValue::Float(0.5))
    );
    let w = g.initializer("w").unwrap();
    assert_eq!(w.shape(), vec![1, 1, 2, 2]);
    assert_eq!(w.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        g.initializer("b").unwrap().to_f32().unwrap(),
        vec![0.5, -1.25]
    );
    assert_eq!(g.initializer("c").unwrap().to_f32().unwrap(), vec![1.0]);
}

#[test]
fn corrupt_models_are_errors_naming_the_file_and_place() {
    let bytes = tiny_model();
    let e = Model::parse(&bytes[..bytes.len() - 10], Path::new("cut.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.onnx") && e.contains("past the end"), "{e}");
    let e = Model::parse(b"\x08\x01", Path::new("nograph.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no graph"), "{e}");
    // A weight whose payload does not match its shape.
    let bad = Msg::default()
        .bytes(1, &[0x03])
        .varint(2, 1)
        .bytes(8, b"w")
        .bytes(9, &[0; 8]);
    let t = TensorProto::parse(&bad.0).unwrap();
    assert!(t.to_f32().unwrap_err().contains("needs 3"));
}
