//! The wasmtime host: engine, plugin registry, manifests, limits, host imports, hot reload.
