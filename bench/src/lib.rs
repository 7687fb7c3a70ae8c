//! Placeholder: this crate is built by a later issue (see the repository issues).
