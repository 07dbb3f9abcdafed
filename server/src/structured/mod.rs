//! Structured output: generation constrained to JSON that a schema accepts.
//!
//! - [`schema`]: the supported JSON Schema subset compiled into a [`Grammar`].
//! - [`matcher`]: a pushdown automaton over bytes that follows the output against it.
//! - [`mask`]: per sampling step, the tokens that can extend the output ([`Constraint`]).
//!
//! The engine keeps one [`Constraint`] per constrained sequence: before each draw the logits
//! of refused tokens become `-inf`, and the drawn token advances the matcher.

pub mod mask;
pub mod matcher;
pub mod schema;

pub use mask::{Constraint, TokenTable};
pub use schema::Grammar;
