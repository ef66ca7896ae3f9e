/* Conv2D and Conv2DGrad: cross-correlation of (B, C, H, W) images with
   (M, C, k, k) kernels, 'same' zero padding (k / 2), stride s, and its two
   gradients. 1x1 and 3x3 kernels at stride 1 and 2 run direct,
   register-tiled kernels (stride 2 on the images' polyphase planes, so that
   every tap is still a contiguous vector load); other kernels at other
   strides im2col + single-threaded sgemm in chunks of images. All cores
   through OpenMP.

   Fusion (engine/fusion.py's graph rewrites): the input may be read through
   a batch normalisation (+ ReLU) with given statistics (pr_map, applied
   where the image is copied into the kernels' layout), the forward output
   may get a residual added as it is written, and the input gradient may be
   turned into the batch norm's masked output gradient, with its sums
   (pr_bn_grad, while each image's gradient is in the cache). Each gives the
   bits of the separate ops it replaces.

   Needs support.c, Theano's BLAS header (sgemm_) and its OpenBLAS threads
   header before it.

   Every result is the same, bit for bit, for any number of threads: work is
   cut into chunks by the shapes alone, and kernel-gradient partial sums are
   added in a fixed order (PR_SLOTS). */

/* im2col for images b0 .. b0+nb-1 of a C-contiguous (B, C, H, W) array:
   rows (c, i, j) of the (C*k*k) x (nb*Ho*Wo) row-major matrix `cols` hold the
   input pixel (through map) each output pixel sees through kernel tap (i, j);
   zero outside. */
static void pr_im2col(const float *x, int C, int H, int W, int k, int s, int p,
                      int Ho, int Wo, int b0, int nb, const pr_map *map, float *cols) {
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
                    if (hi > lo) pr_map_copy(map, c, src + lo + j - p, o + lo, hi - lo);
                    for (int ow = hi > lo ? hi : lo; ow < Wo; ++ow) o[ow] = 0.f;
                } else {
                    for (int ow = 0; ow < Wo; ++ow) {
                        const int iw = ow * s + j - p;
                        o[ow] = (iw >= 0 && iw < W) ? pr_map_one(map, c, src[iw]) : 0.f;
                    }
                }
            }
        }
    }
}

/* The adjoint of pr_im2col (without a map): add every column entry back onto its input pixel. */
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

/* (M, nb*P) row-major <-> images b0.. of a (B, M, P) array; the first adds
   `add` (an array like y, NULL: none) as it writes. */
static void pr_rows_to_images(const float *rows, int M, long P, int b0, int nb, const float *add,
                              float *y) {
    for (int b = 0; b < nb; ++b)
        for (int m = 0; m < M; ++m) {
            const long at = ((long)(b0 + b) * M + m) * P;
            const float *src = rows + (long)m * nb * P + b * P;
            if (add)
                for (long q = 0; q < P; ++q) y[at + q] = src[q] + add[at + q];
            else
                memcpy(y + at, src, sizeof(float) * P);
        }
}

static void pr_images_to_rows(const float *y, int M, long P, int b0, int nb, float *rows) {
    for (int b = 0; b < nb; ++b)
        for (int m = 0; m < M; ++m)
            memcpy(rows + (long)m * nb * P + b * P, y + ((long)(b0 + b) * M + m) * P,
                   sizeof(float) * P);
}

/* ---- Direct convolution, 1x1 and 3x3 at stride 1 and 2 (the bulk of every
   network's FLOPs) ----
   An image is copied into the kernels' "grid": at stride 1 zero-padded
   planes of width Wq = W + 2p, so that the input pixel under tap (i, j) of
   output position q = oh * Wq + ow is simply q + i * Wq + j: every tap is a
   contiguous vector load. At stride 2 (3x3) the zero-padded image is split
   into its four phase planes (even/odd rows x even/odd columns, width Wq =
   Wo + 2): tap (i, j) of output q reads phase (i % 2, j % 2) at q + (i / 2)
   * Wq + j / 2, again contiguous; a 1x1 stride-2 convolution reads the
   image's even rows and columns (Wq = Wo). Outputs are computed on this grid
   (extra columns discarded), in register tiles of MB output channels x PB
   vectors of pixels: no im2col buffer, no BLAS packing, each input vector
   feeds MB fused multiply-adds. 1x1 kernels at stride 1 need no copy: when
   the image fills whole tiles they read the input and write the output in
   place. */
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
#define PR_SKEW 16    /* floats between images in chunk buffers: see pr_conv2d_grad_direct */
#define PR_SLOTS 8    /* kernel-gradient partial sums, whatever the thread count: see pr_conv2d_grad_direct */
#define PR_DX 1       /* the parts of a gradient pass: input gradient, */
#define PR_DW 2       /* kernel gradient */
typedef float pr_vec __attribute__((vector_size(PR_VW * 4), aligned(4)));

/* a * b + c, one rounding per lane (as fmaf: the bits of the scalar code). */
static inline pr_vec pr_vfma(pr_vec a, pr_vec b, pr_vec c) {
#if defined(__AVX512F__) && PR_VW == 16
    return (pr_vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && PR_VW == 8
    return (pr_vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    pr_vec r;
    for (int l = 0; l < PR_VW; ++l) r[l] = fmaf(a[l], b[l], c[l]);
    return r;
#endif
}

/* pr_map_one on every lane of v (channel c): the same bits. */
static inline pr_vec pr_map_vec(const pr_map *map, int c, pr_vec v) {
    const pr_vec m = (pr_vec){0} + map->mean[c], a = (pr_vec){0} + map->scale[c],
                 b = (pr_vec){0} + map->shift[c], zero = {0};
    const pr_vec z = pr_vfma(v - m, a, b);
    return map->relu ? (z < zero ? zero : z) : z;
}

typedef struct {
    int C, H, W, k, p, s;   /* input channels and size, kernel, padding, stride */
    int Ho, Wo;             /* output size */
    int Wq;                 /* the grid's width: output (oh, ow) at q = oh * Wq + ow */
    int taps;
    int pb, mb;             /* the tile: mb channels x pb vectors */
    int in_place;           /* 1x1, stride 1, over whole tiles: the image is its own grid */
    int rows;               /* output rows of whole vectors on a wider grid: tiles write the output */
    int to_output;          /* the grid is the output's layout (1x1) over whole tiles */
    long Q, Qr;             /* outputs on the grid, rounded up to whole tiles */
    long phase_plane, plane;  /* floats per phase plane; per channel (all its phases) */
    long off[9];            /* tap offsets on the grid */
} pr_geometry;

static long pr_round(long n, long to) { return (n + to - 1) / to * to; }

/* The tile for Q outputs on a grid: two-vector tiles unless they would
   compute more rounding. */
static void pr_choose_tile(pr_geometry *g) {
    g->pb = pr_round(g->Q, 2 * PR_VW) > pr_round(g->Q, PR_VW) ? 1 : 2;
    g->mb = g->pb == 2 ? PR_MB2 : PR_MB1;
    g->Qr = pr_round(g->Q, g->pb * PR_VW);
}

/* Geometry of a k x k convolution (k 1 or 3) at stride s (1 or 2) of
   C-channel H x W images. */
static pr_geometry pr_geometry_of(int C, int H, int W, int k, int s) {
    pr_geometry g;
    g.C = C; g.H = H; g.W = W; g.k = k; g.p = k / 2; g.s = s; g.taps = k * k;
    g.Ho = (H + s - 1) / s; g.Wo = (W + s - 1) / s;
    g.Wq = s == 1 ? W + 2 * g.p : k == 1 ? g.Wo : g.Wo + 2;
    g.Q = (long)g.Ho * g.Wq;
    /* Rows of whole vectors (32 or 16 pixels with AVX-512) on a wider grid
       are tiled row by row, straight into the output image; other sizes on
       the grid. */
    g.rows = g.Wq != g.Wo && g.Wo % PR_VW == 0;
    if (g.rows) {
        g.pb = g.Wo % (2 * PR_VW) == 0 ? 2 : 1;
        g.mb = g.pb == 2 ? PR_MB2 : PR_MB1;
        g.Qr = pr_round(g.Q, g.pb * PR_VW);
    } else {
        pr_choose_tile(&g);
    }
    g.to_output = g.Wq == g.Wo && g.Qr == g.Q;
    g.in_place = k == 1 && s == 1 && g.to_output;
    /* the farthest tap beyond an output position */
    const long reach = s == 1 ? (long)(k - 1) * (g.Wq + 1) : k == 3 ? g.Wq + 1 : 0;
    g.phase_plane = pr_round(g.Qr + reach, PR_VW);
    g.plane = g.in_place ? g.Q : (s == 2 && k == 3 ? 4 : 1) * g.phase_plane;
    for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j)
            g.off[i * k + j] = s == 1 ? (long)i * g.Wq + j
                : ((i % 2) * 2 + j % 2) * g.phase_plane + (long)(i / 2) * g.Wq + j / 2;
    return g;
}

/* The grid of one (C, H, W) image, mapped by map where given: per channel
   its zero-padded plane (stride 1), its four phase planes (3x3, stride 2:
   phase (a, b) holds rows a, a+2, ... and columns b, b+2, ... of the
   zero-padded image), or its even rows and columns (1x1, stride 2). */
static void pr_fill(const float *src, const pr_geometry *g, const pr_map *map, float *dst) {
    const long HW = (long)g->H * g->W;
    for (int c = 0; c < g->C; ++c) {
        float *d = dst + (long)c * g->plane;
        const float *image = src + c * HW;
        memset(d, 0, sizeof(float) * g->plane);
        if (g->s == 1) {
            for (int h = 0; h < g->H; ++h)
                pr_map_copy(map, c, image + (long)h * g->W, d + (long)(h + g->p) * g->Wq + g->p,
                            g->W);
        } else if (g->k == 1) {
            for (int oh = 0; oh < g->Ho; ++oh)
                for (int ow = 0; ow < g->Wo; ++ow)
                    d[(long)oh * g->Wq + ow] = pr_map_one(map, c, image[2L * oh * g->W + 2 * ow]);
        } else {
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 2; ++b) {
                    float *phase = d + (a * 2 + b) * g->phase_plane;
                    for (int r = 0; r <= g->Ho; ++r) {
                        const int ih = 2 * r + a - 1;
                        if (ih < 0 || ih >= g->H) continue;
                        const float *row = image + (long)ih * g->W;
                        float *out = phase + (long)r * g->Wq;
                        for (int col = 0; col <= g->Wo; ++col) {
                            const int iw = 2 * col + b - 1;
                            if (iw >= 0 && iw < g->W) out[col] = pr_map_one(map, c, row[iw]);
                        }
                    }
                }
        }
    }
}

/* C planes of `plane` floats, zero but for a (C, rows, cols) image's rows,
   Wq apart from `origin`. */
static void pr_grid(const float *src, int C, int rows, int cols, int Wq, long origin, long plane,
                    float *dst) {
    for (int c = 0; c < C; ++c) {
        float *d = dst + (long)c * plane;
        memset(d, 0, sizeof(float) * plane);
        for (int r = 0; r < rows; ++r)
            memcpy(d + origin + (long)r * Wq, src + ((long)c * rows + r) * cols,
                   sizeof(float) * cols);
    }
}

/* Valid outputs of the grid (M planes of Qr) into a (M, Ho, Wo) image, plus
   `add` (an image like dst, NULL: none). */
static void pr_unpad(const float *out, int M, const pr_geometry *g, float *dst, const float *add) {
    for (int m = 0; m < M; ++m)
        for (int h = 0; h < g->Ho; ++h) {
            const float *src = out + (long)m * g->Qr + (long)h * g->Wq;
            const long at = ((long)m * g->Ho + h) * g->Wo;
            if (add)
                for (int w = 0; w < g->Wo; ++w) dst[at + w] = src[w] + add[at + w];
            else
                memcpy(dst + at, src, sizeof(float) * g->Wo);
        }
}

/* Kernels packed for the tiles: blocks of g->mb output channels, then
   [c][tap][mm]; the last channels in blocks of one. flip_transpose packs the
   kernel of the input gradient at stride 1: out channel c, in channel m,
   taps reversed. */
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
                                       long q0, float *out, long ostride,              \
                                       const float *add) {                             \
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
        for (int pb = 0; pb < PB; ++pb) {                                              \
            pr_vec v = acc[mm][pb];                                                    \
            if (add) v += *(const pr_vec*)(add + (long)mm * ostride + pb * PR_VW);     \
            *(pr_vec*)(out + (long)mm * ostride + pb * PR_VW) = v;                     \
        }                                                                              \
}
PR_TILE(PR_MB2, 2)
PR_TILE(1, 2)
PR_TILE(PR_MB1, 1)
PR_TILE(1, 1)

/* Correlation of the grid with packed kernels: into the (Mo, Ho, Wo) output
   image when g->rows, else into Mo planes of Qr on the grid (the output
   image itself when g->to_output); `add` (laid out as out, NULL: none) is
   added as the tiles are written. */
static void pr_direct(const float *xpad, int Ci, int Mo, const pr_geometry *g,
                      const float *packed, float *out, const float *add) {
    const long step = (long)g->pb * PR_VW;
    const long ostride = g->rows ? (long)g->Ho * g->Wo : g->Qr;
    const long tiles = g->rows ? (long)g->Ho * (g->Wo / step) : g->Qr / step;
    int m0 = 0;
    long wofs = 0;
    while (m0 < Mo) {
        const int mb = (Mo - m0 >= g->mb) ? g->mb : 1;
        const float *wb = packed + wofs;
        for (long tile = 0; tile < tiles; ++tile) {
            long q_in, q_out;
            if (g->rows) {
                const long per_row = g->Wo / step, oh = tile / per_row;
                const long ow = (tile % per_row) * step;
                q_in = oh * g->Wq + ow; q_out = oh * g->Wo + ow;
            } else {
                q_in = q_out = tile * step;
            }
            float *o = out + (long)m0 * ostride + q_out;
            const float *a = add ? add + (long)m0 * ostride + q_out : NULL;
            if (g->pb == 2) {
                if (mb > 1) pr_tile_PR_MB2_2(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride, a);
                else pr_tile_1_2(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride, a);
            } else {
                if (mb > 1) pr_tile_PR_MB1_1(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride, a);
                else pr_tile_1_1(xpad, Ci, g->plane, g->off, g->taps, wb, q_in, o, ostride, a);
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

/* Kernel gradient of nb images: dw[m][c][t] += sum_img sum_q dy[m][q] x[c][q + off[t]],
   dy on the grid with zeros at its extra positions (so they contribute
   nothing), dy planes `plane` apart. Tiles of MB channels x TB taps keep
   their sums in registers across all nb images, so the lanes are added up
   once per chunk, not once per image (small images would spend more time
   there than in the multiply-adds). */
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

/* x: nb grids of C channels, xstride apart (channels g->plane apart); dy:
   nb grids of M planes, dstride apart, planes dplane apart, at the grid's
   origin; dw: M rows of C * taps doubles.
   Tiles take PR_WMB output channels and three taps: one kernel row of a 3x3
   kernel, or three input channels of a 1x1 kernel (a last one or two
   channels go one at a time). The output channels are the outer loop, so
   that their gradients (PR_WMB planes of nb images) stay in the fastest
   cache while every input channel streams past. */
static void pr_wgrad(const float *dy, long dstride, long dplane, int M, const float *xpad,
                     long xstride, int nb, const pr_geometry *g, double *dw) {
    const int C = g->C, k = g->k;
    const long plane = g->plane;
    const long row = (long)C * g->taps;
    const long channel_off[3] = {0, plane, 2 * plane};
    float sums[PR_WMB * 3];
    for (int m0 = 0; m0 < M; ) {
        const int mb = M - m0 >= PR_WMB ? PR_WMB : 1;
        const float *d = dy + (long)m0 * dplane;
        for (int c = 0; c < C; ) {
            const int width = (k == 3 || C - c >= 3) ? 3 : 1;   /* taps in this tile */
            for (int i = 0; i < k; ++i) {
                const float *x = xpad + (long)c * plane;
                const long *off = k == 3 ? g->off + 3 * i : channel_off;
                const long col = k == 3 ? (long)c * 9 + 3 * i : c;
                if (width == 3 && mb > 1)
                    pr_wtile_PR_WMB_3(d, dstride, x, xstride, nb, dplane, off, g->Qr, sums);
                else if (width == 3)
                    pr_wtile_1_3(d, dstride, x, xstride, nb, dplane, off, g->Qr, sums);
                else if (mb > 1)
                    pr_wtile_PR_WMB_1(d, dstride, x, xstride, nb, dplane, off, g->Qr, sums);
                else
                    pr_wtile_1_1(d, dstride, x, xstride, nb, dplane, off, g->Qr, sums);
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

/* out[i] = the sum of slots[s * n + i] over s in order, rounded to float
   (in parallel over i: the same sums for any thread count). */
static void pr_add_slots(const double *slots, int count, long n, float *out) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) {
        double total = 0;
        for (int s = 0; s < count; ++s) total += slots[(size_t)s * n + i];
        out[i] = (float)total;
    }
}

/* Images per chunk: the im2col buffer near chunk_bytes, at least one image,
   and at least `parts` chunks when the batch allows. */
static int pr_chunk_images(int B, long K, long P, long chunk_bytes, int parts) {
    long per = chunk_bytes / (long)(sizeof(float) * K * P);
    if (per < 1) per = 1;
    long most = (B + parts - 1) / parts;
    if (per > most) per = most;
    if (per < 1) per = 1;
    return (int)per;
}

/* Whether the direct kernels compute this convolution (the rest: im2col). */
static int pr_direct_covers(int k, int s) {
    return (k == 1 || k == 3) && (s == 1 || s == 2);
}

/* ---- The computations: no Python, no GIL; 0, or -1 when out of memory ---- */

/* y = x * w (+ add), stride 1 or 2: each image copied into its grid (mapped
   by map; 1x1 at stride 1 in place when there is no map) and run through the
   direct kernels. */
static int pr_conv2d_direct(const float *xd, const float *wd, float *yd,
                            int B, int C, int H, int W, int M, int k, int s,
                            const pr_map *map, const float *addend) {
    const pr_geometry g = pr_geometry_of(C, H, W, k, s);
    const long K = (long)C * k * k, out_image = (long)M * g.Ho * g.Wo;
    const int copy = !(g.in_place && !map), unpad = !g.rows && !g.to_output;
    const int threads = omp_get_max_threads();
    const size_t per_thread = copy ? (size_t)C * g.plane + (unpad ? (size_t)M * g.Qr : 0) : 1;
    int status = -1;
    float *packed = (float*)malloc(sizeof(float) * M * K);
    float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
    if (!packed || !buffers) goto cleanup;
    pr_pack(wd, M, C, &g, 0, packed);
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < B; ++b) {
        const float *image = xd + (long)b * C * H * W;
        float *result = yd + (long)b * out_image;
        const float *add = addend ? addend + (long)b * out_image : NULL;
        if (!copy) {
            pr_direct(image, C, M, &g, packed, result, add);
        } else {
            float *xpad = buffers + (size_t)omp_get_thread_num() * per_thread;
            float *out = xpad + (size_t)C * g.plane;
            pr_fill(image, &g, map, xpad);
            if (!unpad) {
                pr_direct(xpad, C, M, &g, packed, result, add);
            } else {
                pr_direct(xpad, C, M, &g, packed, out, NULL);
                pr_unpad(out, M, &g, result, add);
            }
        }
    }
    status = 0;
cleanup:
    free(packed);
    free(buffers);
    return status;
}

/* y = x * w (+ add), any stride: im2col and sgemm per chunk of images. The
   chunks depend on the shapes alone (at least PR_SLOTS of them when the
   batch allows, one a thread), not on the number of threads: an image's
   result depends on the N of the sgemm it is part of (with chunks cut per
   thread, OMP_NUM_THREADS=1, 2 and 3 gave results that differed in the last
   bits). */
static int pr_conv2d_im2col(const float *xd, const float *wd, float *yd,
                            int B, int C, int H, int W, int M, int k, int s, long chunk_bytes,
                            const pr_map *map, const float *addend) {
    const int p = k / 2, Ho = (H + s - 1) / s, Wo = (W + s - 1) / s;
    const long K = (long)C * k * k, P = (long)Ho * Wo;
    const int threads = omp_get_max_threads();
    const int nb_max = pr_chunk_images(B, K, P, chunk_bytes, PR_SLOTS);
    const int chunks = (B + nb_max - 1) / nb_max;
    int status = -1, blas_threads;
    float *buffers = (float*)malloc(sizeof(float) * (size_t)threads * (K + M) * nb_max * P);
    if (!buffers) goto cleanup;
    blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    #pragma omp parallel for schedule(static)
    for (int chunk = 0; chunk < chunks; ++chunk) {
        float *cols = buffers + (size_t)omp_get_thread_num() * (K + M) * nb_max * P;
        float *rows = cols + K * nb_max * P;
        const int b0 = chunk * nb_max, nb = B - b0 < nb_max ? B - b0 : nb_max;
        int N = nb * P, Mi = M, Ki = (int)K;
        float one = 1.f, zero = 0.f;
        char no = 'N';
        pr_im2col(xd, C, H, W, k, s, p, Ho, Wo, b0, nb, map, cols);
        /* rows (M x N) = w (M x K) . cols (K x N), all row-major */
        sgemm_(&no, &no, &N, &Mi, &Ki, &one, cols, &N, (float*)wd, &Ki, &zero, rows, &N);
        pr_rows_to_images(rows, M, P, b0, nb, addend, yd);
    }
    openblas_set_num_threads(blas_threads);
    status = 0;
cleanup:
    free(buffers);
    return status;
}

/* ---- 1x1 convolutions at stride 1 as one sgemm per image, on the arrays
   as they lie (C-contiguous (B, C, P) images: each image's C x P matrix is
   BLAS's column-major P x C) ----
   y_b (M x P) = w (M x C) x_b; dx_b = w^T dy_b; dw = sum_b dy_b x_b^T.
   Single-threaded sgemm per image, images shared among the OpenMP threads:
   each image's result comes from one call whose shapes are fixed, whatever
   the thread count. An input read through a map is copied (mapped) first;
   a residual is added after the sgemm (a separate rounding, as the
   separate ops'). */
static int pr_conv2d_1x1_gemm(const float *xd, const float *wd, float *yd, int B, int C, long P,
                              int M, const pr_map *map, const float *addend) {
    const int threads = omp_get_max_threads();
    int status = -1, blas_threads;
    float *buffers = map ? (float*)malloc(sizeof(float) * threads * C * P) : NULL;
    if (map && !buffers) return -1;
    blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < B; ++b) {
        const float *x = xd + (long)b * C * P;
        float *y = yd + (long)b * M * P;
        int Pi = (int)P, Mi = M, Ci = C;
        float one = 1.f, zero = 0.f;
        char no = 'N';
        if (map) {
            float *mapped = buffers + (size_t)omp_get_thread_num() * C * P;
            for (int c = 0; c < C; ++c) pr_map_copy(map, c, x + (long)c * P, mapped + (long)c * P, P);
            x = mapped;
        }
        sgemm_(&no, &no, &Pi, &Mi, &Ci, &one, (float*)x, &Pi, (float*)wd, &Ci, &zero, y, &Pi);
        if (addend) {
            const float *a = addend + (long)b * M * P;
            for (long i = 0; i < (long)M * P; ++i) y[i] += a[i];
        }
    }
    openblas_set_num_threads(blas_threads);
    status = 0;
    free(buffers);
    return status;
}

/* dx and dw of a 1x1 stride-1 convolution, one sgemm per image and part:
   chunks of images dealt to PR_SLOTS slots as in pr_conv2d_grad_direct, a
   chunk's kernel gradients summed by sgemm (beta 1) into a float buffer and
   added into its slot's doubles, the slots added in order. */
static int pr_conv2d_grad_1x1_gemm(const float *xd, const float *wd, const float *dyd, float *dxd,
                                   float *dwd, int B, int C, long P, int M, int parts,
                                   const pr_map *map, const pr_bn_grad *bn) {
    const int threads = omp_get_max_threads();
    int slots, nb_max;
    const int chunks = pr_even_chunks(B, (B + PR_SLOTS - 1) / PR_SLOTS, &slots, &nb_max);
    const size_t per_thread = (size_t)M * C + (map ? (size_t)C * P : 0);
    int status = -1, blas_threads;
    float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
    double *dw_slots = (double*)malloc(sizeof(double) * (size_t)slots * M * C);   /* zeroed per slot */
    if (!buffers || !dw_slots) goto cleanup;
    blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    #pragma omp parallel for schedule(static)
    for (int slot = 0; slot < slots; ++slot) {
        float *dw_chunk = buffers + (size_t)omp_get_thread_num() * per_thread;
        float *mapped = dw_chunk + (size_t)M * C;
        double *dw_slot = dw_slots + (size_t)slot * M * C;
        int Pi = (int)P, Mi = M, Ci = C;
        if (parts & PR_DW) memset(dw_slot, 0, sizeof(double) * M * C);
        float one = 1.f, zero = 0.f;
        char no = 'N', tr = 'T';
        for (int chunk = slot; chunk < chunks; chunk += slots) {
            const int b0 = pr_chunk_start(chunk, chunks, B);
            const int nb = pr_chunk_start(chunk + 1, chunks, B) - b0;
            for (int i = 0; i < nb; ++i) {
                const int b = b0 + i;
                const float *dy = dyd + (long)b * M * P;
                if (parts & PR_DW) {
                    const float *x = xd + (long)b * C * P;
                    if (map) {
                        for (int c = 0; c < C; ++c)
                            pr_map_copy(map, c, x + (long)c * P, mapped + (long)c * P, P);
                        x = mapped;
                    }
                    /* dw^T (C x M, column-major) (+)= x_b (C x P) dy_b^T */
                    sgemm_(&tr, &no, &Ci, &Mi, &Pi, &one, (float*)x, &Pi, (float*)dy, &Pi,
                           i ? &one : &zero, dw_chunk, &Ci);
                }
                if (parts & PR_DX) {
                    float *dx = dxd + (long)b * C * P;
                    /* dx_b (C x P) = w^T dy_b */
                    sgemm_(&no, &tr, &Pi, &Ci, &Mi, &one, (float*)dy, &Pi, (float*)wd, &Ci, &zero,
                           dx, &Pi);
                    if (bn) pr_bn_grad_image(bn, b, C, P, dx);
                }
            }
            if (parts & PR_DW)
                for (long i = 0; i < (long)M * C; ++i) dw_slot[i] += dw_chunk[i];
        }
    }
    openblas_set_num_threads(blas_threads);
    if (parts & PR_DW) pr_add_slots(dw_slots, slots, (long)M * C, dwd);
    status = 0;
cleanup:
    free(buffers);
    free(dw_slots);
    return status;
}

/* The input gradient of a 3x3 stride-2 convolution, phase by phase: phase
   (a, b) of the zero-padded input gradient (rows a, a+2, ..., columns b,
   b+2, ...) is a stride-1 correlation of the output gradient (padded by one
   zero row and column before it) with the kernel taps (i, j), i % 2 = a,
   j % 2 = b: 4, 2, 2 and 1 taps. g: the forward geometry; dg: the four
   passes' geometries (their grids are the forward's width, Wq); packed: the
   four passes' kernels one after the other. */
static void pr_phase_passes(const pr_geometry *g, int M, int C, const float *w, long dplane,
                            pr_geometry *dg, float *packed) {
    long index = 0;
    for (int ph = 0; ph < 4; ++ph) {
        const int a = ph / 2, b = ph % 2;
        pr_geometry *d = dg + ph;
        int ti[4], tj[4];
        *d = *g;
        d->taps = 0;
        for (int i = a; i < 3; i += 2)
            for (int j = b; j < 3; j += 2) {
                ti[d->taps] = i; tj[d->taps] = j;
                d->off[d->taps++] = (long)(1 - (i - a) / 2) * g->Wq + (1 - (j - b) / 2);
            }
        d->Q = (long)(g->Ho + 1) * g->Wq;
        d->rows = 0;
        pr_choose_tile(d);
        d->to_output = 0;
        d->plane = dplane;
        for (int c0 = 0; c0 < C; ) {
            const int cb = C - c0 >= d->mb ? d->mb : 1;
            for (int m = 0; m < M; ++m)
                for (int t = 0; t < d->taps; ++t)
                    for (int cc = 0; cc < cb; ++cc)
                        packed[index++] = w[((long)m * C + c0 + cc) * 9 + ti[t] * 3 + tj[t]];
            c0 += cb;
        }
    }
}

/* dx and dw from dy, stride 1 or 2 (1x1 and 3x3).
   Chunks of images whose grids and output gradients fill about
   chunk_bytes (a core's L2 cache: grids, kernel gradient, input gradient
   while in the cache), with at least 512 positions, or the lane sums
   dominate; at most B / PR_SLOTS images, so that every slot has one. Slot
   `slot` takes chunks slot, slot + slots, ... in order, adding their kernel
   gradients into its own doubles; the slots are added in order at the end.
   Neither depends on the number of threads: the gradients are bit-identical
   for any OMP_NUM_THREADS. `parts`: PR_DX | PR_DW, the gradients wanted (the
   other one may come from winograd.c). map: x is read through it (the kernel
   gradient needs the mapped input). bn: each image of dx goes through
   pr_bn_grad_image once complete. */
static int pr_conv2d_grad_direct(const float *xd, const float *wd, const float *dyd,
                                 float *dxd, float *dwd,
                                 int B, int C, int H, int W, int M, int k, int s,
                                 long chunk_bytes, int parts, const pr_map *map,
                                 const pr_bn_grad *bn) {
    const pr_geometry g = pr_geometry_of(C, H, W, k, s);
    const long K = (long)C * k * k, HW = (long)H * W, HWo = (long)g.Ho * g.Wo;
    const int threads = omp_get_max_threads();
    const int phased = s == 2 && k == 3;
    /* the output gradient: on the grid from dy_origin (padded like an input
       at stride 1, by one row and column at 3x3 stride 2), planes dplane
       apart; as it is for 1x1 kernels over whole tiles */
    const int dy_direct = k == 1 && g.to_output, x_direct = g.in_place && !map;
    const long dy_origin = s == 1 ? (long)g.p * g.Wq + g.p : phased ? g.Wq + 1 : 0;
    pr_geometry dg[4];
    long dplane = g.plane, out_size = g.rows || g.in_place ? 0 : (long)C * g.Qr;
    float *packed = (float*)malloc(sizeof(float) * M * K);
    if (!packed) return -1;
    if (phased) {
        dplane = pr_round(g.Qr + g.Wq + 1, PR_VW);
        pr_phase_passes(&g, M, C, wd, dplane, dg, packed);
        for (int ph = 0; ph < 4; ++ph) {
            if (pr_round(dg[ph].Qr + g.Wq + 1, PR_VW) > dplane)
                dplane = pr_round(dg[ph].Qr + g.Wq + 1, PR_VW);
            if ((long)C * dg[ph].Qr > out_size) out_size = (long)C * dg[ph].Qr;
        }
        for (int ph = 0; ph < 4; ++ph) dg[ph].plane = dplane;
    } else {
        pr_pack(wd, M, C, &g, 1, packed);
    }
    int nb_max = pr_chunk_images(B, C * g.plane + M * dplane, 1, chunk_bytes, 1);
    const int nb_least = (int)((512 + g.Qr - 1) / g.Qr), nb_most = (B + PR_SLOTS - 1) / PR_SLOTS;
    if (nb_max < nb_least) nb_max = nb_least;
    if (nb_max > nb_most) nb_max = nb_most;
    int slots, chunks = pr_even_chunks(B, nb_max, &slots, &nb_max);
    /* Images PR_SKEW floats more apart than their planes: strides of a
       multiple of 4 KB would map the same pixel of every image in a chunk to
       one L1 cache set. */
    const long xs = (long)C * g.plane + PR_SKEW, ds = (long)M * dplane + PR_SKEW;
    /* Every buffer starts on a cache line, and the output gradients are
       shifted so that their valid pixels do too: the kernel gradient loads
       them whole (a vector across two lines costs two loads), and the layout
       no longer depends on where malloc puts the buffer. */
    const long dy_shift = (PR_VW - dy_origin % PR_VW) % PR_VW;
    const size_t per_thread = pr_round((size_t)nb_max * (xs + ds) + 2 * PR_VW + out_size, PR_VW);
    int status = -1;
    float *buffers = (float*)aligned_alloc(PR_VW * 4, sizeof(float) * threads * per_thread);
    double *dw_slots = (double*)malloc(sizeof(double) * (size_t)slots * M * K);   /* zeroed per slot */
    if (!buffers || !dw_slots) goto cleanup;
    #pragma omp parallel for schedule(static)
    for (int slot = 0; slot < slots; ++slot) {
        double *dw_slot = dw_slots + (size_t)slot * M * K;
        float *xpad = buffers + (size_t)omp_get_thread_num() * per_thread;
        if (parts & PR_DW) memset(dw_slot, 0, sizeof(double) * M * K);
        float *dypad = xpad + (size_t)nb_max * xs + dy_shift;
        float *out = xpad + (size_t)nb_max * (xs + ds) + 2 * PR_VW;
        for (int chunk = slot; chunk < chunks; chunk += slots) {
            const int b0 = pr_chunk_start(chunk, chunks, B);
            const int nb = pr_chunk_start(chunk + 1, chunks, B) - b0;
            const float *xg = xpad, *dyg = dypad;
            long xstride = xs, dstride = ds;
            if (x_direct) {
                xg = xd + (long)b0 * C * HW;
                xstride = (long)C * HW;
            } else if (parts & PR_DW) {
                for (int i = 0; i < nb; ++i) pr_fill(xd + (long)(b0 + i) * C * HW, &g, map, xpad + i * xs);
            }
            if (dy_direct) {
                dyg = dyd + (long)b0 * M * HWo;
                dstride = (long)M * HWo;
            } else {
                for (int i = 0; i < nb; ++i)
                    pr_grid(dyd + (long)(b0 + i) * M * HWo, M, g.Ho, g.Wo, g.Wq, dy_origin, dplane,
                            dypad + i * ds);
            }
            if (parts & PR_DW) pr_wgrad(dyg + dy_origin, dstride, dplane, M, xg, xstride, nb, &g, dw_slot);
            for (int i = 0; i < nb && (parts & PR_DX); ++i) {
                float *dx_image = dxd + (long)(b0 + i) * C * HW;
                const float *dyi = dyg + i * dstride;
                if (s == 1) {   /* the padded output gradient through the flipped kernels */
                    if (g.rows || g.in_place) {
                        pr_direct(dyi, M, C, &g, packed, dx_image, NULL);
                    } else {
                        pr_direct(dyi, M, C, &g, packed, out, NULL);
                        pr_unpad(out, C, &g, dx_image, NULL);
                    }
                } else if (k == 1) {   /* onto the even rows and columns */
                    pr_direct(dyi, M, C, &g, packed, out, NULL);
                    memset(dx_image, 0, sizeof(float) * C * HW);
                    for (int c = 0; c < C; ++c)
                        for (int oh = 0; oh < g.Ho; ++oh)
                            for (int ow = 0; ow < g.Wo; ++ow)
                                dx_image[c * HW + 2L * oh * W + 2 * ow] =
                                    out[c * g.Qr + (long)oh * g.Wq + ow];
                } else {
                    long wofs = 0;
                    for (int ph = 0; ph < 4; ++ph) {
                        const int a = ph / 2, b = ph % 2;
                        pr_direct(dyi, M, C, dg + ph, packed + wofs, out, NULL);
                        wofs += (long)M * C * dg[ph].taps;
                        for (int c = 0; c < C; ++c)
                            for (int r = 0; r <= g.Ho; ++r) {
                                const int ih = 2 * r + a - 1;
                                if (ih < 0 || ih >= H) continue;
                                const float *src = out + c * dg[ph].Qr + (long)r * g.Wq;
                                float *dst = dx_image + c * HW + (long)ih * W;
                                for (int col = 0; col <= g.Wo; ++col) {
                                    const int iw = 2 * col + b - 1;
                                    if (iw >= 0 && iw < W) dst[iw] = src[col];
                                }
                            }
                    }
                }
                if (bn) pr_bn_grad_image(bn, b0 + i, C, HW, dx_image);
            }
        }
    }
    if (parts & PR_DW) pr_add_slots(dw_slots, slots, (long)M * K, dwd);
    status = 0;
cleanup:
    free(packed);
    free(buffers);
    free(dw_slots);
    return status;
}

/* dx and dw from dy, any stride: im2col and sgemm per chunk of images.
   Chunks are dealt round-robin to PR_SLOTS slots; a slot adds its chunks'
   kernel gradients in order into its own doubles, and the slots are added
   in order at the end: the same sums for any number of threads. `parts`:
   PR_DX | PR_DW, the gradients wanted. */
static int pr_conv2d_grad_im2col(const float *xd, const float *wd, const float *dyd,
                                 float *dxd, float *dwd,
                                 int B, int C, int H, int W, int M, int k, int s,
                                 long chunk_bytes, int parts, const pr_map *map,
                                 const pr_bn_grad *bn) {
    const int p = k / 2, Ho = (H + s - 1) / s, Wo = (W + s - 1) / s;
    const long K = (long)C * k * k, P = (long)Ho * Wo, HW = (long)H * W;
    const int threads = omp_get_max_threads();
    int slots, nb_max;
    const int chunks = pr_even_chunks(B, pr_chunk_images(B, K, P, chunk_bytes, 1), &slots, &nb_max);
    /* per thread: cols and dcols (K x N), rows (M x N), a float kernel gradient */
    const size_t per_thread = (size_t)(2 * K + M) * nb_max * P + (size_t)M * K;
    int status = -1, blas_threads;
    float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
    double *dw_slots = (double*)malloc(sizeof(double) * (size_t)slots * M * K);   /* zeroed per slot */
    if (!buffers || !dw_slots) goto cleanup;
    if (parts & PR_DX) memset(dxd, 0, sizeof(float) * B * C * H * W);
    blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    #pragma omp parallel for schedule(static)
    for (int slot = 0; slot < slots; ++slot) {
        float *cols = buffers + (size_t)omp_get_thread_num() * per_thread;
        float *dcols = cols + K * nb_max * P;
        float *rows = dcols + K * nb_max * P;
        float *dw_chunk = rows + (size_t)M * nb_max * P;
        double *dw_slot = dw_slots + (size_t)slot * M * K;
        if (parts & PR_DW) memset(dw_slot, 0, sizeof(double) * M * K);
        for (int chunk = slot; chunk < chunks; chunk += slots) {
            const int b0 = pr_chunk_start(chunk, chunks, B);
            const int nb = pr_chunk_start(chunk + 1, chunks, B) - b0;
            int N = nb * P, Mi = M, Ki = (int)K;
            float one = 1.f, zero = 0.f;
            char no = 'N', tr = 'T';
            pr_images_to_rows(dyd, M, P, b0, nb, rows);
            if (parts & PR_DW) {
                pr_im2col(xd, C, H, W, k, s, p, Ho, Wo, b0, nb, map, cols);
                /* dw (M x K) = rows (M x N) . cols^T */
                sgemm_(&tr, &no, &Ki, &Mi, &N, &one, cols, &N, rows, &N, &zero, dw_chunk, &Ki);
                for (long i = 0; i < (long)M * K; ++i) dw_slot[i] += dw_chunk[i];
            }
            if (!(parts & PR_DX)) continue;
            /* dcols (K x N) = w^T (K x M) . rows (M x N) */
            sgemm_(&no, &tr, &N, &Ki, &Mi, &one, rows, &N, (float*)wd, &Ki, &zero, dcols, &N);
            pr_col2im(dcols, C, H, W, k, s, p, Ho, Wo, b0, nb, dxd);
            for (int i = 0; i < nb && bn; ++i)
                pr_bn_grad_image(bn, b0 + i, C, HW, dxd + (long)(b0 + i) * C * HW);
        }
    }
    openblas_set_num_threads(blas_threads);
    if (parts & PR_DW) pr_add_slots(dw_slots, slots, (long)M * K, dwd);
    status = 0;
cleanup:
    free(buffers);
    free(dw_slots);
    return status;
}

/* ---- The ops: Python arrays in and out ---- */

/* Winograd F(2x2, 3x3) and F(4x4, 3x3), in winograd.c (compiled after this file). */
static int pw_conv2d(const float *xd, const float *wd, float *yd, int B, int Ci, int H, int W,
                     int Mo, int flip_transpose, int tile, long chunk_bytes, const pr_map *map,
                     const float *addend, const pr_bn_grad *bn);
static int pw_conv2d_wgrad(const float *xd, const float *dyd, float *dwd, int B, int C, int H,
                           int W, int M, int tile, long chunk_bytes, const pr_map *map);
static int pw_pays(int part, int B, int C, int H, int W, int M);

/* The algorithm for one part (PR_Y forward, PR_DX, PR_DW) of a convolution:
   0 for the direct kernels (or im2col), else Winograd's tile size (2 or 4).
   algo (engine.ops.ALGOS) 1: the direct kernels; 2 / 5: Winograd F(2x2) /
   F(4x4) where it applies (stride 1, 3x3); 3 / 6 and 4 / 7: for the input /
   kernel gradient only (to time them apart); 0 ("auto"): Winograd where it
   applies and pays, with the tile that pays most (pw_pays: by the shapes
   alone, so the choice never depends on the machine's state). */
#define PR_Y 4
static int pr_winograd(int algo, int part, int B, int C, int H, int W, int M, int k, int s) {
    if (s != 1 || k != 3 || algo == 1) return 0;
    const int tile = algo >= 5 ? 4 : 2;
    switch (algo) {
    case 2: case 5: return tile;
    case 3: case 6: return part == PR_DX ? tile : 0;
    case 4: case 7: return part == PR_DW ? tile : 0;
    default: return pw_pays(part, B, C, H, W, M);
    }
}

/* Whether im2col + sgemm computes this part (PR_Y, PR_DX, PR_DW) of a
   convolution the direct kernels also take (1x1 or 3x3 at stride 2): algo
   8 ("im2col"): every part; 9 / 10: the input / kernel gradient only (to
   time them apart); "auto": pr_im2col_pays. */
static int pr_im2col_pays(int part, int C, int H, int W, int M, int k, int s);
static int pr_by_im2col(int algo, int part, int C, int H, int W, int M, int k, int s) {
    if (!pr_direct_covers(k, s)) return 1;
    if (s == 1 || algo == 1 || (algo >= 2 && algo <= 7)) return 0;
    if (algo == 8) return 1;
    if (algo == 9) return part == PR_DX;
    if (algo == 10) return part == PR_DW;
    return pr_im2col_pays(part, C, H, W, M, k, s);
}

/* Whether one sgemm per image computes this part of a 1x1 stride-1
   convolution: algo 11 ("gemm1x1"): every part; "auto": pr_gemm_pays. */
static int pr_gemm_pays(int part, int C, long P, int M);
static int pr_by_gemm(int algo, int part, int C, int H, int W, int M, int k, int s) {
    if (k != 1 || s != 1) return 0;
    if (algo == 11) return 1;
    if (algo != 0) return 0;
    return pr_gemm_pays(part, C, (long)H * W, M);
}

/* Whether a (M, C, k, k) kernel fits (B, C, H, W) images: k odd, and at
   most 3 at stride 1 (the direct kernels hold 9 taps). */
static int pr_kernel_fits(PyArrayObject *x, PyArrayObject *w, int s) {
    const int k = PyArray_DIMS(w)[2];
    return PyArray_DIMS(w)[1] == PyArray_DIMS(x)[1] && PyArray_DIMS(w)[3] == k && k % 2 == 1
           && !(s == 1 && k > 3);
}

/* The batch normalisation a fused op reads its input through: mean,
   inv_std, gamma and beta as float32 arrays of C values (references kept in
   held[0..4), released by pr_release), and the map with scale = gamma *
   inv_std in *scale (C floats, freed by the caller). 0, or -1 with an
   exception set. mean NULL: no map (*scale NULL). */
static int pr_bn_inputs(PyArrayObject *mean, PyArrayObject *inv_std, PyArrayObject *gamma,
                        PyArrayObject *beta, int C, int relu, const char *what,
                        PyArrayObject **held, float **scale, pr_map *map) {
    PyArrayObject *in[4] = {mean, inv_std, gamma, beta};
    static const char *names[4] = {"mean", "inv_std", "gamma", "beta"};
    *scale = NULL;
    if (!mean) return 0;
    for (int i = 0; i < 4; ++i) {
        char label[80];
        if (!(held[i] = pr_float32(in[i]))) return -1;
        snprintf(label, sizeof label, "%s: %s", what, names[i]);
        if (!pr_is_vector(held[i], C, label)) return -1;
    }
    if (!(*scale = (float*)malloc(sizeof(float) * (C > 0 ? C : 1)))) {
        PyErr_NoMemory();
        return -1;
    }
    const float *inv = (const float*)PyArray_DATA(held[1]), *gam = (const float*)PyArray_DATA(held[2]);
    for (int c = 0; c < C; ++c) (*scale)[c] = gam[c] * inv[c];   /* as BatchNormTrain computes it */
    map->mean = (const float*)PyArray_DATA(held[0]);
    map->scale = *scale;
    map->shift = (const float*)PyArray_DATA(held[3]);
    map->relu = relu;
    return 0;
}

static void pr_release(PyArrayObject **held, int n) {
    for (int i = 0; i < n; ++i) Py_XDECREF(held[i]);
}

/* Conv2D: *y = x cross-correlated with w; x read through the batch
   normalisation (mean, inv_std, gamma, beta; + ReLU when relu) where mean is
   not NULL; addend added where not NULL. */
static int pr_conv2d(PyArrayObject *x, PyArrayObject *w, PyArrayObject *mean,
                     PyArrayObject *inv_std, PyArrayObject *gamma, PyArrayObject *beta,
                     PyArrayObject *addend, PyArrayObject **y, int s, long chunk_bytes, int algo,
                     int relu) {
    int status = -1, computed, tile;
    int B, C, H, W, M, k;
    npy_intp dims[4];
    const float *xd, *wd, *ad;
    float *yd, *scale = NULL;
    pr_map map;
    PyArrayObject *held[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};  /* bn, x, w, addend */
    if (!(held[4] = pr_float32(x)) || !(held[5] = pr_float32(w))) goto cleanup;
    if (!pr_kernel_fits(held[4], held[5], s)) {
        PyErr_SetString(PyExc_ValueError, "Conv2D: kernel shape does not fit the images, "
                        "or is larger than 3x3 at stride 1");
        goto cleanup;
    }
    B = PyArray_DIMS(held[4])[0]; C = PyArray_DIMS(held[4])[1];
    H = PyArray_DIMS(held[4])[2]; W = PyArray_DIMS(held[4])[3];
    M = PyArray_DIMS(held[5])[0]; k = PyArray_DIMS(held[5])[2];
    dims[0] = B; dims[1] = M; dims[2] = (H + s - 1) / s; dims[3] = (W + s - 1) / s;
    if (pr_bn_inputs(mean, inv_std, gamma, beta, C, relu, "Conv2D", held, &scale, &map))
        goto cleanup;
    if (addend) {
        if (!(held[6] = pr_float32(addend))) goto cleanup;
        if (PyArray_NDIM(held[6]) != 4 || PyArray_DIMS(held[6])[0] != dims[0]
            || PyArray_DIMS(held[6])[1] != dims[1] || PyArray_DIMS(held[6])[2] != dims[2]
            || PyArray_DIMS(held[6])[3] != dims[3]) {
            PyErr_SetString(PyExc_ValueError, "Conv2D: the addend's shape is not the output's");
            goto cleanup;
        }
    }
    if (pr_output(y, 4, dims)) goto cleanup;
    xd = (const float*)PyArray_DATA(held[4]); wd = (const float*)PyArray_DATA(held[5]);
    ad = held[6] ? (const float*)PyArray_DATA(held[6]) : NULL;
    yd = (float*)PyArray_DATA(*y);
    Py_BEGIN_ALLOW_THREADS  /* the batch worker thread runs meanwhile */
    const pr_map *m = scale ? &map : NULL;
    tile = pr_winograd(algo, PR_Y, B, C, H, W, M, k, s);
    computed = tile ? pw_conv2d(xd, wd, yd, B, C, H, W, M, 0, tile, chunk_bytes, m, ad, NULL)
               : pr_by_gemm(algo, PR_Y, C, H, W, M, k, s)
                   ? pr_conv2d_1x1_gemm(xd, wd, yd, B, C, (long)H * W, M, m, ad)
               : pr_by_im2col(algo, PR_Y, C, H, W, M, k, s)
                   ? pr_conv2d_im2col(xd, wd, yd, B, C, H, W, M, k, s, chunk_bytes, m, ad)
               : pr_conv2d_direct(xd, wd, yd, B, C, H, W, M, k, s, m, ad);
    Py_END_ALLOW_THREADS
    if (computed) {
        PyErr_NoMemory();
        goto cleanup;
    }
    status = 0;
cleanup:
    free(scale);
    pr_release(held, 7);
    return status;
}

/* Conv2DGrad: *dx and *dw, the gradients of Conv2D(x, w) for output gradient
   dy; x read through the batch normalisation (mean, ...) where mean is not
   NULL. sum_g not NULL (needs mean): *dx is the batch norm's masked output
   gradient, after dx_addend (where not NULL) is added to the input
   gradient, and *sum_g, *sum_gx its sums over the batch (the first half of
   the batch norm's gradient, pr_bn_grad). */
static int pr_conv2d_grad(PyArrayObject *x, PyArrayObject *w, PyArrayObject *dy,
                          PyArrayObject *mean, PyArrayObject *inv_std, PyArrayObject *gamma,
                          PyArrayObject *beta, PyArrayObject *dx_addend, PyArrayObject **dx,
                          PyArrayObject **dw, PyArrayObject **sum_g, PyArrayObject **sum_gx, int s,
                          long chunk_bytes, int algo, int relu) {
    int status = -1, computed = 0, direct = 0;
    int B, C, H, W, M, k;
    npy_intp dims[4];
    const float *xd, *wd, *dyd;
    float *dxd, *dwd, *scale = NULL, *partials = NULL;
    pr_map map;
    pr_bn_grad bn;
    PyArrayObject *held[8] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};  /* bn, x, w, dy, addend */
    if (!(held[4] = pr_float32(x)) || !(held[5] = pr_float32(w)) || !(held[6] = pr_float32(dy)))
        goto cleanup;
    B = PyArray_DIMS(held[4])[0]; C = PyArray_DIMS(held[4])[1];
    H = PyArray_DIMS(held[4])[2]; W = PyArray_DIMS(held[4])[3];
    M = PyArray_DIMS(held[5])[0]; k = PyArray_DIMS(held[5])[2];
    if (PyArray_DIMS(held[6])[0] != B || PyArray_DIMS(held[6])[1] != M ||
        PyArray_DIMS(held[6])[2] != (H + s - 1) / s || PyArray_DIMS(held[6])[3] != (W + s - 1) / s ||
        !pr_kernel_fits(held[4], held[5], s)) {
        PyErr_SetString(PyExc_ValueError, "Conv2DGrad: output gradient or kernel has the wrong shape");
        goto cleanup;
    }
    if (pr_bn_inputs(mean, inv_std, gamma, beta, C, relu, "Conv2DGrad", held, &scale, &map))
        goto cleanup;
    dims[0] = B; dims[1] = C; dims[2] = H; dims[3] = W;
    if (pr_output(dx, 4, dims)) goto cleanup;
    dims[0] = M; dims[2] = k; dims[3] = k;
    if (pr_output(dw, 4, dims)) goto cleanup;
    if (sum_g) {
        npy_intp channels = C;
        Py_XDECREF(*sum_g);
        Py_XDECREF(*sum_gx);
        *sum_g = (PyArrayObject*)PyArray_EMPTY(1, &channels, NPY_FLOAT64, 0);
        *sum_gx = (PyArrayObject*)PyArray_EMPTY(1, &channels, NPY_FLOAT64, 0);
        partials = (float*)malloc(sizeof(float) * 2 * ((size_t)B * C > 0 ? (size_t)B * C : 1));
        if (!*sum_g || !*sum_gx || !partials) {
            if (!PyErr_Occurred()) PyErr_NoMemory();
            goto cleanup;
        }
        bn.h = (const float*)PyArray_DATA(held[4]);
        bn.mean = map.mean; bn.inv_std = (const float*)PyArray_DATA(held[1]);
        bn.scale = map.scale; bn.shift = map.shift; bn.relu = relu;
        bn.partials = partials;
        bn.addend = NULL;
        if (dx_addend) {
            if (!(held[7] = pr_float32(dx_addend))) goto cleanup;
            if (!PyArray_SAMESHAPE(held[7], held[4])) {
                PyErr_SetString(PyExc_ValueError, "Conv2DGrad: the addend's shape is not the input's");
                goto cleanup;
            }
            bn.addend = (const float*)PyArray_DATA(held[7]);
        }
    }
    xd = (const float*)PyArray_DATA(held[4]); wd = (const float*)PyArray_DATA(held[5]);
    dyd = (const float*)PyArray_DATA(held[6]);
    dxd = (float*)PyArray_DATA(*dx); dwd = (float*)PyArray_DATA(*dw);
    Py_BEGIN_ALLOW_THREADS
    const pr_map *m = scale ? &map : NULL;
    const pr_bn_grad *e = sum_g ? &bn : NULL;
    if (s != 1) {
        /* each gradient by im2col where chosen, the rest in one direct pass */
        const int by_im2col = (pr_by_im2col(algo, PR_DX, C, H, W, M, k, s) ? PR_DX : 0)
                              | (pr_by_im2col(algo, PR_DW, C, H, W, M, k, s) ? PR_DW : 0);
        if (by_im2col)
            computed |= pr_conv2d_grad_im2col(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k, s,
                                              chunk_bytes, by_im2col, m,
                                              (by_im2col & PR_DX) ? e : NULL);
        if (by_im2col != (PR_DX | PR_DW))
            computed |= pr_conv2d_grad_direct(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k, s,
                                              chunk_bytes, (PR_DX | PR_DW) & ~by_im2col, m,
                                              (by_im2col & PR_DX) ? NULL : e);
    } else if (k == 1) {
        /* each gradient by sgemm where chosen, the rest in one direct pass */
        const int by_gemm = (pr_by_gemm(algo, PR_DX, C, H, W, M, k, s) ? PR_DX : 0)
                            | (pr_by_gemm(algo, PR_DW, C, H, W, M, k, s) ? PR_DW : 0);
        if (by_gemm)
            computed |= pr_conv2d_grad_1x1_gemm(xd, wd, dyd, dxd, dwd, B, C, (long)H * W, M,
                                                by_gemm, m, (by_gemm & PR_DX) ? e : NULL);
        if (by_gemm != (PR_DX | PR_DW))
            computed |= pr_conv2d_grad_direct(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k, s,
                                              chunk_bytes, (PR_DX | PR_DW) & ~by_gemm, m,
                                              (by_gemm & PR_DX) ? NULL : e);
    } else {
        /* each gradient by Winograd where chosen, the rest in one direct pass */
        const int dx_tile = pr_winograd(algo, PR_DX, B, C, H, W, M, k, s);
        const int dw_tile = pr_winograd(algo, PR_DW, B, C, H, W, M, k, s);
        if (dx_tile)
            computed |= pw_conv2d(dyd, wd, dxd, B, M, H, W, C, 1, dx_tile, chunk_bytes, NULL,
                                  NULL, e);
        else
            direct |= PR_DX;
        if (dw_tile)
            computed |= pw_conv2d_wgrad(xd, dyd, dwd, B, C, H, W, M, dw_tile, chunk_bytes, m);
        else
            direct |= PR_DW;
        if (direct)
            computed |= pr_conv2d_grad_direct(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k, s,
                                              chunk_bytes, direct, m, (direct & PR_DX) ? e : NULL);
    }
    if (!computed && e)
        pr_bn_grad_totals(partials, B, C, (double*)PyArray_DATA(*sum_g),
                          (double*)PyArray_DATA(*sum_gx));
    Py_END_ALLOW_THREADS
    if (computed) {
        PyErr_NoMemory();
        goto cleanup;
    }
    status = 0;
cleanup:
    free(scale);
    free(partials);
    pr_release(held, 8);
    return status;
}

/* Whether im2col + sgemm pays for this part of a 1x1 or 3x3 stride-2
   convolution, by the shapes alone (see pr_by_im2col). From timings of
   batches of 128, both cores, wall clock, quiet machine (bench/ops_ab.py;
   docs/kernels.md): the direct kernels win everywhere but in the kernel
   gradient of a 3x3 kernel with 64 input channels or more (WRN's 64 -> 128
   and 128 -> 256: im2col +18 % and +23 % on the pair of gradients; 32 ->
   64: -6.5 %), whose 8x8 and 16x16 outputs make short rows for the direct
   kernel gradient and one long sgemm for im2col. */
static int pr_im2col_pays(int part, int C, int H, int W, int M, int k, int s) {
    (void)H; (void)W; (void)M; (void)s;
    return part == PR_DW && k == 3 && C >= 64;
}

/* Whether one sgemm per image pays for this part of a 1x1 stride-1
   convolution, by the shapes alone (see pr_by_gemm): never, so far. */
static int pr_gemm_pays(int part, int C, long P, int M) {
    (void)part; (void)C; (void)P; (void)M;
    return 0;
}
