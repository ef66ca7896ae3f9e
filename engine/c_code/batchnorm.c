/* BatchNormTrain and BatchNormTrainGrad: batch normalisation of (B, C, ...)
   arrays over all axes but the channels, scale, shift and an optional ReLU,
   forward and backward, one channel per thread. Sums run in float vector
   lanes (pr_sums: 8, pr_sum and pr_deviation_sums: 32) and are combined in
   doubles, image by image in order: the same results for any number of
   threads.

   The variance is never sum(x^2)/n - mean^2: that difference cancels when a
   channel's mean is large next to its spread (|mean|/std = 1000 left about
   three correct digits in float32 partial sums, 10000 none). Each image's
   part of a channel (its P values, in the L1 cache after the first pass)
   gets two passes: a first mean, then the deviations from it and their
   squares (exact in float32 wherever the values lie within a factor 2 of
   it; their sum corrects the first mean for its rounding). The images' means
   and sums of squared deviations are combined in doubles with Chan, Golub
   and LeVeque's pairwise update, image after image: the channel is read from
   memory once for its statistics, as the one-pass formula read it.

   Needs support.c before it. */

/* The statistics' passes over an image's part of a channel run in 32 float
   lanes: four independent vector sums, not one whose every addition waits
   for the previous one. */
#define PR_LANES 32

/* The sum of the PR_LANES lanes of s (which it overwrites), halving them in
   place: a fixed order, in vector additions. */
static float pr_lane_total(float *s) {
    for (int width = PR_LANES / 2; width >= 1; width /= 2)
        for (int l = 0; l < width; ++l) s[l] += s[l + width];
    return s[0];
}

/* Sum of a[0..n), in PR_LANES float lanes (vectorised). */
static float pr_sum(const float *a, long n) {
    float sa[PR_LANES] = {0};
    long i = 0;
    for (; i + PR_LANES <= n; i += PR_LANES)
        for (int l = 0; l < PR_LANES; ++l) sa[l] += a[i + l];
    float ta = 0.f;
    for (; i < n; ++i) ta += a[i];
    return ta + pr_lane_total(sa);
}

/* Sum of the deviations d = a[i] - center over a[0..n) and of d*d, in
   PR_LANES float lanes (vectorised). */
static void pr_deviation_sums(const float *a, float center, long n, float *sum_d, float *sum_dd) {
    float sd[PR_LANES] = {0}, sdd[PR_LANES] = {0};
    long i = 0;
    for (; i + PR_LANES <= n; i += PR_LANES)
        for (int l = 0; l < PR_LANES; ++l) {
            const float d = a[i + l] - center;
            sd[l] += d; sdd[l] += d * d;
        }
    float td = 0.f, tdd = 0.f;
    for (; i < n; ++i) { const float d = a[i] - center; td += d; tdd += d * d; }
    *sum_d = td + pr_lane_total(sd); *sum_dd = tdd + pr_lane_total(sdd);
}

/* ---- The computations: no Python, no GIL ---- */

/* The batch statistics of channel c of x (B, C, P): mean, 1 / sqrt(var +
   eps) and the (biased) variance. One function (never inlined) for
   BatchNormTrain and BatchNormStats, so that both give the same bits. */
__attribute__((noinline))
static void pr_channel_stats(const float *xd, int B, int C, long P, int c, double eps,
                             float *mean_out, float *inv_out, float *var_out) {
    /* count, mean and sum of squared deviations of the images so far */
    double count = 0, mean = 0, m2 = 0;
    for (int b = 0; b < B && P > 0; ++b) {
        const float *seg = xd + ((long)b * C + c) * P;
        const float first = pr_sum(seg, P) / (float)P;
        float d, dd;
        pr_deviation_sums(seg, first, P, &d, &dd);
        const double seg_mean = (double)first + (double)d / P;
        const double seg_m2 = (double)dd - (double)d * d / P;
        const double total = count + P, delta = seg_mean - mean;
        mean += delta * P / total;
        m2 += seg_m2 + delta * delta * count * P / total;
        count = total;
    }
    double v = count > 0 ? m2 / count : NAN;
    if (v < 0) v = 0;
    *mean_out = count > 0 ? (float)mean : NAN;
    *var_out = (float)v;
    *inv_out = (float)(1.0 / sqrt(v + eps));
}

/* x (B, C, P) normalised per channel: y = (x - mean) * scale + beta with
   scale = gamma / sqrt(var + eps) (pr_bn_affine), clamped at zero when relu;
   the batch mean, 1 / sqrt(var + eps) and the (biased) variance per channel
   into md, id and vd. yd NULL: the statistics alone (BatchNormStats, for a
   convolution that normalises its input as it reads it). */
static void pr_batchnorm_train_compute(const float *xd, const float *g, const float *be,
                                       float *yd, float *md, float *id, float *vd,
                                       int B, int C, long P, double eps, int relu) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
        pr_channel_stats(xd, B, C, P, c, eps, md + c, id + c, vd + c);
        if (!yd) continue;
        const float mu = md[c], scale = g[c] * id[c], bet = be[c];
        for (int b = 0; b < B; ++b) {
            const float *seg = xd + ((long)b * C + c) * P;
            float *out = yd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) out[q] = pr_bn_relu(seg[q], mu, scale, bet, relu);
        }
    }
}

/* The gradients of pr_batchnorm_train_compute's y for output gradient dy,
   from its mean and inverse standard deviation: dx, dgamma, dbeta. 0, or -1
   when out of memory. */
static int pr_batchnorm_train_grad_compute(const float *xd, const float *dyd, const float *g,
                                           const float *be, const float *md, const float *id,
                                           float *dxd, float *dgd, float *dbd,
                                           int B, int C, long P, int relu) {
    const double n = (double)B * P;
    const size_t per_thread = 2 * (size_t)(P > 0 ? P : 1);
    /* each thread's gradient and normalised input of one image's channel;
       allocated here, as an allocation inside the parallel region could not
       leave it on failure */
    float *buffers = (float*)malloc(sizeof(float) * omp_get_max_threads() * per_thread);
    if (!buffers) return -1;
    #pragma omp parallel
    {
    float *gx = buffers + (size_t)omp_get_thread_num() * per_thread;
    #pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
        const float mu = md[c], inv = id[c], gam = g[c], bet = be[c];
        const float scale = gam * inv;  /* as the forward computed it */
        float *gseg = gx, *xhat = gx + P;
        double sum_g = 0, sum_gx = 0;
        for (int b = 0; b < B; ++b) {
            const float *xs = xd + ((long)b * C + c) * P, *ds = dyd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                xhat[q] = (xs[q] - mu) * inv;
                /* the forward's output was clamped where this is negative */
                gseg[q] = (relu && pr_bn_affine(xs[q], mu, scale, bet) < 0.f) ? 0.f : ds[q];
            }
            float a, ab;
            pr_sums(gseg, xhat, P, &a, &ab);
            sum_g += a; sum_gx += ab;
        }
        dbd[c] = (float)sum_g;
        dgd[c] = (float)sum_gx;
        const float mean_g = (float)(sum_g / n), mean_gx = (float)(sum_gx / n);
        for (int b = 0; b < B; ++b) {
            const float *xs = xd + ((long)b * C + c) * P, *ds = dyd + ((long)b * C + c) * P;
            float *out = dxd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                const float h = (xs[q] - mu) * inv;
                const float gq = (relu && pr_bn_affine(xs[q], mu, scale, bet) < 0.f) ? 0.f : ds[q];
                out[q] = pr_bn_grad_value(gq, h, mean_g, mean_gx, scale);
            }
        }
    }
    }
    free(buffers);
    return 0;
}

/* ---- The ops: Python arrays in and out ---- */

/* BatchNormTrain: *y, *mean, *inv_std and *var from x, gamma and beta. */
static int pr_batchnorm_train(PyArrayObject *x, PyArrayObject *gamma, PyArrayObject *beta,
                              PyArrayObject **y, PyArrayObject **mean, PyArrayObject **inv_std,
                              PyArrayObject **var, double eps, int relu) {
    int status = -1, B, C;
    long P;
    PyArrayObject *xc = NULL, *gc = NULL, *bc = NULL;
    if (!(xc = pr_float32(x)) || !(gc = pr_float32(gamma)) || !(bc = pr_float32(beta)))
        goto cleanup;
    B = PyArray_DIMS(xc)[0]; C = PyArray_DIMS(xc)[1];
    P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    if (!pr_is_vector(gc, C, "BatchNormTrain: gamma") || !pr_is_vector(bc, C, "BatchNormTrain: beta"))
        goto cleanup;
    if (pr_output(y, 4, PyArray_DIMS(xc)) || pr_output(mean, 1, PyArray_DIMS(xc) + 1)
        || pr_output(inv_std, 1, PyArray_DIMS(xc) + 1) || pr_output(var, 1, PyArray_DIMS(xc) + 1))
        goto cleanup;
    Py_BEGIN_ALLOW_THREADS
    pr_batchnorm_train_compute(
        (const float*)PyArray_DATA(xc), (const float*)PyArray_DATA(gc),
        (const float*)PyArray_DATA(bc), (float*)PyArray_DATA(*y), (float*)PyArray_DATA(*mean),
        (float*)PyArray_DATA(*inv_std), (float*)PyArray_DATA(*var), B, C, P, eps, relu);
    Py_END_ALLOW_THREADS
    status = 0;
cleanup:
    Py_XDECREF(xc);
    Py_XDECREF(gc);
    Py_XDECREF(bc);
    return status;
}

/* BatchNormTrainGrad: *dx, *dgamma and *dbeta from x, dy, gamma, beta and
   BatchNormTrain's mean and inv_std. */
static int pr_batchnorm_train_grad(PyArrayObject *x, PyArrayObject *dy, PyArrayObject *gamma,
                                   PyArrayObject *beta, PyArrayObject *mean,
                                   PyArrayObject *inv_std, PyArrayObject **dx,
                                   PyArrayObject **dgamma, PyArrayObject **dbeta, int relu) {
    int status = -1, computed, B, C;
    long P;
    PyArrayObject *in[6] = {x, dy, gamma, beta, mean, inv_std};
    PyArrayObject *c[6] = {NULL, NULL, NULL, NULL, NULL, NULL};  /* x, dy, gamma, ... as float32 */
    for (int i = 0; i < 6; ++i)
        if (!(c[i] = pr_float32(in[i]))) goto cleanup;
    B = PyArray_DIMS(c[0])[0]; C = PyArray_DIMS(c[0])[1];
    P = (long)PyArray_DIMS(c[0])[2] * PyArray_DIMS(c[0])[3];
    if (!PyArray_SAMESHAPE(c[0], c[1])) {
        PyErr_SetString(PyExc_ValueError, "BatchNormTrainGrad: the output gradient's shape is not the input's");
        goto cleanup;
    }
    if (!pr_is_vector(c[2], C, "BatchNormTrainGrad: gamma") || !pr_is_vector(c[3], C, "BatchNormTrainGrad: beta")
        || !pr_is_vector(c[4], C, "BatchNormTrainGrad: mean")
        || !pr_is_vector(c[5], C, "BatchNormTrainGrad: inv_std"))
        goto cleanup;
    if (pr_output(dx, 4, PyArray_DIMS(c[0])) || pr_output(dgamma, 1, PyArray_DIMS(c[0]) + 1)
        || pr_output(dbeta, 1, PyArray_DIMS(c[0]) + 1))
        goto cleanup;
    Py_BEGIN_ALLOW_THREADS
    computed = pr_batchnorm_train_grad_compute(
        (const float*)PyArray_DATA(c[0]), (const float*)PyArray_DATA(c[1]),
        (const float*)PyArray_DATA(c[2]), (const float*)PyArray_DATA(c[3]),
        (const float*)PyArray_DATA(c[4]), (const float*)PyArray_DATA(c[5]),
        (float*)PyArray_DATA(*dx), (float*)PyArray_DATA(*dgamma), (float*)PyArray_DATA(*dbeta),
        B, C, P, relu);
    Py_END_ALLOW_THREADS
    if (computed) {
        PyErr_NoMemory();
        goto cleanup;
    }
    status = 0;
cleanup:
    for (int i = 0; i < 6; ++i) Py_XDECREF(c[i]);
    return status;
}

/* BatchNormStats: *mean, *inv_std and *var of x, as BatchNormTrain computes them. */
static int pr_batchnorm_stats(PyArrayObject *x, PyArrayObject **mean, PyArrayObject **inv_std,
                              PyArrayObject **var, double eps) {
    int status = -1, B, C;
    long P;
    PyArrayObject *xc = NULL;
    if (!(xc = pr_float32(x))) goto cleanup;
    B = PyArray_DIMS(xc)[0]; C = PyArray_DIMS(xc)[1];
    P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    if (pr_output(mean, 1, PyArray_DIMS(xc) + 1) || pr_output(inv_std, 1, PyArray_DIMS(xc) + 1)
        || pr_output(var, 1, PyArray_DIMS(xc) + 1))
        goto cleanup;
    Py_BEGIN_ALLOW_THREADS
    pr_batchnorm_train_compute((const float*)PyArray_DATA(xc), NULL, NULL, NULL,
                               (float*)PyArray_DATA(*mean), (float*)PyArray_DATA(*inv_std),
                               (float*)PyArray_DATA(*var), B, C, P, eps, 0);
    Py_END_ALLOW_THREADS
    status = 0;
cleanup:
    Py_XDECREF(xc);
    return status;
}

/* The second half of BatchNormTrainGrad, after a convolution computed the
   first (pr_bn_grad_image): dx = pr_bn_grad_value of the masked gradient g,
   plus addend (the residual gradient, NULL: none); dgamma and dbeta from
   the sums. Elementwise over (image, channel) segments. */
static void pr_bn_grad_apply_compute(const float *hd, const float *gd, const float *gamma,
                                     const float *md, const float *id, const double *sum_g,
                                     const double *sum_gx, const float *addend, float *dxd,
                                     float *dgd, float *dbd, int B, int C, long P) {
    const double n = (double)B * P;
    for (int c = 0; c < C; ++c) {
        dbd[c] = (float)sum_g[c];
        dgd[c] = (float)sum_gx[c];
    }
    #pragma omp parallel for schedule(static)
    for (long seg = 0; seg < (long)B * C; ++seg) {
        const int c = (int)(seg % C);
        const float mu = md[c], inv = id[c], scale = gamma[c] * inv;
        const float mean_g = (float)(sum_g[c] / n), mean_gx = (float)(sum_gx[c] / n);
        const float *hs = hd + seg * P, *gs = gd + seg * P;
        float *out = dxd + seg * P;
        for (long q = 0; q < P; ++q)
            out[q] = pr_bn_grad_value(gs[q], (hs[q] - mu) * inv, mean_g, mean_gx, scale);
        /* the residual in a loop of its own (the segment is in the L1 cache):
           in the same expression the compiler would fuse the scale's
           multiplication and this addition into one rounding, where the
           separate ops round twice */
        if (addend) {
            const float *as = addend + seg * P;
            for (long q = 0; q < P; ++q) out[q] += as[q];
        }
    }
}

/* Whether `array` is a float64 vector of n entries; if not, sets a ValueError naming `what`. */
static int pr_is_double_vector(PyArrayObject *array, npy_intp n, const char *what) {
    if (PyArray_NDIM(array) == 1 && PyArray_DIMS(array)[0] == n && PyArray_TYPE(array) == NPY_FLOAT64
        && PyArray_IS_C_CONTIGUOUS(array))
        return 1;
    PyErr_Format(PyExc_ValueError, "%s: needs one float64 value per channel (%ld)", what, (long)n);
    return 0;
}

/* BatchNormGradApply: *dx, *dgamma and *dbeta from the batch norm's input
   h, the masked output gradient g, gamma, the batch statistics, the sums of
   g and g * xhat and an optional addend. */
static int pr_batchnorm_grad_apply(PyArrayObject *h, PyArrayObject *g, PyArrayObject *gamma,
                                   PyArrayObject *mean, PyArrayObject *inv_std,
                                   PyArrayObject *sum_g, PyArrayObject *sum_gx,
                                   PyArrayObject *addend, PyArrayObject **dx,
                                   PyArrayObject **dgamma, PyArrayObject **dbeta) {
    int status = -1, B, C;
    long P;
    PyArrayObject *in[6] = {h, g, gamma, mean, inv_std, addend};
    PyArrayObject *c[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    for (int i = 0; i < 6; ++i)
        if (in[i] && !(c[i] = pr_float32(in[i]))) goto cleanup;
    B = PyArray_DIMS(c[0])[0]; C = PyArray_DIMS(c[0])[1];
    P = (long)PyArray_DIMS(c[0])[2] * PyArray_DIMS(c[0])[3];
    if (!PyArray_SAMESHAPE(c[0], c[1]) || (c[5] && !PyArray_SAMESHAPE(c[0], c[5]))) {
        PyErr_SetString(PyExc_ValueError, "BatchNormGradApply: the gradient's or the addend's "
                        "shape is not the input's");
        goto cleanup;
    }
    if (!pr_is_vector(c[2], C, "BatchNormGradApply: gamma")
        || !pr_is_vector(c[3], C, "BatchNormGradApply: mean")
        || !pr_is_vector(c[4], C, "BatchNormGradApply: inv_std")
        || !pr_is_double_vector(sum_g, C, "BatchNormGradApply: sum_g")
        || !pr_is_double_vector(sum_gx, C, "BatchNormGradApply: sum_gx"))
        goto cleanup;
    if (pr_output(dx, 4, PyArray_DIMS(c[0])) || pr_output(dgamma, 1, PyArray_DIMS(c[0]) + 1)
        || pr_output(dbeta, 1, PyArray_DIMS(c[0]) + 1))
        goto cleanup;
    Py_BEGIN_ALLOW_THREADS
    pr_bn_grad_apply_compute(
        (const float*)PyArray_DATA(c[0]), (const float*)PyArray_DATA(c[1]),
        (const float*)PyArray_DATA(c[2]), (const float*)PyArray_DATA(c[3]),
        (const float*)PyArray_DATA(c[4]), (const double*)PyArray_DATA(sum_g),
        (const double*)PyArray_DATA(sum_gx), c[5] ? (const float*)PyArray_DATA(c[5]) : NULL,
        (float*)PyArray_DATA(*dx), (float*)PyArray_DATA(*dgamma), (float*)PyArray_DATA(*dbeta),
        B, C, P);
    Py_END_ALLOW_THREADS
    status = 0;
cleanup:
    for (int i = 0; i < 6; ++i) Py_XDECREF(c[i]);
    return status;
}
