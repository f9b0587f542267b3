//! The fixed-capacity store (placeholder until written).
