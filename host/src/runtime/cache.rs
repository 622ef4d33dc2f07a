//! The compiled-component cache: native code produced by Cranelift, stored in
//! `cache_dir` so a restart (or a reload of a file seen before) does not
//! recompile. A JavaScript or Python component takes seconds to compile and
//! milliseconds to load from here.
//!
//! Entries are keyed by the SHA-256 of the `.wasm` bytes and the engine's
//! compatibility hash (wasmtime version, target, settings), so an upgraded
//! host never loads code compiled for another configuration.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cache,
}

pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompiledCache {
    pub fn new(dir: &Path, engine: &Engine) -> anyhow::Result<CompiledCache> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the compiled cache directory {}: {e}",
                dir.display()
            )
        })?;
        // `DefaultHasher::new()` has fixed keys, so the value is stable between runs
        // of the same build; a different build at worst misses the cache.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// Loads the compiled form of `bytes` (whose hash is `sha256`), compiling and
    /// storing it on a miss. Blocking and CPU-heavy: call on a blocking thread.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> anyhow::Result<(Component, Origin)> {
        let path = self.path_for(sha256);
        if path.exists() {
            // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output.
            // Only this module writes into the cache directory, under names derived
            // from the content hash and the engine's compatibility hash, and each
            // entry is written to a temporary name and renamed into place, so a
            // reader never sees a partial file. wasmtime still checks the header
            // and refuses code built for another engine configuration.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding an unusable compiled-cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // `{:#}`: the causes on one line, never a host backtrace (which `{:?}`
        // adds under RUST_BACKTRACE=1) in what the plugin status shows.
        let component = Component::new(engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Err(e) = self.store(&path, &component) {
            // The cache is an optimisation: a full disk must not stop a plugin loading.
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled cache");
        }
        Ok((component, Origin::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let tmp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(())
    }
}
