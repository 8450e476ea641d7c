//! The REAPI cache subset over gRPC (not written yet).
