//! tmca-trainer (work in progress; see the issues).
