/*
 * dirty: the busy guest of the convergence benchmark. It dirties a working set of WS MiB at a target rate of RATE
 * MB/s (1 MB = 1e6 bytes of pages; 0 = as fast as it can) by writing BYTES bytes (8 to 4096) at the start of each
 * 4 KiB page in turn, so every write dirties one page, and prints what it achieved once a second on its standard
 * output (the guest's serial console):
 *
 *   dirty: ready ws_mb=256 target_MBps=62.5 bytes=8 pages=65536
 *   dirty: t=12.004 pages=1234567 pps=15259 MBps=62.5 run=0.998 bad=0
 *
 * t is the guest's monotonic clock (s), pages the pages written since it started, pps and MBps the rate over the last
 * interval, run the share of that interval the program had a CPU by its own clock (below).
 * It never sleeps: ahead of its pace it spins on the clock, as a CPU-bound program is always busy, and it keeps the
 * pace on its own CPU clock: guest time less every gap between two clock reads longer than 0.5 ms (a vCPU the host
 * throttled or descheduled, or another guest task ran), with a burst of at most 10 ms. So it does work in proportion
 * to the CPU it gets, as a CPU-bound program does: a vCPU throttled by 40% writes 40% less, and lost time is never
 * made up in a burst after it.
 * Each page's first word holds the sequence number of its last write, and the pages are written in order, so before
 * each line the program checks every page against what it last wrote there: bad counts the pages found stale since it
 * started (each is rewritten then, so it counts once), and the first few are printed as "dirty: BAD ...". After a
 * migration that lost a write, the destination shows it.
 * Usage: dirty WS_MIB [RATE_MBPS [BYTES]]       Built static (gcc -static -O2) and put into the guest's initramfs.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define WORDS_PER_PAGE (PAGE / 8)
/* A gap between two clock reads longer than this was time the program lost (it reads the clock every few us). */
#define LOST_AFTER 0.0005
/* The most work the pace lets the program do at once after it fell behind. */
#define BURST 0.010

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Pages whose first word is not what was last written there: printed (the first few) and rewritten as expected. */
static uint64_t check(uint64_t *mem, size_t pages, size_t next, uint64_t seq, long words)
{
    static uint64_t printed;
    uint64_t stale = 0;
    size_t written = seq - 1 < pages ? (size_t)(seq - 1) : pages;
    for (size_t k = 1; k <= written; k++) {
        size_t page = (next + pages - k) % pages;
        uint64_t *p = mem + page * WORDS_PER_PAGE, want = seq - k;
        if (p[0] != want) {
            if (printed++ < 8) {
                printf("dirty: BAD page=%zu want=%llu got=%llu\n", page, (unsigned long long)want,
                       (unsigned long long)p[0]);
            }
            for (long w = 0; w < words; w++) {
                p[w] = want + (uint64_t)w;
            }
            stale++;
        }
    }
    return stale;
}

int main(int argc, char **argv)
{
    long ws_mb = argc > 1 ? atol(argv[1]) : 256;
    double rate = argc > 2 ? atof(argv[2]) : 0;
    long bytes = argc > 3 ? atol(argv[3]) : 8;
    if (ws_mb < 1 || rate < 0 || bytes < 8 || bytes > PAGE) {
        fprintf(stderr, "usage: dirty WS_MIB [RATE_MBPS [BYTES (8..4096)]]\n");
        return 2;
    }

    size_t pages = (size_t)ws_mb * (1 << 20) / PAGE;
    long words = bytes / 8;
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("dirty: mmap");
        return 1;
    }

    /* Every word non-zero, so no page of the working set is a zero page to the migration. */
    for (size_t i = 0; i < pages * WORDS_PER_PAGE; i++) {
        mem[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
    }

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("dirty: ready ws_mb=%ld target_MBps=%.1f bytes=%ld pages=%zu\n", ws_mb, rate, bytes, pages);
    double pps_target = rate * 1e6 / PAGE;
    /* Pages written between two clock reads: a few microseconds of work, so the pace is smooth. */
    const size_t batch = 16;
    uint64_t total = 0, seq = 1, budget_pages = 0, last_total = 0, bad = 0;
    size_t next = 0;
    double start = now(), last = start, prev = start;
    double cpu = 0, last_cpu = 0, budget_start = 0; /* the program's own CPU clock, and where its budget began */
    for (;;) {
        double t = now(), gap = t - prev;
        cpu += gap > LOST_AFTER ? LOST_AFTER : gap;
        prev = t;
        if (t - last >= 1.0) {
            double pps = (double)(total - last_total) / (t - last);
            bad += check(mem, pages, next, seq, words);
            printf("dirty: t=%.3f pages=%llu pps=%.0f MBps=%.1f run=%.3f bad=%llu\n", t - start,
                   (unsigned long long)total, pps, pps * PAGE / 1e6, (cpu - last_cpu) / (t - last),
                   (unsigned long long)bad);
            last = t;
            last_cpu = cpu;
            last_total = total;
            prev = now(); /* checking and printing to the serial port is not lost time */
        }

        if (pps_target > 0) {
            /* Ahead of the pace: spin on the clock rather than sleep, as a CPU-bound program would be busy. */
            double due = budget_start + (double)budget_pages / pps_target;
            if (cpu - due > BURST) {
                budget_start = cpu - BURST;
                budget_pages = 0;
            } else if (due > cpu) {
                continue;
            }
        }

        for (size_t b = 0; b < batch; b++) {
            uint64_t *p = mem + next * WORDS_PER_PAGE;
            for (long w = 0; w < words; w++) {
                p[w] = seq + (uint64_t)w;
            }
            seq++;
            if (++next == pages) {
                next = 0;
            }
        }

        total += batch;
        budget_pages += batch;
    }
}
