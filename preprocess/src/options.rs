//! How a frame is turned into the model's input: the choices a model trained with
//! another preprocessing declares in config (`resize_filter`, `input_fit`,
//! `channel_order`), and the CPU saver (`decode_scale`) of a deployment. EXIF
//! orientation is not applied yet: a rotated phone photo is read as stored.

use visionq_contract::Config;

/// How the image is scaled into the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeFilter {
    /// Plain bilinear interpolation, no antialiasing: OpenCV's
    /// `cv2.resize(…, INTER_LINEAR)`, what Darknet, OpenCV `dnn` and Ultralytics
    /// feed YOLO models.
    #[default]
    Linear,
    /// Antialiased bilinear (a convolution whose support grows when shrinking, as
    /// Pillow's `resize(…, BILINEAR)`), for models trained on Pillow pipelines.
    Antialias,
}

/// Where the scaled image sits in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFit {
    /// Aspect ratio kept, centred, grey 114 bars (the YOLO letterbox).
    #[default]
    Letterbox,
    /// Resized to the whole input, aspect ratio not kept, no bars.
    Stretch,
}

/// Channel order of the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// JPEG decode at a reduced size (libjpeg-turbo's DCT-domain scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeScale {
    /// Full-size decode: pixel parity with OpenCV.
    #[default]
    Off,
    /// The smallest of 1/2, 1/4, 1/8 whose decoded image still covers the scaled
    /// image in the model input on both sides (1280×720 for a 416 input: 640×360).
    Auto,
}

/// JPEG decode on the GPU (nvJPEG): where and how wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuDecode {
    pub device: i32,
    pub threads: usize,
    pub max_batch: usize,
    /// Letterbox on the GPU as well (`nvjpeg_letterbox`), where the frame allows it.
    pub letterbox: bool,
    /// `jpeg_decoder = "nvjpeg"` (a node that cannot start it refuses to start),
    /// not `auto` (it falls back to the CPU decoder with a warning).
    pub required: bool,
}

/// Preprocessing choices, from config (`PreprocessOptions::from_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreprocessOptions {
    pub max_pixels: u64,
    pub resize_filter: ResizeFilter,
    pub input_fit: InputFit,
    pub channel_order: ChannelOrder,
    pub decode_scale: DecodeScale,
    /// Decode JPEGs on the GPU (`None`: libjpeg-turbo on the CPU).
    pub gpu_decode: Option<GpuDecode>,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        PreprocessOptions {
            max_pixels: 40_000_000,
            resize_filter: ResizeFilter::default(),
            input_fit: InputFit::default(),
            channel_order: ChannelOrder::default(),
            decode_scale: DecodeScale::default(),
            gpu_decode: None,
        }
    }
}

impl PreprocessOptions {
    /// The options a config asks for. Its values were checked by `Config::validate`;
    /// an unknown value falls back to the default.
    pub fn from_config(config: &Config) -> Self {
        PreprocessOptions {
            max_pixels: config.ingest.max_pixels,
            resize_filter: match config.preprocess.resize_filter.as_str() {
                "antialias" => ResizeFilter::Antialias,
                _ => ResizeFilter::Linear,
            },
            input_fit: match config.preprocess.input_fit.as_str() {
                "stretch" => InputFit::Stretch,
                _ => InputFit::Letterbox,
            },
            channel_order: match config.preprocess.channel_order.as_str() {
                "bgr" => ChannelOrder::Bgr,
                _ => ChannelOrder::Rgb,
            },
            decode_scale: match config.decode.decode_scale.as_str() {
                "auto" => DecodeScale::Auto,
                _ => DecodeScale::Off,
            },
            gpu_decode: match config.decode.jpeg_decoder.as_str() {
                "nvjpeg" => Some(true),
                "auto" if config.runtime.execution_provider == visionq_contract::config::ExecutionProvider::Cuda => Some(false),
                _ => None,
            }
            .map(|required| GpuDecode {
                device: config.runtime.cuda_device_id,
                threads: config.decode.nvjpeg_threads,
                max_batch: config.decode.nvjpeg_max_batch,
                letterbox: config.decode.nvjpeg_letterbox,
                required,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_decoder_picks_the_gpu_only_when_asked_or_on_a_cuda_node() {
        let mut c = Config::default();
        assert_eq!(c.decode.jpeg_decoder, "auto", "auto is the default");
        assert_eq!(PreprocessOptions::from_config(&c).gpu_decode, None, "auto on a CPU node");
        c.decode.jpeg_decoder = "cpu".into();
        c.runtime.execution_provider = visionq_contract::config::ExecutionProvider::Cuda;
        assert_eq!(PreprocessOptions::from_config(&c).gpu_decode, None, "cpu on a CUDA node");
        c.decode.jpeg_decoder = "auto".into();
        c.runtime.execution_provider = visionq_contract::config::ExecutionProvider::Cpu;
        c.runtime.execution_provider = visionq_contract::config::ExecutionProvider::Cuda;
        c.runtime.cuda_device_id = 1;
        let g = PreprocessOptions::from_config(&c).gpu_decode.expect("auto on a CUDA node");
        assert_eq!((g.device, g.threads, g.max_batch, g.required), (1, c.decode.nvjpeg_threads, c.decode.nvjpeg_max_batch, false));
        c.decode.jpeg_decoder = "nvjpeg".into();
        c.runtime.execution_provider = visionq_contract::config::ExecutionProvider::Cpu;
        assert!(PreprocessOptions::from_config(&c).gpu_decode.expect("asked for").required);
    }
}
