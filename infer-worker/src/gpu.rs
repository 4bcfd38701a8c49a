//! GPU utilisation and memory read through NVML (`libnvidia-ml`, loaded at run time
//! by the `nvml-wrapper` crate), for `/metrics` and the benchmarks. Only a CUDA build
//! reads them; any other build, or a machine without the NVIDIA driver, says that
//! no reading is available instead of reporting zeros.

/// One reading of one device.
#[derive(Debug, Clone, Copy)]
pub struct GpuReading {
    /// Share of the driver's last sample period in which a kernel ran, 0–1.
    pub utilization: f64,
    pub memory_used_bytes: u64,
}

#[cfg(feature = "cuda")]
pub struct GpuProbe {
    nvml: nvml_wrapper::Nvml,
    device: u32,
}

#[cfg(feature = "cuda")]
impl GpuProbe {
    /// NVML for device `device`; the reason when it cannot be read.
    pub fn open(device: u32) -> Result<GpuProbe, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let probe = GpuProbe { nvml, device };
        probe.read()?;
        Ok(probe)
    }

    pub fn read(&self) -> Result<GpuReading, String> {
        let d = self.nvml.device_by_index(self.device).map_err(|e| format!("NVML device {}: {e}", self.device))?;
        let u = d.utilization_rates().map_err(|e| format!("NVML utilisation: {e}"))?;
        let mem = d.memory_info().map_err(|e| format!("NVML memory: {e}"))?;
        Ok(GpuReading { utilization: u.gpu as f64 / 100.0, memory_used_bytes: mem.used })
    }
}

#[cfg(not(feature = "cuda"))]
pub struct GpuProbe;

#[cfg(not(feature = "cuda"))]
impl GpuProbe {
    pub fn open(_device: u32) -> Result<GpuProbe, String> {
        Err("this binary was built without the `cuda` feature".into())
    }

    pub fn read(&self) -> Result<GpuReading, String> {
        Err("this binary was built without the `cuda` feature".into())
    }
}

/// Exports the device's utilisation and memory on `metrics` every `period` until the
/// returned guard is dropped (a no-op, logged once, when NVML cannot be read).
pub fn export(metrics: std::sync::Arc<visionq_contract::Metrics>, device: u32, period: std::time::Duration) -> Option<ExportGuard> {
    let probe = match GpuProbe::open(device) {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(%reason, "GPU utilisation is not exported");
            return None;
        }
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("visionq-nvml".into())
        .spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = probe.read() {
                    metrics.gpu_utilization_ratio.set(r.utilization);
                    metrics.gpu_memory_used_bytes.set(r.memory_used_bytes as f64);
                }
                std::thread::sleep(period);
            }
        })
        .ok()?;
    Some(ExportGuard { stop })
}

/// Stops the exporting thread when dropped.
pub struct ExportGuard {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
