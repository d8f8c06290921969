//! x86-64 kernels for AVX-512 F/BW/VL with VNNI (`vpdpbusd`: u8 x i8 products,
//! four at a time, accumulated into i32 lanes). Entry points are
//! `#[target_feature]` functions reached only through the dispatch table ([`crate::table`]), which
//! checks the CPU first.

pub mod grid;
pub mod iq4_xs;
pub mod panel;
pub mod q2_k;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod sparse_x4;
pub mod ternary_lut;
