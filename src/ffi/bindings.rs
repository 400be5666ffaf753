//! Raw bindgen output for the OpenSIPS ABI selected at build time. Private to the FFI layer:
//! nothing outside `ffi` sees a raw OpenSIPS type.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(clippy::all)]

#[cfg(sso_abi = "304")]
include!(concat!(env!("OUT_DIR"), "/bindings_304.rs"));
#[cfg(sso_abi = "306")]
include!(concat!(env!("OUT_DIR"), "/bindings_306.rs"));
#[cfg(sso_abi = "400")]
include!(concat!(env!("OUT_DIR"), "/bindings_400.rs"));

/// Every supported ABI side by side, for the layout test.
#[cfg(test)]
#[allow(clashing_extern_declarations)]
pub mod all {
    pub mod abi_304 {
        #![allow(
            non_camel_case_types,
            non_snake_case,
            non_upper_case_globals,
            dead_code
        )]
        include!(concat!(env!("OUT_DIR"), "/bindings_304.rs"));
    }
    pub mod abi_306 {
        #![allow(
            non_camel_case_types,
            non_snake_case,
            non_upper_case_globals,
            dead_code
        )]
        include!(concat!(env!("OUT_DIR"), "/bindings_306.rs"));
    }
    pub mod abi_400 {
        #![allow(
            non_camel_case_types,
            non_snake_case,
            non_upper_case_globals,
            dead_code
        )]
        include!(concat!(env!("OUT_DIR"), "/bindings_400.rs"));
    }
}
