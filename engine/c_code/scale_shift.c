/* ScaleShift: y = (x - mean[c]) * scale[c] + shift[c] per channel of
   (B, C, ...) arrays, clamped at zero when relu: batch normalisation at
   inference, with the running averages folded into scale (gamma * inv_std)
   and shift (beta). One parallel pass (Theano's own elementwise loop runs
   on one core).

   Needs support.c before it. */

static void pr_scale_shift_compute(const float *xd, const float *md, const float *sd,
                                   const float *hd, float *yd, int B, int C, long P, int relu) {
    #pragma omp parallel for schedule(static)
    for (long seg = 0; seg < (long)B * C; ++seg) {
        const float m = md[seg % C], a = sd[seg % C], b = hd[seg % C];
        const float *in = xd + seg * P;
        float *out = yd + seg * P;
        for (long q = 0; q < P; ++q) {
            const float z = pr_bn_affine(in[q], m, a, b);
            out[q] = (relu && z < 0.f) ? 0.f : z;
        }
    }
}

static int pr_scale_shift(PyArrayObject *x, PyArrayObject *mean, PyArrayObject *scale,
                          PyArrayObject *shift, PyArrayObject **y, int relu) {
    int status = -1, B, C;
    long P;
    PyArrayObject *xc = NULL, *mc = NULL, *sc = NULL, *hc = NULL;
    if (!(xc = pr_float32(x)) || !(mc = pr_float32(mean)) || !(sc = pr_float32(scale))
        || !(hc = pr_float32(shift)))
        goto cleanup;
    B = PyArray_DIMS(xc)[0]; C = PyArray_DIMS(xc)[1];
    P = (long)PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    if (!pr_is_vector(mc, C, "ScaleShift: mean") || !pr_is_vector(sc, C, "ScaleShift: scale")
        || !pr_is_vector(hc, C, "ScaleShift: shift"))
        goto cleanup;
    if (pr_output(y, 4, PyArray_DIMS(xc))) goto cleanup;
    Py_BEGIN_ALLOW_THREADS
    pr_scale_shift_compute((const float*)PyArray_DATA(xc), (const float*)PyArray_DATA(mc),
                           (const float*)PyArray_DATA(sc), (const float*)PyArray_DATA(hc),
                           (float*)PyArray_DATA(*y), B, C, P, relu);
    Py_END_ALLOW_THREADS
    status = 0;
cleanup:
    Py_XDECREF(xc);
    Py_XDECREF(mc);
    Py_XDECREF(sc);
    Py_XDECREF(hc);
    return status;
}
