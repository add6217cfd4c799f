//! tmca-kernels (work in progress; see the issues).
