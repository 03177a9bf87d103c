//! The process tree: the user process's supervisor thread, the forkserver it
//! starts, the children the forkserver forks, and the resource tracker they
//! share. `role` is the leaf every other module here imports; the public
//! API (`Process`, `Pool`, …) imports this module, never the other way.

pub(crate) mod boot;
pub(crate) mod child;
pub(crate) mod forkserver;
pub(crate) mod role;
pub(crate) mod spawn;
pub(crate) mod supervisor;
pub(crate) mod tracker;
