// y = alpha * x + y (BLAS saxpy).
__kernel void canary_saxpy(float alpha, __global const float *x, __global float *y)
{
    size_t i = get_global_id(0);
    y[i] = alpha * x[i] + y[i];
}
