/*
 * memtest: the end-to-end workload. Shrinks usable memory honestly (mlock of a given amount), then fills a region of
 * a given size with a pattern that identifies every 64-bit word, verifies it in order and in scattered order, rewrites
 * it with another seed and verifies again. With the region larger than the RAM left, every check reads pages back
 * from swap: a single wrong, lost or stale page is reported and fails the run.
 *
 *   memtest REGION_MIB [LOCK_MIB]       exit 0 and "MEMTEST PASS ..." when every word is right
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))

static uint64_t value(uint64_t page, uint64_t word, uint64_t seed)
{
    /* Every page starts with a plaintext marker ("MEMTEST" and the seed's digit) that a capture of the guest's link
     * can count: the ktls scenario must show none, the attach scenario (plain NBD) shows them. The rest of the page
     * identifies the page, so a page in the wrong place still fails. */
    if (word == 0)
        return 0x00545345544d454dULL | ((uint64_t)('0' + seed % 10) << 56);
    uint64_t x = (page << 20) ^ (word << 3) ^ (seed * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x | 1; /* never zero: a zero-filled page can never pass */
}

static void fill(uint64_t *mem, uint64_t pages, uint64_t seed)
{
    for (uint64_t p = 0; p < pages; p++)
        for (uint64_t w = 0; w < WORDS; w++)
            mem[p * WORDS + w] = value(p, w, seed);
}

static uint64_t check_page(uint64_t *mem, uint64_t p, uint64_t seed)
{
    uint64_t bad = 0;
    for (uint64_t w = 0; w < WORDS; w++)
        if (mem[p * WORDS + w] != value(p, w, seed))
            bad++;
    if (bad)
        fprintf(stderr, "memtest: page %llu: %llu wrong words\n", (unsigned long long)p, (unsigned long long)bad);
    return bad;
}

static uint64_t check_sequential(uint64_t *mem, uint64_t pages, uint64_t seed)
{
    uint64_t bad = 0;
    for (uint64_t p = 0; p < pages; p++)
        bad += check_page(mem, p, seed);
    return bad;
}

/* Every page once, in an order far from sequential: a stride coprime with the page count. */
static uint64_t check_scattered(uint64_t *mem, uint64_t pages, uint64_t seed)
{
    uint64_t stride = 7919;
    while (pages % stride == 0)
        stride += 2;
    uint64_t bad = 0;
    for (uint64_t i = 0, p = 0; i < pages; i++, p = (p + stride) % pages)
        bad += check_page(mem, p, seed);
    return bad;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: memtest REGION_MIB [LOCK_MIB]\n");
        return 2;
    }
    uint64_t region = strtoull(argv[1], NULL, 10) << 20;
    uint64_t lock = argc > 2 ? strtoull(argv[2], NULL, 10) << 20 : 0;
    if (lock) {
        void *held = mmap(NULL, lock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
        if (held == MAP_FAILED || mlock(held, lock) != 0) {
            perror("memtest: locking memory");
            return 3;
        }
        printf("memtest: locked %llu MiB\n", (unsigned long long)(lock >> 20));
    }
    uint64_t *mem = mmap(NULL, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("memtest: mmap");
        return 3;
    }
    uint64_t pages = region / PAGE, bad = 0;
    double t0 = now();
    fill(mem, pages, 1);
    printf("memtest: filled %llu pages in %.1fs\n", (unsigned long long)pages, now() - t0);
    fflush(stdout);
    bad += check_sequential(mem, pages, 1);
    printf("memtest: sequential check done at %.1fs, %llu bad words\n", now() - t0, (unsigned long long)bad);
    fflush(stdout);
    bad += check_scattered(mem, pages, 1);
    printf("memtest: scattered check done at %.1fs, %llu bad words\n", now() - t0, (unsigned long long)bad);
    fflush(stdout);
    fill(mem, pages, 2);
    bad += check_scattered(mem, pages, 2);
    bad += check_sequential(mem, pages, 2);
    printf("MEMTEST %s pages=%llu bad_words=%llu seconds=%.1f\n", bad ? "FAIL" : "PASS", (unsigned long long)pages,
           (unsigned long long)bad, now() - t0);
    fflush(stdout);
    /* Unlock before exiting so the kernel has room again (avoids an OOM kill of init at swapoff). */
    munlockall();
    return bad ? 1 : 0;
}
