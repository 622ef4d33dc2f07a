//! Why a component does not fit the `handler` world, in the author's terms.
//!
//! wasmtime's type check stops at the first mismatch and words it in the
//! canonical ABI's terms ("expected 2-tuple, found 1-tuple"). When it fails,
//! this walks the component's own type and lists every problem at once: each
//! import busbar does not provide, and the `handle` export written out beside
//! the signature the contract expects; wasmtime's message comes last.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Type};

/// `handle` as `wit/plugin.wit` declares it.
pub const EXPECTED_HANDLE: &str =
    "handle: func(event: event, delivery: delivery) -> result<list<new-event>, handler-error>";

/// `handle` as the contract's types lower, in [`wit`]'s spelling: what a
/// fitting component's export reads as.
const EXPECTED_LOWERED: &str = "handle: func(event: record {id: string, source: string, \
detail-type: string, time: string, account: string, region: string, resources: list<string>, \
detail: string, bus: string}, delivery: record {rule: string, target: string, attempt: u32, \
id: string}) -> result<list<record {source: string, detail-type: string, detail: string, \
resources: list<string>, bus: option<string>}>, variant {retry(string), reject(string)}>";

/// The packages whose interfaces the linker provides: busbar's own at
/// 0.1.x and the WASI 0.2 base (`imports/wasi.rs`), any patch version.
const PROVIDED: &[(&str, &str)] = &[
    ("busbar:plugin/", "@0.1."),
    ("wasi:cli/", "@0.2."),
    ("wasi:clocks/", "@0.2."),
    ("wasi:filesystem/", "@0.2."),
    ("wasi:io/", "@0.2."),
    ("wasi:random/", "@0.2."),
    ("wasi:sockets/", "@0.2."),
];

/// The message for a component the linker refused with `error`.
pub fn explain(
    name: &str,
    engine: &wasmtime::Engine,
    component: &Component,
    error: &str,
) -> String {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for (import, _) in ty.imports(engine) {
        if !PROVIDED
            .iter()
            .any(|(package, version)| import.starts_with(package) && import.contains(version))
        {
            let hint = if import.starts_with("wasi:http/") {
                " (componentize-js adds it for fetch(): build with `--disable http fetch-event` and \
                 send requests through busbar:plugin/http)"
            } else {
                ""
            };
            problems.push(format!(
                "it imports `{import}`, which busbar does not provide: busbar provides \
                 busbar:plugin/{{log,kv,config,http}}@0.1.0 and WASI 0.2.x (cli, clocks, \
                 filesystem, io, random, sockets){hint}"
            ));
        }
    }
    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(n, item)| (n.to_string(), item.ty))
        .collect();
    match exports.iter().find(|(n, _)| n == "handle") {
        None => {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            problems.push(format!(
                "it exports no `handle` (its exports: {}); the world expects `{EXPECTED_HANDLE}`",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        Some((_, ComponentItem::ComponentFunc(func))) => {
            let found = signature("handle", func);
            if found != EXPECTED_LOWERED {
                problems.push(format!(
                    "the world expects `{EXPECTED_HANDLE}` (event, delivery, new-event and \
                     handler-error being the records of busbar:plugin/types@0.1.0: `busbar wit`), \
                     the component exports `{found}`"
                ));
            }
        }
        Some(_) => problems.push(format!(
            "its `handle` export is not a function; the world expects `{EXPECTED_HANDLE}`"
        )),
    }
    // One line, as every load error is: it is shown in tables and logs.
    let listed: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| format!("({}) {p}", i + 1))
        .collect();
    format!(
        "{name}.wasm does not fit the busbar:plugin `handler` world: {} (wasmtime: {error})",
        listed.join("; ")
    )
}

fn signature(name: &str, func: &ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(n, t)| format!("{n}: {}", wit(&t)))
        .collect();
    let results: Vec<String> = func.results().map(|t| wit(&t)).collect();
    let arrow = match results.len() {
        0 => String::new(),
        _ => format!(" -> {}", results.join(", ")),
    };
    format!("{name}: func({}){arrow}", params.join(", "))
}

/// A type in WIT's spelling; records are written out field by field, as
/// the component's type carries no names for them.
fn wit(t: &Type) -> String {
    let opt = |t: Option<Type>| t.map_or("_".to_string(), |t| wit(&t));
    match t {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", wit(&l.ty())),
        Type::Record(r) => {
            let fields: Vec<String> = r
                .fields()
                .map(|f| format!("{}: {}", f.name, wit(&f.ty)))
                .collect();
            format!("record {{{}}}", fields.join(", "))
        }
        Type::Tuple(t) => {
            let types: Vec<String> = t.types().map(|t| wit(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(v) => {
            let cases: Vec<String> = v
                .cases()
                .map(|c| match c.ty {
                    Some(t) => format!("{}({})", c.name, wit(&t)),
                    None => c.name.to_string(),
                })
                .collect();
            format!("variant {{{}}}", cases.join(", "))
        }
        Type::Enum(e) => format!("enum {{{}}}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(o) => format!("option<{}>", wit(&o.ty())),
        Type::Result(r) => format!("result<{}, {}>", opt(r.ok()), opt(r.err())),
        Type::Flags(f) => format!("flags {{{}}}", f.names().collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that fits reads exactly as [`EXPECTED_LOWERED`], so a
    /// good `handle` is never reported as a mismatch.
    #[test]
    fn a_fitting_handle_reads_as_expected() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/fixtures/echo-v1.wasm");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run plugins/build.sh first)", path.display()));
        let engine = wasmtime::Engine::default();
        let component = Component::new(&engine, &bytes).unwrap();
        let ty = component.component_type();
        let (_, handle) = ty
            .exports(&engine)
            .find(|(n, _)| *n == "handle")
            .expect("echo-v1 exports handle");
        let ComponentItem::ComponentFunc(func) = handle.ty else {
            panic!("handle is not a function");
        };
        assert_eq!(signature("handle", &func), EXPECTED_LOWERED);
    }
}
