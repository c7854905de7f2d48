//! The per-project page server (issue 3).
