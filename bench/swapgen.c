/*
 * swapgen: a swap-shaped NBD load generator for many clients at once (bench/swapscale.sh runs it).
 *
 * Each client is one TCP connection negotiated as the kernel's NBD driver does it: fixed newstyle, NBD_OPT_GO, simple
 * replies (no structured replies, as nbd-client hands the kernel). Clients are spread over a few threads, each with
 * one epoll set, so a thousand or ten thousand clients cost file descriptors, not processes: fio's nbd engine needs a
 * thread or a process per client and could not reach a thousand on this machine.
 *
 * Shapes (--shape):
 *   swap   each client first writes the pages it will later read (its whole region, 128 KiB writes), then mixes
 *          swap-out (128 KiB writes, in bursts, never FUA) and swap-in (4 KiB reads of written pages): what a
 *          swapping kernel does.
 *   holes  no prefill: 4 KiB reads anywhere in the region (mostly never written) and 128 KiB writes.
 * --rate limits every client to that many requests per second (a trickle, for many idle-ish clients); 0: as fast as
 * the queue depth allows.
 *
 * Output: one line of tab-separated key=value pairs (reads, writes, read_iops, write_mibs, read_p50_us, read_p99_us,
 * write_p99_us, errors, clients, seconds). Exit 1 with one line on stderr when a client cannot connect or negotiate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <endian.h>

#define REQ_MAGIC 0x25609513u
#define REPLY_MAGIC 0x67446698u
#define CMD_READ 0
#define CMD_WRITE 1
#define CMD_DISC 2
#define READ_SIZE 4096u
#define WRITE_SIZE (128u * 1024u)
#define MAX_DEPTH 64

static const char *host = "127.0.0.1";
static int port = 10809;
static int clients = 1;
static int threads = 2;
static int depth = 4;
static int runtime = 10;
static int read_pct = 70;
static double rate = 0; /* requests per second per client; 0 = unlimited */
static long long size_mb = 16;
static const char *export_format = ""; /* printf format with one %d (client number) */
static int shape_swap = 1;
static int burst = 4; /* writes come in bursts of this many in the swap shape */
static int server_pid = 0; /* --pid: the server's CPU time and resident memory are read from /proc */

/* CPU time (user + system, all threads) of a process in microseconds, or -1. */
static long long proc_cpu_us(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    /* after ") ": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (long long)((utime + stime) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* Resident memory of a process in KiB (VmRSS), or -1. */
static long long proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static uint8_t write_payload[WRITE_SIZE];

struct slot {
    uint8_t cmd;
    uint32_t length;
    uint64_t started_ns;
};

struct conn {
    int fd;
    int index;
    uint64_t size;
    uint64_t region; /* bytes of the export this client uses */
    int inflight;
    uint64_t prefill_next; /* next offset to prefill; == region when done */
    int burst_left;
    struct slot slots[MAX_DEPTH];
    uint32_t free_slots[MAX_DEPTH];
    int nfree;
    /* send queue: requests not yet fully sent (ring of slot indexes) */
    uint32_t sendq[MAX_DEPTH];
    int sq_head, sq_len;
    uint32_t sent_of_head; /* bytes of the head request already sent */
    uint8_t headers[MAX_DEPTH][28];
    /* receive state */
    uint8_t hdr[16];
    int hdr_have;
    uint32_t skip; /* data bytes still to discard for the current read reply */
    int want_out;
    uint64_t rng;
};

struct lat {
    uint32_t *v;
    size_t n, cap;
};

static void lat_add(struct lat *l, uint32_t us)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) {
            fprintf(stderr, "swapgen: out of memory\n");
            exit(1);
        }
    }
    l->v[l->n++] = us;
}

struct worker {
    pthread_t thread;
    int first, count;
    struct conn *conns;
    int epfd;
    struct lat reads, writes;
    uint64_t errors;
    uint64_t prefill_bytes;
    uint64_t issued;
};

static volatile int measuring = 0, stopping = 0;
static uint64_t t0_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void die(const char *what, int index)
{
    fprintf(stderr, "swapgen: client %d: %s\n", index, what);
    exit(1);
}

/* Reads or writes all n bytes (blocking): 0, or -1 at an error or the end of the stream. */
static int transfer_full(int fd, void *buf, size_t n, int write_it)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = write_it ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t n) { return transfer_full(fd, buf, n, 0); }
static int write_full(int fd, const void *buf, size_t n) { return transfer_full(fd, (void *)buf, n, 1); }

/* Connects and negotiates (blocking): fixed newstyle, NBD_OPT_GO, NBD_INFO_EXPORT for the size. */
static void handshake(struct conn *c)
{
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    int fd;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)port);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a4, sizeof a4) < 0)
            die(strerror(errno), c->index);
    } else {
        memset(&a6, 0, sizeof a6);
        if (inet_pton(AF_INET6, host, &a6.sin6_addr) != 1)
            die("bad --host", c->index);
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)port);
        fd = socket(AF_INET6, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a6, sizeof a6) < 0)
            die(strerror(errno), c->index);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint8_t greet[18];
    if (read_full(fd, greet, sizeof greet) < 0)
        die("no greeting", c->index);
    if (be64toh(*(uint64_t *)(greet + 8)) != 0x49484156454F5054ull)
        die("not a newstyle server", c->index);
    uint32_t cflags = htobe32(1 | 2); /* FIXED_NEWSTYLE | NO_ZEROES */
    if (write_full(fd, &cflags, 4) < 0)
        die("send flags", c->index);
    char name[256];
    snprintf(name, sizeof name, export_format, c->index);
    uint32_t nlen = (uint32_t)strlen(name);
    uint8_t opt[16 + 4 + 256 + 2];
    *(uint64_t *)opt = htobe64(0x49484156454F5054ull);
    *(uint32_t *)(opt + 8) = htobe32(7); /* NBD_OPT_GO */
    *(uint32_t *)(opt + 12) = htobe32(4 + nlen + 2);
    *(uint32_t *)(opt + 16) = htobe32(nlen);
    memcpy(opt + 20, name, nlen);
    *(uint16_t *)(opt + 20 + nlen) = 0;
    if (write_full(fd, opt, 22 + nlen) < 0)
        die("send GO", c->index);
    for (;;) {
        uint8_t rep[20];
        if (read_full(fd, rep, sizeof rep) < 0)
            die("server closed during GO", c->index);
        uint32_t type = be32toh(*(uint32_t *)(rep + 12));
        uint32_t len = be32toh(*(uint32_t *)(rep + 16));
        uint8_t data[1024];
        if (len > sizeof data)
            die("option reply too long", c->index);
        if (read_full(fd, data, len) < 0)
            die("short option reply", c->index);
        if (type == 1)
            break; /* ACK */
        if (type & 0x80000000u) {
            char msg[1100];
            snprintf(msg, sizeof msg, "export '%s' refused: %.*s", name, (int)len, data);
            die(msg, c->index);
        }
        if (type == 3 && len >= 12 && be16toh(*(uint16_t *)data) == 0)
            c->size = be64toh(*(uint64_t *)(data + 2));
    }
    if (c->size == 0)
        die("no export size", c->index);
    c->region = (uint64_t)size_mb << 20;
    if (c->region > c->size)
        c->region = c->size;
    c->region -= c->region % WRITE_SIZE;
    if (c->region < WRITE_SIZE)
        die("export smaller than one write", c->index);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->nfree = depth;
    for (int i = 0; i < depth; i++)
        c->free_slots[i] = (uint32_t)(depth - 1 - i);
    c->prefill_next = shape_swap ? 0 : c->region;
    c->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)c->index * 0xD1B54A32D192ED03ull) ^ 1;
}

static void queue_request(struct worker *w, struct conn *c, uint8_t cmd, uint64_t offset, uint32_t length)
{
    uint32_t s = c->free_slots[--c->nfree];
    c->slots[s].cmd = cmd;
    c->slots[s].length = length;
    c->slots[s].started_ns = now_ns();
    uint8_t *h = c->headers[s];
    *(uint32_t *)h = htobe32(REQ_MAGIC);
    *(uint16_t *)(h + 4) = 0;
    *(uint16_t *)(h + 6) = htobe16(cmd);
    *(uint64_t *)(h + 8) = htobe64(s);
    *(uint64_t *)(h + 16) = htobe64(offset);
    *(uint32_t *)(h + 24) = htobe32(length);
    c->sendq[(c->sq_head + c->sq_len) % MAX_DEPTH] = s;
    c->sq_len++;
    c->inflight++;
    w->issued++;
}

/* The next request of this client's shape. */
static void issue(struct worker *w, struct conn *c)
{
    if (c->prefill_next < c->region) {
        queue_request(w, c, CMD_WRITE, c->prefill_next, WRITE_SIZE);
        c->prefill_next += WRITE_SIZE;
        w->prefill_bytes += WRITE_SIZE;
        return;
    }
    int write;
    if (c->burst_left > 0) {
        write = 1;
        c->burst_left--;
    } else {
        /* In the swap shape a write starts a burst; bursts start rarely enough that writes stay 100 - read_pct % of all. */
        double w = (100 - read_pct) / 100.0;
        double start = shape_swap ? w / (burst - w * (burst - 1)) : w;
        write = (double)(next_random(&c->rng) % 1000000) / 1e6 < start;
        if (write && shape_swap)
            c->burst_left = burst - 1;
    }
    if (write) {
        uint64_t at = next_random(&c->rng) % (c->region / WRITE_SIZE) * WRITE_SIZE;
        queue_request(w, c, CMD_WRITE, at, WRITE_SIZE);
    } else {
        uint64_t at = next_random(&c->rng) % (c->region / READ_SIZE) * READ_SIZE;
        queue_request(w, c, CMD_READ, at, READ_SIZE);
    }
}

static int flush_sends(struct conn *c)
{
    while (c->sq_len > 0) {
        uint32_t s = c->sendq[c->sq_head];
        uint32_t total = 28 + (c->slots[s].cmd == CMD_WRITE ? c->slots[s].length : 0);
        struct iovec iov[2];
        int n = 0;
        uint32_t off = c->sent_of_head;
        if (off < 28) {
            iov[n].iov_base = c->headers[s] + off;
            iov[n].iov_len = 28 - off;
            n++;
            off = 28;
        }
        if (total > 28) {
            iov[n].iov_base = write_payload + (off - 28);
            iov[n].iov_len = total - off;
            n++;
        }
        ssize_t r = writev(c->fd, iov, n);
        if (r < 0) {
            if (errno == EAGAIN)
                return 1;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->sent_of_head += (uint32_t)r;
        if (c->sent_of_head == total) {
            c->sent_of_head = 0;
            c->sq_head = (c->sq_head + 1) % MAX_DEPTH;
            c->sq_len--;
        } else {
            return 1;
        }
    }
    return 0;
}

static void update_interest(struct worker *w, struct conn *c, int want_out)
{
    if (want_out == c->want_out)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

static int receive(struct worker *w, struct conn *c, uint8_t *scratch)
{
    for (;;) {
        ssize_t r = recv(c->fd, scratch, 256 * 1024, 0);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EAGAIN)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t at = 0;
        while (at < (size_t)r) {
            if (c->skip > 0) {
                size_t take = (size_t)r - at < c->skip ? (size_t)r - at : c->skip;
                c->skip -= (uint32_t)take;
                at += take;
                continue;
            }
            size_t take = 16 - (size_t)c->hdr_have;
            if (take > (size_t)r - at)
                take = (size_t)r - at;
            memcpy(c->hdr + c->hdr_have, scratch + at, take);
            c->hdr_have += (int)take;
            at += take;
            if (c->hdr_have < 16)
                break;
            c->hdr_have = 0;
            if (be32toh(*(uint32_t *)c->hdr) != REPLY_MAGIC)
                return -2;
            uint32_t error = be32toh(*(uint32_t *)(c->hdr + 4));
            uint64_t s = be64toh(*(uint64_t *)(c->hdr + 8));
            if (s >= (uint64_t)depth)
                return -2;
            struct slot *sl = &c->slots[s];
            uint64_t us = (now_ns() - sl->started_ns) / 1000;
            if (error != 0) {
                w->errors++;
            } else if (sl->cmd == CMD_READ) {
                c->skip = sl->length;
            }
            if (measuring && c->prefill_next >= c->region) {
                lat_add(sl->cmd == CMD_READ ? &w->reads : &w->writes, us > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)us);
            }
            c->free_slots[c->nfree++] = (uint32_t)s;
            c->inflight--;
        }
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    uint8_t *scratch = malloc(256 * 1024);
    if (!scratch)
        die("out of memory", 0);
    struct epoll_event events[256];
    uint64_t start = now_ns();
    uint64_t credit_issued = 0;
    int rr = 0;
    while (!stopping) {
        /* Issue: unlimited clients fill their depth; with --rate, the worker's share of the total rate, round robin. */
        if (rate > 0) {
            double elapsed = (double)(now_ns() - start) / 1e9;
            uint64_t due = (uint64_t)(elapsed * rate * w->count);
            int scanned = 0;
            while (credit_issued < due && scanned < w->count) {
                struct conn *c = &w->conns[rr];
                rr = (rr + 1) % w->count;
                scanned++;
                if (c->nfree > 0) {
                    issue(w, c);
                    credit_issued++;
                    scanned = 0;
                    int f = flush_sends(c);
                    if (f < 0)
                        die("send failed", c->index);
                    update_interest(w, c, f > 0);
                }
            }
        }
        int n = epoll_wait(w->epfd, events, 256, rate > 0 ? 1 : 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                int r = receive(w, c, scratch);
                if (r == -1)
                    die("server closed the connection", c->index);
                if (r == -2)
                    die("bad reply from the server", c->index);
            }
            if (rate <= 0) {
                while (c->nfree > 0)
                    issue(w, c);
            }
            int f = flush_sends(c);
            if (f < 0)
                die("send failed", c->index);
            update_interest(w, c, f > 0);
        }
    }
    free(scratch);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(struct lat *l, double p)
{
    if (l->n == 0)
        return 0;
    qsort(l->v, l->n, sizeof *l->v, cmp_u32);
    size_t i = (size_t)(p * (double)(l->n - 1));
    return l->v[i];
}

static void usage(void)
{
    fprintf(stderr,
            "usage: swapgen --port P [--host A] --clients N --export FORMAT [--shape swap|holes] [--size-mb M]\n"
            "               [--depth D] [--runtime S] [--read-pct R] [--rate R] [--threads T] [--burst B]\n"
            "  FORMAT: the export name, with %%d for the client's number (e.g. swap/c%%d:256M; \"\" for the default)\n");
    exit(1);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--clients")) clients = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else if (!strcmp(a, "--runtime")) runtime = atoi(v);
        else if (!strcmp(a, "--read-pct")) read_pct = atoi(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--size-mb")) size_mb = atoll(v);
        else if (!strcmp(a, "--export")) export_format = v;
        else if (!strcmp(a, "--burst")) burst = atoi(v);
        else if (!strcmp(a, "--pid")) server_pid = atoi(v);
        else if (!strcmp(a, "--shape")) {
            if (!strcmp(v, "swap")) shape_swap = 1;
            else if (!strcmp(v, "holes")) shape_swap = 0;
            else usage();
        } else usage();
        i++;
    }
    if (clients < 1 || threads < 1 || depth < 1 || depth > MAX_DEPTH || runtime < 1 || read_pct < 0 || read_pct > 100 || size_mb < 1 || burst < 1)
        usage();
    if (threads > clients)
        threads = clients;
    for (size_t i = 0; i < sizeof write_payload; i++)
        write_payload[i] = (uint8_t)(i * 131 + 7);

    long long rss_idle = server_pid ? proc_rss_kib(server_pid) : -1;
    struct conn *conns = calloc((size_t)clients, sizeof *conns);
    if (!conns) {
        fprintf(stderr, "swapgen: out of memory\n");
        return 1;
    }
    for (int i = 0; i < clients; i++) {
        conns[i].index = i + 1;
        handshake(&conns[i]);
    }
    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    for (int t = 0; t < threads; t++) {
        struct worker *w = &ws[t];
        w->first = t * clients / threads;
        w->count = (t + 1) * clients / threads - w->first;
        w->conns = conns + w->first;
        w->epfd = epoll_create1(0);
        for (int i = 0; i < w->count; i++) {
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->conns[i] };
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->conns[i].fd, &ev);
            if (rate <= 0) {
                while (w->conns[i].nfree > 0)
                    issue(w, &w->conns[i]);
                int f = flush_sends(&w->conns[i]);
                if (f < 0)
                    die("send failed", w->conns[i].index);
                update_interest(w, &w->conns[i], f > 0);
            }
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_create(&ws[t].thread, NULL, run_worker, &ws[t]);
    /* Prefill (swap shape) is not measured: wait until every client has written its region. */
    for (;;) {
        int done = 1;
        for (int i = 0; i < clients && done; i++)
            if (conns[i].prefill_next < conns[i].region)
                done = 0;
        if (done)
            break;
        usleep(10000);
    }
    usleep(500000);
    fprintf(stderr, "swapgen: measuring\n");
    long long cpu_before = server_pid ? proc_cpu_us(server_pid) : -1;
    t0_ns = now_ns();
    measuring = 1;
    sleep((unsigned)runtime);
    measuring = 0;
    double seconds = (double)(now_ns() - t0_ns) / 1e9;
    long long cpu_after = server_pid ? proc_cpu_us(server_pid) : -1;
    long long rss_busy = server_pid ? proc_rss_kib(server_pid) : -1;
    stopping = 1;
    for (int t = 0; t < threads; t++)
        pthread_join(ws[t].thread, NULL);
    struct lat reads = { 0 }, writes = { 0 };
    uint64_t errors = 0;
    for (int t = 0; t < threads; t++) {
        for (size_t i = 0; i < ws[t].reads.n; i++)
            lat_add(&reads, ws[t].reads.v[i]);
        for (size_t i = 0; i < ws[t].writes.n; i++)
            lat_add(&writes, ws[t].writes.v[i]);
        errors += ws[t].errors;
    }
    uint32_t r50 = percentile(&reads, 0.50), r99 = percentile(&reads, 0.99), w99 = percentile(&writes, 0.99);
    double requests = (double)(reads.n + writes.n);
    printf("reads=%zu\twrites=%zu\tread_iops=%.0f\twrite_mibs=%.1f\tread_p50_us=%u\tread_p99_us=%u\twrite_p99_us=%u\terrors=%llu\tclients=%d\tseconds=%.2f",
           reads.n, writes.n, (double)reads.n / seconds, (double)writes.n * WRITE_SIZE / 1048576.0 / seconds, r50, r99, w99,
           (unsigned long long)errors, clients, seconds);
    if (server_pid && cpu_before >= 0 && cpu_after >= 0 && requests > 0)
        printf("\tserver_cpu_us_per_request=%.2f\tserver_cpu_cores=%.2f", (double)(cpu_after - cpu_before) / requests,
               (double)(cpu_after - cpu_before) / 1e6 / seconds);
    if (server_pid && rss_idle >= 0 && rss_busy >= 0)
        printf("\tserver_rss_mib=%.1f\tserver_kib_per_client=%.1f", (double)rss_busy / 1024.0, (double)(rss_busy - rss_idle) / clients);
    printf("\n");
    /*
     * Leave as a clean client does: the requests still queued go out, then NBD_CMD_DISC, and the server's replies are
     * drained to its close, so every area is destroyed at once (not kept for a reconnect) before the next run.
     */
    uint8_t *drain = malloc(256 * 1024);
    struct timeval two = { .tv_sec = 2 };
    for (int i = 0; i < clients; i++) {
        struct conn *c = &conns[i];
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &two, sizeof two);
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &two, sizeof two);
        if (flush_sends(c) == 0) {
            uint8_t h[28] = { 0 };
            *(uint32_t *)h = htobe32(REQ_MAGIC);
            *(uint16_t *)(h + 6) = htobe16(CMD_DISC);
            (void)!write(c->fd, h, sizeof h);
            shutdown(c->fd, SHUT_WR);
        }
    }
    for (int i = 0; i < clients; i++) {
        while (drain && recv(conns[i].fd, drain, 256 * 1024, 0) > 0)
            ;
        close(conns[i].fd);
    }
    free(drain);
    return errors ? 2 : 0;
}
