//! NumPy's allocator hooks (NEP 49) wired to [`crate::pool`] for large fresh outputs.
//!
//! While a large output is created, NumPy's current data-memory handler is switched to this
//! one and back. The array keeps a reference to the handler that allocated it and frees its
//! data through it, so the block goes back to the pool when the array dies: the arrays are
//! ordinary NumPy arrays that own their data. Requests below [`pool::MIN_BYTES`] and
//! pointers the pool did not hand out go to the C allocator.

use std::ffi::{c_char, c_void};

use numpy::{Element, PyArrayDescrMethods, PyArrayDyn, npyffi};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCapsule, PyCapsuleMethods};

use crate::pool;

/// `PyDataMemAllocator` of NumPy's C API.
#[repr(C)]
struct Allocator {
    ctx: *mut c_void,
    malloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    calloc: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    realloc: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void, usize),
}

/// `PyDataMem_Handler` of NumPy's C API (version 1).
#[repr(C)]
struct Handler {
    name: [c_char; 127],
    version: u8,
    allocator: Allocator,
}

// SAFETY: the handler is immutable and its context pointer is null; the functions it points
// to are thread-safe (the pool is behind a mutex, the C allocator is thread-safe).
unsafe impl Sync for Handler {}

const fn handler_name() -> [c_char; 127] {
    let text = b"xent_rs_output_cache";
    let mut name = [0 as c_char; 127];
    let mut i = 0;
    while i < text.len() {
        name[i] = text[i] as c_char;
        i += 1;
    }
    name
}

static HANDLER: Handler = Handler {
    name: handler_name(),
    version: 1,
    allocator: Allocator {
        ctx: std::ptr::null_mut(),
        malloc: cache_malloc,
        calloc: cache_calloc,
        realloc: cache_realloc,
        free: cache_free,
    },
};

unsafe extern "C" fn cache_malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size >= pool::MIN_BYTES {
        pool::allocate(size).cast()
    } else {
        // SAFETY: plain C allocation.
        unsafe { libc::malloc(size) }
    }
}

unsafe extern "C" fn cache_calloc(_ctx: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(bytes) if bytes >= pool::MIN_BYTES => {
            let ptr = pool::allocate(bytes);
            if !ptr.is_null() {
                // SAFETY: the block holds at least `bytes` writable bytes.
                unsafe { ptr.write_bytes(0, bytes) };
            }
            ptr.cast()
        }
        // SAFETY: plain C allocation (it checks the product itself).
        _ => unsafe { libc::calloc(count, size) },
    }
}

unsafe extern "C" fn cache_realloc(ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(capacity) = pool::capacity(ptr.cast()) else {
        // SAFETY: `ptr` is null or came from the C allocator (below the pool's size).
        return unsafe { libc::realloc(ptr, size) };
    };
    if size <= capacity {
        return ptr;
    }
    // SAFETY: a fresh allocation through this handler.
    let grown = unsafe { cache_malloc(ctx, size) };
    if !grown.is_null() {
        // SAFETY: the old block holds `capacity` bytes, the new one at least `size` > that.
        unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), grown.cast(), capacity) };
        pool::release(ptr.cast());
    }
    grown
}

unsafe extern "C" fn cache_free(_ctx: *mut c_void, ptr: *mut c_void, _size: usize) {
    if !pool::release(ptr.cast()) {
        // SAFETY: a pointer this handler did not take from the pool came from the C
        // allocator (or is null).
        unsafe { libc::free(ptr) }
    }
}

/// `PyDataMem_SetHandler` (slot 304 of NumPy's C API table, NumPy >= 1.22).
type SetHandler = unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;

const SET_HANDLER_SLOT: usize = 304;

/// The handler capsule and NumPy's `PyDataMem_SetHandler`, looked up once.
struct Hooks {
    capsule: Py<PyCapsule>,
    set_handler: SetHandler,
}

fn hooks(py: Python<'_>) -> PyResult<&'static Hooks> {
    static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();
    HOOKS.get_or_try_init(py, || {
        let module = py
            .import("numpy._core.multiarray")
            .or_else(|_| py.import("numpy.core.multiarray"))?;
        let api = module.getattr("_ARRAY_API")?.cast_into::<PyCapsule>()?;
        let table = api.pointer_checked(None)?.cast::<*const c_void>();
        // SAFETY: the capsule holds NumPy's C API table, which has the slot since NumPy
        // 1.22 (the package needs 1.23), and stays alive with the module.
        let slot = unsafe { *table.as_ptr().add(SET_HANDLER_SLOT) };
        if slot.is_null() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "NumPy has no PyDataMem_SetHandler",
            ));
        }
        // SAFETY: slot 304 is `PyObject *PyDataMem_SetHandler(PyObject *)`.
        let set_handler = unsafe { std::mem::transmute::<*const c_void, SetHandler>(slot) };
        // SAFETY: the capsule points at a static handler under the name NumPy checks.
        let capsule = unsafe {
            let raw = ffi::PyCapsule_New(
                (&raw const HANDLER).cast_mut().cast(),
                c"mem_handler".as_ptr(),
                None,
            );
            Bound::from_owned_ptr_or_err(py, raw)?.cast_into::<PyCapsule>()?
        };
        Ok(Hooks {
            capsule: capsule.unbind(),
            set_handler,
        })
    })
}

/// Makes `handler` NumPy's current data-memory handler; returns the previous one.
fn swap_handler<'py>(
    py: Python<'py>,
    hooks: &Hooks,
    handler: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: NumPy's function, called with the GIL held; it returns a new reference.
    unsafe { Bound::from_owned_ptr_or_err(py, (hooks.set_handler)(handler.as_ptr())) }
}

/// A fresh, uninitialised C-order array, its data taken from the output cache when it is
/// large enough and the cache is on. A failed allocation is NumPy's `MemoryError`, and
/// NumPy's own allocator is current again either way.
///
/// # Safety
/// Like `PyArrayDyn::new(.., false)`: the caller must write every element before the array
/// is read.
pub(crate) unsafe fn new_output<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let bytes = shape
        .iter()
        .try_fold(std::mem::size_of::<T>(), |n, &d| n.checked_mul(d));
    let allocate = || {
        let mut dims: Vec<npyffi::npy_intp> =
            shape.iter().map(|&d| d as npyffi::npy_intp).collect();
        // SAFETY: NumPy's array constructor, called with the GIL held, a dtype reference it
        // steals, `dims.len()` dimensions and no data (NumPy allocates). It returns a new
        // reference, or NULL with NumPy's error (a MemoryError) set.
        unsafe {
            let ptr = npyffi::PY_ARRAY_API.PyArray_NewFromDescr(
                py,
                npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
                T::get_dtype(py).into_dtype_ptr(),
                dims.len() as std::ffi::c_int,
                dims.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyArrayDyn<T>>())
        }
    };
    let cached = bytes.is_some_and(|b| b >= pool::MIN_BYTES) && pool::limit() > 0;
    let hooks = if cached { hooks(py).ok() } else { None };
    let Some(hooks) = hooks else {
        return allocate();
    };
    let ours = hooks.capsule.bind(py).as_any();
    let Ok(previous) = swap_handler(py, hooks, ours) else {
        return allocate();
    };
    let array = allocate();
    // Restoring cannot fail for a handler NumPy just returned; were it to, ours stays
    // current, which only routes further large arrays through the same C-compatible hooks.
    let _ = swap_handler(py, hooks, &previous);
    array
}
