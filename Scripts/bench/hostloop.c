/* The host baseline for Scripts/bench-cpu: the guest's `bench cpu` loop
 * (guests/pvos/smp.S, pvos_bench_loop: dependent LCG multiply-adds), run on N host
 * threads at once, each pinned to its own CPU as the vCPU threads would be. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t iterations;

static uint64_t loop(uint64_t n) {
    uint64_t r;
    __asm__ volatile(
        "mov $1, %%eax\n"
        "movabs $6364136223846793005, %%rsi\n"
        "movabs $1442695040888963407, %%rdx\n"
        "test %%rdi, %%rdi\n"
        "jz 2f\n"
        "1: imul %%rsi, %%rax\n"
        "add %%rdx, %%rax\n"
        "dec %%rdi\n"
        "jnz 1b\n"
        "2:\n"
        : "=a"(r), "+D"(n) : : "rsi", "rdx", "cc");
    return r;
}

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

static void *worker(void *arg) {
    long cpu = (long)arg;
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    double t0 = now();
    volatile uint64_t sink = loop(iterations);
    (void)sink;
    printf("cpu %ld: %.3f ns/iter\n", cpu, (now() - t0) / iterations);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    iterations = argc > 2 ? strtoull(argv[2], 0, 0) : 200000000ull;
    pthread_t t[64];
    for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    return 0;
}
