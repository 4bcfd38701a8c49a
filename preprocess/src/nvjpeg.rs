//! JPEG decode on the GPU (nvJPEG), for a node whose CPU would otherwise spend most
//! of its time in libjpeg-turbo's Huffman decoder (BENCHMARKS.md, "GPU").
//!
//! One service per process ([`GpuJpeg::shared`]): `threads` decoder threads, each
//! with its own nvJPEG handle (the hardware backend where the GPU has JPEG engines,
//! else the GPU-assisted one), CUDA stream and device buffers. A preprocessing thread
//! hands its frame over and waits; a decoder thread takes every frame that is
//! waiting (up to `max_batch`), decodes them as one batch and wakes the callers.
//! With the letterbox on the GPU ([`GpuJpeg::letterbox`], `nvjpeg_letterbox`) a frame
//! is decoded to its Y, Cb and Cr planes and letterboxed there
//! ([`crate::gpu_letterbox`]), and only the model input is copied into the caller's
//! pinned host buffer; otherwise ([`GpuJpeg::decode`]) the whole RGB image is, and
//! the caller letterboxes on the CPU.
//!
//! Only what the GPU decodes exactly like the CPU path goes there: baseline or
//! extended sequential 8-bit colour JPEGs that end with their EOI marker. Anything
//! else — progressive, greyscale, 12-bit, cut off — and any frame nvJPEG refuses is
//! decoded by libjpeg-turbo on the calling thread, whose strict errors stay the
//! pipeline's answer to broken data.
//!
//! The libraries are opened at run time (`libnvjpeg.so.13`/`.12`, `libcudart`), so a
//! build with this module still starts on a machine without CUDA.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};

use libloading::Library;

use crate::cuda_lib::{open_first, symbol};

use visionq_contract::Letterbox;

use crate::decode::Decoded;
use crate::gpu_letterbox::{Letterboxer, Planes, Target};
use crate::options::PreprocessOptions;
use crate::prepared::{PreprocessError, Preprocessed};

type Status = i32;
type CudaError = i32;
type Handle = *mut c_void;
type State = *mut c_void;
type Stream = *mut c_void;

/// `nvjpegImage_t`: up to four planes; interleaved RGB uses the first.
#[repr(C)]
struct NvImage {
    channel: [*mut u8; 4],
    pitch: [usize; 4],
}

const BACKEND_GPU_HYBRID: i32 = 2;
const BACKEND_HARDWARE: i32 = 3;
const OUTPUT_YUV: i32 = 1;
const OUTPUT_RGBI: i32 = 5;
const MEMCPY_DEVICE_TO_HOST: i32 = 2;
const STREAM_NON_BLOCKING: u32 = 1;
/// `nvjpegChromaSubsampling_t` values the decoders take (4:4:4, 4:2:2, 4:2:0, 4:4:0).
const SUPPORTED_SUBSAMPLING: [i32; 4] = [0, 1, 2, 3];

/// The entry points used, resolved once.
struct Api {
    _nvjpeg: Library,
    _cudart: Library,
    create_ex: unsafe extern "C" fn(i32, *mut c_void, *mut c_void, u32, *mut Handle) -> Status,
    state_create: unsafe extern "C" fn(Handle, *mut State) -> Status,
    image_info: unsafe extern "C" fn(Handle, *const u8, usize, *mut i32, *mut i32, *mut i32, *mut i32) -> Status,
    batched_init: unsafe extern "C" fn(Handle, State, i32, i32, i32) -> Status,
    batched: unsafe extern "C" fn(Handle, State, *const *const u8, *const usize, *mut NvImage, Stream) -> Status,
    hardware_info: unsafe extern "C" fn(Handle, *mut u32, *mut u32) -> Status,
    set_device: unsafe extern "C" fn(i32) -> CudaError,
    stream_create: unsafe extern "C" fn(*mut Stream, u32) -> CudaError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> CudaError,
    free: unsafe extern "C" fn(*mut c_void) -> CudaError,
    malloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> CudaError,
    free_host: unsafe extern "C" fn(*mut c_void) -> CudaError,
    memcpy_async: unsafe extern "C" fn(*mut c_void, *const c_void, usize, i32, Stream) -> CudaError,
    synchronize: unsafe extern "C" fn(Stream) -> CudaError,
    error_name: unsafe extern "C" fn(CudaError) -> *const c_char,
}

impl Api {
    fn load() -> Result<Api, String> {
        let nvjpeg = open_first(&["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"])?;
        let cudart = open_first(&["libcudart.so.13", "libcudart.so.12", "libcudart.so"])?;
        Ok(Api {
            create_ex: symbol!(nvjpeg, "nvjpegCreateEx"),
            state_create: symbol!(nvjpeg, "nvjpegJpegStateCreate"),
            image_info: symbol!(nvjpeg, "nvjpegGetImageInfo"),
            batched_init: symbol!(nvjpeg, "nvjpegDecodeBatchedInitialize"),
            batched: symbol!(nvjpeg, "nvjpegDecodeBatched"),
            hardware_info: symbol!(nvjpeg, "nvjpegGetHardwareDecoderInfo"),
            set_device: symbol!(cudart, "cudaSetDevice"),
            stream_create: symbol!(cudart, "cudaStreamCreateWithFlags"),
            malloc: symbol!(cudart, "cudaMalloc"),
            free: symbol!(cudart, "cudaFree"),
            malloc_host: symbol!(cudart, "cudaMallocHost"),
            free_host: symbol!(cudart, "cudaFreeHost"),
            memcpy_async: symbol!(cudart, "cudaMemcpyAsync"),
            synchronize: symbol!(cudart, "cudaStreamSynchronize"),
            error_name: symbol!(cudart, "cudaGetErrorName"),
            _nvjpeg: nvjpeg,
            _cudart: cudart,
        })
    }

    fn cuda(&self, what: &str, e: CudaError) -> Result<(), String> {
        if e == 0 {
            return Ok(());
        }
        // SAFETY: cudaGetErrorName returns a static C string for any code.
        let name = unsafe { std::ffi::CStr::from_ptr((self.error_name)(e)) };
        Err(format!("{what}: {} ({e})", name.to_string_lossy()))
    }
}

fn nvjpeg(what: &str, s: Status) -> Result<(), String> {
    if s == 0 { Ok(()) } else { Err(format!("{what}: nvJPEG status {s}")) }
}

/// What [`scan`] finds in a JPEG's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegLayout {
    /// The SOF marker's low nibble: 0 baseline, 1 extended sequential, 2 progressive…
    pub process: u8,
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    pub components: u8,
    /// The data ends with EOI (FF D9), trailing zero bytes aside.
    pub complete: bool,
}

impl JpegLayout {
    /// Whether nvJPEG decodes this frame as the CPU path would: sequential Huffman,
    /// 8-bit, three components, not cut off.
    pub fn gpu_decodable(&self) -> bool {
        matches!(self.process, 0 | 1) && self.precision == 8 && self.components == 3 && self.complete
    }
}

/// Walks a JPEG's marker segments up to its frame header (SOFn). `None` when the
/// data is not a JPEG or its header is broken (the CPU decoder then says how).
pub fn scan(jpeg: &[u8]) -> Option<JpegLayout> {
    if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        if i + 4 > jpeg.len() || jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        match marker {
            0xFF => {
                i += 1; // fill byte
                continue;
            }
            0x01 | 0xD0..=0xD8 => {
                i += 2;
                continue;
            }
            0xDA | 0xD9 => return None, // scan data or the end before any frame header
            _ => {}
        }
        let length = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let s = jpeg.get(i + 4..i + 10)?;
            let end = jpeg.iter().rposition(|&b| b != 0)?;
            return Some(JpegLayout {
                process: marker & 0x0F,
                precision: s[0],
                height: u16::from_be_bytes([s[1], s[2]]) as u32,
                width: u16::from_be_bytes([s[3], s[4]]) as u32,
                components: s[5],
                complete: end >= 1 && jpeg[end - 1] == 0xFF && jpeg[end] == 0xD9,
            });
        }
        i += 2 + length;
    }
}

/// Page-locked host memory that a decoder thread copies an image into.
struct Pinned {
    api: &'static Api,
    ptr: *mut u8,
    capacity: usize,
}

impl Pinned {
    fn ensure(&mut self, bytes: usize) -> Result<(), String> {
        if self.capacity >= bytes {
            return Ok(());
        }
        self.release();
        let mut p = std::ptr::null_mut();
        // SAFETY: a plain allocation call; the pointer is ours until cudaFreeHost.
        self.api.cuda("cudaMallocHost", unsafe { (self.api.malloc_host)(&mut p, bytes) })?;
        self.ptr = p.cast();
        self.capacity = bytes;
        Ok(())
    }

    fn release(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated by cudaMallocHost above and not in use (the caller
            // only releases between requests).
            unsafe { (self.api.free_host)(self.ptr.cast()) };
            self.ptr = std::ptr::null_mut();
            self.capacity = 0;
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.release();
    }
}

/// One frame handed to a decoder thread. The caller blocks until `reply` answers,
/// so the pointers stay valid for the request's whole life.
struct Request {
    data: *const u8,
    len: usize,
    dest: *mut u8,
    width: u32,
    height: u32,
    /// `Some`: letterbox into this model input on the GPU and copy only that back.
    target: Option<Target>,
    reply: mpsc::SyncSender<Answer>,
}

// SAFETY: the pointers are only used while the sending thread waits for the reply.
unsafe impl Send for Request {}

/// The frame the decoder threads warm up on: a common camera size, so that most
/// frames find buffers large enough already.
const WARM_UP_SIZE: (u32, u32) = (1920, 1080);

/// Bytes copied back for a `width`×`height` frame: the model input it is
/// letterboxed into (`target`), or the whole RGB image.
fn copied_len(width: u32, height: u32, target: Option<Target>) -> usize {
    match target {
        Some(t) => t.lb.input_width as usize * t.lb.input_height as usize * 3,
        None => width as usize * height as usize * 3,
    }
}

/// What a decoder thread copied back for one frame.
struct Copied {
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    /// Where the image landed, when the bytes are the letterboxed model input
    /// rather than the whole image.
    target: Option<Target>,
}

/// The process's GPU JPEG decoder (see the module doc).
pub struct GpuJpeg {
    api: &'static Api,
    requests: mpsc::Sender<Request>,
    backend: &'static str,
    engines: u32,
    /// Every decoder thread loaded the letterbox kernel.
    letterboxing: bool,
    gpu_frames: AtomicU64,
    cpu_frames: AtomicU64,
}

static SHARED: OnceLock<Result<GpuJpeg, String>> = OnceLock::new();
static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// A decoder thread's answer to one request.
type Answer = Result<(), String>;

/// What a preprocessing thread keeps between frames: its pinned buffer and the
/// channel its answers come back on.
struct Caller {
    pinned: Pinned,
    reply: mpsc::SyncSender<Answer>,
    answers: mpsc::Receiver<Answer>,
}

thread_local! {
    static CALLER: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

impl GpuJpeg {
    /// The process's decoder, started by the first call (later calls get the same
    /// one, whatever they ask for): `threads` decoder threads on CUDA device
    /// `device`, batches of up to `max_batch` frames; with `letterbox`, the kernel
    /// that letterboxes on the GPU loaded in each (where it cannot be, logged, the
    /// CPU letterboxes).
    pub fn shared(device: i32, threads: usize, max_batch: usize, letterbox: bool) -> Result<&'static GpuJpeg, String> {
        SHARED.get_or_init(|| GpuJpeg::start(device, threads.max(1), max_batch.clamp(1, 64), letterbox)).as_ref().map_err(Clone::clone)
    }

    fn start(device: i32, threads: usize, max_batch: usize, letterbox: bool) -> Result<GpuJpeg, String> {
        let api: &'static Api = API.get_or_init(Api::load).as_ref().map_err(|e| format!("nvJPEG is not available: {e}"))?;
        let (tx, rx) = mpsc::channel::<Request>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let mut started = Vec::new();
        // One made-up camera frame for every thread's warm-up (Decoder::warm_up).
        let warm_frame = std::sync::Arc::new(crate::encode::gradient_jpeg(WARM_UP_SIZE.0 as usize, WARM_UP_SIZE.1 as usize));
        for i in 0..threads {
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let (rx, warm_frame) = (rx.clone(), warm_frame.clone());
            std::thread::Builder::new()
                .name(format!("visionq-nvjpeg-{i}"))
                .spawn(move || match Decoder::new(api, device, max_batch, letterbox) {
                    Ok(mut decoder) => {
                        if let Err(e) = decoder.warm_up(&warm_frame) {
                            tracing::warn!(error = %e, "nvJPEG warm-up failed: the first batches pay for their buffers");
                        }
                        let _ = ready_tx.send(Ok((decoder.backend, decoder.engines, decoder.letterboxer.is_some())));
                        decoder.serve(&rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| e.to_string())?;
            started.push(ready_rx.recv().map_err(|e| e.to_string())??);
        }
        let (backend, engines, _) = started[0];
        let letterboxing = started.iter().all(|s| s.2);
        tracing::info!(backend, engines, threads, max_batch, device, letterboxing, "JPEG decode on the GPU (nvJPEG)");
        Ok(GpuJpeg { api, requests: tx, backend, engines, letterboxing, gpu_frames: AtomicU64::new(0), cpu_frames: AtomicU64::new(0) })
    }

    /// Whether [`GpuJpeg::letterbox`] can letterbox on the GPU.
    pub fn letterboxing(&self) -> bool {
        self.letterboxing
    }

    /// `hardware` (the GPU's JPEG engines) or `gpu-hybrid` (CUDA cores).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The GPU's JPEG engines (0 with the GPU-hybrid backend).
    pub fn engines(&self) -> u32 {
        self.engines
    }

    /// Frames decoded on the GPU, and frames left to the CPU decoder, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.gpu_frames.load(Ordering::Relaxed), self.cpu_frames.load(Ordering::Relaxed))
    }

    /// Decodes `jpeg` to RGB on the GPU. `Ok(None)`: this frame is the CPU
    /// decoder's (see the module doc); the caller decodes it there.
    pub fn decode(&self, jpeg: &[u8], max_pixels: u64) -> Result<Option<Decoded>, PreprocessError> {
        Ok(self.run(jpeg, max_pixels, |_, _| None)?.map(|c| Decoded {
            pixels: c.bytes,
            width: c.width,
            height: c.height,
            source_width: c.width,
            source_height: c.height,
        }))
    }

    /// Decodes `jpeg` and letterboxes it into the model input on the GPU, where
    /// `geometry` (the image's size → where it lands) puts it; BGR when `bgr`.
    /// `Ok(None)`: the CPU decodes this frame (as [`GpuJpeg::decode`]), or the
    /// kernel is not loaded. All of the time counts as decode (one step here).
    pub fn letterbox(
        &self,
        jpeg: &[u8],
        max_pixels: u64,
        geometry: impl FnOnce(u32, u32) -> Letterbox,
        bgr: bool,
    ) -> Result<Option<Preprocessed>, PreprocessError> {
        if !self.letterboxing {
            return Ok(None);
        }
        let t0 = std::time::Instant::now();
        // The triangle upsampling needs a few samples each way; tiny frames stay with
        // the CPU.
        let target = |w: u32, h: u32| (w >= 16 && h >= 16).then(|| Target { lb: geometry(w, h), bgr });
        let out = self.run(jpeg, max_pixels, target)?;
        Ok(out.and_then(|c| {
            Some(Preprocessed {
                letterbox: c.target?.lb,
                tensor: c.bytes,
                width: c.width,
                height: c.height,
                decode_seconds: t0.elapsed().as_secs_f64(),
                resize_seconds: 0.0,
            })
        }))
    }

    /// Hands one frame to a decoder thread and waits. `target` says, from the
    /// image's size, whether and where to letterbox it on the GPU. Returns the bytes
    /// copied back, the image's size and whether they are the letterboxed input.
    fn run(
        &self,
        jpeg: &[u8],
        max_pixels: u64,
        target: impl FnOnce(u32, u32) -> Option<Target>,
    ) -> Result<Option<Copied>, PreprocessError> {
        let Some(layout) = scan(jpeg).filter(JpegLayout::gpu_decodable) else {
            self.cpu_frames.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let (w, h) = (layout.width, layout.height);
        if w == 0 || h == 0 {
            self.cpu_frames.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if w as u64 * h as u64 > max_pixels {
            return Err(PreprocessError::TooLarge { width: w as usize, height: h as usize, max_pixels });
        }
        let target = target(w, h);
        let bytes = copied_len(w, h, target);
        let outcome = CALLER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let Caller { pinned, reply, answers } = slot.get_or_insert_with(|| {
                let (reply, answers) = mpsc::sync_channel(1);
                Caller { pinned: Pinned { api: self.api, ptr: std::ptr::null_mut(), capacity: 0 }, reply, answers }
            });
            pinned.ensure(bytes)?;
            let request =
                Request { data: jpeg.as_ptr(), len: jpeg.len(), dest: pinned.ptr, width: w, height: h, target, reply: reply.clone() };
            self.requests.send(request).map_err(|_| "the nvJPEG decoder threads have stopped".to_string())?;
            answers.recv().map_err(|_| "an nvJPEG decoder thread stopped".to_string())??;
            // SAFETY: the decoder wrote `bytes` bytes into our pinned buffer and has
            // finished with it (the stream was synchronised before the reply).
            Ok::<_, String>(unsafe { std::slice::from_raw_parts(pinned.ptr, bytes) }.to_vec())
        });
        match outcome {
            Ok(pixels) => {
                self.gpu_frames.fetch_add(1, Ordering::Relaxed);
                Ok(Some(Copied { bytes: pixels, width: w, height: h, target }))
            }
            Err(e) => {
                tracing::debug!(error = %e, "nvJPEG did not decode a frame: the CPU decodes it");
                self.cpu_frames.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }
}

/// A decoder thread's own handle, stream and buffers.
struct Decoder {
    api: &'static Api,
    handle: Handle,
    stream: Stream,
    backend: &'static str,
    engines: u32,
    max_batch: usize,
    /// The letterbox kernel, loaded in this thread's context (when asked for and
    /// NVRTC and the driver API are there).
    letterboxer: Option<Letterboxer>,
    /// One decoder state per batch size and output format, initialised on first use.
    states: std::collections::HashMap<(usize, i32), State>,
    /// Device buffer per position in a batch: (pointer, bytes).
    outputs: Vec<(*mut u8, usize)>,
}

/// What nvJPEG reads in one frame's header.
struct Info {
    /// Horizontal and vertical chroma subsampling (1 or 2).
    h: u32,
    v: u32,
    chroma_width: u32,
    chroma_height: u32,
}

impl Decoder {
    fn new(api: &'static Api, device: i32, max_batch: usize, letterbox: bool) -> Result<Decoder, String> {
        // SAFETY: plain CUDA runtime and nvJPEG calls with out-pointers we own.
        let mut decoder = unsafe {
            api.cuda("cudaSetDevice", (api.set_device)(device))?;
            let mut stream = std::ptr::null_mut();
            api.cuda("cudaStreamCreateWithFlags", (api.stream_create)(&mut stream, STREAM_NON_BLOCKING))?;
            let mut handle = std::ptr::null_mut();
            let (backend, engines) =
                if (api.create_ex)(BACKEND_HARDWARE, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle) == 0 {
                    let (mut engines, mut cores) = (0u32, 0u32);
                    let _ = (api.hardware_info)(handle, &mut engines, &mut cores);
                    ("hardware", engines)
                } else {
                    nvjpeg(
                        "nvjpegCreateEx",
                        (api.create_ex)(BACKEND_GPU_HYBRID, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle),
                    )?;
                    ("gpu-hybrid", 0)
                };
            Decoder {
                api,
                handle,
                stream,
                backend,
                engines,
                max_batch,
                letterboxer: None,
                states: Default::default(),
                outputs: Vec::new(),
            }
        };
        if letterbox {
            // The stream creation above made the device's primary context current.
            match Letterboxer::load() {
                Ok(l) => decoder.letterboxer = Some(l),
                Err(e) => tracing::warn!(error = %e, "the letterbox kernel did not load: the CPU letterboxes nvJPEG's frames"),
            }
        }
        Ok(decoder)
    }

    /// Decodes `jpeg`, a made-up camera frame of [`WARM_UP_SIZE`] (4:2:0), at every
    /// batch size up to the bound, in the output format real requests will ask for,
    /// then drops the answers: nvJPEG's per-size states and its own buffers, and this
    /// thread's device buffers, then exist before the first frame arrives. Without it
    /// the first batch of each size pays for them (allocations that wait on the whole
    /// device) while the node is already taking load.
    fn warm_up(&mut self, jpeg: &[u8]) -> Result<(), String> {
        let (w, h) = WARM_UP_SIZE;
        let target =
            self.letterboxer.is_some().then(|| Target { lb: crate::letterbox::letterbox_geometry(w, h, 640, 640), bgr: false });
        let bytes = copied_len(w, h, target);
        let mut dest = vec![0u8; bytes * self.max_batch];
        let (reply, _answers) = mpsc::sync_channel(self.max_batch);
        for n in 1..=self.max_batch {
            let requests: Vec<Request> = (0..n)
                .map(|i| Request {
                    data: jpeg.as_ptr(),
                    len: jpeg.len(),
                    // SAFETY: `dest` holds `max_batch` answers of `bytes` each.
                    dest: unsafe { dest.as_mut_ptr().add(i * bytes) },
                    width: w,
                    height: h,
                    target,
                    reply: reply.clone(),
                })
                .collect();
            self.decode(&requests)?;
        }
        Ok(())
    }

    fn serve(mut self, requests: &Mutex<mpsc::Receiver<Request>>) {
        loop {
            let batch = {
                let Ok(rx) = requests.lock() else { return };
                let Ok(first) = rx.recv() else { return };
                let mut batch = vec![first];
                while batch.len() < self.max_batch {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                batch
            };
            let outcome = self.decode(&batch);
            for r in batch {
                let _ = r.reply.send(outcome.clone());
            }
        }
    }

    fn state(&mut self, n: usize, format: i32) -> Result<State, String> {
        if let Some(s) = self.states.get(&(n, format)) {
            return Ok(*s);
        }
        let mut s = std::ptr::null_mut();
        // SAFETY: nvJPEG calls on our handle with an out-pointer we own.
        unsafe {
            nvjpeg("nvjpegJpegStateCreate", (self.api.state_create)(self.handle, &mut s))?;
            nvjpeg("nvjpegDecodeBatchedInitialize", (self.api.batched_init)(self.handle, s, n as i32, 1, format))?;
        }
        self.states.insert((n, format), s);
        Ok(s)
    }

    /// Decodes a batch into the callers' pinned buffers: whole images, and frames
    /// letterboxed on the GPU, as two nvJPEG batches on one stream. One answer for
    /// the whole batch: when nvJPEG refuses any frame, the CPU decodes them all.
    fn decode(&mut self, batch: &[Request]) -> Result<(), String> {
        let (boxed, whole): (Vec<&Request>, Vec<&Request>) = batch.iter().partition(|r| r.target.is_some());
        if !boxed.is_empty() && self.letterboxer.is_none() {
            return Err("the letterbox kernel is not loaded in this decoder thread".into());
        }
        if !whole.is_empty() {
            self.decode_group(&whole, 0)?;
        }
        if !boxed.is_empty() {
            self.decode_group(&boxed, whole.len())?;
        }
        // SAFETY: our stream.
        self.api.cuda("cudaStreamSynchronize", unsafe { (self.api.synchronize)(self.stream) })
    }

    /// A device buffer of at least `bytes` for batch position `slot`.
    fn buffer(&mut self, slot: usize, bytes: usize) -> Result<*mut u8, String> {
        let api = self.api;
        while self.outputs.len() <= slot {
            self.outputs.push((std::ptr::null_mut(), 0));
        }
        let out = &mut self.outputs[slot];
        if out.1 < bytes {
            // SAFETY: device allocations owned by this thread, freed only here.
            unsafe {
                if !out.0.is_null() {
                    (api.free)(out.0.cast());
                }
                let mut p = std::ptr::null_mut();
                let e = (api.malloc)(&mut p, bytes);
                *out = if e == 0 { (p.cast(), bytes) } else { (std::ptr::null_mut(), 0) };
                api.cuda("cudaMalloc", e)?;
            }
        }
        Ok(out.0)
    }

    /// Reads a frame's header the way nvJPEG will decode it.
    fn info(&self, r: &Request) -> Result<Info, String> {
        let (mut components, mut subsampling) = (0i32, 0i32);
        let (mut widths, mut heights) = ([0i32; 4], [0i32; 4]);
        // SAFETY: the caller's JPEG bytes stay valid while it waits.
        let s = unsafe {
            (self.api.image_info)(
                self.handle,
                r.data,
                r.len,
                &mut components,
                &mut subsampling,
                widths.as_mut_ptr(),
                heights.as_mut_ptr(),
            )
        };
        nvjpeg("nvjpegGetImageInfo", s)?;
        if components != 3 || !SUPPORTED_SUBSAMPLING.contains(&subsampling) {
            return Err(format!("{components} components, subsampling {subsampling}"));
        }
        if (widths[0] as u32, heights[0] as u32) != (r.width, r.height) {
            return Err("nvJPEG reads another size than the frame header".into());
        }
        // nvjpegChromaSubsampling_t: 4:4:4, 4:2:2, 4:2:0, 4:4:0.
        let (h, v) = [(1, 1), (2, 1), (2, 2), (1, 2)][subsampling as usize];
        let info = Info { h, v, chroma_width: r.width.div_ceil(h), chroma_height: r.height.div_ceil(v) };
        if (widths[1] as u32, heights[1] as u32) != (info.chroma_width, info.chroma_height) {
            return Err(format!("chroma planes of {}x{} for subsampling {subsampling}", widths[1], heights[1]));
        }
        Ok(info)
    }

    /// One nvJPEG batch, all whole images or all letterboxed, using the device
    /// buffers from position `first_slot` on; the copies back are queued on the
    /// stream (the caller synchronises).
    fn decode_group(&mut self, group: &[&Request], first_slot: usize) -> Result<(), String> {
        let api = self.api;
        let boxed = group[0].target.is_some();
        let infos = group.iter().map(|r| self.info(r)).collect::<Result<Vec<_>, _>>()?;
        let mut images = Vec::with_capacity(group.len());
        let mut planes = Vec::with_capacity(group.len());
        for (i, (r, info)) in group.iter().zip(&infos).enumerate() {
            let (w, h) = (r.width as usize, r.height as usize);
            let mut channel = [std::ptr::null_mut(); 4];
            let mut pitch = [0usize; 4];
            match r.target {
                None => {
                    channel[0] = self.buffer(first_slot + i, w * h * 3)?;
                    pitch[0] = w * 3;
                    planes.push(None);
                }
                Some(t) => {
                    let (cw, ch) = (info.chroma_width as usize, info.chroma_height as usize);
                    let input = copied_len(r.width, r.height, Some(t));
                    let base = self.buffer(first_slot + i, w * h + 2 * cw * ch + input)?;
                    // SAFETY: offsets inside the buffer just sized for all four parts.
                    let (cb, cr, out) = unsafe { (base.add(w * h), base.add(w * h + cw * ch), base.add(w * h + 2 * cw * ch)) };
                    channel[..3].copy_from_slice(&[base, cb, cr]);
                    pitch[..3].copy_from_slice(&[w, cw, cw]);
                    let p = Planes {
                        y: base,
                        cb,
                        cr,
                        y_pitch: w,
                        c_pitch: cw,
                        width: r.width,
                        height: r.height,
                        chroma_width: info.chroma_width,
                        chroma_height: info.chroma_height,
                        h: info.h,
                        v: info.v,
                    };
                    planes.push(Some((p, out, t)));
                }
            }
            images.push(NvImage { channel, pitch });
        }
        let data: Vec<*const u8> = group.iter().map(|r| r.data).collect();
        let lengths: Vec<usize> = group.iter().map(|r| r.len).collect();
        let format = if boxed { OUTPUT_YUV } else { OUTPUT_RGBI };
        let state = self.state(group.len(), format)?;
        // SAFETY: every pointer is valid for the call: the callers' bytes (they wait),
        // our device buffers sized above, arrays of `group.len()` entries.
        let s = unsafe { (api.batched)(self.handle, state, data.as_ptr(), lengths.as_ptr(), images.as_mut_ptr(), self.stream) };
        if s != 0 {
            // A failed batch leaves the state unusable until initialised again.
            self.states.remove(&(group.len(), format));
            return nvjpeg("nvjpegDecodeBatched", s);
        }
        for ((r, img), placed) in group.iter().zip(&images).zip(&planes) {
            let src = match (placed, &self.letterboxer) {
                (Some((p, out, t)), Some(kernel)) => {
                    // SAFETY: the planes were decoded into on this stream, `out` holds
                    // the whole input; the buffers stay ours until the next batch.
                    unsafe { kernel.launch(p, *out, t, self.stream)? };
                    out.cast_const()
                }
                _ => img.channel[0].cast_const(),
            };
            let bytes = copied_len(r.width, r.height, r.target);
            // SAFETY: the caller's pinned buffer holds at least `bytes` (ensured
            // before it sent the request); the device buffer was written above.
            let e = unsafe { (api.memcpy_async)(r.dest.cast(), src.cast(), bytes, MEMCPY_DEVICE_TO_HOST, self.stream) };
            api.cuda("cudaMemcpyAsync", e)?;
        }
        Ok(())
    }
}

/// Starts the GPU JPEG decoder the options ask for, once per process, before the
/// preprocessing threads need it. `Ok(None)`: the CPU decodes (not asked for, or
/// `auto` on a node where nvJPEG or its letterbox kernel does not start: logged);
/// `Err` when `nvjpeg` was asked for and cannot start.
pub fn start_gpu_decode(options: &PreprocessOptions) -> Result<Option<&'static GpuJpeg>, String> {
    let Some(g) = options.gpu_decode else { return Ok(None) };
    match GpuJpeg::shared(g.device, g.threads, g.max_batch, g.letterbox) {
        Ok(d) if !g.required && !d.letterboxing() => {
            tracing::warn!(
                "jpeg_decoder = \"auto\": nvJPEG started but the letterbox kernel did not (NVRTC or the driver API missing, \
                 or nvjpeg_letterbox = false), and nvJPEG's own colour conversion moves detections: JPEGs are decoded on the CPU"
            );
            Ok(None)
        }
        Ok(d) => Ok(Some(d)),
        Err(e) if g.required => Err(format!("jpeg_decoder = \"nvjpeg\": {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "jpeg_decoder = \"auto\": nvJPEG did not start, JPEGs are decoded on the CPU");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::noise_jpeg;

    #[test]
    fn a_baseline_colour_jpeg_goes_to_the_gpu_and_a_cut_one_does_not() {
        let jpeg = noise_jpeg(64, 48, 85, 7);
        let layout = scan(&jpeg).unwrap();
        assert_eq!((layout.width, layout.height, layout.components, layout.precision), (64, 48, 3, 8));
        assert!(layout.gpu_decodable(), "{layout:?}");
        // Trailing zero padding after EOI (some cameras send it) is still complete.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert!(scan(&padded).unwrap().gpu_decodable());
        // Cut anywhere in the scan data: no EOI, so the strict CPU decoder answers.
        let cut = &jpeg[..jpeg.len() - 10];
        assert!(!scan(cut).unwrap().complete);
        assert!(!scan(cut).unwrap().gpu_decodable());
    }

    #[test]
    fn progressive_grey_and_broken_headers_stay_on_the_cpu() {
        let jpeg = noise_jpeg(64, 48, 85, 7);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline SOF0");
        let mut progressive = jpeg.clone();
        progressive[sof + 1] = 0xC2;
        assert_eq!(scan(&progressive).unwrap().process, 2);
        assert!(!scan(&progressive).unwrap().gpu_decodable());
        let mut grey = jpeg.clone();
        grey[sof + 9] = 1;
        assert!(!scan(&grey).unwrap().gpu_decodable());
        for broken in [&b""[..], b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"not a jpeg at all", &jpeg[..sof + 5]] {
            assert!(scan(broken).is_none_or(|l| !l.gpu_decodable()), "{broken:?}");
        }
    }

    #[test]
    fn a_node_without_nvjpeg_refuses_to_start_when_told_to_use_it_and_falls_back_on_auto() {
        let mut c = visionq_contract::Config::default();
        c.decode.jpeg_decoder = "nvjpeg".into();
        let required = crate::PreprocessOptions::from_config(&c);
        match start_gpu_decode(&required) {
            // A machine with a GPU and nvJPEG (the lent GPU machine): it starts.
            Ok(Some(gpu)) => assert!(["hardware", "gpu-hybrid"].contains(&gpu.backend())),
            Ok(None) => panic!("asked for nvJPEG and got neither it nor a refusal"),
            Err(e) => {
                assert!(e.contains("jpeg_decoder = \"nvjpeg\"") && e.contains("nvJPEG"), "{e}");
                c.decode.jpeg_decoder = "auto".into();
                c.runtime.execution_provider = visionq_contract::config::ExecutionProvider::Cuda;
                assert!(start_gpu_decode(&crate::PreprocessOptions::from_config(&c)).unwrap().is_none());
            }
        }
    }
}
