//! Element types of stored tensors (shared by the pickle reader and the checkpoint loader).

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorDType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean (one byte).
    Bool,
}

impl TensorDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TensorDType::F64 | TensorDType::I64 => 8,
            TensorDType::F32 | TensorDType::I32 => 4,
            TensorDType::F16 | TensorDType::BF16 | TensorDType::I16 => 2,
            TensorDType::I8 | TensorDType::U8 | TensorDType::Bool => 1,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            TensorDType::F32 | TensorDType::F64 | TensorDType::F16 | TensorDType::BF16
        )
    }

    /// The PyTorch name (`float32`, `int64`, ...).
    pub fn torch_name(self) -> &'static str {
        match self {
            TensorDType::F32 => "float32",
            TensorDType::F64 => "float64",
            TensorDType::F16 => "float16",
            TensorDType::BF16 => "bfloat16",
            TensorDType::I64 => "int64",
            TensorDType::I32 => "int32",
            TensorDType::I16 => "int16",
            TensorDType::I8 => "int8",
            TensorDType::U8 => "uint8",
            TensorDType::Bool => "bool",
        }
    }
}

impl TensorDType {
    /// The stored type of a candle tensor of type `dtype` (`None` for candle's 8/6/4-bit
    /// floats and u32, which checkpoints of this project never hold).
    pub fn of(dtype: candle_core::DType) -> Option<Self> {
        use candle_core::DType as D;
        Some(match dtype {
            D::F32 => TensorDType::F32,
            D::F64 => TensorDType::F64,
            D::F16 => TensorDType::F16,
            D::BF16 => TensorDType::BF16,
            D::I64 => TensorDType::I64,
            D::I32 => TensorDType::I32,
            D::I16 => TensorDType::I16,
            D::U8 => TensorDType::U8,
            _ => return None,
        })
    }
}
