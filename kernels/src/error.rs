//! The crate's one error type.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("{op}: shape mismatch: {what}")]
    Shape { op: &'static str, what: String },
    #[error(
        "{op}: {dtype:?} rows of {cols} values are not a whole number of {block}-value blocks"
    )]
    RaggedBlocks {
        op: &'static str,
        dtype: crate::DType,
        cols: usize,
        block: usize,
    },
    #[error("{op}: weight type {dtype:?} is not supported here")]
    Unsupported {
        op: &'static str,
        dtype: crate::DType,
    },
}
