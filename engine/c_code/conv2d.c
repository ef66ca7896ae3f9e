/* Conv2D and Conv2DGrad: cross-correlation of (B, C, H, W) images with
   (M, C, k, k) kernels, 'same' zero padding (k / 2), stride s, and its two
   gradients. Stride 1 runs direct, register-tiled kernels (1x1 and 3x3:
   nearly all the FLOPs); other strides im2col + single-threaded sgemm in
   chunks of images. All cores through OpenMP.

   Needs support.c, Theano's BLAS header (sgemm_) and its OpenBLAS threads
   header before it.

   Every result is the same, bit for bit, for any number of threads: work is
   cut into chunks by the shapes alone, and kernel-gradient partial sums are
   added in a fixed order (PR_SLOTS). */

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
#define PR_SKEW 16    /* floats between images in chunk buffers: see pr_conv2d_grad_direct */
#define PR_SLOTS 8    /* kernel-gradient partial sums, whatever the thread count: see pr_conv2d_grad_direct */
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
   and at least `parts` chunks when the batch allows. */
static int pr_chunk_images(int B, long K, long P, long chunk_bytes, int parts) {
    long per = chunk_bytes / (long)(sizeof(float) * K * P);
    if (per < 1) per = 1;
    long most = (B + parts - 1) / parts;
    if (per > most) per = most;
    if (per < 1) per = 1;
    return (int)per;
}

/* ---- The computations: no Python, no GIL; 0, or -1 when out of memory ---- */

/* y = x * w, stride 1: each image padded (unless 1x1 in place) and run
   through the direct kernels. */
static int pr_conv2d_direct(const float *xd, const float *wd, float *yd,
                            int B, int C, int H, int W, int M, int k) {
    const pr_geometry g = pr_geometry_of(C, H, W, k);
    const long K = (long)C * k * k;
    const int threads = omp_get_max_threads();
    const size_t per_thread = g.in_place ? 1 : (size_t)C * g.plane + (size_t)M * g.Qr;
    int status = -1;
    float *packed = (float*)malloc(sizeof(float) * M * K);
    float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
    if (!packed || !buffers) goto cleanup;
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
    status = 0;
cleanup:
    free(packed);
    free(buffers);
    return status;
}

/* y = x * w, any stride: im2col and sgemm per chunk of images. The chunks
   depend on the shapes alone (at least PR_SLOTS of them when the batch
   allows, one a thread), not on the number of threads: an image's result
   depends on the N of the sgemm it is part of (with chunks cut per thread,
   OMP_NUM_THREADS=1, 2 and 3 gave results that differed in the last bits). */
static int pr_conv2d_im2col(const float *xd, const float *wd, float *yd,
                            int B, int C, int H, int W, int M, int k, int s, long chunk_bytes) {
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
        pr_im2col(xd, C, H, W, k, s, p, Ho, Wo, b0, nb, cols);
        /* rows (M x N) = w (M x K) . cols (K x N), all row-major */
        sgemm_(&no, &no, &N, &Mi, &Ki, &one, cols, &N, (float*)wd, &Ki, &zero, rows, &N);
        pr_rows_to_images(rows, M, P, b0, nb, yd);
    }
    openblas_set_num_threads(blas_threads);
    status = 0;
cleanup:
    free(buffers);
    return status;
}

/* dx and dw from dy, stride 1.
   Chunks of images whose padded inputs and output gradients fill about
   chunk_bytes (a core's L2 cache: padded, kernel gradient, input gradient
   while in the cache), with at least 512 positions, or the lane sums
   dominate; at most B / PR_SLOTS images, so that every slot has one. Slot
   `slot` takes chunks slot, slot + slots, ... in order, adding their kernel
   gradients into its own doubles; the slots are added in order at the end.
   Neither depends on the number of threads: the gradients are bit-identical
   for any OMP_NUM_THREADS. `parts`: PR_DX | PR_DW, the gradients wanted (the
   other one may come from winograd.c). */
#define PR_DX 1
#define PR_DW 2
static int pr_conv2d_grad_direct(const float *xd, const float *wd, const float *dyd,
                                 float *dxd, float *dwd,
                                 int B, int C, int H, int W, int M, int k, long chunk_bytes,
                                 int parts) {
    const pr_geometry g = pr_geometry_of(C, H, W, k);
    const long K = (long)C * k * k;
    const int threads = omp_get_max_threads();
    int nb_max = pr_chunk_images(B, (C + M) * g.plane, 1, chunk_bytes, 1);
    const int nb_least = (int)((512 + g.Qr - 1) / g.Qr), nb_most = (B + PR_SLOTS - 1) / PR_SLOTS;
    if (nb_max < nb_least) nb_max = nb_least;
    if (nb_max > nb_most) nb_max = nb_most;
    int slots, chunks = pr_even_chunks(B, nb_max, &slots, &nb_max);
    /* Images PR_SKEW floats more apart than their planes: strides of a
       multiple of 4 KB would map the same pixel of every image in a chunk to
       one L1 cache set. */
    const long xs = (long)C * g.plane + PR_SKEW, ds = (long)M * g.plane + PR_SKEW;
    /* Every buffer starts on a cache line, and the output gradients are
       shifted so that their valid pixels do too: the kernel gradient loads
       them whole (a vector across two lines costs two loads), and the layout
       no longer depends on where malloc puts the buffer. */
    const long dy_shift = (PR_VW - ((long)g.p * g.Wp + g.p) % PR_VW) % PR_VW;
    const size_t per_thread = g.in_place ? PR_VW
        : pr_round((size_t)nb_max * (xs + ds) + 2 * PR_VW + (size_t)C * g.Qr, PR_VW);
    int status = -1;
    float *packed = (float*)malloc(sizeof(float) * M * K);
    float *buffers = (float*)aligned_alloc(PR_VW * 4, sizeof(float) * threads * per_thread);
    double *dw_slots = (double*)calloc((size_t)slots * M * K, sizeof(double));
    if (!packed || !buffers || !dw_slots) goto cleanup;
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
                if (parts & PR_DW)
                    pr_wgrad(dy0, (long)M * H * W, M, x0, (long)C * H * W, nb, &g, dw_slot);
                for (int i = 0; i < nb && (parts & PR_DX); ++i)
                    pr_direct(dy0 + (long)i * M * H * W, M, C, &g, packed,
                              dxd + (long)(b0 + i) * C * H * W);
                continue;
            }
            for (int i = 0; i < nb; ++i) {
                if (parts & PR_DW) pr_pad(xd + (long)(b0 + i) * C * H * W, C, &g, xpad + i * xs);
                pr_pad(dyd + (long)(b0 + i) * M * H * W, M, &g, dypad + i * ds);
            }
            if (parts & PR_DW) pr_wgrad(dypad, ds, M, xpad, xs, nb, &g, dw_slot);
            /* input gradient: the padded output gradient through the flipped kernels */
            for (int i = 0; i < nb && (parts & PR_DX); ++i) {
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
    if (parts & PR_DW) pr_add_slots(dw_slots, slots, (long)M * K, dwd);
    status = 0;
cleanup:
    free(packed);
    free(buffers);
    free(dw_slots);
    return status;
}

/* dx and dw from dy, any stride (the downsampling convolutions): im2col and
   sgemm per chunk of images. Chunks are dealt round-robin to PR_SLOTS slots;
   a slot adds its chunks' kernel gradients in order into its own doubles,
   and the slots are added in order at the end: the same sums for any number
   of threads. */
static int pr_conv2d_grad_im2col(const float *xd, const float *wd, const float *dyd,
                                 float *dxd, float *dwd,
                                 int B, int C, int H, int W, int M, int k, int s,
                                 long chunk_bytes) {
    const int p = k / 2, Ho = (H + s - 1) / s, Wo = (W + s - 1) / s;
    const long K = (long)C * k * k, P = (long)Ho * Wo;
    const int threads = omp_get_max_threads();
    int slots, nb_max;
    const int chunks = pr_even_chunks(B, pr_chunk_images(B, K, P, chunk_bytes, 1), &slots, &nb_max);
    /* per thread: cols and dcols (K x N), rows (M x N), a float kernel gradient */
    const size_t per_thread = (size_t)(2 * K + M) * nb_max * P + (size_t)M * K;
    int status = -1, blas_threads;
    float *buffers = (float*)malloc(sizeof(float) * threads * per_thread);
    double *dw_slots = (double*)calloc((size_t)slots * M * K, sizeof(double));
    if (!buffers || !dw_slots) goto cleanup;
    memset(dxd, 0, sizeof(float) * B * C * H * W);
    blas_threads = openblas_get_num_threads();
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
    status = 0;
cleanup:
    free(buffers);
    free(dw_slots);
    return status;
}

/* ---- The ops: Python arrays in and out ---- */

/* Winograd F(2x2, 3x3), in winograd.c (compiled after this file). */
static int pw_conv2d(const float *xd, const float *wd, float *yd, int B, int Ci, int H, int W,
                     int Mo, int flip_transpose, long chunk_bytes);
static int pw_conv2d_wgrad(const float *xd, const float *dyd, float *dwd, int B, int C, int H,
                           int W, int M, long chunk_bytes);
static int pw_pays(int part, int B, int C, int H, int W, int M);

/* The algorithm for one part (PR_Y forward, PR_DX, PR_DW) of a convolution:
   algo 1 the direct kernels (or im2col), 2 Winograd where it applies (stride
   1, 3x3), 3 / 4 Winograd for the input / kernel gradient only (for timing
   them apart), 0 ("auto") Winograd where it applies and pays (pw_pays: by
   the shapes alone, so the choice never depends on the machine's state). */
#define PR_Y 4
static int pr_winograd(int algo, int part, int B, int C, int H, int W, int M, int k, int s) {
    if (s != 1 || k != 3 || algo == 1) return 0;
    if (algo == 3) return part == PR_DX;
    if (algo == 4) return part == PR_DW;
    return algo == 2 || pw_pays(part, B, C, H, W, M);
}

/* Whether a (M, C, k, k) kernel fits (B, C, H, W) images: k odd, and at
   most 3 at stride 1 (the direct kernels hold 9 taps). */
static int pr_kernel_fits(PyArrayObject *x, PyArrayObject *w, int s) {
    const int k = PyArray_DIMS(w)[2];
    return PyArray_DIMS(w)[1] == PyArray_DIMS(x)[1] && PyArray_DIMS(w)[3] == k && k % 2 == 1
           && !(s == 1 && k > 3);
}

/* Conv2D: *y = x cross-correlated with w. */
static int pr_conv2d(PyArrayObject *x, PyArrayObject *w, PyArrayObject **y,
                     int s, long chunk_bytes, int algo) {
    int status = -1, computed;
    int B, C, H, W, M, k;
    npy_intp dims[4];
    const float *xd, *wd;
    float *yd;
    PyArrayObject *xc = NULL, *wc = NULL;
    if (!(xc = pr_float32(x)) || !(wc = pr_float32(w))) goto cleanup;
    if (!pr_kernel_fits(xc, wc, s)) {
        PyErr_SetString(PyExc_ValueError, "Conv2D: kernel shape does not fit the images, "
                        "or is larger than 3x3 at stride 1");
        goto cleanup;
    }
    B = PyArray_DIMS(xc)[0]; C = PyArray_DIMS(xc)[1];
    H = PyArray_DIMS(xc)[2]; W = PyArray_DIMS(xc)[3];
    M = PyArray_DIMS(wc)[0]; k = PyArray_DIMS(wc)[2];
    dims[0] = B; dims[1] = M; dims[2] = (H + s - 1) / s; dims[3] = (W + s - 1) / s;
    if (pr_output(y, 4, dims)) goto cleanup;
    xd = (const float*)PyArray_DATA(xc); wd = (const float*)PyArray_DATA(wc);
    yd = (float*)PyArray_DATA(*y);
    Py_BEGIN_ALLOW_THREADS  /* the batch worker thread runs meanwhile */
    computed = pr_winograd(algo, PR_Y, B, C, H, W, M, k, s)
                   ? pw_conv2d(xd, wd, yd, B, C, H, W, M, 0, chunk_bytes)
               : s == 1 ? pr_conv2d_direct(xd, wd, yd, B, C, H, W, M, k)
               : pr_conv2d_im2col(xd, wd, yd, B, C, H, W, M, k, s, chunk_bytes);
    Py_END_ALLOW_THREADS
    if (computed) {
        PyErr_NoMemory();
        goto cleanup;
    }
    status = 0;
cleanup:
    Py_XDECREF(xc);
    Py_XDECREF(wc);
    return status;
}

/* Conv2DGrad: *dx and *dw, the gradients of Conv2D(x, w) for output gradient dy. */
static int pr_conv2d_grad(PyArrayObject *x, PyArrayObject *w, PyArrayObject *dy,
                          PyArrayObject **dx, PyArrayObject **dw, int s, long chunk_bytes,
                          int algo) {
    int status = -1, computed, direct;
    int B, C, H, W, M, k;
    npy_intp dims[4];
    const float *xd, *wd, *dyd;
    float *dxd, *dwd;
    PyArrayObject *xc = NULL, *wc = NULL, *dyc = NULL;
    if (!(xc = pr_float32(x)) || !(wc = pr_float32(w)) || !(dyc = pr_float32(dy))) goto cleanup;
    B = PyArray_DIMS(xc)[0]; C = PyArray_DIMS(xc)[1];
    H = PyArray_DIMS(xc)[2]; W = PyArray_DIMS(xc)[3];
    M = PyArray_DIMS(wc)[0]; k = PyArray_DIMS(wc)[2];
    if (PyArray_DIMS(dyc)[0] != B || PyArray_DIMS(dyc)[1] != M ||
        PyArray_DIMS(dyc)[2] != (H + s - 1) / s || PyArray_DIMS(dyc)[3] != (W + s - 1) / s ||
        !pr_kernel_fits(xc, wc, s)) {
        PyErr_SetString(PyExc_ValueError, "Conv2DGrad: output gradient or kernel has the wrong shape");
        goto cleanup;
    }
    dims[0] = B; dims[1] = C; dims[2] = H; dims[3] = W;
    if (pr_output(dx, 4, dims)) goto cleanup;
    dims[0] = M; dims[2] = k; dims[3] = k;
    if (pr_output(dw, 4, dims)) goto cleanup;
    xd = (const float*)PyArray_DATA(xc); wd = (const float*)PyArray_DATA(wc);
    dyd = (const float*)PyArray_DATA(dyc);
    dxd = (float*)PyArray_DATA(*dx); dwd = (float*)PyArray_DATA(*dw);
    Py_BEGIN_ALLOW_THREADS
    if (s != 1) {
        computed = pr_conv2d_grad_im2col(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k, s, chunk_bytes);
    } else {
        /* each gradient by Winograd where chosen, the rest in one direct pass */
        computed = 0;
        direct = 0;
        if (pr_winograd(algo, PR_DX, B, C, H, W, M, k, s))
            computed |= pw_conv2d(dyd, wd, dxd, B, M, H, W, C, 1, chunk_bytes);
        else
            direct |= PR_DX;
        if (pr_winograd(algo, PR_DW, B, C, H, W, M, k, s))
            computed |= pw_conv2d_wgrad(xd, dyd, dwd, B, C, H, W, M, chunk_bytes);
        else
            direct |= PR_DW;
        if (direct)
            computed |= pr_conv2d_grad_direct(xd, wd, dyd, dxd, dwd, B, C, H, W, M, k,
                                              chunk_bytes, direct);
    }
    Py_END_ALLOW_THREADS
    if (computed) {
        PyErr_NoMemory();
        goto cleanup;
    }
    status = 0;
cleanup:
    Py_XDECREF(xc);
    Py_XDECREF(wc);
    Py_XDECREF(dyc);
    return status;
}
