/* CPU_DISPATCH: compile a hot function once per x86-64 level and pick the clone when the library
 * loads (GCC's target_clones), so one build uses AVX-512 or AVX2+FMA where present and still runs
 * on any x86-64. Shared by fastgen.c and composer_step.c. */
#ifndef TIMBRE_CPU_DISPATCH_H
#define TIMBRE_CPU_DISPATCH_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#if __GNUC__ >= 11
#define CPU_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_DISPATCH __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#endif
#else
#define CPU_DISPATCH /* other compilers and CPUs: one baseline build */
#endif

#endif
