//! The only `bindgen!` calls: host-side types for the `openport:plugin` worlds. The
//! state-witness world reuses the tool-adapter world's `types` and `host` bindings, so one
//! linker serves both.

pub mod adapter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool-adapter",
        imports: { "openport:plugin/host.http-fetch": async, "openport:plugin/host.run-as-task": async },
        exports: { default: async },
    });
}

pub mod witness {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "state-witness",
        exports: { default: async },
        with: {
            "openport:plugin/types": super::adapter::openport::plugin::types,
            "openport:plugin/host": super::adapter::openport::plugin::host,
        },
    });
}
