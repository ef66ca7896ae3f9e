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
#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

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
   for every op, with an explicit fused multiply-add: a fused op (a
   convolution normalising its input as it reads it) gets the same bits as
   the batch-norm op it replaces, whatever the compiler contracts where. */
static inline float pr_bn_affine(float x, float mean, float scale, float beta) {
    return fmaf(x - mean, scale, beta);
}

/* pr_bn_affine, clamped at zero when relu: what a forward op writes, and
   (< 0) where its backward op masks the gradient. */
static inline float pr_bn_relu(float x, float mean, float scale, float beta, int relu) {
    const float z = pr_bn_affine(x, mean, scale, beta);
    return (relu && z < 0.f) ? 0.f : z;
}

/* The input gradient of batch normalisation in training mode for one value:
   scale * (g - mean_g - xhat * mean_gx), g the (masked) output gradient,
   xhat the normalised input, mean_g and mean_gx the channel's means of g
   and g * xhat. Explicit fused multiply-add, as pr_bn_affine. */
static inline float pr_bn_grad_value(float g, float xhat, float mean_g, float mean_gx,
                                     float scale) {
    return scale * fmaf(-xhat, mean_gx, g - mean_g);
}

/* Sum of a[0..n) and of a[i]*b[i], in 8 float lanes (vectorised) per call;
   callers add the results into doubles. Shared by the batch-norm gradient
   and the convolutions that compute it (the same sums, bit for bit). */
static void pr_sums(const float *a, const float *b, long n, float *sum_a, float *sum_ab) {
    float sa[8] = {0}, sab[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) { sa[l] += a[i + l]; sab[l] = fmaf(a[i + l], b[i + l], sab[l]); }
    float ta = 0.f, tab = 0.f;
    for (; i < n; ++i) { ta += a[i]; tab = fmaf(a[i], b[i], tab); }
    for (int l = 0; l < 8; ++l) { ta += sa[l]; tab += sab[l]; }
    *sum_a = ta; *sum_ab = tab;
}

/* A batch normalisation (+ ReLU) with given statistics, applied to a
   convolution's input as the convolution reads it (its "prologue"): channel
   c maps x to pr_bn_relu(x, mean[c], scale[c], shift[c], relu). A NULL
   pr_map: the input as it is. */
typedef struct {
    const float *mean, *scale, *shift;
    int relu;
} pr_map;

static inline float pr_map_one(const pr_map *map, int c, float x) {
    return map ? pr_bn_relu(x, map->mean[c], map->scale[c], map->shift[c], map->relu) : x;
}

/* dst[0..n) = src[0..n) through channel c of map (a copy when map is NULL). */
static inline void pr_map_copy(const pr_map *map, int c, const float *src, float *dst, long n) {
    if (!map) {
        memcpy(dst, src, sizeof(float) * n);
        return;
    }
    const float m = map->mean[c], a = map->scale[c], b = map->shift[c];
    if (map->relu)
        for (long i = 0; i < n; ++i) dst[i] = pr_bn_relu(src[i], m, a, b, 1);
    else
        for (long i = 0; i < n; ++i) dst[i] = pr_bn_affine(src[i], m, a, b);
}

/* The first half of batch normalisation's gradient, done by a convolution
   on its input gradient while an image of it is in the cache (its
   "epilogue"): the gradient g with respect to the batch norm's output is
   zeroed where the forward pass clamped, and per image and channel the sums
   of g and of g * xhat go into partials, for pr_bn_grad_totals. h is the
   batch norm's input (B, C, P); scale = gamma * inv_std. */
typedef struct {
    const float *h, *mean, *inv_std, *scale, *shift;
    int relu;
    const float *addend;  /* added to g first (the gradient of the batch norm's other readers), or NULL */
    float *partials;      /* (B, C, 2) */
} pr_bn_grad;

/* Image b of g (C planes of P values): plus e->addend, masked in place,
   its sums into e->partials. Per channel exactly what the separate sum and
   BatchNormTrainGrad's first pass compute (the lanes and order of pr_sums),
   in one pass over the image while it is in the cache. */
static void pr_bn_grad_image(const pr_bn_grad *e, int b, int C, long P, float *g) {
    for (int c = 0; c < C; ++c) {
        const long at = ((long)b * C + c) * P;
        const float *hs = e->h + at, *as = e->addend ? e->addend + at : NULL;
        float *gs = g + (long)c * P;
        const float mu = e->mean[c], inv = e->inv_std[c], scale = e->scale[c],
                    beta = e->shift[c];
        const int relu = e->relu;
        float sa[8] = {0}, sab[8] = {0};
        long i = 0;
        for (; i + 8 <= P; i += 8)
            for (int l = 0; l < 8; ++l) {
                const long q = i + l;
                float v = as ? gs[q] + as[q] : gs[q];
                if (relu && pr_bn_affine(hs[q], mu, scale, beta) < 0.f) v = 0.f;
                gs[q] = v;
                sa[l] += v;
                sab[l] = fmaf(v, (hs[q] - mu) * inv, sab[l]);
            }
        float ta = 0.f, tab = 0.f;
        for (; i < P; ++i) {
            float v = as ? gs[i] + as[i] : gs[i];
            if (relu && pr_bn_affine(hs[i], mu, scale, beta) < 0.f) v = 0.f;
            gs[i] = v;
            ta += v;
            tab = fmaf(v, (hs[i] - mu) * inv, tab);
        }
        for (int l = 0; l < 8; ++l) { ta += sa[l]; tab += sab[l]; }
        float *sums = e->partials + ((long)b * C + c) * 2;
        sums[0] = ta;
        sums[1] = tab;
    }
}

/* The channels' sums over the batch, image after image into doubles (the
   same order for any number of threads): sum_g[c] and sum_gx[c]. */
static void pr_bn_grad_totals(const float *partials, int B, int C, double *sum_g,
                              double *sum_gx) {
    for (int c = 0; c < C; ++c) {
        double a = 0, ab = 0;
        for (int b = 0; b < B; ++b) {
            a += partials[((long)b * C + c) * 2];
            ab += partials[((long)b * C + c) * 2 + 1];
        }
        sum_g[c] = a;
        sum_gx[c] = ab;
    }
}
