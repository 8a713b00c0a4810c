/*
 * Host side of the canary's GPU library.
 *
 * The device images live in the sections the DPC++ offload wrapper uses
 * (__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen for native code,
 * __CLANG_OFFLOAD_BUNDLE__sycl-spir64 for SPIR-V) and are found through the
 * .tgtimg table of (address, size) pairs. Those are generated per device list
 * (images.S / images_pe.c), so this file never changes between generations:
 * it is compiled once and only relinked, like IPEX 2.1's host code.
 *
 * The CPU functions compute what the kernels compute, so a conformance run
 * without a GPU still has a reference to compare against.
 */
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define CANARY_API __declspec(dllexport)
#else
#define CANARY_API __attribute__((visibility("default")))
#endif

struct canary_image {
    const uint8_t *start;
    uint64_t size;
};

/* Defined by the generated image file. */
extern const struct canary_image canary_tgtimg[];
extern const uint64_t canary_tgtimg_count;
extern const uint8_t canary_image_kinds[];
extern const char canary_devlist_text[];

CANARY_API uint64_t canary_image_count(void) { return canary_tgtimg_count; }

/* kind: 0 = native (spir64_gen), 1 = SPIR-V (spir64). */
CANARY_API const void *canary_image(uint64_t index, uint64_t *size, int *kind)
{
    if (index >= canary_tgtimg_count)
        return NULL;
    *size = canary_tgtimg[index].size;
    *kind = canary_image_kinds[index];
    return canary_tgtimg[index].start;
}

CANARY_API const char *canary_devlist(void) { return canary_devlist_text; }

CANARY_API void canary_vadd(const float *a, const float *b, float *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = a[i] + b[i];
}

CANARY_API void canary_saxpy(float alpha, const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = alpha * x[i] + y[i];
}

/* Pairwise like the kernel's tree reduction, so rounding matches for powers of two. */
CANARY_API float canary_sum(const float *x, size_t n)
{
    if (n == 0)
        return 0.0f;
    if (n == 1)
        return x[0];
    size_t half = n / 2;
    return canary_sum(x, half) + canary_sum(x + half, n - half);
}
