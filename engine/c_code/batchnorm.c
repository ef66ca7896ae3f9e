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

/* x (B, C, P) normalised per channel: y = (x - mean) * scale + beta with
   scale = gamma / sqrt(var + eps) (pr_bn_affine), clamped at zero when relu;
   the batch mean, 1 / sqrt(var + eps) and the (biased) variance per channel
   into md, id and vd. */
static void pr_batchnorm_train_compute(const float *xd, const float *g, const float *be,
                                       float *yd, float *md, float *id, float *vd,
                                       int B, int C, long P, double eps, int relu) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
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
        const float mu = count > 0 ? (float)mean : NAN, inv = (float)(1.0 / sqrt(v + eps));
        md[c] = mu; vd[c] = (float)v; id[c] = inv;
        const float scale = g[c] * inv, bet = be[c];
        for (int b = 0; b < B; ++b) {
            const float *seg = xd + ((long)b * C + c) * P;
            float *out = yd + ((long)b * C + c) * P;
            for (long q = 0; q < P; ++q) {
                const float z = pr_bn_affine(seg[q], mu, scale, bet);
                out[q] = (relu && z < 0.f) ? 0.f : z;
            }
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
                out[q] = scale * (gq - mean_g - h * mean_gx);
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
