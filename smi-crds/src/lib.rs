//! SMI custom resources, the version-neutral traffic model, and the mesh-wide names.
//!
//! Every other crate of linkerd-lite agrees on names and traffic semantics through this
//! one: the `mesh` CLI renders the CRDs from it, the destination service converts every
//! served SMI version into [`model`] and works on nothing else, and the proxy and the
//! injector share [`mesh`]'s annotation domain, environment prefix and ports.
//!
//! # Layout
//!
//! - [`mesh`]: the annotation domain, the proxy's environment prefix, ports, identities.
//! - [`model`]: the version-neutral model (splits, route groups, access rules).
//! - With the default `kube` feature:
//!   - [`split`], [`access`], [`specs`]: typed resources for every served SMI version;
//!   - [`convert`]: conversion of every version into the model, with validation;
//!   - [`crd`]: CustomResourceDefinitions generated from the types.
//!
//! Without the `kube` feature the crate is only [`mesh`] and [`model`], which keeps
//! Kubernetes types out of the proxy.

pub mod mesh;
pub mod model;

#[cfg(feature = "kube")]
pub mod access;
#[cfg(feature = "kube")]
pub mod convert;
#[cfg(feature = "kube")]
pub mod crd;
#[cfg(feature = "kube")]
pub mod specs;
#[cfg(feature = "kube")]
pub mod split;
