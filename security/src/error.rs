//! The crate's one error type.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot name an identity or a host.
    #[error("{0}")]
    InvalidArgument(String),
    /// A file that would be overwritten; nothing was written.
    #[error("{} already exists (pass --overwrite to replace it)", .0.display())]
    Exists(PathBuf),
    /// A file that should be there is not; `hint` says how to make it.
    #[error("{} does not exist{hint}", path.display())]
    Missing { path: PathBuf, hint: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key that cannot be parsed or generated.
    #[error("{0}")]
    Certificate(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e.to_string())
    }
}
