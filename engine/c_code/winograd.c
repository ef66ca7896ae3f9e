/* Winograd F(2x2, 3x3) and F(4x4, 3x3) for the stride-1 3x3 convolutions
   (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"):
   each m x m block of outputs ("tile", m = 2 or 4) from its (m+2) x (m+2)
   input patch with (m+2)^2 multiplications per channel pair instead of 9
   m^2: 16 instead of 36 (2.25x fewer), or 36 instead of 144 (4x fewer).

       Y = A^T [ (G g G^T) . (B^T d B) ] A       (forward, per tile)
       dg = G^T [ (A dY A^T) . (B^T d B) ] G     (kernel gradient, summed over tiles)

   F(4x4, 3x3) is built on the points 0, 1, -1, 2, -1/2 (and infinity), not
   Lavin's 0, 1, -1, 2, -2: its float32 error stays about 3x smaller
   (Barabasz et al. 2020, "Error analysis and improving the accuracy of
   Winograd convolution for deep neural networks"; measured here with a
   float32 model: 5e-6 against 1.2e-5 of the largest output at 640
   channels); tests/test_winograd.py holds every network shape within 2e-5.

   The input gradient is a forward pass of the output gradient through the
   flipped, transposed kernels. After the transforms, each of the 16
   transformed positions e is a matrix product over channels: U[e] (M x C)
   times V[e] (C x tiles) forward, dM[e] (M x tiles) times V[e]^T for the
   kernel gradient.

   Layout: vectors run across PR_VW images (a "group": 16 with AVX-512), so
   every transform is plain vector arithmetic and the products broadcast a
   kernel value over a vector of images, as the direct kernels do. A group's
   images are transposed into that layout once (zero-padded, zero lanes for
   missing images) and the results transposed back. Tiles are processed in
   blocks whose transformed values stay in a core's L2 cache.

   Every result is the same, bit for bit, for any number of threads: forward
   and input gradient compute each group on its own; the kernel gradient adds
   each group into the double sums of one of PR_SLOTS slots fixed by the
   group's number, and the slots are added in order.

   Needs conv2d.c before it (pr_vec, PR_VW, PR_SLOTS, pr_round, pr_lane_sum,
   pr_add_slots). */

#define PW_EMAX 36    /* transformed values per tile: (m + 2)^2, 16 or 36 */
#define PW_MR 8       /* product tile: 8 output channels x 2 vectors of tiles (the */
#define PW_TV 2       /* networks' tile counts are powers of 2) */
#define PW_WR 4       /* kernel-gradient product tile: 4 output x 4 input channels */
/* Transformed values are stored per position e, n * tb + PW_SKEW vectors
   apart for n channels: with strides of a multiple of 4 KB the 16 positions
   of a tile would all map to one L1 cache set (2x slower transforms). */
#define PW_SKEW 1
#define PW_AHEAD (4 * PR_VW)   /* floats: prefetch distance in pw_gather, pw_scatter */
#define PW_ESTRIDE(n, tb) ((long)(n) * (tb) + PW_SKEW)

typedef struct {
    int m, E;          /* tile size (2 or 4); transformed values per tile, (m + 2)^2 */
    int H, W;          /* image size */
    int TH, TW, T;     /* tile rows, tiles per row, tiles per image */
    int Hp, Wp;        /* zero-padded input planes (pad 1, rounded to whole tiles) */
    int Ht, Wt;        /* output planes: whole tiles */
} pw_geometry;

static pw_geometry pw_geometry_of(int H, int W, int m) {
    pw_geometry g;
    g.m = m; g.E = (m + 2) * (m + 2);
    g.H = H; g.W = W;
    g.TH = (H + m - 1) / m; g.TW = (W + m - 1) / m; g.T = g.TH * g.TW;
    g.Ht = m * g.TH; g.Wt = m * g.TW;
    g.Hp = g.Ht + 2; g.Wp = g.Wt + 2;
    return g;
}

#if defined(__AVX512F__) && PR_VW == 16
/* Lanes for _mm512_permutex2var_ps(a, ., b) at distance d = 8, 4, 2, 1:
   PW_LO takes lanes [0, d) of every 2d-lane block of a, then those of b;
   PW_HI lanes [d, 2d) of a, then of b. */
static const int PW_LO[4][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
static const int PW_HI[4][16] = {
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
    {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
    {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
    {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
#endif

/* v[i] lane j <-> v[j] lane i: a PR_VW x PR_VW transpose. */
static inline void pw_transpose(pr_vec *v) {
#if defined(__AVX512F__) && PR_VW == 16
    /* log2(16) rounds: swap the off-diagonal d x d blocks of every 2d x 2d
       block (unrolled, so that the vectors stay in registers) */
    #pragma GCC unroll 4
    for (int round = 0; round < 4; ++round) {
        const int d = 8 >> round;
        const __m512i lo = _mm512_loadu_si512((const void*)PW_LO[round]);
        const __m512i hi = _mm512_loadu_si512((const void*)PW_HI[round]);
        #pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
            if (i & d) continue;
            const __m512 a = (__m512)v[i], b = (__m512)v[i + d];
            v[i] = (pr_vec)_mm512_permutex2var_ps(a, lo, b);
            v[i + d] = (pr_vec)_mm512_permutex2var_ps(a, hi, b);
        }
    }
#else
    float a[PR_VW][PR_VW];
    memcpy(a, v, sizeof a);
    for (int i = 0; i < PR_VW; ++i)
        for (int j = 0; j < PR_VW; ++j) v[i][j] = a[j][i];
#endif
}

/* Lane l of the result: the sum of the lanes of v[l] (PR_VW vectors), in a
   fixed order (pairs of lanes, then pairs of pairs...). */
static inline pr_vec pw_lane_sums(pr_vec *v) {
#if defined(__AVX512F__) && PR_VW == 16
    #pragma GCC unroll 4
    for (int round = 0; round < 4; ++round) {
        const int d = 8 >> round;
        const __m512i lo = _mm512_loadu_si512((const void*)PW_LO[round]);
        const __m512i hi = _mm512_loadu_si512((const void*)PW_HI[round]);
        #pragma GCC unroll 8
        for (int i = 0; i < d; ++i) {
            const __m512 a = (__m512)v[i], b = (__m512)v[i + d];
            v[i] = (pr_vec)_mm512_permutex2var_ps(a, lo, b)
                   + (pr_vec)_mm512_permutex2var_ps(a, hi, b);
        }
    }
    return v[0];
#else
    pr_vec sums;
    for (int l = 0; l < PR_VW; ++l) sums[l] = pr_lane_sum(v[l]);
    return sums;
#endif
}

/* Rows r0 .. r0+rows-1 of images b0 .. b0+n-1 (n <= PR_VW) of a
   C-contiguous (B, C, H, W) array, padded by `pad` zeros on every side, into
   C planes of vectors across images (a "band": plane `plane` vectors apart,
   rows `row` long): band row r holds image row r0 + r - pad, column w + pad
   image column w; zeros around the image and in the lanes of missing
   images. Values are read through map where given (the zeros stay zeros:
   the convolution pads its mapped input). */
static void pw_gather(const float *src, int n, int C, int H, int W, int pad, int r0, int rows,
                      int row, long plane, const pr_map *map, pr_vec *dst) {
    const long HW = (long)H * W;
    int h0 = r0 - pad, h1 = r0 - pad + rows;   /* image rows of the band */
    if (h0 < 0) h0 = 0;
    if (h1 > H) h1 = H;
    for (int c = 0; c < C; ++c) {
        pr_vec *d = dst + (long)c * plane - (long)(r0 - pad) * row + pad;  /* at (0, 0) */
        const float *s = src + (long)c * HW;
        for (int r = 0; r < rows; ++r) {   /* zeros: rows beyond the image, borders */
            pr_vec *line = dst + (long)c * plane + (long)r * row;
            const int h = r0 + r - pad;
            if (h < 0 || h >= H) {
                for (int w = 0; w < row; ++w) line[w] = (pr_vec){0};
            } else {
                for (int w = 0; w < pad; ++w) line[w] = (pr_vec){0};
                for (int w = W + pad; w < row; ++w) line[w] = (pr_vec){0};
            }
        }
        long p0 = (long)h0 * W;
        const long p1 = (long)h1 * W;
        int h = h0, w = 0;   /* of pixel p0 */
        for (; p0 + PR_VW <= p1; p0 += PR_VW) {
            pr_vec v[PR_VW];
            #pragma GCC unroll 16
            for (int i = 0; i < PR_VW; ++i) {
                /* the images are C*H*W floats apart, often a multiple of 4 KB: the
                   hardware's stream prefetchers lose track of 16 such streams */
                __builtin_prefetch(s + (long)i * C * HW + p0 + PW_AHEAD, 0, 2);
                v[i] = i < n ? *(const pr_vec*)(s + (long)i * C * HW + p0) : (pr_vec){0};
            }
            if (map)
                for (int i = 0; i < n; ++i) v[i] = pr_map_vec(map, c, v[i]);
            pw_transpose(v);
            for (int j = 0; j < PR_VW; ++j) {
                d[(long)h * row + w] = v[j];
                if (++w == W) { w = 0; ++h; }
            }
        }
        for (; p0 < p1; ++p0) {
            pr_vec v = {0};
            for (int i = 0; i < n; ++i) v[i] = pr_map_one(map, c, s[(long)i * C * HW + p0]);
            d[(p0 / W) * row + p0 % W] = v;
        }
    }
}

/* The inverse for results: band rows 0 .. rows-1 of M planes of vectors
   (rows `row` long, planes `plane` apart) into image rows h0 .. h0+rows-1
   (those below H) of images b0 .. b0+n-1 of a (B, M, H, W) array, plus the
   same pixels of `add` (an array like dst, NULL: none). */
static void pw_scatter(const pr_vec *src, int n, int M, int H, int W, int h0, int rows, int row,
                       long plane, const float *add, float *dst) {
    const long HW = (long)H * W;
    const int h1 = h0 + rows < H ? h0 + rows : H;
    for (int m = 0; m < M; ++m) {
        const pr_vec *s = src + (long)m * plane - (long)h0 * row;   /* at image row 0 */
        float *d = dst + (long)m * HW;
        long p0 = (long)h0 * W;
        const long p1 = (long)h1 * W;
        int h = h0, w = 0;   /* of pixel p0 */
        for (; p0 + PR_VW <= p1; p0 += PR_VW) {
            pr_vec v[PR_VW];
            for (int j = 0; j < PR_VW; ++j) {
                v[j] = s[(long)h * row + w];
                if (++w == W) { w = 0; ++h; }
            }
            pw_transpose(v);
            for (int i = 0; i < n; ++i) {
                __builtin_prefetch(d + (long)i * M * HW + p0 + PW_AHEAD, 1, 2);
                if (add) v[i] += *(const pr_vec*)(add + (long)m * HW + (long)i * M * HW + p0);
                *(pr_vec*)(d + (long)i * M * HW + p0) = v[i];
            }
        }
        for (; p0 < p1; ++p0) {
            const pr_vec v = s[(p0 / W) * row + p0 % W];
            for (int i = 0; i < n; ++i)
                d[(long)i * M * HW + p0] = add ? v[i] + add[(long)m * HW + (long)i * M * HW + p0]
                                               : v[i];
        }
    }
}

/* B^T d (F(4x4, 3x3), points 0, 1, -1, 2, -1/2): six values from six. */
static inline void pw_bt4(const pr_vec *d, pr_vec *r) {
    const pr_vec d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3], d4 = d[4], d5 = d[5];
    r[0] = d0 + 1.5f * d1 - 2.f * d2 - 1.5f * d3 + d4;
    r[1] = d4 - d1 - 2.5f * d2 - 0.5f * d3;
    r[2] = d1 + 0.5f * d2 - 2.5f * d3 + d4;
    r[3] = d4 - 0.5f * d1 - d2 + 0.5f * d3;
    r[4] = 2.f * d1 - d2 - 2.f * d3 + d4;
    r[5] = d1 + 1.5f * d2 - 2.f * d3 - 1.5f * d4 + d5;
}

/* V[e][c][t] = (B^T d B)[e] for tiles t0 .. t0+nt-1 of a band of C padded
   planes (`plane` vectors apart) that starts at tile row ty0; V holds
   PW_ESTRIDE(C, tb) vectors per position e. */
static void pw_input_transform(const pr_vec *xT, long plane, int ty0, const pw_geometry *g,
                               int C, int t0, int nt, long tb, pr_vec *V) {
    const long E = PW_ESTRIDE(C, tb), R = g->Wp;
    const int m = g->m;
    for (int c = 0; c < C; ++c)
        for (int t = 0; t < nt; ++t) {
            const int ty = (t0 + t) / g->TW - ty0, tx = (t0 + t) % g->TW;
            const pr_vec *d = xT + (long)c * plane + (long)m * ty * R + m * tx;
            pr_vec *out = V + (long)c * tb + t;
            if (m == 2) {
                pr_vec r[4][4];
                for (int j = 0; j < 4; ++j) {   /* B^T d: rows */
                    const pr_vec d0 = d[j], d1 = d[R + j], d2 = d[2 * R + j], d3 = d[3 * R + j];
                    r[0][j] = d0 - d2; r[1][j] = d1 + d2; r[2][j] = d2 - d1; r[3][j] = d1 - d3;
                }
                for (int i = 0; i < 4; ++i) {   /* (B^T d) B: columns */
                    out[(4 * i + 0) * E] = r[i][0] - r[i][2];
                    out[(4 * i + 1) * E] = r[i][1] + r[i][2];
                    out[(4 * i + 2) * E] = r[i][2] - r[i][1];
                    out[(4 * i + 3) * E] = r[i][1] - r[i][3];
                }
            } else {
                pr_vec r[6][6], col[6], row[6];
                for (int j = 0; j < 6; ++j) {   /* B^T d: rows */
                    for (int i = 0; i < 6; ++i) col[i] = d[(long)i * R + j];
                    pw_bt4(col, row);
                    for (int i = 0; i < 6; ++i) r[i][j] = row[i];
                }
                for (int i = 0; i < 6; ++i) {   /* (B^T d) B: columns */
                    pw_bt4(r[i], row);
                    for (int j = 0; j < 6; ++j) out[(6 * i + j) * E] = row[j];
                }
            }
        }
}

/* A^T m (F(4x4, 3x3)): four values from six. */
static inline void pw_at4(const pr_vec *a, pr_vec *y) {
    const pr_vec a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4];
    y[0] = a[0] + a1 + a2 + a3 + a4;
    y[1] = a1 - a2 + 2.f * a3 - 0.5f * a4;
    y[2] = a1 + a2 + 4.f * a3 + 0.25f * a4;
    y[3] = a1 - a2 + 8.f * a3 - 0.125f * a4 + a[5];
}

/* Y = A^T m A for tiles t0 .. t0+nt-1 from Mh[e][m][t], into a band of M
   output planes (rows Wt vectors long, `plane` apart) from tile row ty0. */
static void pw_output_transform(const pr_vec *Mh, const pw_geometry *g, int M, int t0, int nt,
                                long tb, pr_vec *yT, long plane, int ty0) {
    const long E = PW_ESTRIDE(M, tb), R = g->Wt;
    const int m = g->m;
    for (int mo = 0; mo < M; ++mo)
        for (int t = 0; t < nt; ++t) {
            const int ty = (t0 + t) / g->TW - ty0, tx = (t0 + t) % g->TW;
            const pr_vec *in = Mh + (long)mo * tb + t;
            pr_vec *out = yT + (long)mo * plane + (long)m * ty * R + m * tx;
            if (m == 2) {
                pr_vec s2[2][4];
                for (int j = 0; j < 4; ++j) {   /* A^T m: rows */
                    const pr_vec a0 = in[j * E], a1 = in[(4 + j) * E], a2 = in[(8 + j) * E],
                                 a3 = in[(12 + j) * E];
                    s2[0][j] = a0 + a1 + a2; s2[1][j] = a1 - a2 - a3;
                }
                for (int i = 0; i < 2; ++i) {   /* (A^T m) A: columns */
                    out[i * R] = s2[i][0] + s2[i][1] + s2[i][2];
                    out[i * R + 1] = s2[i][1] - s2[i][2] - s2[i][3];
                }
            } else {
                pr_vec s4[4][6], col[6], y[4];
                for (int j = 0; j < 6; ++j) {   /* A^T m: rows */
                    for (int i = 0; i < 6; ++i) col[i] = in[(6 * i + j) * E];
                    pw_at4(col, y);
                    for (int i = 0; i < 4; ++i) s4[i][j] = y[i];
                }
                for (int i = 0; i < 4; ++i) {   /* (A^T m) A: columns */
                    pw_at4(s4[i], y);
                    for (int j = 0; j < 4; ++j) out[(long)i * R + j] = y[j];
                }
            }
        }
}

/* A dy (F(4x4, 3x3)): six values from four. */
static inline void pw_a4(const pr_vec *y, pr_vec *z) {
    const pr_vec y0 = y[0], y1 = y[1], y2 = y[2], y3 = y[3];
    z[0] = y0;
    z[1] = y0 + y1 + y2 + y3;
    z[2] = y0 - y1 + y2 - y3;
    z[3] = y0 + 2.f * y1 + 4.f * y2 + 8.f * y3;
    z[4] = y0 - 0.5f * y1 + 0.25f * y2 - 0.125f * y3;
    z[5] = y3;
}

/* dM[e][m][t] = (A dy A^T)[e] for tiles t0 .. t0+nt-1 of a band of M
   output-gradient planes (rows Wt vectors long, `plane` apart, zero beyond
   the image) from tile row ty0. */
static void pw_grad_transform(const pr_vec *dyT, long plane, int ty0, const pw_geometry *g,
                              int M, int t0, int nt, long tb, pr_vec *dM) {
    const long E = PW_ESTRIDE(M, tb), R = g->Wt;
    const int m = g->m;
    for (int mo = 0; mo < M; ++mo)
        for (int t = 0; t < nt; ++t) {
            const int ty = (t0 + t) / g->TW - ty0, tx = (t0 + t) % g->TW;
            const pr_vec *y = dyT + (long)mo * plane + (long)m * ty * R + m * tx;
            pr_vec *out = dM + (long)mo * tb + t;
            if (m == 2) {
                pr_vec r[4][2];
                for (int j = 0; j < 2; ++j) {   /* A dy: rows */
                    const pr_vec y0 = y[j], y1 = y[R + j];
                    r[0][j] = y0; r[1][j] = y0 + y1; r[2][j] = y0 - y1; r[3][j] = -y1;
                }
                for (int i = 0; i < 4; ++i) {   /* (A dy) A^T: columns */
                    out[(4 * i + 0) * E] = r[i][0];
                    out[(4 * i + 1) * E] = r[i][0] + r[i][1];
                    out[(4 * i + 2) * E] = r[i][0] - r[i][1];
                    out[(4 * i + 3) * E] = -r[i][1];
                }
            } else {
                pr_vec r[6][4], col[4], z[6];
                for (int j = 0; j < 4; ++j) {   /* A dy: rows */
                    for (int i = 0; i < 4; ++i) col[i] = y[(long)i * R + j];
                    pw_a4(col, z);
                    for (int i = 0; i < 6; ++i) r[i][j] = z[i];
                }
                for (int i = 0; i < 6; ++i) {   /* (A dy) A^T: columns */
                    pw_a4(r[i], z);
                    for (int j = 0; j < 6; ++j) out[(6 * i + j) * E] = z[j];
                }
            }
        }
}

/* G k for one column of three kernel values, in double: E^(1/2) values. */
static void pw_g(int m, const double *k, double *t) {
    if (m == 2) {
        t[0] = k[0];
        t[1] = 0.5 * (k[0] + k[1] + k[2]);
        t[2] = 0.5 * (k[0] - k[1] + k[2]);
        t[3] = k[2];
    } else {   /* the rows of G for the points 0, 1, -1, 2, -1/2, infinity */
        t[0] = k[0];
        t[1] = -(k[0] + k[1] + k[2]) / 3.0;
        t[2] = (k[0] - k[1] + k[2]) / 3.0;
        t[3] = (k[0] + 2.0 * k[1] + 4.0 * k[2]) / 15.0;
        t[4] = (-16.0 * k[0] + 8.0 * k[1] - 4.0 * k[2]) / 15.0;
        t[5] = k[2];
    }
}

/* Kernels transformed (U = G g G^T, in double, rounded once) and packed for
   the products: per position e, blocks of PW_MR output channels (the last
   ones in blocks of one), then [c][mm]. flip_transpose: the kernels of the
   input gradient (out channel m = the forward's input channel, taps
   reversed) from a (Ci, Mo, 3, 3) array. */
static void pw_pack(const float *w, int Mo, int Ci, int flip_transpose, int tile, float *U) {
    const int full = Mo / PW_MR * PW_MR, n = tile + 2;
    for (int m = 0; m < Mo; ++m)
        for (int c = 0; c < Ci; ++c) {
            double k[3][3], t[6][3], column[3], out[6];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j)
                    k[i][j] = flip_transpose ? w[((long)c * Mo + m) * 9 + (2 - i) * 3 + (2 - j)]
                                             : w[((long)m * Ci + c) * 9 + i * 3 + j];
            for (int j = 0; j < 3; ++j) {   /* G k */
                for (int i = 0; i < 3; ++i) column[i] = k[i][j];
                pw_g(tile, column, out);
                for (int i = 0; i < n; ++i) t[i][j] = out[i];
            }
            const int m0 = m < full ? m - m % PW_MR : m, mb = m < full ? PW_MR : 1;
            float *u = U + (long)m0 * Ci + (long)c * mb + (m - m0);
            for (int i = 0; i < n; ++i) {   /* (G k) G^T */
                pw_g(tile, t[i], out);
                for (int j = 0; j < n; ++j) u[(long)(n * i + j) * Mo * Ci] = (float)out[j];
            }
        }
}

/* out[mm][tv] = sum_c u[c][mm] * v[c][tv]: MB output channels x TV vectors of
   tiles, the sums in registers. */
#define PW_TILE(MB, TV)                                                                \
static inline void pw_tile_##MB##_##TV(const float *u, const pr_vec *v, long tb, int C,\
                                       pr_vec *out) {                                  \
    pr_vec acc[MB][TV];                                                                \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int tv = 0; tv < TV; ++tv) acc[mm][tv] = (pr_vec){0};                     \
    for (int c = 0; c < C; ++c, u += MB, v += tb) {                                    \
        pr_vec in[TV];                                                                 \
        for (int tv = 0; tv < TV; ++tv) in[tv] = v[tv];                                \
        for (int mm = 0; mm < MB; ++mm)                                                \
            for (int tv = 0; tv < TV; ++tv) acc[mm][tv] += in[tv] * u[mm];             \
    }                                                                                  \
    for (int mm = 0; mm < MB; ++mm)                                                    \
        for (int tv = 0; tv < TV; ++tv) out[mm * tb + tv] = acc[mm][tv];               \
}
PW_TILE(PW_MR, PW_TV)
PW_TILE(PW_MR, 1)
PW_TILE(1, PW_TV)
PW_TILE(1, 1)

/* Mh[e] = U[e] V[e] for the E positions: (Mo x C) times (C x nt). */
static void pw_multiply(const float *U, const pr_vec *V, int Mo, int C, int nt, long tb,
                        int E, pr_vec *Mh) {
    for (int e = 0; e < E; ++e) {
        const float *Ue = U + (long)e * Mo * C;
        const pr_vec *Ve = V + e * PW_ESTRIDE(C, tb);
        pr_vec *Me = Mh + e * PW_ESTRIDE(Mo, tb);
        for (int m0 = 0; m0 < Mo; ) {
            const int mb = Mo - m0 >= PW_MR ? PW_MR : 1;
            const float *u = Ue + (long)m0 * C;
            pr_vec *out = Me + (long)m0 * tb;
            int t = 0;
            for (; t + PW_TV <= nt; t += PW_TV) {
                if (mb > 1) pw_tile_PW_MR_PW_TV(u, Ve + t, tb, C, out + t);
                else pw_tile_1_PW_TV(u, Ve + t, tb, C, out + t);
            }
            for (; t < nt; ++t) {
                if (mb > 1) pw_tile_PW_MR_1(u, Ve + t, tb, C, out + t);
                else pw_tile_1_1(u, Ve + t, tb, C, out + t);
            }
            m0 += mb;
        }
    }
}

/* Tiles per block: the block's transformed values (E positions x (C + M)
   channels) near `budget` bytes, at least PW_TV, at most `most`, a multiple
   of PW_TV when more than that. */
static int pw_block_tiles(int most, int C, int M, int E, long budget) {
    long tb = budget / ((long)E * (C + M) * (long)sizeof(pr_vec));
    if (tb > PW_TV) tb -= tb % PW_TV;
    if (tb < PW_TV) tb = PW_TV;
    if (tb > most) tb = most;
    return (int)tb;
}

/* Tile rows per band: a band's input rows (C channels, 2 more rows than its
   outputs) and output rows (M channels) near `budget` bytes, but at least
   `tiles` tiles (blocks of few tiles would reload the kernels for little
   work), at most the image. */
static int pw_band_rows(const pw_geometry *g, int C, int M, long budget, int tiles) {
    const long per_row = (long)g->m * ((long)C * g->Wp + (long)M * g->Wt) * (long)sizeof(pr_vec);
    long rows = (budget - 2L * C * g->Wp * (long)sizeof(pr_vec)) / per_row;
    const long least = (tiles + g->TW - 1) / g->TW;
    if (rows < least) rows = least;
    if (rows > g->TH) rows = g->TH;
    return (int)rows;
}

/* y = x * w (forward: w is (Mo, Ci, 3, 3)), or the input gradient
   (flip_transpose: x is the output gradient, w the forward's (Ci, Mo, 3, 3)
   kernels, y the input gradient), for stride 1 and 3x3 kernels. Each group
   of PR_VW images goes through the image in bands of tile rows (gathered,
   transformed in blocks of tiles, multiplied, transformed back, scattered),
   so that a band's values stay in the cache. map: x read through it;
   addend: added to y (forward); bn: each image of the input gradient through
   pr_bn_grad_image once its group is done. */
static int pw_conv2d(const float *xd, const float *wd, float *yd, int B, int Ci, int H, int W,
                     int Mo, int flip_transpose, int tile, long chunk_bytes, const pr_map *map,
                     const float *addend, const pr_bn_grad *bn) {
    const pw_geometry g = pw_geometry_of(H, W, tile);
    const int groups = (B + PR_VW - 1) / PR_VW;
    const int band = pw_band_rows(&g, Ci, Mo, chunk_bytes, 16);
    const int tb = pw_block_tiles(band * g.TW, Ci, Mo, g.E, chunk_bytes / 2);
    const int threads = omp_get_max_threads();
    const long xplane = (long)(tile * band + 2) * g.Wp, yplane = (long)tile * band * g.Wt;
    const size_t per_thread = (size_t)Ci * xplane + (size_t)Mo * yplane
                              + g.E * (PW_ESTRIDE(Ci, tb) + PW_ESTRIDE(Mo, tb));
    int status = -1;
    float *U = (float*)malloc(sizeof(float) * g.E * Mo * Ci);
    pr_vec *buffers = (pr_vec*)aligned_alloc(sizeof(pr_vec),
                                             sizeof(pr_vec) * per_thread * threads);
    if (!U || !buffers) goto cleanup;
    pw_pack(wd, Mo, Ci, flip_transpose, tile, U);
    #pragma omp parallel for schedule(static)
    for (int group = 0; group < groups; ++group) {
        pr_vec *xT = buffers + per_thread * omp_get_thread_num();
        pr_vec *yT = xT + (size_t)Ci * xplane, *V = yT + (size_t)Mo * yplane;
        pr_vec *Mh = V + g.E * PW_ESTRIDE(Ci, tb);
        const int b0 = group * PR_VW, n = B - b0 < PR_VW ? B - b0 : PR_VW;
        for (int ty0 = 0; ty0 < g.TH; ty0 += band) {
            const int rows = g.TH - ty0 < band ? g.TH - ty0 : band;
            pw_gather(xd + (long)b0 * Ci * H * W, n, Ci, H, W, 1, tile * ty0, tile * rows + 2,
                      g.Wp, xplane, map, xT);
            for (int t0 = ty0 * g.TW, t1 = (ty0 + rows) * g.TW; t0 < t1; t0 += tb) {
                const int nt = t1 - t0 < tb ? t1 - t0 : tb;
                pw_input_transform(xT, xplane, ty0, &g, Ci, t0, nt, tb, V);
                pw_multiply(U, V, Mo, Ci, nt, tb, g.E, Mh);
                pw_output_transform(Mh, &g, Mo, t0, nt, tb, yT, yplane, ty0);
            }
            pw_scatter(yT, n, Mo, H, W, tile * ty0, tile * rows, g.Wt, yplane,
                       addend ? addend + (long)b0 * Mo * H * W : NULL, yd + (long)b0 * Mo * H * W);
        }
        for (int i = 0; i < n && bn; ++i)
            pr_bn_grad_image(bn, b0 + i, Mo, (long)H * W, yd + (long)(b0 + i) * Mo * H * W);
    }
    status = 0;
cleanup:
    free(U);
    free(buffers);
    return status;
}

/* du[mm][cc] += the sums over tiles and lanes of dm[mm][t] * v[cc][t]: MB
   output channels x CB input channels (du rows `C` doubles apart). */
#define PW_WTILE(MB, CB)                                                               \
static inline void pw_wtile_##MB##_##CB(const pr_vec *dm, const pr_vec *v, long tb,    \
                                        int nt, double *du, int C) {                   \
    pr_vec acc[MB * CB];                                                               \
    for (int i = 0; i < MB * CB; ++i) acc[i] = (pr_vec){0};                            \
    for (int t = 0; t < nt; ++t) {                                                     \
        pr_vec d[MB], x[CB];                                                           \
        for (int mm = 0; mm < MB; ++mm) d[mm] = dm[mm * tb + t];                       \
        for (int cc = 0; cc < CB; ++cc) x[cc] = v[cc * tb + t];                        \
        for (int mm = 0; mm < MB; ++mm)                                                \
            for (int cc = 0; cc < CB; ++cc) acc[mm * CB + cc] += d[mm] * x[cc];        \
    }                                                                                  \
    if (MB * CB == PR_VW) {                                                            \
        const pr_vec sums = pw_lane_sums(acc);                                         \
        for (int mm = 0; mm < MB; ++mm)                                                \
            for (int cc = 0; cc < CB; ++cc) du[(long)mm * C + cc] += sums[mm * CB + cc];\
    } else {                                                                           \
        for (int mm = 0; mm < MB; ++mm)                                                \
            for (int cc = 0; cc < CB; ++cc)                                            \
                du[(long)mm * C + cc] += pr_lane_sum(acc[mm * CB + cc]);               \
    }                                                                                  \
}
PW_WTILE(PW_WR, PW_WR)
PW_WTILE(PW_WR, 1)
PW_WTILE(1, PW_WR)
PW_WTILE(1, 1)

/* du[e] += dM[e] V[e]^T for the E positions: (M x nt) times (nt x C). */
static void pw_wmultiply(const pr_vec *dM, const pr_vec *V, int M, int C, int nt, long tb,
                         int E, double *du) {
    for (int e = 0; e < E; ++e) {
        const pr_vec *De = dM + e * PW_ESTRIDE(M, tb), *Ve = V + e * PW_ESTRIDE(C, tb);
        double *ue = du + (long)e * M * C;
        for (int m0 = 0; m0 < M; ) {
            const int mb = M - m0 >= PW_WR ? PW_WR : 1;
            for (int c0 = 0; c0 < C; ) {
                const int cb = C - c0 >= PW_WR ? PW_WR : 1;
                const pr_vec *d = De + (long)m0 * tb, *v = Ve + (long)c0 * tb;
                double *u = ue + (long)m0 * C + c0;
                if (mb > 1 && cb > 1) pw_wtile_PW_WR_PW_WR(d, v, tb, nt, u, C);
                else if (mb > 1) pw_wtile_PW_WR_1(d, v, tb, nt, u, C);
                else if (cb > 1) pw_wtile_1_PW_WR(d, v, tb, nt, u, C);
                else pw_wtile_1_1(d, v, tb, nt, u, C);
                c0 += cb;
            }
            m0 += mb;
        }
    }
}

/* G^T u for one column of E^(1/2) values, in double: three values. */
static void pw_gt(int m, const double *u, double *out) {
    if (m == 2) {
        out[0] = u[0] + 0.5 * (u[1] + u[2]);
        out[1] = 0.5 * (u[1] - u[2]);
        out[2] = 0.5 * (u[1] + u[2]) + u[3];
    } else {
        out[0] = u[0] + (u[2] - u[1]) / 3.0 + (u[3] - 16.0 * u[4]) / 15.0;
        out[1] = -(u[1] + u[2]) / 3.0 + (2.0 * u[3] + 8.0 * u[4]) / 15.0;
        out[2] = (u[2] - u[1]) / 3.0 + (4.0 * u[3] - 4.0 * u[4]) / 15.0 + u[5];
    }
}

/* dw (M, C, 3, 3): the kernel gradient of y = x * w (stride 1, 3x3) for
   output gradient dy. Group `group` adds into slot group % slots, in the
   order of the groups; the slots are added in order, then transformed back
   (dw = G^T du G) in double. map: x read through it. */
static int pw_conv2d_wgrad(const float *xd, const float *dyd, float *dwd, int B, int C, int H,
                           int W, int M, int tile, long chunk_bytes, const pr_map *map) {
    const pw_geometry g = pw_geometry_of(H, W, tile);
    const int groups = (B + PR_VW - 1) / PR_VW;
    const int slots = groups < PR_SLOTS ? groups : PR_SLOTS;
    /* Blocks of at least 16 tiles, far longer than forward's where the
       channels allow: the lanes of every sum are added up once per block. */
    int tb = pw_block_tiles(g.T, C, M, g.E, 8 * chunk_bytes);
    if (tb < 16) tb = g.T < 16 ? g.T : 16;
    const int band = pw_band_rows(&g, C, M, chunk_bytes, tb);
    if (tb > band * g.TW) tb = band * g.TW;
    const int threads = omp_get_max_threads();
    const long xplane = (long)(tile * band + 2) * g.Wp, yplane = (long)tile * band * g.Wt;
    const size_t per_thread = (size_t)C * xplane + (size_t)M * yplane
                              + g.E * (PW_ESTRIDE(C, tb) + PW_ESTRIDE(M, tb));
    const long du_size = (long)g.E * M * C;
    int status = -1;
    pr_vec *buffers = (pr_vec*)aligned_alloc(sizeof(pr_vec),
                                             sizeof(pr_vec) * per_thread * threads);
    /* zeroed by the thread that fills each slot, not by calloc (one thread,
       8 slots of 18.9 MB for 256 x 256 channels) */
    double *du = (double*)malloc(sizeof(double) * (size_t)slots * du_size);
    if (!buffers || !du) goto cleanup;
    #pragma omp parallel for schedule(static)
    for (int slot = 0; slot < slots; ++slot) {
        memset(du + (size_t)slot * du_size, 0, sizeof(double) * du_size);
        pr_vec *xT = buffers + per_thread * omp_get_thread_num();
        pr_vec *dyT = xT + (size_t)C * xplane, *V = dyT + (size_t)M * yplane;
        pr_vec *dM = V + g.E * PW_ESTRIDE(C, tb);
        for (int group = slot; group < groups; group += slots) {
            const int b0 = group * PR_VW, n = B - b0 < PR_VW ? B - b0 : PR_VW;
            for (int ty0 = 0; ty0 < g.TH; ty0 += band) {
                const int rows = g.TH - ty0 < band ? g.TH - ty0 : band;
                pw_gather(xd + (long)b0 * C * H * W, n, C, H, W, 1, tile * ty0, tile * rows + 2,
                          g.Wp, xplane, map, xT);
                pw_gather(dyd + (long)b0 * M * H * W, n, M, H, W, 0, tile * ty0, tile * rows,
                          g.Wt, yplane, NULL, dyT);
                for (int t0 = ty0 * g.TW, t1 = (ty0 + rows) * g.TW; t0 < t1; t0 += tb) {
                    const int nt = t1 - t0 < tb ? t1 - t0 : tb;
                    pw_input_transform(xT, xplane, ty0, &g, C, t0, nt, tb, V);
                    pw_grad_transform(dyT, yplane, ty0, &g, M, t0, nt, tb, dM);
                    pw_wmultiply(dM, V, M, C, nt, tb, g.E, du + (size_t)slot * du_size);
                }
            }
        }
    }
    /* the slots added in order, then dw = G^T du G: in parallel over the
       kernels (each one's sums in the same order for any thread count) */
    #pragma omp parallel for schedule(static)
    for (long mc = 0; mc < (long)M * C; ++mc) {
        const int n = tile + 2;
        double u[6][6], t[3][6], column[6], out[3];
        for (int e = 0; e < g.E; ++e) {
            double sum = 0;
            for (int s = 0; s < slots; ++s) sum += du[(size_t)s * du_size + (long)e * M * C + mc];
            u[e / n][e % n] = sum;
        }
        for (int j = 0; j < n; ++j) {
            for (int i = 0; i < n; ++i) column[i] = u[i][j];
            pw_gt(tile, column, out);
            for (int i = 0; i < 3; ++i) t[i][j] = out[i];
        }
        for (int i = 0; i < 3; ++i) {
            pw_gt(tile, t[i], out);
            for (int j = 0; j < 3; ++j) dwd[mc * 9 + i * 3 + j] = (float)out[j];
        }
    }
    status = 0;
cleanup:
    free(buffers);
    free(du);
    return status;
}

/* Winograd's tile size for this part (PR_Y, PR_DX or PR_DW) of a stride-1
   3x3 convolution of (B, C, H, W) images into M channels, or 0 where the
   direct kernels are faster: by the shapes alone. From timings of batches
   of 128, both cores, wall clock, quiet machine (bench/ops_ab.py;
   docs/kernels.md): against the direct kernels Winograd wins the forward
   pass and the input gradient from 16 channels on both sides (16 x 16: +22 %
   and +10 %; 16 x 64 and 64 x 16: +54-73 % and +11-20 %), the kernel
   gradient only from 32 (with 16 on one side it loses 8-30 %: each
   transformed value feeds too few products to pay for the transforms and
   the transposes into the 16-image layout). F(4x4) beats F(2x2) everywhere
   but in the kernel gradient of 8x8 images, where F(2x2) is faster (256
   channels: F(4x4) -27 %, 64: -12 %; 16x16: F(4x4) +9 %): an 8x8 image is
   only 2x2 of F(4x4)'s tiles, whose 36 products per channel pair are summed
   over too few tiles to pay for their transforms. Batches that would leave
   many vector lanes empty stay direct. */
static int pw_pays(int part, int B, int C, int H, int W, int M) {
    const int groups = (B + PR_VW - 1) / PR_VW;
    const int min_channels = part == PR_DW ? 32 : 16;
    if (C < min_channels || M < min_channels || 4 * B < 3 * groups * PR_VW) return 0;
    return part == PR_DW && H <= 8 && W <= 8 ? 2 : 4;
}
