"""Theano Ops in C for the two operations that dominate a pre-activation ResNet
on the CPU: the convolution and batch normalisation + ReLU.

Why our own: Theano 1.0's CPU convolution (CorrMM) forces BLAS to one thread
and, unless ``openmp`` is on, walks the batch one image at a time with a
single-threaded sgemm of ``out_channels x pixels`` (16 x 1024 in stage 1, 64 x
64 in stage 3: far too small for BLAS to be efficient), and batch
normalisation written with Theano's tensor operations makes about a dozen
passes over every activation, its reductions accumulating in float64 through
casts. Here:

- ``Conv2D`` (forward) and ``Conv2DGrad`` (both gradients) run direct,
  register-tiled kernels for stride 1 (3x3 and 1x1: nearly all the FLOPs) on
  zero-padded copies of the images, and im2col + single-threaded sgemm in
  cache-sized chunks of images for the few stride-2 convolutions; all cores
  through OpenMP.
- ``BatchNormTrain`` and ``BatchNormTrainGrad`` compute batch statistics,
  normalisation, scale, shift and an optional ReLU in two passes forward and
  two backward, one channel per thread, with 8-lane float partial sums added
  into double accumulators.

Every result is the same, bit for bit, for any number of threads: work is cut
by the shapes alone and partial sums are added in a fixed order. Tests compare
each op with Theano's stock ``conv2d`` (CorrMM) and with batch normalisation
written in plain Theano.
Only float32 (the project's floatX) is implemented.
"""
from . import compat  # noqa: F401  (configures Theano before it is imported)

import theano
import theano.tensor as T
from theano import Apply, Op
from theano.gradient import DisconnectedType
from theano.tensor import blas_headers
from theano.tensor.blas import ldflags

# Target size of one thread's im2col buffer: small enough to stay in its L2
# cache (1 MB per core on the development machine), large enough that one
# sgemm call covers thousands of columns.
CHUNK_BYTES = 1 << 20

_SUPPORT = r"""
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <omp.h>

/* im2col for images b0 .. b0+nb-1 of a C-contiguous (B, C, H, W) array:
   rows (c, i, j) of the (C*k*k) x (nb*Ho*Wo) row-major matrix `cols` hold the
   input pixel each output pixel sees through kernel tap (i, j); zero outside. */
static void pr_im2col(const float *x, int C, int H, int W, int k, int s, int p,
                      int Ho, int Wo, int b0, int nb, float *cols) {
    const long P = (long)Ho * Wo, N = nb * P, plane = (long)H * W, image = C * plane;
    for (int c = 0; c < C; ++c)
    for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
        float *row = cols + (long)((c * k + i) * k + j) * N;
        int lo = p - j, hi = W + p - j;      /* valid output columns, stride 1 */
        if (lo < 0) lo = 0;
        if (hi > Wo) hi = Wo;
        for (int b = 0; b < nb; ++b) {
            const float *src_plane = x + (long)(b0 + b) * image + (long)c * plane;
            float *out = row + (long)b * P;
            for (int oh = 0; oh < Ho; ++oh) {
                const int ih = oh * s + i - p;
                float *o = out + (long)oh * Wo;
                if (ih < 0 || ih >= H) { memset(o, 0, sizeof(float) * Wo); continue; }
                const float *src = src_plane + (long)ih * W;
                if (s == 1) {
                    for (int ow = 0; ow < lo; ++ow) o[ow] = 0.f;
                    if (hi > lo) memcpy(o + lo, src + lo + j - p, sizeof(float) * (hi - lo));
                    for (int ow = hi > lo ? hi : lo; ow < Wo; ++ow) o[ow] = 0.f;
                } else {
                    for (int ow = 0; ow < Wo; ++ow) {
                        const int iw = ow * s + j - p;
                        o[ow] = (iw >= 0 && iw < W) ? src[iw] : 0.f;
                    }
                }
            }
        }
    }
}

/* The adjoint of pr_im2col: add every column entry back onto its input pixel. */
static void pr_col2im(const float *cols, int C, int H, int W, int k, int s, int p,
                      int Ho, int Wo, int b0, int nb, float *dx) {
    const long P = (long)Ho * Wo, N = nb * P, plane = (long)H * W, image = C * plane;
    for (int c = 0; c < C; ++c)
    for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
        const float *row = cols + (long)((c * k + i) * k + j) * N;
        int lo = p - j, hi = W + p - j;
        if (lo < 0) lo = 0;
        if (hi > Wo) hi = Wo;
        for (int b = 0; b < nb; ++b) {
            float *dst_plane = dx + (long)(b0 + b) * image + (long)c * plane;
            const float *in = row + (long)b * P;
            for (int oh = 0; oh < Ho; ++oh) {
                const int ih = oh * s + i - p;
                if (ih < 0 || ih >= H) continue;
                float *dst = dst_plane + (long)ih * W;
                const float *g = in + (long)oh * Wo;
                if (s == 1) {
                    float *d = dst + j - p;
                    for (int ow = lo; ow < hi; ++ow) d[ow] += g[ow];
                } else {
                    for (int ow = 0; ow < Wo; ++ow) {
                        const int iw = ow * s + j - p;
                        if (iw >= 0 && iw < W) dst[iw] += g[ow];
                    }
                }
            }
        }
    }
}

/* (M, nb*P) row-major <-> images b0.. of a (B, M, P) array. */
static void pr_rows_to_images(const float *rows, int M, long P, int b0, int nb, float *y) {
    for (int b = 0; b < nb; ++b)
        for (int m = 0; m < M; ++m)
            memcpy(y + ((long)(b0 + b) * M + m) * P, rows + (long)m * nb * P + b * P,
                   sizeof(float) * P);
}

static void pr_images_to_rows(const float *y, int M, long P, int b0, int nb, float *rows) {
    for (int b = 0; b < nb; ++b)
        for (int m = 0; m < M; ++m)
            memcpy(rows + (long)m * nb * P + b * P, y + ((long)(b0 + b) * M + m) * P,
                   sizeof(float) * P);
}

/* ---- Direct convolution, stride 1 (the bulk of every network's FLOPs) ----
   An image is copied into zero-padded planes of width Wp = W + 2p, so that the
   input pixel under tap (i, j) of output position q = oh * Wp + ow is simply
   q + i * Wp + j: every tap is a contiguous vector load. Outputs are computed
   on this padded grid (the 2p extra columns per row are discarded), in
   register tiles of MB output channels x PB vectors of pixels: no im2col
   buffer, no BLAS packing, each input vector feeds MB fused multiply-adds.
   1x1 kernels need no padding: when the image fills whole tiles they read
   the input and write the output in place, without copies. */
#if defined(__AVX512F__)
#define PR_VW 16
#define PR_MB2 8      /* tile of 8 channels x 2 vectors */
#define PR_MB1 16     /* tile of 16 channels x 1 vector: less rounding on small images */
#define PR_WMB 8      /* kernel-gradient tile: 8 channels x 3 taps (8 divides 16, 32, 64...) */
#else
#define PR_VW 8
#define PR_MB2 4
#define PR_MB1 8
#define PR_WMB 3
#endif
#define PR_SKEW 16    /* floats between images in chunk buffers: see Conv2DGrad */
#define PR_SLOTS 8    /* kernel-gradient partial sums, whatever the thread count: see Conv2DGrad */
typedef float pr_vec __attribute__((vector_size(PR_VW * 4), aligned(4)));

typedef struct {
    int C, H, W, k, p, Wp, taps;
    int pb, mb;             /* the tile: mb channels x pb vectors */
    int in_place;           /* 1x1 over whole tiles: no padded copies */
    int rows;               /* rows of whole vectors: tiles write the output image */
    long Q, Qr, plane;      /* outputs on the padded grid, rounded up; plane size */
    long off[9];            /* tap offsets */
} pr_geometry;

static long pr_round(long n, long to) { return (n + to - 1) / to * to; }

static pr_geometry pr_geometry_of(int C, int H, int W, int k) {
    pr_geometry g;
    g.C = C; g.H = H; g.W = W; g.k = k; g.p = k / 2; g.Wp = W + 2 * g.p; g.taps = k * k;
    g.Q = (long)H * g.Wp;
    /* Rows of whole vectors (32 or 16 pixels with AVX-512) are tiled row by
       row, straight into the output image; other sizes on the padded grid,
       with two-vector tiles unless they would compute more rounding. */
    g.rows = g.p > 0 && W % PR_VW == 0;
    if (g.rows) g.pb = W % (2 * PR_VW) == 0 ? 2 : 1;
    else g.pb = pr_round(g.Q, 2 * PR_VW) > pr_round(g.Q, PR_VW) ? 1 : 2;
    g.mb = g.pb == 2 ? PR_MB2 : PR_MB1;
    g.Qr = pr_round(g.Q, g.pb * PR_VW);
    g.in_place = (k == 1 && g.Qr == g.Q);
    g.plane = g.in_place ? g.Q : pr_round(g.Qr + (long)(k - 1) * (g.Wp + 1), PR_VW);
    for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) g.off[i * k + j] = (long)i * g.Wp + j;
    return g;
}

/* Zero-padded copy of one (C, H, W) image into C planes of g.plane floats. */
static void pr_pad(const float *src, int C, const pr_geometry *g, float *dst) {
    for (int c = 0; c < C; ++c) {
        float *d = dst + (long)c * g->plane;
        memset(d, 0, sizeof(float) * g->plane);
        for (int h = 0; h < g->H; ++h)
            memcpy(d + (long)(h + g->p) * g->Wp + g->p, src + ((long)c * g->H + h) * g->W,
                   sizeof(float) * g->W);
    }
}

/* Valid outputs of the padded grid (M planes of Qr) into a (M, H, W) image. */
static void pr_unpad(const float *out, int M, const pr_geometry *g, float *dst) {
    for (int m = 0; m < M; ++m)
        for (int h = 0; h < g->H; ++h)
            memcpy(dst + ((long)m * g->H + h) * g->W, out + (long)m * g->Qr + (long)h * g->Wp,
                   sizeof(float) * g->W);
}

/* Kernels packed for the tiles: blocks of g->mb output channels, then
   [c][tap][mm]; the last channels in blocks of one. flip_transpose packs the
   kernel of the input gradient: out channel c, in channel m, taps reversed. */
static void pr_pack(const float *w, int M, int C, const pr_geometry *g, int flip_transpose,
                    float *packed) {
    const int taps = g->taps;
    const int Mo = flip_transpose ? C : M, Ci = flip_transpose ? M : C;
    long index = 0;
    int m0 = 0;
    while (m0 < Mo) {
        const int mb = (Mo - m0 >= g->mb) ? g->mb : 1;
        for (int c = 0; c < Ci; ++c)
            for (int t = 0; t < taps; ++t)
                for (int mm = 0; mm < mb; ++mm) {
                    const int mo = m0 + mm;
                    packed[index++] = flip_transpose
                        ? w[((long)c * C + mo) * taps + (taps - 1 - t)]
                        : w[((long)mo * C + c) * taps + t];
                }
        m0 += mb;
    }
}

#define PR_TILE(MB, PB)                                                                \
static inline void pr_tile_##MB##_##PB(const float *xpad, int Ci, long plane,          \
                                       const long *off, int taps, const float *wb,     \
                                       long q0, float *out, long ostride) {            \
    pr_vec acc[MB][PB];                                                                \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int pb = 0; pb < PB; ++pb) acc[mm][pb] = (pr_vec){0};                     \
    for (int c = 0; c < Ci; ++c) {                                                     \
        const float *xc = xpad + (long)c * plane + q0;                                 \
        for (int t = 0; t < taps; ++t, wb += MB) {                                     \
            pr_vec in[PB];                                                             \
            for (int pb = 0; pb < PB; ++pb)                                            \
                in[pb] = *(const pr_vec*)(xc + off[t] + pb * PR_VW);                   \
            for (int mm = 0; mm < MB; ++mm)                                            \
                for (int pb = 0; pb < PB; ++pb) acc[mm][pb] += in[pb] * wb[mm];         \
        }                                                                              \
    }                                                                                  \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int pb = 0; pb < PB; ++pb)                                                \
            *(pr_vec*)(out + (long)mm * ostride + pb * PR_VW) = acc[mm][pb];           \
}
PR_TILE(PR_MB2, 2)
PR_TILE(1, 2)
PR_TILE(PR_MB1, 1)
PR_TILE(1, 1)

/* Correlation of the padded image with packed kernels: into the (Mo, H, W)
   output image when g->rows, else into Mo planes of Qr on the padded grid. */
static void pr_direct(const float *xpad, int Ci, int Mo, const pr_geometry *g,
                      const float *packed, float *out) {
    const long step = (long)g->pb * PR_VW;
    const long ostride = g->rows ? (long)g->H * g->W : g->Qr;
    const long tiles = g->rows ? (long)g->H * (g->W / step) : g->Qr / step;
    int m0 = 0;
    long wofs = 0;
    while (m0 < Mo) {
        const int mb = (Mo - m0 >= g->mb) ? g->mb : 1;
        const float *wb = packed + wofs;
        for (long tile = 0; tile < tiles; ++tile) {
            long q_in, q_out;
            if (g->rows) {
                const long per_row = g->W / step, oh = tile / per_row;
                const long ow = (tile % per_row) * step;
                q_in = oh * g->Wp + ow; q_out = oh * g->W + ow;
            } else {
                q_in = q_out = tile * step;
            }
            float *o = out + (long)m0 * ostride + q_out;
            if (g->pb == 2) {
                if (mb > 1) pr_tile_PR_MB2_2(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride);
                else pr_tile_1_2(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride);
            } else {
                if (mb > 1) pr_tile_PR_MB1_1(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride);
                else pr_tile_1_1(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride);
            }
        }
        wofs += (long)mb * Ci * g->taps;
        m0 += mb;
    }
}

/* The lanes of v added up pairwise (halves, quarters, ...): a fixed order in
   log2(lanes) vector steps rather than a chain of scalar additions. */
static inline float pr_lane_sum(pr_vec v) {
    float a[PR_VW];
    memcpy(a, &v, sizeof a);
    for (int w = PR_VW / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) a[l] += a[l + w];
    return a[0];
}

/* Kernel gradient of nb images: dw[m][c][t] += sum_img sum_q dy[m][q] xpad[c][q + off[t]],
   dy given padded like an input (its zero border makes the padded grid's extra
   columns contribute nothing). Tiles of MB channels x TB taps keep their sums
   in registers across all nb images, so the lanes are added up once per
   chunk, not once per image (small images would spend more time there than
   in the multiply-adds). */
#define PR_WTILE(MB, TB)                                                               \
static inline void pr_wtile_##MB##_##TB(const float *dy, long dstride, const float *xc,\
                                        long xstride, int nb, long plane,              \
                                        const long *off, long Qr, float *sums) {       \
    pr_vec acc[MB][TB];                                                                \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int tb = 0; tb < TB; ++tb) acc[mm][tb] = (pr_vec){0};                     \
    /* one loop over the chunk's images and positions: with a loop per image \
       the compiler spills the accumulators to memory between images */       \
    long q = 0;                                                                        \
    for (long step = 0, steps = nb * (Qr / PR_VW); step < steps; ++step) {             \
        pr_vec in[TB];                                                                 \
        for (int tb = 0; tb < TB; ++tb) in[tb] = *(const pr_vec*)(xc + off[tb] + q);   \
        for (int mm = 0; mm < MB; ++mm) {                                              \
            pr_vec d = *(const pr_vec*)(dy + (long)mm * plane + q);                    \
            __asm__("" : "+v"(d));  /* one load, not one per tap (load-bound) */        \
            for (int tb = 0; tb < TB; ++tb) acc[mm][tb] += d * in[tb];                 \
        }                                                                              \
        q += PR_VW;                                                                    \
        if (q == Qr) { q = 0; dy += dstride; xc += xstride; }                          \
    }                                                                                  \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int tb = 0; tb < TB; ++tb) {                                              \
            sums[mm * TB + tb] = pr_lane_sum(acc[mm][tb]);                             \
        }                                                                              \
}
PR_WTILE(PR_WMB, 3)
PR_WTILE(1, 3)
PR_WTILE(PR_WMB, 1)
PR_WTILE(1, 1)

/* xpad: nb images of C planes, xstride apart; dypad: nb images of M planes,
   dstride apart (planes g->plane long); dw: M rows of C * taps doubles.
   Tiles take PR_WMB output channels and three taps: one kernel row of a 3x3
   kernel, or three input channels of a 1x1 kernel (a last one or two
   channels go one at a time). The output channels are the outer loop, so
   that their gradients (PR_WMB planes of nb images) stay in the fastest
   cache while every input channel streams past. */
static void pr_wgrad(const float *dypad, long dstride, int M, const float *xpad, long xstride,
                     int nb, const pr_geometry *g, double *dw) {
    const int C = g->C, k = g->k;
    const long plane = g->plane;
    const long row = (long)C * g->taps;
    const float *dy = dypad + (long)g->p * g->Wp + g->p;   /* dy[m][q] for q on the grid */
    const long channel_off[3] = {0, plane, 2 * plane};
    float sums[PR_WMB * 3];
    for (int m0 = 0; m0 < M; ) {
        const int mb = M - m0 >= PR_WMB ? PR_WMB : 1;
        const float *d = dy + (long)m0 * plane;
        for (int c = 0; c < C; ) {
            const int width = (k == 3 || C - c >= 3) ? 3 : 1;   /* taps in this tile */
            for (int i = 0; i < k; ++i) {
                const float *x = xpad + (long)c * plane;
                const long *off = k == 3 ? g->off + 3 * i : channel_off;
                const long col = k == 3 ? (long)c * 9 + 3 * i : c;
                if (width == 3 && mb > 1)
                    pr_wtile_PR_WMB_3(d, dstride, x, xstride, nb, plane, off, g->Qr, sums);
                else if (width == 3)
                    pr_wtile_1_3(d, dstride, x, xstride, nb, plane, off, g->Qr, sums);
                else if (mb > 1)
                    pr_wtile_PR_WMB_1(d, dstride, x, xstride, nb, plane, off, g->Qr, sums);
                else
                    pr_wtile_1_1(d, dstride, x, xstride, nb, plane, off, g->Qr, sums);
                for (int mm = 0; mm < mb; ++mm)
                    for (int t = 0; t < width; ++t)
                        dw[(long)(m0 + mm) * row + col + t] += sums[mm * width + t];
            }
            c += k == 3 ? 1 : width;
        }
        m0 += mb;
    }
}

/* The number of chunks of B images for chunks of about `images`: a multiple
   of the *slots (PR_SLOTS, fewer for small batches) where the batch allows, so
   that every slot gets as many chunks. *largest: the images of the largest
   chunk (chunk c holds images pr_chunk_start(c) to pr_chunk_start(c + 1)). */
static int pr_even_chunks(int B, int images, int *slots, int *largest) {
    int chunks = (B + images - 1) / images;
    *slots = chunks < PR_SLOTS ? chunks : PR_SLOTS;
    chunks = (chunks + *slots - 1) / *slots * *slots;
    if (chunks > B) chunks = B;
    *largest = (B + chunks - 1) / chunks;
    return chunks;
}

static int pr_chunk_start(int chunk, int chunks, int B) {
    return (int)((long)chunk * B / chunks);
}

/* out[i] = the sum of slots[s * n + i] over s in order, rounded to float. */
static void pr_add_slots(const double *slots, int count, long n, float *out) {
    for (long i = 0; i < n; ++i) {
        double total = 0;
        for (int s = 0; s < count; ++s) total += slots[(size_t)s * n + i];
        out[i] = (float)total;
    }
}

/* Images per chunk: the im2col buffer near chunk_bytes, at least one image,
   and at least one chunk per thread when the batch allows. */
static int pr_chunk_images(int B, long K, long P, long chunk_bytes, int threads) {
    long per = chunk_bytes / (long)(sizeof(float) * K * P);
    if (per < 1) per = 1;
    long most = (B + threads - 1) / threads;
    if (per > most) per = most;
    if (per < 1) per = 1;
    return (int)per;
}

/* Sum of a[0..n) and of a[i]*b[i], in 8 float lanes (vectorised) per call;
   callers add the results into doubles. */
static void pr_sums(const float *a, const float *b, long n, float *sum_a, float *sum_ab) {
    float sa[8] = {0}, sab[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) { sa[l] += a[i + l]; sab[l] += a[i + l] * b[i + l]; }
    float ta = 0.f, tab = 0.f;
    for (; i < n; ++i) { ta += a[i]; tab += a[i] * b[i]; }
    for (int l = 0; l < 8; ++l) { ta += sa[l]; tab += sab[l]; }
    *sum_a = ta; *sum_ab = tab;
}
"""


def _contiguous(name, var, fail):
    """C lines making ``var`` a C-contiguous float32 array (new reference)."""
    return """
    PyArrayObject *%(name)s = (PyArrayObject*)PyArray_FromAny((PyObject*)%(var)s,
        PyArray_DescrFromType(NPY_FLOAT32), 0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (!%(name)s) { %(fail)s }
    """ % locals()


def _output(out, ndim, dims, fail, zero=False):
    """C lines (re)allocating output ``out`` with shape ``dims`` (C expressions)."""
    checks = " || ".join("PyArray_DIMS(%s)[%d] != (%s)" % (out, i, d) for i, d in enumerate(dims))
    alloc = "PyArray_ZEROS" if zero else "PyArray_EMPTY"
    return """
    {
        npy_intp dims[%(ndim)d] = {%(dimlist)s};
        if (!%(out)s || !PyArray_IS_C_CONTIGUOUS(%(out)s) || %(checks)s) {
            Py_XDECREF(%(out)s);
            %(out)s = (PyArrayObject*)%(alloc)s(%(ndim)d, dims, NPY_FLOAT32, 0);
            if (!%(out)s) { %(fail)s }
        }%(zeroing)s
    }
    """ % dict(ndim=ndim, dimlist=", ".join(dims), out=out, checks=checks, alloc=alloc,
               fail=fail, zeroing="" if not zero else
               " else memset(PyArray_DATA(%s), 0, PyArray_NBYTES(%s));" % (out, out))


class _COp(Op):
    """Shared C set-up: BLAS from Theano's ldflags, OpenMP, our support code."""

    def c_support_code(self):
        return blas_headers.blas_header_text() + _SUPPORT

    def c_libraries(self):
        return ldflags()

    def c_lib_dirs(self):
        return ldflags(libs=False, libs_dir=True)

    def c_compile_args(self):
        return ldflags(libs=False, flags=True) + ["-fopenmp", "-O3"]

    def c_headers(self):
        return ["<omp.h>", "<math.h>", "<string.h>"]

    def c_code_cache_version(self):
        return (16, blas_headers.blas_header_version())


def _check_float32(*variables):
    for v in variables:
        if v.dtype != "float32":
            raise TypeError("ops are implemented for float32 only, got %s" % v.dtype)


# =============================================================================
# Convolution


class Conv2D(_COp):
    """Cross-correlation with 'same' zero padding (``filter_size // 2``) and a
    stride, of (batch, channels, rows, cols) images with (out, in, k, k)
    kernels: Theano's ``conv2d(..., border_mode='half', filter_flip=False)``."""

    __props__ = ("stride", "chunk_bytes")

    def __init__(self, stride=1, chunk_bytes=CHUNK_BYTES):
        self.stride = int(stride)
        self.chunk_bytes = int(chunk_bytes)

    def make_node(self, x, w):
        x, w = T.as_tensor_variable(x), T.as_tensor_variable(w)
        _check_float32(x, w)
        if x.ndim != 4 or w.ndim != 4:
            raise TypeError("Conv2D takes 4-d images and kernels")
        out = T.TensorType("float32", (x.broadcastable[0], w.broadcastable[0], False, False))()
        return Apply(self, [x, w], [out])

    def infer_shape(self, node, shapes):
        (b, _, h, w_), (m, _, _, _) = shapes
        s = self.stride
        return [(b, m, (h + s - 1) // s, (w_ + s - 1) // s)]

    def grad(self, inputs, output_grads):
        x, w = inputs
        dx, dw = Conv2DGrad(self.stride, self.chunk_bytes)(x, w, output_grads[0])
        return [dx, dw]

    def c_code(self, node, name, inputs, outputs, sub):
        x, w = inputs
        (y,) = outputs
        fail = sub["fail"]
        s = self.stride
        chunk = self.chunk_bytes
        return ("{" + _contiguous("xc", x, fail) + _contiguous("wc", w, "Py_DECREF(xc); " + fail) + """
    {
    const int B = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    const int H = PyArray_DIMS(xc)[2], W = PyArray_DIMS(xc)[3];
    const int M = PyArray_DIMS(wc)[0], k = PyArray_DIMS(wc)[2], s = %(s)d, p = k / 2;
    const int Ho = (H + s - 1) / s, Wo = (W + s - 1) / s;
    /* stride 1 runs the direct kernels, written for 1x1 and 3x3 (9 taps) */
    int bad = PyArray_DIMS(wc)[1] != C || PyArray_DIMS(wc)[3] != k || k %% 2 != 1 || (s == 1 && k > 3);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "Conv2D: kernel shape does not fit the images, "
                        "or is larger than 3x3 at stride 1");
        Py_DECREF(xc); Py_DECREF(wc); %(fail)s
    }
    """ + _output(y, 4, ["B", "M", "Ho", "Wo"], "Py_DECREF(xc); Py_DECREF(wc); " + fail) + """
    const long K = (long)C * k * k, P = (long)Ho * Wo;
    const int threads = omp_get_max_threads();
    const float *xd = (const float*)PyArray_DATA(xc), *wd = (const float*)PyArray_DATA(wc);
    float *yd = (float*)PyArray_DATA(%(y)s);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS  /* the batch worker thread runs meanwhile */
    if (s == 1) {
        const pr_geometry g = pr_geometry_of(C, H, W, k);
        const size_t per_thread = g.in_place ? 1 : (size_t)C * g.plane + (size_t)M * g.Qr;
        float *packed = (float*)malloc(sizeof(float) * M * K);
        float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
        if (packed && buffers) {
            pr_pack(wd, M, C, &g, 0, packed);
            #pragma omp parallel for schedule(static)
            for (int b = 0; b < B; ++b) {
                const float *image = xd + (long)b * C * H * W;
                float *result = yd + (long)b * M * H * W;
                if (g.in_place) {
                    pr_direct(image, C, M, &g, packed, result);
                } else {
                    float *xpad = buffers + (size_t)omp_get_thread_num() * per_thread;
                    float *out = xpad + (size_t)C * g.plane;
                    pr_pad(image, C, &g, xpad);
                    if (g.rows) {
                        pr_direct(xpad, C, M, &g, packed, result);
                    } else {
                        pr_direct(xpad, C, M, &g, packed, out);
                        pr_unpad(out, M, &g, result);
                    }
                }
            }
        } else failed = 1;
        free(packed); free(buffers);
    } else {
        const int nb_max = pr_chunk_images(B, K, P, %(chunk)dL, threads);
        const int chunks = (B + nb_max - 1) / nb_max;
        float *buffers = (float*)malloc(sizeof(float) * (size_t)threads * (K + M) * nb_max * P);
        if (buffers) {
            int blas_threads = openblas_get_num_threads();
            openblas_set_num_threads(1);
            #pragma omp parallel for schedule(static)
            for (int chunk = 0; chunk < chunks; ++chunk) {
                float *cols = buffers + (size_t)omp_get_thread_num() * (K + M) * nb_max * P;
                float *rows = cols + K * nb_max * P;
                const int b0 = chunk * nb_max, nb = B - b0 < nb_max ? B - b0 : nb_max;
                int N = nb * P, Mi = M, Ki = (int)K;
                float one = 1.f, zero = 0.f;
                char no = 'N';
                pr_im2col(xd, C, H, W, k, s, p, Ho, Wo, b0, nb, cols);
                /* rows (M x N) = w (M x K) . cols (K x N), all row-major */
                sgemm_(&no, &no, &N, &Mi, &Ki, &one, cols, &N, (float*)wd, &Ki, &zero, rows, &N);
                pr_rows_to_images(rows, M, P, b0, nb, yd);
            }
            openblas_set_num_threads(blas_threads);
        } else failed = 1;
        free(buffers);
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory(); Py_DECREF(xc); Py_DECREF(wc); %(fail)s
    }
    Py_DECREF(xc); Py_DECREF(wc);
    }
    }""") % locals()

    def c_support_code(self):
        return super().c_support_code() + blas_headers.openblas_threads_text()


class Conv2DGrad(_COp):
    """Gradients of ``Conv2D`` with respect to the images and the kernels,
    from one im2col per chunk."""

    __props__ = ("stride", "chunk_bytes")

    def __init__(self, stride=1, chunk_bytes=CHUNK_BYTES):
        self.stride = int(stride)
        self.chunk_bytes = int(chunk_bytes)

    def make_node(self, x, w, dy):
        x, w, dy = (T.as_tensor_variable(v) for v in (x, w, dy))
        _check_float32(x, w, dy)
        return Apply(self, [x, w, dy], [x.type(), w.type()])

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[1]]

    def c_support_code(self):
        return super().c_support_code() + blas_headers.openblas_threads_text()

    def c_code(self, node, name, inputs, outputs, sub):
        x, w, dy = inputs
        dx, dw = outputs
        fail = sub["fail"]
        s = self.stride
        chunk = self.chunk_bytes
        release = "Py_DECREF(xc); Py_DECREF(wc); Py_DECREF(dyc); "
        return ("{" + _contiguous("xc", x, fail)
                + _contiguous("wc", w, "Py_DECREF(xc); " + fail)
                + _contiguous("dyc", dy, "Py_DECREF(xc); Py_DECREF(wc); " + fail) + """
    {
    const int B = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    const int H = PyArray_DIMS(xc)[2], W = PyArray_DIMS(xc)[3];
    const int M = PyArray_DIMS(wc)[0], k = PyArray_DIMS(wc)[2], s = %(s)d, p = k / 2;
    const int Ho = (H + s - 1) / s, Wo = (W + s - 1) / s;
    if (PyArray_DIMS(dyc)[0] != B || PyArray_DIMS(dyc)[1] != M ||
        PyArray_DIMS(dyc)[2] != Ho || PyArray_DIMS(dyc)[3] != Wo ||
        PyArray_DIMS(wc)[1] != C || PyArray_DIMS(wc)[3] != k || k %% 2 != 1 || (s == 1 && k > 3)) {
        PyErr_SetString(PyExc_ValueError, "Conv2DGrad: output gradient or kernel has the wrong shape");
        %(release)s %(fail)s
    }
    """ + _output(dx, 4, ["B", "C", "H", "W"], release + fail)
                + _output(dw, 4, ["M", "C", "k", "k"], release + fail) + """
    const long K = (long)C * k * k, P = (long)Ho * Wo;
    const int threads = omp_get_max_threads();
    const float *xd = (const float*)PyArray_DATA(xc), *wd = (const float*)PyArray_DATA(wc);
    const float *dyd = (const float*)PyArray_DATA(dyc);
    float *dxd = (float*)PyArray_DATA(%(dx)s), *dwd = (float*)PyArray_DATA(%(dw)s);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    if (s == 1) {
        /* Chunks of images whose padded inputs and output gradients fill about
           chunk_bytes (a core's L2 cache: padded, kernel gradient, input
           gradient while in the cache), with at least 512 positions, or the
           lane sums dominate; at most B / PR_SLOTS images, so that every slot
           has one. Slot `slot` takes chunks slot, slot + slots, ... in order, adding
           their kernel gradients into its own doubles; the slots are added in
           order at the end. Neither depends on the number of threads: the
           gradients are bit-identical for any OMP_NUM_THREADS. */
        const pr_geometry g = pr_geometry_of(C, H, W, k);
        int nb_max = pr_chunk_images(B, (C + M) * g.plane, 1, %(chunk)dL, 1);
        const int nb_least = (int)((512 + g.Qr - 1) / g.Qr), nb_most = (B + PR_SLOTS - 1) / PR_SLOTS;
        if (nb_max < nb_least) nb_max = nb_least;
        if (nb_max > nb_most) nb_max = nb_most;
        int slots, chunks = pr_even_chunks(B, nb_max, &slots, &nb_max);
        /* Images PR_SKEW floats more apart than their planes: strides of a
           multiple of 4 KB would map the same pixel of every image in a chunk
           to one L1 cache set (measured: 10 %% slower on 8x8 images). */
        const long xs = (long)C * g.plane + PR_SKEW, ds = (long)M * g.plane + PR_SKEW;
        /* Every buffer starts on a cache line, and the output gradients are
           shifted so that their valid pixels do too: the kernel gradient loads
           them whole (a vector across two lines costs two loads), and the
           layout no longer depends on where malloc puts the buffer. Measured
           against malloc'ed buffers: 8-10 %% faster on 8x8 images in two
           interleaved timings, no difference in three later ones. */
        const long dy_shift = (PR_VW - ((long)g.p * g.Wp + g.p) %% PR_VW) %% PR_VW;
        const size_t per_thread = g.in_place ? PR_VW
            : pr_round((size_t)nb_max * (xs + ds) + 2 * PR_VW + (size_t)C * g.Qr, PR_VW);
        float *packed = (float*)malloc(sizeof(float) * M * K);
        float *buffers = (float*)aligned_alloc(PR_VW * 4, sizeof(float) * threads * per_thread);
        double *dw_slots = (double*)calloc((size_t)slots * M * K, sizeof(double));
        if (packed && buffers && dw_slots) {
            pr_pack(wd, M, C, &g, 1, packed);
            #pragma omp parallel for schedule(static)
            for (int slot = 0; slot < slots; ++slot) {
                double *dw_slot = dw_slots + (size_t)slot * M * K;
                float *xpad = buffers + (size_t)omp_get_thread_num() * per_thread;
                float *dypad = xpad + (size_t)nb_max * xs + dy_shift;
                float *out = xpad + (size_t)nb_max * (xs + ds) + 2 * PR_VW;
                for (int chunk = slot; chunk < chunks; chunk += slots) {
                    const int b0 = pr_chunk_start(chunk, chunks, B);
                    const int nb = pr_chunk_start(chunk + 1, chunks, B) - b0;
                    if (g.in_place) {   /* 1x1 over whole tiles: the arrays as they are */
                        const float *x0 = xd + (long)b0 * C * H * W, *dy0 = dyd + (long)b0 * M * H * W;
                        pr_wgrad(dy0, (long)M * H * W, M, x0, (long)C * H * W, nb, &g, dw_slot);
                        for (int i = 0; i < nb; ++i)
                            pr_direct(dy0 + (long)i * M * H * W, M, C, &g, packed,
                                      dxd + (long)(b0 + i) * C * H * W);
                        continue;
                    }
                    for (int i = 0; i < nb; ++i) {
                        pr_pad(xd + (long)(b0 + i) * C * H * W, C, &g, xpad + i * xs);
                        pr_pad(dyd + (long)(b0 + i) * M * H * W, M, &g, dypad + i * ds);
                    }
                    pr_wgrad(dypad, ds, M, xpad, xs, nb, &g, dw_slot);
                    /* input gradient: the padded output gradient through the flipped kernels */
                    for (int i = 0; i < nb; ++i) {
                        float *dx_image = dxd + (long)(b0 + i) * C * H * W;
                        if (g.rows) {
                            pr_direct(dypad + i * ds, M, C, &g, packed, dx_image);
                        } else {
                            pr_direct(dypad + i * ds, M, C, &g, packed, out);
                            pr_unpad(out, C, &g, dx_image);
                        }
                    }
                }
            }
            pr_add_slots(dw_slots, slots, (long)M * K, dwd);
        } else failed = 1;
        free(packed); free(buffers); free(dw_slots);
    } else {
        /* Stride 2 (the downsampling convolutions): im2col and sgemm per chunk
           of images. Chunks are dealt round-robin to PR_SLOTS slots; a slot adds
           its chunks' kernel gradients in order into its own doubles, and the
           slots are added in order at the end: the same sums for any number
           of threads. */
        int slots, nb_max;
        const int chunks = pr_even_chunks(B, pr_chunk_images(B, K, P, %(chunk)dL, 1), &slots, &nb_max);
        /* per thread: cols and dcols (K x N), rows (M x N), a float kernel gradient */
        const size_t per_thread = (size_t)(2 * K + M) * nb_max * P + (size_t)M * K;
        float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
        double *dw_slots = (double*)calloc((size_t)slots * M * K, sizeof(double));
        if (buffers && dw_slots) {
            memset(dxd, 0, sizeof(float) * B * C * H * W);
            int blas_threads = openblas_get_num_threads();
            openblas_set_num_threads(1);
            #pragma omp parallel for schedule(static)
            for (int slot = 0; slot < slots; ++slot) {
                float *cols = buffers + (size_t)omp_get_thread_num() * per_thread;
                float *dcols = cols + K * nb_max * P;
                float *rows = dcols + K * nb_max * P;
                float *dw_chunk = rows + (size_t)M * nb_max * P;
                double *dw_slot = dw_slots + (size_t)slot * M * K;
                for (int chunk = slot; chunk < chunks; chunk += slots) {
                    const int b0 = pr_chunk_start(chunk, chunks, B);
                    const int nb = pr_chunk_start(chunk + 1, chunks, B) - b0;
                    int N = nb * P, Mi = M, Ki = (int)K;
                    float one = 1.f, zero = 0.f;
                    char no = 'N', tr = 'T';
                    pr_images_to_rows(dyd, M, P, b0, nb, rows);
                    pr_im2col(xd, C, H, W, k, s, p, Ho, Wo, b0, nb, cols);
                    /* dw (M x K) = rows (M x N) . cols^T */
                    sgemm_(&tr, &no, &Ki, &Mi, &N, &one, cols, &N, rows, &N, &zero, dw_chunk, &Ki);
                    for (long i = 0; i < (long)M * K; ++i) dw_slot[i] += dw_chunk[i];
                    /* dcols (K x N) = w^T (K x M) . rows (M x N) */
                    sgemm_(&no, &tr, &N, &Ki, &Mi, &one, rows, &N, (float*)wd, &Ki, &zero, dcols, &N);
                    pr_col2im(dcols, C, H, W, k, s, p, Ho, Wo, b0, nb, dxd);
                }
            }
            openblas_set_num_threads(blas_threads);
            pr_add_slots(dw_slots, slots, (long)M * K, dwd);
        } else failed = 1;
        free(buffers); free(dw_slots);
    }
    Py_END_ALLOW_THREADS
    if (failed) { PyErr_NoMemory(); %(release)s %(fail)s }
    %(release)s
    }
    }""") % locals()


def conv2d_covers(filter_size, stride):
    """Whether ``Conv2D`` computes this kernel: its direct kernels (stride 1)
    stop at 3x3 (it refuses larger ones), im2col (stride > 1) takes any."""
    return stride > 1 or filter_size <= 3


# =============================================================================
# Batch normalisation (+ ReLU) in training mode


class BatchNormTrain(_COp):
    """Normalise each channel with its batch mean and variance, then scale by
    gamma, shift by beta and (``relu=True``) clamp at zero.

    Outputs: the result, and the batch mean, ``1 / sqrt(var + epsilon)`` and
    the (biased) variance per channel, for the running averages.
    """

    __props__ = ("epsilon", "relu")

    def __init__(self, epsilon, relu):
        self.epsilon = float(epsilon)
        self.relu = bool(relu)

    def make_node(self, x, gamma, beta):
        x, gamma, beta = (T.as_tensor_variable(v) for v in (x, gamma, beta))
        _check_float32(x, gamma, beta)
        vector = T.TensorType("float32", (False,))
        return Apply(self, [x, gamma, beta], [x.type(), vector(), vector(), vector()])

    def infer_shape(self, node, shapes):
        channels = (shapes[0][1],)
        return [shapes[0], channels, channels, channels]

    def grad(self, inputs, output_grads):
        x, gamma, beta = inputs
        dy = output_grads[0]
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            raise NotImplementedError("the batch statistics feed only the running averages")
        if isinstance(dy.type, DisconnectedType):
            return [DisconnectedType()() for _ in inputs]
        _, mean, inv_std, _ = self(x, gamma, beta)
        return BatchNormTrainGrad(self.epsilon, self.relu)(x, dy, gamma, beta, mean, inv_std)

    def connection_pattern(self, node):
        return [[True, True, True, True]] * 3

    def c_code(self, node, name, inputs, outputs, sub):
        x, gamma, beta = inputs
        y, mean, inv_std, var = outputs
        fail = sub["fail"]
        eps = repr(self.epsilon)
        relu = int(self.relu)
        release = "Py_DECREF(xc); Py_DECREF(gc); Py_DECREF(bc); "
        return ("{" + _contiguous("xc", x, fail) + _contiguous("gc", gamma, "Py_DECREF(xc); " + fail)
                + _contiguous("bc", beta, "Py_DECREF(xc); Py_DECREF(gc); " + fail) + """
    {
    const int B = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    const long P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    """ + _output(y, 4, ["B", "C", "PyArray_DIMS(xc)[2]", "PyArray_DIMS(xc)[3]"],
                  release + fail)
                + _output(mean, 1, ["C"], release + fail)
                + _output(inv_std, 1, ["C"], release + fail)
                + _output(var, 1, ["C"], release + fail) + """
    const float *xd = (const float*)PyArray_DATA(xc);
    const float *g = (const float*)PyArray_DATA(gc), *be = (const float*)PyArray_DATA(bc);
    float *yd = (float*)PyArray_DATA(%(y)s), *md = (float*)PyArray_DATA(%(mean)s);
    float *id = (float*)PyArray_DATA(%(inv_std)s), *vd = (float*)PyArray_DATA(%(var)s);
    const double n = (double)B * P;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
        double sum = 0, sum_sq = 0;
        for (int b = 0; b < B; ++b) {
            const float *seg = xd + ((long)b * C + c) * P;
            float a, aa;
            pr_sums(seg, seg, P, &a, &aa);
            sum += a; sum_sq += aa;
        }
        const double mu = sum / n;
        double v = sum_sq / n - mu * mu;
        if (v < 0) v = 0;
        const double inv = 1.0 / sqrt(v + %(eps)s);
        md[c] = (float)mu; vd[c] = (float)v; id[c] = (float)inv;
        const float scale = (float)(g[c] * inv), shift = (float)(be[c] - mu * g[c] * inv);
        for (int b = 0; b < B; ++b) {
            const float *seg = xd + ((long)b * C + c) * P;
            float *out = yd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                const float z = seg[q] * scale + shift;
                out[q] = (%(relu)d && z < 0.f) ? 0.f : z;
            }
        }
    }
    Py_END_ALLOW_THREADS
    %(release)s
    }
    }""") % locals()


class BatchNormTrainGrad(_COp):
    """Gradients of ``BatchNormTrain`` (its first output) with respect to the
    input, gamma and beta."""

    __props__ = ("epsilon", "relu")

    def __init__(self, epsilon, relu):
        self.epsilon = float(epsilon)
        self.relu = bool(relu)

    def make_node(self, x, dy, gamma, beta, mean, inv_std):
        args = [T.as_tensor_variable(v) for v in (x, dy, gamma, beta, mean, inv_std)]
        _check_float32(*args)
        return Apply(self, args, [args[0].type(), args[2].type(), args[3].type()])

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[2], shapes[3]]

    def c_code(self, node, name, inputs, outputs, sub):
        x, dy, gamma, beta, mean, inv_std = inputs
        dx, dgamma, dbeta = outputs
        fail = sub["fail"]
        relu = int(self.relu)
        names = ["xc", "dyc", "gc", "bc", "mc", "ic"]
        code, release = "", ""
        for cname, var in zip(names, inputs):
            code += _contiguous(cname, var, release + fail)
            release += "Py_DECREF(%s); " % cname
        return ("{" + code + """
    {
    const int B = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    const long P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    """ + _output(dx, 4, ["B", "C", "PyArray_DIMS(xc)[2]", "PyArray_DIMS(xc)[3]"],
                  release + fail)
                + _output(dgamma, 1, ["C"], release + fail)
                + _output(dbeta, 1, ["C"], release + fail) + """
    const float *xd = (const float*)PyArray_DATA(xc), *dyd = (const float*)PyArray_DATA(dyc);
    const float *g = (const float*)PyArray_DATA(gc), *be = (const float*)PyArray_DATA(bc);
    const float *md = (const float*)PyArray_DATA(mc), *id = (const float*)PyArray_DATA(ic);
    float *dxd = (float*)PyArray_DATA(%(dx)s);
    float *dgd = (float*)PyArray_DATA(%(dgamma)s), *dbd = (float*)PyArray_DATA(%(dbeta)s);
    const double n = (double)B * P;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel
    {
    float *gx = (float*)malloc(sizeof(float) * 2 * (P > 0 ? P : 1));
    #pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
        const float mu = md[c], inv = id[c], gam = g[c], bet = be[c];
        float *gseg = gx, *xhat = gx + P;
        double sum_g = 0, sum_gx = 0;
        for (int b = 0; b < B; ++b) {
            const float *xs = xd + ((long)b * C + c) * P, *ds = dyd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                const float h = (xs[q] - mu) * inv;
                xhat[q] = h;
                gseg[q] = (%(relu)d && h * gam + bet < 0.f) ? 0.f : ds[q];
            }
            float a, ab;
            pr_sums(gseg, xhat, P, &a, &ab);
            sum_g += a; sum_gx += ab;
        }
        dbd[c] = (float)sum_g;
        dgd[c] = (float)sum_gx;
        const float mean_g = (float)(sum_g / n), mean_gx = (float)(sum_gx / n);
        const float scale = gam * inv;
        for (int b = 0; b < B; ++b) {
            const float *xs = xd + ((long)b * C + c) * P, *ds = dyd + ((long)b * C + c) * P;
            float *out = dxd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                const float h = (xs[q] - mu) * inv;
                const float gq = (%(relu)d && h * gam + bet < 0.f) ? 0.f : ds[q];
                out[q] = scale * (gq - mean_g - h * mean_gx);
            }
        }
    }
    free(gx);
    }
    Py_END_ALLOW_THREADS
    %(release)s
    }
    }""") % locals()


# =============================================================================
# Batch normalisation (+ ReLU) at inference: a per-channel affine map


class ScaleShift(_COp):
    """``x * scale[c] + shift[c]`` per channel, then (``relu=True``) clamped at
    zero: batch normalisation with running averages folded into ``scale``
    and ``shift``. One parallel pass (Theano's own elementwise loop runs on one
    core)."""

    __props__ = ("relu",)

    def __init__(self, relu):
        self.relu = bool(relu)

    def make_node(self, x, scale, shift):
        x, scale, shift = (T.as_tensor_variable(v) for v in (x, scale, shift))
        _check_float32(x, scale, shift)
        return Apply(self, [x, scale, shift], [x.type()])

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def grad(self, inputs, output_grads):
        x, scale, shift = inputs
        (dy,) = output_grads
        if self.relu:
            dy = dy * T.gt(self(x, scale, shift), 0)
        axes = (0, 2, 3)
        return [dy * scale.dimshuffle("x", 0, "x", "x"), (dy * x).sum(axes), dy.sum(axes)]

    def c_code(self, node, name, inputs, outputs, sub):
        x, scale, shift = inputs
        (y,) = outputs
        fail = sub["fail"]
        relu = int(self.relu)
        release = "Py_DECREF(xc); Py_DECREF(sc); Py_DECREF(hc); "
        return ("{" + _contiguous("xc", x, fail)
                + _contiguous("sc", scale, "Py_DECREF(xc); " + fail)
                + _contiguous("hc", shift, "Py_DECREF(xc); Py_DECREF(sc); " + fail) + """
    {
    const int B = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    const long P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    """ + _output(y, 4, ["B", "C", "PyArray_DIMS(xc)[2]", "PyArray_DIMS(xc)[3]"],
                  release + fail) + """
    const float *xd = (const float*)PyArray_DATA(xc);
    const float *sd = (const float*)PyArray_DATA(sc), *hd = (const float*)PyArray_DATA(hc);
    float *yd = (float*)PyArray_DATA(%(y)s);
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static)
    for (long seg = 0; seg < (long)B * C; ++seg) {
        const float a = sd[seg %% C], b = hd[seg %% C];
        const float *in = xd + seg * P;
        float *out = yd + seg * P;
        for (long q = 0; q < P; ++q) {
            const float z = in[q] * a + b;
            out[q] = (%(relu)d && z < 0.f) ? 0.f : z;
        }
    }
    Py_END_ALLOW_THREADS
    %(release)s
    }
    }""") % locals()
