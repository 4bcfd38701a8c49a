//! Opening the CUDA libraries at run time: a build with the GPU paths still starts on
//! a machine without CUDA, and says which library it missed.

use libloading::Library;

/// The first of `names` that loads, or every error.
pub(crate) fn open_first(names: &[&str]) -> Result<Library, String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: loading a CUDA library runs its initialisers, which have no
        // preconditions on our side.
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

/// Resolves `$name` in `$lib` as a function pointer of the field's type, or returns
/// the error from the enclosing function.
macro_rules! symbol {
    ($lib:expr, $name:literal) => {
        // SAFETY: the type is the one the CUDA 12/13 headers declare for this symbol.
        *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| format!("{}: {e}", $name))?
    };
}
pub(crate) use symbol;
