//! Wire messages and framing (placeholder until written).
