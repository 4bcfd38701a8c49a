//! The roles one process can run (`visionq run` runs them all): the one name that
//! composition, the process routes, the OpenAPI document and the fallback page
//! share, in a module of its own so that none of them imports another for it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Ingest,
    Preprocess,
    Infer,
    Results,
}
