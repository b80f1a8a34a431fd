/* Compiler portability for crnn's C kernels (_kernels.h, _packed_gemm.h). */
#ifndef CRNN_COMPILER_H
#define CRNN_COMPILER_H

/* On x86-64 Linux with GCC, hot loops are also compiled for AVX2+FMA
 * (x86-64-v3) and AVX-512 (x86-64-v4), chosen at load time by the CPU
 * (target_clones): wheels stay baseline x86-64 yet use the wide units. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CRNN_WIDE_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CRNN_WIDE_CLONES
#endif

/* a static function that some including modules do not call */
#if defined(__GNUC__) || defined(__clang__)
#define CRNN_MAYBE_UNUSED __attribute__((unused))
#else
#define CRNN_MAYBE_UNUSED
#endif

#if defined(_MSC_VER)
#define CRNN_RESTRICT __restrict
#else
#define CRNN_RESTRICT restrict
#endif

/* inlined at every call, so that a constant argument specialises the body */
#if defined(__GNUC__) || defined(__clang__)
#define CRNN_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define CRNN_ALWAYS_INLINE __forceinline
#else
#define CRNN_ALWAYS_INLINE inline
#endif

/* GCC and Clang have vector types (`vector_size`); MSVC does not. */
#if defined(__GNUC__) || defined(__clang__)
#define CRNN_HAVE_VECTOR_TYPES 1
#else
#define CRNN_HAVE_VECTOR_TYPES 0
#endif

#endif
