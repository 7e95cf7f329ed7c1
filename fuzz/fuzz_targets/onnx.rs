//! ONNX model files: the protobuf reader and the initializers' values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = deva::nn::onnx::Model::parse(data, std::path::Path::new("fuzz.onnx")) else {
        return;
    };
    let _ = model.opset();
    for t in &model.graph.initializers {
        let _ = t.shape();
        let _ = t.to_f32();
    }
});
