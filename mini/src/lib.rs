//! `mini`: the miniature Aligner that aligner-lens ships as its fast test fixture.
//!
//! A synthetic correction corpus ([`corpus`], drawn from the tables of [`world`], which are
//! data files in `notebooks-data/corpus/`), a tokenizer trained on it ([`tokenizer`]) and
//! training of probe's own Llama model on it with candle-nn ([`train`]). Not a general
//! training framework: it exists so the Aligner study can be reproduced offline in minutes.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod corpus;
pub mod english;
pub mod tokenizer;
pub mod train;
pub mod world;
