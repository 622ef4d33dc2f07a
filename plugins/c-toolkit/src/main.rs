//! `c-toolkit`: what a C (or any clang-built) busbar plugin needs besides clang.
//!
//! - `c-toolkit bindings WIT_DIR OUT_DIR`: wit-bindgen's C bindings for the
//!   world `handler` (`handler.h`, `handler.c` and `handler_component_type.o`,
//!   the object that carries the world's type into the linked module).
//! - `c-toolkit component CORE.wasm OUT.wasm`: wraps a core module built with
//!   `clang --target=wasm32-wasi -mexec-model=reactor` into a component, with
//!   the WASI preview 1 reactor adapter for the libc's imports. The same as
//!   `wasm-tools component new CORE.wasm --adapt wasi_snapshot_preview1.reactor.wasm`.

use anyhow::{Context, Result, bail};
use std::path::Path;
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};

const USAGE: &str = "usage: c-toolkit bindings WIT_DIR OUT_DIR
       c-toolkit component CORE.wasm OUT.wasm";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["bindings", wit, out] => bindings(Path::new(wit), Path::new(out)),
        ["component", core, out] => component(Path::new(core), Path::new(out)),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("c-toolkit: {e:#}");
        std::process::exit(1);
    }
}

fn bindings(wit: &Path, out: &Path) -> Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some("handler"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn component(core: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    if !bytes.starts_with(b"\0asm\x01\0\0\0") {
        bail!(
            "{} is not a core WebAssembly module (build it with clang --target=wasm32-wasi)",
            core.display()
        );
    }
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .with_context(|| {
            format!(
                "{} carries no busbar world: link the handler_component_type.o that \
                 `c-toolkit bindings` wrote",
                core.display()
            )
        })?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .with_context(|| format!("making a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
