//! Preprocessing: this crate owns turning a camera frame (JPEG, PNG or WebP) into
//! the model's input — strict decode (cut-off or corrupt data is an error, never a
//! grey image), the EXIF orientation turn ingest asked for, letterbox, resize — as a
//! u8 HWC RGB tensor plus the letterbox geometry that maps boxes back. It is a
//! library first ([`Preprocessor`]), so the infer-worker can run it inline on its own
//! threads, and a role second ([`run`]): consume frames, publish tensors, and turn
//! frames that cannot be decoded into an error result plus a dead letter. It imports
//! the contract, the queue and the stage messages; it must not import the
//! infer-worker, ingest, results or the dashboard.

mod decode;
pub mod encode;
mod formats;
mod image;
mod letterbox;
// The workspace denies unsafe code; these modules are the exception: the calls into
// the CUDA libraries (libnvjpeg, libcudart, libnvrtc, libcuda), each with its SAFETY
// note.
#[allow(unsafe_code)]
mod cuda_lib;
#[allow(unsafe_code)]
mod gpu_letterbox;
#[allow(unsafe_code)]
pub mod nvjpeg;
mod options;
mod orient;
mod pool;
mod prepared;
mod preview;
mod role;

pub use decode::{Channels, Decoded, JpegDecoder};
pub use formats::{Format, decode_png, decode_webp};
pub use image::Preprocessor;
pub use letterbox::{PAD_VALUE, fit_geometry, letterbox_geometry};
pub use nvjpeg::start_gpu_decode;
pub use options::{ChannelOrder, DecodeScale, GpuDecode, InputFit, PreprocessOptions, ResizeFilter};
pub use orient::{orient, swaps_sides};
pub use pool::PreprocessPool;
pub use prepared::{PreprocessError, Preprocessed};
pub use preview::{PREVIEW_MAX_SIDE, preview_jpeg};
pub use role::{Inputs, prepare_frame, run};
