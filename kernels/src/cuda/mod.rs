//! CUDA kernels (in progress).
