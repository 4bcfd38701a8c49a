//! Execution providers: CPU everywhere, CUDA where asked for. Asking for CUDA in a
//! build or on a machine without it is an error, never a silent CPU fallback.

use ort::session::builder::SessionBuilder;
use visionq_contract::Config;
use visionq_contract::config::ExecutionProvider;

use crate::error::InferError;

pub fn configure(builder: SessionBuilder, config: &Config) -> Result<SessionBuilder, InferError> {
    match config.runtime.execution_provider {
        ExecutionProvider::Cuda => cuda(builder, config),
        ExecutionProvider::Cpu => Ok(builder),
    }
}

#[cfg(feature = "cuda")]
fn cuda(builder: SessionBuilder, config: &Config) -> Result<SessionBuilder, InferError> {
    use ort::ep::cuda::ConvAlgorithmSearch;
    let search = match config.runtime.cudnn_conv_algo_search.as_str() {
        "heuristic" => ConvAlgorithmSearch::Heuristic,
        "default" => ConvAlgorithmSearch::Default,
        _ => ConvAlgorithmSearch::Exhaustive,
    };
    let ep = ort::ep::CUDA::default()
        .with_device_id(config.runtime.cuda_device_id)
        .with_conv_algorithm_search(search)
        .with_tf32(config.runtime.cuda_tf32)
        .build()
        .error_on_failure();
    builder.with_execution_providers([ep]).map_err(|e| InferError::CudaUnavailable(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: SessionBuilder, _: &Config) -> Result<SessionBuilder, InferError> {
    Err(InferError::CudaUnavailable("this binary was built without the `cuda` feature".into()))
}
