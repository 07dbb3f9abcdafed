//! ggml tensor types as stored in GGUF files: ids, block sizes, bytes per block.

use ryzanstein_kernels::DType;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $block:literal, $size:literal; )*) => {
        /// Every ggml tensor type id a GGUF file may name (ids from ggml's `enum ggml_type`).
        ///
        /// Ids 4 and 5 (Q4_2, Q4_3), 31..=33 (Q4_0_4_4 and friends) and 37..=38 (IQ4_NL_4_8 and
        /// friends) were removed from ggml and are rejected as unknown. Id 36 (IQ4_NL_4_4 in
        /// ggml, removed there) is bitnet.cpp's I2_S: 2-bit ternary codes, four per byte, then
        /// the tensor's one f32 scale in 32 more bytes ([`I2_S_TRAILER`]).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $( $variant = $id, )*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[$( GgmlType::$variant, )*];

            /// The type with ggml id `id`, or `None` for ids ggml does not (or no longer) define.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// ggml's name for the type (`"Q4_1"`, `"F32"`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $( GgmlType::$variant => $name, )*
                }
            }

            /// Values per block (1 for plain numeric types).
            pub fn block_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $block, )*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $size, )*
                }
            }
        }
    };
}

// Block and type sizes follow ggml's `type_traits` table (ggml.c). Q8_1 is 36 bytes there
// (f16 d, f16 s, 32 x i8); the Python `gguf` package still lists an older 40-byte layout.
ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    I2_S = 36, "I2_S", 4, 1;
    MXFP4 = 39, "MXFP4", 32, 17;
}

/// Bytes after an I2_S tensor's codes: its f32 scale, padded to 32 bytes (bitnet.cpp).
pub const I2_S_TRAILER: usize = 32;

impl GgmlType {
    /// Whether the engine reads this type as ternary codes (converted to the kernels'
    /// [`DType::I2S`] at load).
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
    }

    /// The kernels' dtype for this type, or `None` when the kernels cannot compute with it.
    pub fn to_dtype(self) -> Option<DType> {
        Some(match self {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            GgmlType::Q4_0 => DType::Q4_0,
            GgmlType::Q4_1 => DType::Q4_1,
            GgmlType::Q5_0 => DType::Q5_0,
            GgmlType::Q8_0 => DType::Q8_0,
            GgmlType::Q8_1 => DType::Q8_1,
            GgmlType::Q4_K => DType::Q4_K,
            GgmlType::Q6_K => DType::Q6_K,
            GgmlType::Q8_K => DType::Q8_K,
            _ => return None,
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_are_sane() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t as u32), Some(t), "{t}");
            assert!(t.block_size() >= 1 && t.type_size() >= 1, "{t}");
        }
        assert_eq!(GgmlType::ALL.len(), 33);
    }

    #[test]
    fn removed_and_unknown_ids_are_none() {
        for id in [4, 5, 31, 32, 33, 37, 38, 40, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn sizes_agree_with_the_kernels() {
        for &t in GgmlType::ALL {
            if let Some(d) = t.to_dtype() {
                assert_eq!(d.block_size(), t.block_size(), "{t}");
                assert_eq!(d.type_size(), t.type_size(), "{t}");
            }
        }
        assert_eq!(GgmlType::Q4_1.to_dtype(), Some(DType::Q4_1));
        assert_eq!(GgmlType::Q6_K.to_dtype(), Some(DType::Q6_K));
        assert_eq!(GgmlType::Q5_K.to_dtype(), None);
    }
}
