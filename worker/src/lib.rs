//! tmca-worker (work in progress; see the issues).
