//! Dockerfiles and `.dockerignore` files as typed data, for berth's native builder.
//!
//! [`parse`] follows docker's own parser (buildkit's `frontend/dockerfile/parser` and
//! `instructions` packages): parser directives, comments, line continuations, JSON and
//! shell forms, flags, and the per-instruction argument rules, with docker's error
//! messages where it has one. Words are kept as written; [`lex`] expands them as
//! docker's shell lexer does once the builder knows the build arguments and
//! environment. [`ignore`] reads `.dockerignore` as moby/patternmatcher does and lists
//! a build context.
//!
//! The crate is pure and portable: no I/O except [`ignore::context_files`], no unsafe
//! code, and no panics on any input.

pub mod ignore;
pub mod lex;
mod parse;

pub use parse::*;
