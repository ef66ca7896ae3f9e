"""Inside the gpu-current image, without a GPU: what Theano's GPU backend loads
and compiles at run time is there and works (docker/check-gpu-current.sh).

1. pygpu imports under the venv's numpy (requirements.txt's) and offers the
   libgpuarray API version Theano 1.0.5 requires.
2. libnvrtc.so and libcublas.so, by the unversioned names libgpuarray
   dlopen()s, load and export every function libgpuarray looks up (names read
   from libgpuarray's own binary; a `_v2` name stands for the plain one).
3. NVRTC compiles libgpuarray's CUDA preamble (read from its binary) and a
   kernel that uses its atomics, half conversions and shared memory, the way
   libgpuarray calls it (`-arch compute_XY`, PTX out), for compute
   capability 5.0, 6.0, 7.0, 7.5, 8.0, 8.6, 8.9 and 9.0.
4. Theano's C compiler builds and imports a module that includes the headers
   and calls the import functions of Theano's GPU ops (gpuarray, pygpu,
   numpy) and links libgpuarray.
5. Without a driver, pygpu.init("cuda") fails because libcuda.so is missing
   (the one thing the host must provide).

What it cannot check here: the driver's functions (libcuda) and anything run
on a GPU. Prints one line per check; exits 1 if one fails.
"""
import ctypes
import os
import re
import sys
import tempfile

LIBGPUARRAY = "/usr/lib/libgpuarray.so.3"
ARCHES = ("50", "60", "70", "75", "80", "86", "89", "90")
THEANO_LIBGPUARRAY_API = 2  # theano/gpuarray/__init__.py, init_dev

failures = []


def check(name, function):
    try:
        detail = function()
    except Exception as error:  # noqa: BLE001 (report and go on)
        failures.append(name)
        print("FAIL: %s: %s: %s" % (name, type(error).__name__,
                                    " ".join(str(error).split())[:600]))
    else:
        print("PASS: %s%s" % (name, ": " + detail if detail else ""))


def binary_strings():
    with open(os.path.realpath(LIBGPUARRAY), "rb") as f:
        data = f.read()
    return data, {s.decode() for s in re.findall(rb"[\x20-\x7e]{4,}", data)}


def looked_up(strings, prefix):
    names = {s for s in strings if re.fullmatch(prefix + r"[A-Z]\w*", s)}
    return sorted(n for n in names if n.endswith("_v2") or n + "_v2" not in names)


def pygpu_api():
    import numpy
    import pygpu
    import pygpu.gpuarray
    api = pygpu.gpuarray.api_version()
    assert api[0] == THEANO_LIBGPUARRAY_API, api
    return "pygpu %s, libgpuarray API %s, numpy %s" % (pygpu.__version__, api, numpy.__version__)


def library_functions(soname, prefix):
    def run():
        library = ctypes.CDLL(soname)
        _, strings = binary_strings()
        wanted = looked_up(strings, prefix)
        assert len(wanted) >= 5, wanted
        missing = [n for n in wanted if not hasattr(library, n)]
        assert not missing, "missing: %s" % missing
        stem = soname.split(".so")[0] + ".so"
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "/" + stem in line})
        return "%d functions, from %s" % (len(wanted), ", ".join(paths))
    return run


KERNEL = r"""
KERNEL void probe(const ga_size n, GLOBAL_MEM ga_float *x, GLOBAL_MEM ga_double *d,
                  GLOBAL_MEM ga_half *h, GLOBAL_MEM ga_long *l) {
  LOCAL_MEM ga_float tile[256];
  for (ga_size i = GID_0 * LDIM_0 + LID_0; i < n; i += LDIM_0 * GDIM_0) {
    tile[LID_0] = x[i];
    local_barrier();
    atom_add_fg(&x[0], tile[LID_0]);
    atom_add_dg(&d[0], (ga_double)tile[LID_0]);
    atom_add_eg(&h[0], ga_float2half(tile[LID_0]));
    atom_add_lg(&l[0], (ga_long)1);
  }
}
"""


def nvrtc_compiles():
    nvrtc = ctypes.CDLL("libnvrtc.so")
    data, _ = binary_strings()
    start = data.index(b"#ifndef CLUDA_H")
    preamble = data[start:data.index(b"\0", start)].decode()
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    versions = set()
    for arch in ARCHES:
        program = ctypes.c_void_p()
        assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), (preamble + KERNEL).encode(),
                                        None, 0, None, None) == 0
        options = (ctypes.c_char_p * 2)(b"-arch", ("compute_" + arch).encode())
        status = nvrtc.nvrtcCompileProgram(program, 2, options)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        assert status == 0, "compute_%s: NVRTC error %d: %s" % (arch, status, log.value.decode())
        nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(program, ptx)
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
        assert b".target sm_" + arch.encode() in ptx.value, ptx.value[:300]
        versions.update(re.findall(rb"\.version (\S+)", ptx.value))
    return "NVRTC %d.%d, compute_%s, PTX ISA %s" % (
        major.value, minor.value, "/".join(ARCHES), b"/".join(sorted(versions)).decode())


MODULE = r"""
#include <Python.h>
#include <numpy/arrayobject.h>
#include <gpuarray/array.h>
#include <gpuarray/kernel.h>
#include <gpuarray/error.h>
#include <gpuarray/buffer.h>
#include <gpuarray/buffer_blas.h>
#include <gpuarray_api.h>
#include <blas_api.h>
#include <numpy_compat.h>
#include <gpuarray_helper.h>

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "NAME", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_NAME(void) {
  import_array();
  if (import_pygpu__gpuarray() < 0) return NULL;
  if (import_pygpu__blas() < 0) return NULL;
  return PyModule_Create(&definition);
}
"""


def theano_gpu_headers_compile():
    os.environ["THEANO_FLAGS"] = os.environ.get("THEANO_FLAGS", "") + ",device=cpu"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy
    import pygpu
    import engine  # noqa: F401  (configures Theano as the programs do)
    from theano.gof.cmodule import GCC_compiler
    from theano.gpuarray.basic_ops import gpuarray_helper_inc_dir
    name = "gpu_headers_probe"
    folder = tempfile.mkdtemp(prefix="gpu-headers-")
    module = GCC_compiler.compile_str(
        name, MODULE.replace("NAME", name), location=folder,
        include_dirs=[pygpu.get_include(), numpy.get_include(), gpuarray_helper_inc_dir()],
        lib_dirs=[], libs=["gpuarray"], preargs=["-fPIC", "-O0"])
    return "compiled and imported %s" % os.path.basename(module.__file__)


def no_driver_no_gpu():
    import pygpu
    try:
        pygpu.init("cuda")
    except Exception as error:  # noqa: BLE001
        message = " ".join(str(error).split())
        assert "libcuda.so" in message, message
        return "pygpu.init('cuda') fails as expected: %s" % message
    raise AssertionError("pygpu.init('cuda') succeeded: a GPU is visible, run the gpu tests")


check("pygpu imports with the venv's numpy", pygpu_api)
check("libnvrtc.so has libgpuarray's nvrtc* functions", library_functions("libnvrtc.so", "nvrtc"))
check("libcublas.so has libgpuarray's cublas* functions", library_functions("libcublas.so", "cublas"))
check("NVRTC compiles libgpuarray's kernels for today's GPUs", nvrtc_compiles)
check("Theano's GPU op headers compile and import", theano_gpu_headers_compile)
check("without a driver, pygpu says what is missing", no_driver_no_gpu)
if failures:
    print("gpu-current libraries: %d check(s) failed" % len(failures))
    sys.exit(1)
