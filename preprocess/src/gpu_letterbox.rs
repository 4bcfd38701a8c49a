//! The letterbox on the GPU, for frames nvJPEG decoded: from the decoder's Y, Cb and
//! Cr planes straight into the model input, so that only the input (416×416×3, half
//! a megabyte) comes back to the host instead of the whole image (2.7 MB at 720p),
//! and the CPU does no resize.
//!
//! The kernel reproduces the CPU path, not just its idea:
//! - chroma is upsampled with libjpeg-turbo's "fancy" triangle filter, with its edge
//!   cases and its alternating rounding (4:2:0, 4:2:2, 4:4:0, 4:4:4), and converted
//!   to RGB with its fixed-point YCbCr tables. nvJPEG's own RGB output upsamples
//!   differently, which moved detections past the bar of issue 13 (BENCHMARKS.md,
//!   "nvJPEG, measured");
//! - the resize is OpenCV's INTER_LINEAR (half-pixel centres, two taps, edges
//!   repeated), horizontal then vertical with the intermediate rounded to 8 bits as
//!   the CPU resizer does, and the grey bars of [`crate::letterbox::PAD_VALUE`].
//!
//! Compiled at start with NVRTC (`libnvrtc.so.13`/`.12`) and launched through the
//! CUDA driver API (`libcuda.so.1`), both opened at run time like nvJPEG; where
//! either is missing the decoder copies the image back and the CPU letterboxes.

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use libloading::Library;

use crate::cuda_lib::{open_first, symbol};

use visionq_contract::Letterbox;

use crate::letterbox::PAD_VALUE;

const SOURCE: &str = r#"
__device__ __forceinline__ int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// One chroma sample at full-size (x, y), upsampled from a (cw x ch) plane subsampled
// by (hs, vs) the way libjpeg-turbo's fancy upsampling does it.
__device__ int chroma(const unsigned char* p, int pitch, int cw, int ch, int hs, int vs, int x, int y) {
    int cx = min(hs == 2 ? (x >> 1) : x, cw - 1);
    int cy = min(vs == 2 ? (y >> 1) : y, ch - 1);
    if (vs == 1) {
        const unsigned char* r = p + (size_t)cy * pitch;
        int v = r[cx];
        if (hs == 1) return v;
        if ((x & 1) == 0) return cx == 0 ? v : (v * 3 + r[cx - 1] + 1) >> 2;
        return cx == cw - 1 ? v : (v * 3 + r[cx + 1] + 2) >> 2;
    }
    int below = y & 1;
    int fy = below ? min(cy + 1, ch - 1) : max(cy - 1, 0);
    const unsigned char* nr = p + (size_t)cy * pitch;
    const unsigned char* fr = p + (size_t)fy * pitch;
    int sum = nr[cx] * 3 + fr[cx];
    if (hs == 1) return (sum + (below ? 2 : 1)) >> 2;
    if ((x & 1) == 0) {
        if (cx == 0) return (sum * 4 + 8) >> 4;
        return (sum * 3 + nr[cx - 1] * 3 + fr[cx - 1] + 8) >> 4;
    }
    if (cx == cw - 1) return (sum * 4 + 7) >> 4;
    return (sum * 3 + nr[cx + 1] * 3 + fr[cx + 1] + 7) >> 4;
}

struct Planes {
    const unsigned char* y; const unsigned char* cb; const unsigned char* cr;
    int ypitch, cpitch, cw, ch, hs, vs;
};

__device__ void rgb_at(const Planes& s, int x, int y, int* rgb) {
    int l = s.y[(size_t)y * s.ypitch + x];
    int cb = chroma(s.cb, s.cpitch, s.cw, s.ch, s.hs, s.vs, x, y) - 128;
    int cr = chroma(s.cr, s.cpitch, s.cw, s.ch, s.hs, s.vs, x, y) - 128;
    rgb[0] = clamp255(l + ((91881 * cr + 32768) >> 16));
    rgb[1] = clamp255(l + ((-22554 * cb - 46802 * cr + 32768) >> 16));
    rgb[2] = clamp255(l + ((116130 * cb + 32768) >> 16));
}

// The taps of output index i resizing src to dst: fast_image_resize's bilinear
// interpolation (OpenCV's INTER_LINEAR weights), its weights normalised, then
// rounded to `prec` bits each. Returns the number of taps (at most 3).
__device__ int taps(int i, int src, int dst, int prec, int* at, int* wq) {
    double in_center = (i + 0.5) * ((double)src / (double)dst);
    double center = in_center - 0.5;
    int lo = max((int)floor(in_center - 1.0), 0);
    int hi = min((int)ceil(in_center + 1.0), src);
    double w[3];
    double sum = 0.0;
    int n = 0;
    for (int x = lo; x < hi && n < 3; x++) {
        double t = fabs((double)x - center);
        w[n] = t < 1.0 ? 1.0 - t : 0.0;
        at[n] = x;
        sum += w[n];
        n++;
    }
    for (int k = 0; k < n; k++) wq[k] = (int)round((sum != 0.0 ? w[k] / sum : w[k]) * (double)(1 << prec));
    return n;
}

extern "C" __global__ void letterbox(
    const unsigned char* y, const unsigned char* cb, const unsigned char* cr,
    int ypitch, int cpitch, int width, int height, int cw, int ch, int hs, int vs,
    unsigned char* out, int in_w, int in_h, int pad_x, int pad_y, int sw, int sh,
    int bgr, int pad_value, int prec_x, int prec_y)
{
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= in_w || oy >= in_h) return;
    unsigned char* o = out + ((size_t)oy * in_w + ox) * 3;
    int dx = ox - pad_x, dy = oy - pad_y;
    if (dx < 0 || dy < 0 || dx >= sw || dy >= sh) {
        o[0] = o[1] = o[2] = (unsigned char)pad_value;
        return;
    }
    Planes s = { y, cb, cr, ypitch, cpitch, cw, ch, hs, vs };
    int xs[3], wx[3], ys[3], wy[3];
    int nx = taps(dx, width, sw, prec_x, xs, wx);
    int ny = taps(dy, height, sh, prec_y, ys, wy);
    // Vertical pass first, rounded to 8 bits, then horizontal: the CPU resizer's
    // order for 8-bit images.
    int acc[3] = { 1 << (prec_x - 1), 1 << (prec_x - 1), 1 << (prec_x - 1) };
    for (int i = 0; i < nx; i++) {
        int col[3] = { 1 << (prec_y - 1), 1 << (prec_y - 1), 1 << (prec_y - 1) };
        for (int j = 0; j < ny; j++) {
            int p[3];
            rgb_at(s, xs[i], ys[j], p);
            for (int k = 0; k < 3; k++) col[k] += p[k] * wy[j];
        }
        for (int k = 0; k < 3; k++) acc[k] += clamp255(col[k] >> prec_y) * wx[i];
    }
    for (int k = 0; k < 3; k++) o[bgr ? 2 - k : k] = (unsigned char)clamp255(acc[k] >> prec_x);
}
"#;

type NvrtcResult = c_int;
type CuResult = c_int;
type Program = *mut c_void;
type Module = *mut c_void;
type Function = *mut c_void;

struct Nvrtc {
    _lib: Library,
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    log: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    destroy: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
}

/// The driver entry points the launches need, resolved once.
struct Driver {
    _lib: Library,
    load: unsafe extern "C" fn(*mut Module, *const c_void) -> CuResult,
    function: unsafe extern "C" fn(*mut Function, Module, *const c_char) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch: unsafe extern "C" fn(
        Function,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
}

/// The kernel compiled to PTX, once per process.
fn ptx() -> Result<&'static CString, String> {
    static PTX: OnceLock<Result<CString, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let lib = open_first(&["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])?;
        let n = Nvrtc {
            create: symbol!(lib, "nvrtcCreateProgram"),
            compile: symbol!(lib, "nvrtcCompileProgram"),
            ptx_size: symbol!(lib, "nvrtcGetPTXSize"),
            ptx: symbol!(lib, "nvrtcGetPTX"),
            log_size: symbol!(lib, "nvrtcGetProgramLogSize"),
            log: symbol!(lib, "nvrtcGetProgramLog"),
            destroy: symbol!(lib, "nvrtcDestroyProgram"),
            _lib: lib,
        };
        let source = CString::new(SOURCE).expect("no NUL in the kernel source");
        let name = c"visionq_letterbox.cu";
        let options = [c"--std=c++17"];
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut program = std::ptr::null_mut();
        // SAFETY: NVRTC calls on a program we create and destroy here, with buffers
        // sized by the sizes it reports.
        unsafe {
            let r = (n.create)(&mut program, source.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null());
            if r != 0 {
                return Err(format!("nvrtcCreateProgram: {r}"));
            }
            let compiled = (n.compile)(program, option_ptrs.len() as c_int, option_ptrs.as_ptr());
            let result = if compiled != 0 {
                let mut size = 0;
                (n.log_size)(program, &mut size);
                let mut log = vec![0u8; size.max(1)];
                (n.log)(program, log.as_mut_ptr().cast());
                Err(format!("nvrtcCompileProgram {compiled}: {}", String::from_utf8_lossy(&log).trim_end_matches('\0')))
            } else {
                let mut size = 0;
                (n.ptx_size)(program, &mut size);
                let mut ptx = vec![0u8; size.max(1)];
                (n.ptx)(program, ptx.as_mut_ptr().cast());
                ptx.truncate(ptx.iter().position(|&b| b == 0).unwrap_or(ptx.len()));
                CString::new(ptx).map_err(|e| e.to_string())
            };
            (n.destroy)(&mut program);
            result
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn driver() -> Result<&'static Driver, String> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let lib = open_first(&["libcuda.so.1", "libcuda.so"])?;
            Ok(Driver {
                load: symbol!(lib, "cuModuleLoadData"),
                function: symbol!(lib, "cuModuleGetFunction"),
                launch: symbol!(lib, "cuLaunchKernel"),
                _lib: lib,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where one decoded frame's planes are on the device, and how it is subsampled.
pub(crate) struct Planes {
    pub y: *const u8,
    pub cb: *const u8,
    pub cr: *const u8,
    pub y_pitch: usize,
    pub c_pitch: usize,
    pub width: u32,
    pub height: u32,
    pub chroma_width: u32,
    pub chroma_height: u32,
    /// Horizontal and vertical subsampling factors (1 or 2).
    pub h: u32,
    pub v: u32,
}

/// Where the image lands in the model input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub lb: Letterbox,
    pub bgr: bool,
}

/// The kernel loaded into the current thread's CUDA context (the device's primary
/// context, made current by the runtime calls before it).
pub(crate) struct Letterboxer {
    driver: &'static Driver,
    function: Function,
}

impl Letterboxer {
    /// Compiles (once per process) and loads the kernel. The calling thread must
    /// have the device's context current (any CUDA runtime call after
    /// `cudaSetDevice` does that).
    pub fn load() -> Result<Letterboxer, String> {
        let ptx = ptx()?;
        let driver = driver()?;
        let mut module = std::ptr::null_mut();
        let mut function = std::ptr::null_mut();
        // SAFETY: driver calls with out-pointers we own; the PTX is NUL-terminated.
        unsafe {
            let r = (driver.load)(&mut module, ptx.as_ptr().cast());
            if r != 0 {
                return Err(format!("cuModuleLoadData: CUDA driver error {r}"));
            }
            let r = (driver.function)(&mut function, module, c"letterbox".as_ptr());
            if r != 0 {
                return Err(format!("cuModuleGetFunction: CUDA driver error {r}"));
            }
        }
        Ok(Letterboxer { driver, function })
    }

    /// Queues the letterbox of `src` into `out` (`input_width × input_height × 3`
    /// bytes of device memory) on `stream`.
    ///
    /// # Safety
    /// Every pointer in `src` and `out` must be device memory of the sizes the
    /// planes and target describe, valid until the stream has run the kernel.
    pub unsafe fn launch(&self, src: &Planes, out: *mut u8, t: &Target, stream: *mut c_void) -> Result<(), String> {
        let (y, cb, cr) = (src.y, src.cb, src.cr);
        let ints: [c_int; 8] = [
            src.y_pitch as c_int,
            src.c_pitch as c_int,
            src.width as c_int,
            src.height as c_int,
            src.chroma_width as c_int,
            src.chroma_height as c_int,
            src.h as c_int,
            src.v as c_int,
        ];
        let target: [c_int; 10] = [
            t.lb.input_width as c_int,
            t.lb.input_height as c_int,
            t.lb.pad_x as c_int,
            t.lb.pad_y as c_int,
            t.lb.scaled_width as c_int,
            t.lb.scaled_height as c_int,
            t.bgr as c_int,
            PAD_VALUE as c_int,
            precision(src.width, t.lb.scaled_width) as c_int,
            precision(src.height, t.lb.scaled_height) as c_int,
        ];
        let mut params: Vec<*mut c_void> = vec![
            (&y as *const *const u8).cast_mut().cast(),
            (&cb as *const *const u8).cast_mut().cast(),
            (&cr as *const *const u8).cast_mut().cast(),
        ];
        params.extend(ints.iter().map(|i| (i as *const c_int).cast_mut().cast::<c_void>()));
        params.push((&out as *const *mut u8).cast_mut().cast());
        params.extend(target.iter().map(|i| (i as *const c_int).cast_mut().cast::<c_void>()));
        let (bx, by) = (32u32, 8u32);
        // SAFETY: the parameters match the kernel's signature in order and type, and
        // live until the call returns (the driver copies them); the caller vouches
        // for the device pointers.
        let r = unsafe {
            (self.driver.launch)(
                self.function,
                t.lb.input_width.div_ceil(bx),
                t.lb.input_height.div_ceil(by),
                1,
                bx,
                by,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if r != 0 { Err(format!("cuLaunchKernel: CUDA driver error {r}")) } else { Ok(()) }
    }
}

/// The largest normalised weight of a bilinear resize from `src` to `dst` samples,
/// as the CPU resizer computes its coefficients.
fn max_weight(src: u32, dst: u32) -> f64 {
    let scale = src as f64 / dst as f64;
    let mut max = 0.0f64;
    for i in 0..dst {
        let in_center = (i as f64 + 0.5) * scale;
        let center = in_center - 0.5;
        let lo = (in_center - 1.0).floor().max(0.0) as u32;
        let hi = ((in_center + 1.0).ceil() as u32).min(src);
        let w: Vec<f64> = (lo..hi).map(|x| (1.0 - (x as f64 - center).abs()).max(0.0)).collect();
        let sum: f64 = w.iter().sum();
        for v in w {
            max = max.max(if sum != 0.0 { v / sum } else { v });
        }
    }
    max
}

/// The bits of the resize's fixed-point weights, chosen as the CPU resizer chooses
/// them (the most that keep the largest weight under 2^15).
pub(crate) fn precision(src: u32, dst: u32) -> u32 {
    let max = max_weight(src, dst);
    let mut precision = 0;
    for p in 0..22u32 {
        precision = p;
        if (max * (1u64 << (p + 1)) as f64).round() as i64 >= 1 << 15 {
            break;
        }
    }
    precision
}

/// The CPU reference of the kernel's chroma upsampling, for the tests: libjpeg-turbo
/// upsamples a whole plane; this does it one sample at a time, as the kernel does.
#[cfg(test)]
fn chroma_at(p: &[u8], planes: &Planes, x: usize, y: usize) -> i32 {
    let (pitch, cw, ch) = (planes.c_pitch, planes.chroma_width as usize, planes.chroma_height as usize);
    let (hs, vs) = (planes.h as usize, planes.v as usize);
    let cx = (if hs == 2 { x >> 1 } else { x }).min(cw - 1);
    let cy = (if vs == 2 { y >> 1 } else { y }).min(ch - 1);
    let at = |c: usize, r: usize| p[r * pitch + c] as i32;
    if vs == 1 {
        let v = at(cx, cy);
        if hs == 1 {
            return v;
        }
        if x & 1 == 0 {
            return if cx == 0 { v } else { (v * 3 + at(cx - 1, cy) + 1) >> 2 };
        }
        return if cx == cw - 1 { v } else { (v * 3 + at(cx + 1, cy) + 2) >> 2 };
    }
    let below = y & 1 == 1;
    let fy = if below { (cy + 1).min(ch - 1) } else { cy.saturating_sub(1) };
    let sum = |c: usize| at(c, cy) * 3 + at(c, fy);
    if hs == 1 {
        return (sum(cx) + if below { 2 } else { 1 }) >> 2;
    }
    if x & 1 == 0 {
        return if cx == 0 { (sum(0) * 4 + 8) >> 4 } else { (sum(cx) * 3 + sum(cx - 1) + 8) >> 4 };
    }
    if cx == cw - 1 { (sum(cx) * 4 + 7) >> 4 } else { (sum(cx) * 3 + sum(cx + 1) + 7) >> 4 }
}

/// The kernel, written again on the CPU for the tests: the same arithmetic in the
/// same order, from the decoder's planes to the model input.
#[cfg(test)]
mod reference {
    use super::*;

    pub fn rgb_at(y: &[u8], cb: &[u8], cr: &[u8], p: &Planes, x: usize, row: usize) -> [i32; 3] {
        let l = y[row * p.y_pitch + x] as i32;
        let b = chroma_at(cb, p, x, row) - 128;
        let r = chroma_at(cr, p, x, row) - 128;
        [
            (l + ((91881 * r + 32768) >> 16)).clamp(0, 255),
            (l + ((-22554 * b - 46802 * r + 32768) >> 16)).clamp(0, 255),
            (l + ((116130 * b + 32768) >> 16)).clamp(0, 255),
        ]
    }

    pub fn taps(i: u32, src: u32, dst: u32, prec: u32) -> Vec<(usize, i32)> {
        let in_center = (i as f64 + 0.5) * (src as f64 / dst as f64);
        let center = in_center - 0.5;
        let lo = (in_center - 1.0).floor().max(0.0) as u32;
        let hi = ((in_center + 1.0).ceil() as u32).min(src);
        let w: Vec<(usize, f64)> = (lo..hi).take(3).map(|x| (x as usize, (1.0 - (x as f64 - center).abs()).max(0.0))).collect();
        let sum: f64 = w.iter().map(|t| t.1).sum();
        w.into_iter().map(|(x, v)| (x, ((if sum != 0.0 { v / sum } else { v }) * (1u64 << prec) as f64).round() as i32)).collect()
    }

    pub fn letterbox(y: &[u8], cb: &[u8], cr: &[u8], p: &Planes, t: &Target) -> Vec<u8> {
        let (px, py) = (precision(p.width, t.lb.scaled_width), precision(p.height, t.lb.scaled_height));
        let mut out = vec![PAD_VALUE; t.lb.input_width as usize * t.lb.input_height as usize * 3];
        for dy in 0..t.lb.scaled_height {
            let ys = taps(dy, p.height, t.lb.scaled_height, py);
            for dx in 0..t.lb.scaled_width {
                let mut acc = [1i32 << (px - 1); 3];
                for (x, wx) in taps(dx, p.width, t.lb.scaled_width, px) {
                    let mut col = [1i32 << (py - 1); 3];
                    for &(row, wy) in &ys {
                        let c = rgb_at(y, cb, cr, p, x, row);
                        (0..3).for_each(|k| col[k] += c[k] * wy);
                    }
                    (0..3).for_each(|k| acc[k] += (col[k] >> py).clamp(0, 255) * wx);
                }
                let o = (((dy + t.lb.pad_y) * t.lb.input_width + dx + t.lb.pad_x) * 3) as usize;
                for k in 0..3 {
                    out[o + if t.bgr { 2 - k } else { k }] = (acc[k] >> px).clamp(0, 255) as u8;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preprocessor;
    use crate::letterbox::letterbox_geometry;

    /// A photo-like test image: smooth gradients, edges and some noise.
    fn scene(w: usize, h: usize) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let noise = ((x * 7919 + y * 104_729) % 23) as i32 - 11;
                let edge = if (x / 9 + y / 7) % 2 == 0 { 60 } else { 0 };
                for k in 0..3 {
                    let v = (x * (60 + 40 * k)) / w + (y * (200 - 50 * k)) / h + edge;
                    rgb.push((v as i32 + noise).clamp(0, 255) as u8);
                }
            }
        }
        rgb
    }

    /// The kernel's arithmetic (its CPU copy in `reference`) against the CPU path
    /// itself: for each subsampling the GPU path meets, a JPEG decoded by
    /// libjpeg-turbo to its planes (no upsampling) and letterboxed the kernel's way
    /// gives exactly the model input `Preprocessor::prepare` gives, bars, edges and
    /// odd sizes included. On the GPU, `visionq bench-decode` compares the kernel's
    /// own output with the CPU path the same way.
    #[test]
    fn the_kernels_arithmetic_is_the_cpu_paths_to_the_last_bit() {
        for (subsamp, hs, vs) in [
            (turbojpeg::Subsamp::Sub2x2, 2, 2),
            (turbojpeg::Subsamp::Sub2x1, 2, 1),
            (turbojpeg::Subsamp::Sub1x2, 1, 2),
            (turbojpeg::Subsamp::None, 1, 1),
        ] {
            for (w, h, input, bgr) in [(203usize, 117usize, 64u32, false), (61, 90, 48, true), (37, 23, 80, false)] {
                let rgb = scene(w, h);
                let image = turbojpeg::Image {
                    pixels: rgb.as_slice(),
                    width: w,
                    pitch: w * 3,
                    height: h,
                    format: turbojpeg::PixelFormat::RGB,
                };
                let mut c = turbojpeg::Compressor::new().unwrap();
                c.set_quality(85).unwrap();
                c.set_subsamp(subsamp).unwrap();
                let jpeg = c.compress_to_vec(image).unwrap();
                let mut yuv = turbojpeg::YuvImage { pixels: Vec::new(), width: w, align: 1, height: h, subsamp };
                let ((yw, yh), (cw, ch)) = (yuv.y_size(), yuv.uv_size());
                yuv.pixels = vec![0u8; yw * yh + 2 * cw * ch];
                turbojpeg::Decompressor::new().unwrap().decompress_to_yuv(&jpeg, yuv.as_deref_mut()).unwrap();
                assert_eq!((cw, ch), (w.div_ceil(hs), h.div_ceil(vs)), "{subsamp:?}: chroma planes");
                let (yp, rest) = yuv.pixels.split_at(yw * yh);
                let (cb, cr) = rest.split_at(cw * ch);
                let planes = Planes {
                    y: yp.as_ptr(),
                    cb: cb.as_ptr(),
                    cr: cr.as_ptr(),
                    y_pitch: yw,
                    c_pitch: cw,
                    width: w as u32,
                    height: h as u32,
                    chroma_width: cw as u32,
                    chroma_height: ch as u32,
                    h: hs as u32,
                    v: vs as u32,
                };
                let lb = letterbox_geometry(w as u32, h as u32, input, input);
                let target = Target { lb, bgr };
                let ours = reference::letterbox(yp, cb, cr, &planes, &target);
                let options = crate::PreprocessOptions {
                    channel_order: if bgr { crate::ChannelOrder::Bgr } else { crate::ChannelOrder::Rgb },
                    ..Default::default()
                };
                let cpu = Preprocessor::with_options(input, input, options).prepare(&jpeg).unwrap().tensor;
                let differ = ours.iter().zip(&cpu).filter(|(a, b)| a != b).count();
                let worst = ours.iter().zip(&cpu).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
                assert_eq!(differ, 0, "{subsamp:?} {w}x{h} into {input}: {differ} of {} bytes differ, by up to {worst}", cpu.len());
            }
        }
    }
}
