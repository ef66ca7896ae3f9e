/* Shared by every op of ops.py: its arrays in and out.

   Theano compiles these files as C++ (g++), after numpy's and Python's
   headers; every function is static, so that each compiled module keeps its
   own copy. Functions that take Python objects return 0, or -1 with a Python
   exception set; the computing functions they call run without the GIL and
   return 0, or -1 when an allocation failed. */
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <omp.h>

/* A C-contiguous, aligned float32 array with the contents of `array` (a new
   reference: `array` itself when it already is one), or NULL with an
   exception set. */
static PyArrayObject *pr_float32(PyArrayObject *array) {
    return (PyArrayObject*)PyArray_FromAny((PyObject*)array, PyArray_DescrFromType(NPY_FLOAT32),
                                           0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
}

/* Makes *out a C-contiguous float32 array of shape dims[0..nd): the array
   already there when it is one (Theano hands back the previous call's
   output), else a new, uninitialised one. */
static int pr_output(PyArrayObject **out, int nd, const npy_intp *dims) {
    int fits = *out != NULL && PyArray_IS_C_CONTIGUOUS(*out) && PyArray_NDIM(*out) == nd
               && PyArray_TYPE(*out) == NPY_FLOAT32;
    for (int i = 0; fits && i < nd; ++i) fits = PyArray_DIMS(*out)[i] == dims[i];
    if (fits) return 0;
    Py_XDECREF(*out);
    *out = (PyArrayObject*)PyArray_EMPTY(nd, (npy_intp*)dims, NPY_FLOAT32, 0);
    return *out ? 0 : -1;
}

/* Whether `array` is a vector of n entries; if not, sets a ValueError naming `what`. */
static int pr_is_vector(PyArrayObject *array, npy_intp n, const char *what) {
    if (PyArray_NDIM(array) == 1 && PyArray_DIMS(array)[0] == n) return 1;
    PyErr_Format(PyExc_ValueError, "%s: needs one value per channel (%ld)", what, (long)n);
    return 0;
}

/* Batch normalisation's affine map of one value: (x - mean) * scale + beta,
   with scale = gamma * inv_std. Subtracting the mean first keeps the
   result exact to float rounding however large the mean is next to the
   spread (x * scale + (beta - mean * scale) would cancel). One definition
   for every op, so that a backward op masks exactly where its forward op
   clamped. */
static inline float pr_bn_affine(float x, float mean, float scale, float beta) {
    return (x - mean) * scale + beta;
}
