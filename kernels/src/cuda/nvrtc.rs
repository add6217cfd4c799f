//! Run-time compilation of the kernels with NVRTC: a CUBIN for the device's architecture
//! (`--gpu-architecture=sm_XY`, loaded without the driver's PTX JIT, so it does not matter
//! whether the NVRTC found at run time is newer than the driver), or PTX for `compute_XY`
//! when NVRTC cannot emit a CUBIN for it.

use candle_core::cuda_backend::cudarc::nvrtc::{result, sys};
use std::ffi::{c_char, CStr, CString};

/// A compiled module.
pub enum Image {
    Cubin(Vec<u8>),
    Ptx(String),
}

impl Image {
    pub fn kind(&self) -> &'static str {
        match self {
            Image::Cubin(_) => "CUBIN",
            Image::Ptx(_) => "PTX",
        }
    }
}

/// Frees the program on every path.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program and freed only here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

impl Program {
    fn compile(src: &str, name: &str, arch: &str) -> Result<Self, String> {
        let src = CString::new(src).map_err(|e| e.to_string())?;
        let name = CString::new(name).map_err(|e| e.to_string())?;
        let prog = Program(result::create_program(&src, Some(&name)).map_err(|e| e.to_string())?);
        let opts = [format!("--gpu-architecture={arch}")];
        // SAFETY: `prog` is a live program.
        if let Err(e) = unsafe { result::compile_program(prog.0, &opts) } {
            // SAFETY: as above.
            let log = unsafe { result::get_program_log(prog.0) }
                .map(|l| {
                    // SAFETY: NVRTC returns a NUL-terminated log.
                    unsafe { CStr::from_ptr(l.as_ptr()) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            return Err(format!("{e} ({}): {log}", opts.join(" ")));
        }
        Ok(prog)
    }

    fn cubin(&self) -> Result<Vec<u8>, String> {
        let mut size = 0usize;
        // SAFETY: a compiled program; `size` is a valid out-pointer.
        unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) }
            .result()
            .map_err(|e| e.to_string())?;
        if size == 0 {
            return Err("NVRTC returned an empty CUBIN".into());
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds the `size` bytes NVRTC reported.
        unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr() as *mut c_char) }
            .result()
            .map_err(|e| e.to_string())?;
        Ok(buf)
    }

    fn ptx(&self) -> Result<String, String> {
        // SAFETY: a compiled program.
        let ptx = unsafe { result::get_ptx(self.0) }.map_err(|e| e.to_string())?;
        // SAFETY: NVRTC returns NUL-terminated PTX.
        Ok(unsafe { CStr::from_ptr(ptx.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
}

/// `src` compiled for compute capability `(major, minor)`: a CUBIN, or PTX if NVRTC cannot
/// produce one (the error then names both attempts).
pub fn compile(src: &str, name: &str, (major, minor): (i32, i32)) -> Result<Image, String> {
    let cubin = Program::compile(src, name, &format!("sm_{major}{minor}")).and_then(|p| p.cubin());
    match cubin {
        Ok(bin) => Ok(Image::Cubin(bin)),
        Err(e_cubin) => Program::compile(src, name, &format!("compute_{major}{minor}"))
            .and_then(|p| p.ptx())
            .map(Image::Ptx)
            .map_err(|e_ptx| format!("CUBIN for sm_{major}{minor}: {e_cubin}; PTX: {e_ptx}")),
    }
}

#[cfg(test)]
mod tests {
    //! NVRTC needs no GPU: every module compiles to a CUBIN for the GPUs we target, holding
    //! every kernel its launcher loads. Needs libnvrtc (the CI's CUDA step has the wheel's).

    use super::{compile, Image};

    const MODULES: [(&str, &str, &str); 3] = [
        (
            "tmca_masked_pool",
            include_str!("masked_pool.cu"),
            include_str!("masked_pool.rs"),
        ),
        (
            "tmca_similarity",
            include_str!("similarity.cu"),
            include_str!("similarity.rs"),
        ),
        (
            "tmca_contrastive",
            include_str!("contrastive.cu"),
            include_str!("contrastive.rs"),
        ),
    ];

    /// The kernel names a launcher loads: `MODULE.func::<T>(&dev, "<name>")`.
    fn launched(launcher: &str) -> Vec<&str> {
        let key = "func::<T>(&dev, \"";
        launcher
            .match_indices(key)
            .filter_map(|(i, _)| launcher[i + key.len()..].split('"').next())
            .collect()
    }

    #[test]
    fn every_module_compiles_to_a_cubin_with_its_kernels() {
        for arch in [(9, 0), (8, 0)] {
            for (name, cu, launcher) in MODULES {
                let src = format!("{}\n{cu}", super::super::COMMON);
                let bin = match compile(&src, &format!("{name}.cu"), arch) {
                    Ok(Image::Cubin(bin)) => bin,
                    Ok(Image::Ptx(_)) => panic!("{name} sm_{}{}: only PTX", arch.0, arch.1),
                    Err(e) => panic!("{name} sm_{}{}: {e}", arch.0, arch.1),
                };
                assert_eq!(&bin[..4], b"\x7fELF", "{name}: not an ELF image");
                let kernels = launched(launcher);
                assert!(kernels.len() >= 3, "{name}: launcher loads {kernels:?}");
                for k in kernels {
                    for sfx in ["f32", "f64"] {
                        let sym = format!("{k}_{sfx}");
                        let found = bin.windows(sym.len()).any(|w| w == sym.as_bytes());
                        assert!(found, "{name} sm_{}{}: no kernel {sym}", arch.0, arch.1);
                    }
                }
            }
        }
    }
}
