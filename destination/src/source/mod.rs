//! The two feeds of the index: a watched directory of YAML ([`files`]) and the
//! Kubernetes API ([`kubernetes`]).

pub mod files;
pub mod kubernetes;
