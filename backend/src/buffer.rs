//! The LLMK buffer type: plain host memory (weights keep the GGUF layout), so
//! the loader can map a model file straight into it and the CPU backend can
//! read whatever lands here.

use crate::ffi;
use std::alloc::Layout;
use std::ffi::{c_char, c_void};

/// Tensor data alignment (ggml's CPU buffers use 32; one cache line here).
pub const ALIGNMENT: usize = 64;

/// What a buffer's `context` points to.
struct Memory {
    base: *mut u8,
    size: usize,
    /// `Some` when we allocated `base` (and free it), `None` for host memory
    /// we were handed (a mapped model file).
    owned: Option<Layout>,
}

pub(crate) fn buffer_type() -> ffi::ggml_backend_buffer_type {
    ffi::ggml_backend_buffer_type {
        iface: ffi::ggml_backend_buffer_type_i {
            get_name: Some(buft_get_name),
            alloc_buffer: Some(buft_alloc_buffer),
            // Optional: ggml then allocates through `alloc_buffer`.
            alloc_buffer_n: None,
            get_alignment: Some(buft_get_alignment),
            get_max_size: None,
            get_alloc_size: None,
            get_alloc_size_n: None,
            is_host: Some(buft_is_host),
        },
        device: std::ptr::null_mut(), // set by init()
        context: std::ptr::null_mut(),
    }
}

/// ggml's buffer type as hosts of backend API 2 (ggml 0.25) lay it out: the
/// vendored (API 3) interface without `alloc_buffer_n` and `get_alloc_size_n`,
/// then `device` and `context`.
#[repr(C)]
pub(crate) struct BufferTypeV2 {
    get_name: Option<unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t) -> *const c_char>,
    alloc_buffer: Option<
        unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t, usize) -> ffi::ggml_backend_buffer_t,
    >,
    get_alignment: Option<unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t) -> usize>,
    get_max_size: Option<unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t) -> usize>,
    get_alloc_size: Option<
        unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t, *const ffi::ggml_tensor) -> usize,
    >,
    is_host: Option<unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t) -> bool>,
    pub(crate) device: ffi::ggml_backend_dev_t,
    context: *mut c_void,
}

impl BufferTypeV2 {
    /// The same functions as [`buffer_type`], in API 2's layout.
    pub(crate) fn new() -> BufferTypeV2 {
        let i = buffer_type().iface;
        BufferTypeV2 {
            get_name: i.get_name,
            alloc_buffer: i.alloc_buffer,
            get_alignment: i.get_alignment,
            get_max_size: i.get_max_size,
            get_alloc_size: i.get_alloc_size,
            is_host: i.is_host,
            device: std::ptr::null_mut(), // set by init()
            context: std::ptr::null_mut(),
        }
    }
}

// API 3's interface is API 2's plus two function pointers.
const _: () = assert!(
    std::mem::size_of::<BufferTypeV2>() + 2 * std::mem::size_of::<usize>()
        == std::mem::size_of::<ffi::ggml_backend_buffer_type>()
);

fn interface() -> ffi::ggml_backend_buffer_i {
    ffi::ggml_backend_buffer_i {
        free_buffer: Some(free_buffer),
        get_base: Some(get_base),
        init_tensor: None,
        memset_tensor: Some(memset_tensor),
        set_tensor: Some(set_tensor),
        get_tensor: Some(get_tensor),
        set_tensor_2d: None,
        get_tensor_2d: None,
        cpy_tensor: Some(cpy_tensor),
        clear: Some(clear),
        reset: None,
    }
}

fn new_buffer(memory: Memory) -> ffi::ggml_backend_buffer_t {
    let size = memory.size;
    let ctx = Box::into_raw(Box::new(memory));
    // SAFETY: ggml_backend_buffer_init copies the interface and keeps ctx; our
    // free_buffer takes ctx back.
    let buf =
        unsafe { (crate::host().buffer_init)(crate::our_buft(), interface(), ctx.cast(), size) };
    if buf.is_null() {
        // SAFETY: not handed to ggml after all.
        unsafe { drop_memory(Box::from_raw(ctx)) };
    }
    buf
}

fn drop_memory(m: Box<Memory>) {
    if let Some(layout) = m.owned {
        // SAFETY: allocated in buft_alloc_buffer with this layout.
        unsafe { std::alloc::dealloc(m.base, layout) };
    }
}

/// Wraps host memory (a mapped model file) as an LLMK buffer without copying.
///
/// # Safety
/// `ptr` is null or points to `size` bytes that stay valid (readable, and
/// writable where ggml writes tensors) for the life of the buffer.
pub(crate) unsafe fn from_host_ptr(ptr: *mut c_void, size: usize) -> ffi::ggml_backend_buffer_t {
    if ptr.is_null() {
        return std::ptr::null_mut();
    }
    new_buffer(Memory {
        base: ptr.cast(),
        size,
        owned: None,
    })
}

unsafe extern "C" fn buft_get_name(_: ffi::ggml_backend_buffer_type_t) -> *const c_char {
    crate::NAME.as_ptr()
}

unsafe extern "C" fn buft_alloc_buffer(
    _: ffi::ggml_backend_buffer_type_t,
    size: usize,
) -> ffi::ggml_backend_buffer_t {
    // Size 0 is legal (llama.cpp's supports_op probes allocate dummy buffers).
    let Ok(layout) = Layout::from_size_align(size.max(ALIGNMENT), ALIGNMENT) else {
        return std::ptr::null_mut();
    };
    // SAFETY: non-zero size.
    let base = unsafe { std::alloc::alloc(layout) };
    if base.is_null() {
        crate::log(
            ffi::GGML_LOG_LEVEL_ERROR,
            &format!("cannot allocate a buffer of {size} bytes"),
        );
        return std::ptr::null_mut();
    }
    new_buffer(Memory {
        base,
        size,
        owned: Some(layout),
    })
}

unsafe extern "C" fn buft_get_alignment(_: ffi::ggml_backend_buffer_type_t) -> usize {
    ALIGNMENT
}

unsafe extern "C" fn buft_is_host(_: ffi::ggml_backend_buffer_type_t) -> bool {
    true
}

/// SAFETY (all below): ggml calls these with a buffer made by new_buffer, whose
/// context is a live Memory, and with tensors whose data lies inside it
/// (ggml-backend.cpp checks offset + size against the tensor's bytes).
unsafe fn memory<'a>(buffer: ffi::ggml_backend_buffer_t) -> &'a Memory {
    unsafe { &*((*buffer).context as *const Memory) }
}

unsafe extern "C" fn free_buffer(buffer: ffi::ggml_backend_buffer_t) {
    // SAFETY: see memory(); ggml frees the buffer struct itself afterwards.
    unsafe {
        let m = memory(buffer);
        crate::sparse::invalidate(m.base, m.size);
        drop_memory(Box::from_raw((*buffer).context as *mut Memory))
    };
}

unsafe extern "C" fn get_base(buffer: ffi::ggml_backend_buffer_t) -> *mut c_void {
    // SAFETY: see memory().
    unsafe { memory(buffer).base.cast() }
}

unsafe extern "C" fn memset_tensor(
    _: ffi::ggml_backend_buffer_t,
    tensor: *mut ffi::ggml_tensor,
    value: u8,
    offset: usize,
    size: usize,
) {
    // SAFETY: see memory().
    unsafe {
        let at = ((*tensor).data as *mut u8).add(offset);
        crate::sparse::invalidate(at, size);
        std::ptr::write_bytes(at, value, size)
    };
}

unsafe extern "C" fn set_tensor(
    _: ffi::ggml_backend_buffer_t,
    tensor: *mut ffi::ggml_tensor,
    data: *const c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: see memory(); data holds size bytes (ggml's contract).
    unsafe {
        let at = ((*tensor).data as *mut u8).add(offset);
        crate::sparse::invalidate(at, size);
        std::ptr::copy_nonoverlapping(data as *const u8, at, size)
    };
}

unsafe extern "C" fn get_tensor(
    _: ffi::ggml_backend_buffer_t,
    tensor: *const ffi::ggml_tensor,
    data: *mut c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: see memory(); data has room for size bytes (ggml's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(
            ((*tensor).data as *const u8).add(offset),
            data as *mut u8,
            size,
        )
    };
}

unsafe extern "C" fn cpy_tensor(
    _: ffi::ggml_backend_buffer_t,
    src: *const ffi::ggml_tensor,
    dst: *mut ffi::ggml_tensor,
) -> bool {
    // SAFETY: ggml passes live tensors; a host source is plain memory. ggml
    // checks the sizes match before it calls this (ggml_backend_tensor_copy),
    // but a copy of more bytes than `dst` holds would write past it, so the
    // sizes are checked here too and a mismatch is refused (ggml then copies
    // through its own path, which asserts).
    unsafe {
        let sbuf = (*src).buffer;
        if sbuf.is_null()
            || !is_host((*sbuf).buft)
            || (*src).data.is_null()
            || (*dst).data.is_null()
        {
            return false;
        }
        let (n_src, n_dst) = (crate::ops::nbytes(&*src), crate::ops::nbytes(&*dst));
        if n_src != n_dst {
            return false;
        }
        crate::sparse::invalidate((*dst).data as *const u8, n_dst);
        std::ptr::copy_nonoverlapping((*src).data as *const u8, (*dst).data as *mut u8, n_src);
    }
    true
}

unsafe extern "C" fn clear(buffer: ffi::ggml_backend_buffer_t, value: u8) {
    // SAFETY: see memory().
    unsafe {
        let m = memory(buffer);
        crate::sparse::invalidate(m.base, m.size);
        std::ptr::write_bytes(m.base, value, m.size);
    }
}

/// Whether `buft` is host memory, asked of the host's
/// `ggml_backend_buft_is_host` (the interface's layout is the host's).
///
/// # Safety
/// `buft` is null or a live buffer type.
pub(crate) unsafe fn is_host(buft: ffi::ggml_backend_buffer_type_t) -> bool {
    // SAFETY: forwarded contract; a host function on a live buffer type.
    !buft.is_null() && unsafe { (crate::host().buft_is_host)(buft) }
}
