//! The only `bindgen!` call: host-side types for the `openport:plugin` worlds.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool-adapter",
    imports: { "openport:plugin/host.http-fetch": async },
    exports: { default: async },
});
