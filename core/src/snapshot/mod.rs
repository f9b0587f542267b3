//! The streaming snapshot codec (placeholder until written).
