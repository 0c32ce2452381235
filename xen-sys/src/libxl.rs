//! libxenlight, for one thing: a domain's configuration as `xl save` embeds it.
//!
//! `xl save` calls `libxl_retrieve_domain_configuration` and `libxl_domain_config_to_json`;
//! [`domain_config_json`] makes the same two calls in this process. Running `xl list -l`
//! instead costs a process start, its dynamic loading and libxl's own set-up: 155-175 ms of
//! CPU per checkpoint on the test bed's one-vCPU dom0 under emulation.
//!
//! `libxl_domain_config` is a large generated struct (1,288 bytes in 4.17, 1,368 in 4.20)
//! that only libxl reads and writes: it gets [`DOMAIN_CONFIG_ROOM`] zeroed, aligned bytes,
//! which `tests/layout.rs` checks against each release's header, and is only ever handled by
//! `libxl_domain_config_init` / `_dispose`. The library (`libxenlight.so.4.NN`, of the release
//! [`crate::version`] picked) and `libxentoollog.so.1` are loaded on first use.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;

use crate::abi::XenToolLogger;
use crate::api::{open_lib, sym};
use crate::version::Abi;
use crate::XenError;

/// libxentoollog's soname (stable across releases).
pub const LIBXENTOOLLOG: &str = "libxentoollog.so.1";

/// Bytes reserved for one `libxl_domain_config` (more than ten times its size in 4.17 and
/// 4.20; `tests/layout.rs` checks every release's header against it).
pub const DOMAIN_CONFIG_ROOM: usize = 16 * 1024;

/// `XTL_ERROR` (xentoollog.h): libxl's errors only, on stderr.
pub const XTL_ERROR: c_int = 8;

/// `LIBXL_VERSION` (libxl.h), the same 0 in every supported release.
pub const LIBXL_VERSION: c_int = 0;

/// An opaque `libxl_ctx`.
#[repr(C)]
struct LibxlCtx {
    _private: [u8; 0],
}

/// Room for a `libxl_domain_config`, aligned as any of its fields.
#[repr(C, align(16))]
struct DomainConfigRoom([u8; DOMAIN_CONFIG_ROOM]);

/// The entry points, as declared in libxl.h, _libxl_types.h and xentoollog.h (4.17 to 4.22).
#[derive(Clone, Copy)]
struct LibxlApi {
    ctx_alloc: unsafe extern "C" fn(
        pctx: *mut *mut LibxlCtx,
        version: c_int,
        flags: c_uint,
        lg: *mut XenToolLogger,
    ) -> c_int,
    ctx_free: unsafe extern "C" fn(ctx: *mut LibxlCtx) -> c_int,
    config_init: unsafe extern "C" fn(p: *mut DomainConfigRoom),
    config_dispose: unsafe extern "C" fn(p: *mut DomainConfigRoom),
    retrieve: unsafe extern "C" fn(
        ctx: *mut LibxlCtx,
        domid: u32,
        d_config: *mut DomainConfigRoom,
        ao_how: *const c_void,
    ) -> c_int,
    to_json: unsafe extern "C" fn(ctx: *mut LibxlCtx, p: *mut DomainConfigRoom) -> *mut c_char,
    logger_create: unsafe extern "C" fn(
        f: *mut libc::FILE,
        min_level: c_int,
        flags: c_uint,
    ) -> *mut XenToolLogger,
    logger_destroy: unsafe extern "C" fn(logger: *mut XenToolLogger),
}

struct Loaded {
    _libs: [Library; 2],
    api: LibxlApi,
}

static LOADED: OnceLock<Result<Loaded, XenError>> = OnceLock::new();

fn load(abi: &'static Abi) -> Result<Loaded, XenError> {
    let xl = open_lib(abi.libxenlight, abi)?;
    let log = open_lib(LIBXENTOOLLOG, abi)?;
    // SAFETY: each field's type is the symbol's signature in the 4.17 and 4.20 headers
    // (tests/layout.rs has the C compiler compare them), looked up by that name; the
    // `libxl_domain_config *` parameters take a `DomainConfigRoom`, larger than the struct.
    let api = unsafe {
        LibxlApi {
            ctx_alloc: sym(&xl, abi.libxenlight, "libxl_ctx_alloc")?,
            ctx_free: sym(&xl, abi.libxenlight, "libxl_ctx_free")?,
            config_init: sym(&xl, abi.libxenlight, "libxl_domain_config_init")?,
            config_dispose: sym(&xl, abi.libxenlight, "libxl_domain_config_dispose")?,
            retrieve: sym(&xl, abi.libxenlight, "libxl_retrieve_domain_configuration")?,
            to_json: sym(&xl, abi.libxenlight, "libxl_domain_config_to_json")?,
            logger_create: sym(&log, LIBXENTOOLLOG, "xtl_createlogger_stdiostream")?,
            logger_destroy: sym(&log, LIBXENTOOLLOG, "xtl_logger_destroy")?,
        }
    };
    Ok(Loaded {
        _libs: [xl, log],
        api,
    })
}

fn api() -> Result<&'static LibxlApi, XenError> {
    let abi = crate::tools_abi()?;
    match LOADED.get_or_init(|| load(abi)) {
        Ok(l) => Ok(&l.api),
        Err(e) => Err(e.clone()),
    }
}

/// The libxl configuration of domain `domid` as JSON text, exactly as `xl save` embeds it
/// (without the NUL it writes after it). Loads libxenlight on first use.
pub fn domain_config_json(domid: u32) -> Result<Vec<u8>, XenError> {
    crate::check_privcmd()?;
    let api = api()?;
    // SAFETY: fdopen of a duplicate of stderr: a new FILE the logger writes to, closed by the
    // logger's destroy (xtl_logger_destroy closes the stream it was given only if asked, so it
    // is closed below); a failure returns NULL, checked.
    let stream = unsafe {
        let fd = libc::dup(libc::STDERR_FILENO);
        if fd < 0 {
            return Err(XenError::last("dup"));
        }
        let f = libc::fdopen(fd, c"w".as_ptr());
        if f.is_null() {
            libc::close(fd);
            return Err(XenError::last("fdopen"));
        }
        f
    };
    // SAFETY: a logger over the stream above, at error level, destroyed below.
    let logger = unsafe { (api.logger_create)(stream, XTL_ERROR, 0) };
    let result = if logger.is_null() {
        Err(XenError::last("xtl_createlogger_stdiostream"))
    } else {
        // SAFETY: `logger` is live for the whole call and destroyed after it.
        let r = unsafe { with_ctx(api, logger, domid) };
        // SAFETY: the logger was created above and the context that used it is freed.
        unsafe { (api.logger_destroy)(logger) };
        r
    };
    // SAFETY: the stream was opened above and nothing uses it any more.
    unsafe { libc::fclose(stream) };
    result
}

/// Allocate a libxl context over `logger`, retrieve and serialise the configuration, free all.
///
/// # Safety
/// `logger` must be a live xentoollog logger for the duration of the call.
unsafe fn with_ctx(
    api: &LibxlApi,
    logger: *mut XenToolLogger,
    domid: u32,
) -> Result<Vec<u8>, XenError> {
    let mut ctx: *mut LibxlCtx = std::ptr::null_mut();
    // SAFETY: `ctx` is an out-pointer; the logger outlives the context (caller's contract).
    let rc = unsafe { (api.ctx_alloc)(&mut ctx, LIBXL_VERSION, 0, logger) };
    if rc != 0 || ctx.is_null() {
        return Err(libxl_error("libxl_ctx_alloc", rc));
    }
    let mut room = Box::new(DomainConfigRoom([0; DOMAIN_CONFIG_ROOM]));
    let config: *mut DomainConfigRoom = &mut *room;
    // SAFETY: `config` points to zeroed memory larger than `libxl_domain_config` and aligned
    // for it; init, retrieve, to_json and dispose are the struct's documented life cycle, all
    // on the one live context; the JSON text is malloc'd by libxl and freed here after copying.
    let result = unsafe {
        (api.config_init)(config);
        let rc = (api.retrieve)(ctx, domid, config, std::ptr::null());
        let r = if rc != 0 {
            Err(libxl_error("libxl_retrieve_domain_configuration", rc))
        } else {
            let text = (api.to_json)(ctx, config);
            if text.is_null() {
                Err(libxl_error("libxl_domain_config_to_json", 0))
            } else {
                let bytes = CStr::from_ptr(text).to_bytes().to_vec();
                libc::free(text.cast());
                Ok(bytes)
            }
        };
        (api.config_dispose)(config);
        (api.ctx_free)(ctx);
        r
    };
    result
}

/// A failed libxl call: its ERROR_* code (negative) stands in for an errno.
fn libxl_error(call: &'static str, rc: c_int) -> XenError {
    XenError::Libxl { call, code: rc }
}
