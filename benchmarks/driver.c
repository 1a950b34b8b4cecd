/*
 * driver.c: a load driver for chat servers in C, independent of the project's Python code.
 *
 * One process, one epoll loop, non-blocking sockets. It connects --receivers reading clients and
 * --senders talking clients to a server speaking one of three protocols (--proto):
 *
 *   native  this project's protocol (docs/protocol.md): JOIN bench, SEND <payload>,
 *           receivers get "MSG bench <from> <payload>"
 *   irc     NICK/USER, JOIN #bench (ready on 366), PRIVMSG #bench :<payload>
 *   redis   receivers SUBSCRIBE bench, senders PUBLISH bench <payload> (separate connections
 *           that do not subscribe)
 *
 * Every payload is "L <sender> <seq> <send time, CLOCK_MONOTONIC ns, 19 digits> <padding>" (--size bytes),
 * and EVERY receiving connection parses every payload: it checks per-sender order, loss and
 * duplicates and records the latency (clock read once per read() call) in a log histogram.
 * With --warmup W, the latency figures are of lines sent W seconds or more after the start
 * (every line is still checked for loss and order, and a second histogram keeps them all): a
 * new TCP connection acknowledges its first segments one by one (quick-ack), so the first
 * dozen or so lines each receiver gets cost every server more than the steady state does.
 *
 * Who receives what (the expected deliveries):
 *   native, irc: everyone in the room hears everyone else, so each receiver gets S*M lines and
 *                each sender (S-1)*M: expected = R*S*M + S*(S-1)*M
 *   redis:       only subscribers receive: expected = R*S*M
 * (M counted from what the senders actually sent, so a run cut off by --duration-cap still
 * knows what it should have got.)
 *
 * Pacing: a sender keeps at most --window lines in flight beyond the slowest connection that
 * receives its lines, so no server queue grows without bound; --rate caps lines per second per
 * sender (0: as fast as the window allows), the senders' lines spread evenly over each period.
 *
 * The clock starts when every connection is ready (joined or subscribed) and stops at the last
 * delivery. Over that interval the driver reads its own CPU time (getrusage), the server's
 * (/proc/<--server-pid>/stat, and /proc/<pid>/schedstat for the time it ran and the time it sat
 * ready on the run queue while other programs held its core) and the whole machine's
 * (/proc/stat), so the result shows which side was the bottleneck. Output: one JSON object on stdout. Exit 0 after a run (loss is
 * reported, not fatal), 2 on bad arguments, 3 when setup fails (with a message on stderr).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum proto { P_NATIVE, P_IRC, P_REDIS };
enum state { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_READY, S_CLOSED };

#define READ_SIZE 65536
#define MAX_EVENTS 1024
/* Lines written per sender per loop turn at most (keeps one sender from starving the loop). */
#define BATCH 64
/* After the senders stop (all sent, or the cap), wait for stragglers while lines keep coming:
 * until DRAIN_IDLE_NS pass with none, never longer than DRAIN_LIMIT_NS. */
#define DRAIN_IDLE_NS 2000000000LL
#define DRAIN_LIMIT_NS 15000000000LL
/* Histogram: 16 sub-buckets per power of two of nanoseconds (about 4% wide). */
#define SUB_BITS 4
#define NBUCKETS (64 << SUB_BITS)

typedef struct conn {
    int fd;
    int index;       /* 0..R-1 receivers, R..R+S-1 senders */
    int sender;      /* sender index, or -1 */
    int state;
    int want_out;    /* EPOLLOUT registered */
    int expecting;   /* receives data lines (redis senders do not) */
    char *rbuf;
    size_t rlen;
    char *wbuf;
    size_t woff, wlen, wcap;
    uint32_t *next;  /* per sender: next sequence number expected */
    uint64_t got;    /* data lines received (all, duplicates included) */
    char id[64];     /* native: our id from HELLO */
    size_t idlen;
} conn;

/* -- options ----------------------------------------------------------------------------- */
static int proto = P_NATIVE;
static const char *host = "127.0.0.1";
static int port = 0;
static int nrecv = 10, nsend = 1;
static long messages = 1000;
static int size = 64;
static long window = 128;
static double rate = 0;
static double cap_s = 10.0;
static double warmup_s = 0;
static double setup_s = 120.0;
static double connect_s = 30.0;
/* Connects (and handshakes) in flight at once: keep it inside the server's listen backlog, or
 * the kernel drops the overflow and SYN retries stall setup for seconds (ngIRCd listens with a
 * backlog of 10). */
static int connect_concurrency = 200;
static int server_pid = 0;
static const char *label = "";

/* -- state ------------------------------------------------------------------------------- */
static conn *conns;
static int nconns;
static int epfd;
static struct sockaddr_in addr;
static uint64_t *sent;       /* per sender: lines written */
static uint64_t *min_next;   /* per sender: slowest receiver's next expected seq (cached) */
typedef struct {
    uint64_t buckets[NBUCKETS];
    uint64_t max, count;
} histogram;
static histogram timed;      /* lines sent after --warmup: the latency figures */
static histogram everything; /* every line, warm-up included */
static uint64_t received, duplicates, out_of_order, disconnected;
static int64_t t_start, t_last, t_stop;
static int running;          /* 1 once every connection is ready */
static int stopped;          /* senders stopped (all sent or capped) */
static int capped;
static int64_t last_data;
static char *payload_pad;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "driver: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

static double own_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of process pid (utime + stime), or -1. */
static double proc_cpu(int pid) {
    char path[64], buf[1024];
    if (pid <= 0)
        return -1;
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
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

/* Seconds process pid has run on a CPU and waited for one (on the run queue), from
 * /proc/<pid>/schedstat (nanosecond counters); 0 when unknown. The wait is time the server was
 * ready to work while other programs held its core. */
static int proc_sched(int pid, double *run, double *wait) {
    char path[64];
    unsigned long long r = 0, w = 0;
    *run = *wait = 0;
    if (pid <= 0)
        return 0;
    if (pid == getpid())
        snprintf(path, sizeof path, "/proc/self/schedstat");
    else
        snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &r, &w);
    fclose(f);
    if (n != 2)
        return 0;
    *run = r / 1e9;
    *wait = w / 1e9;
    return 1;
}

/* CPU seconds all processors spent busy since boot (/proc/stat), or -1. */
static double machine_busy(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 4)
        return -1;
    unsigned long long total = 0;
    for (int i = 0; i < 8; i++)
        total += v[i];
    return (double)(total - v[3] - v[4]) / sysconf(_SC_CLK_TCK);
}

/* -- buffers ----------------------------------------------------------------------------- */

static void wreserve(conn *c, size_t more) {
    if (c->woff && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen + more <= c->wcap)
        return;
    if (c->woff) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
        if (c->wlen + more <= c->wcap)
            return;
    }
    size_t cap = c->wcap ? c->wcap : 4096;
    while (cap < c->wlen + more)
        cap *= 2;
    c->wbuf = realloc(c->wbuf, cap);
    if (!c->wbuf)
        die(4, "out of memory");
    c->wcap = cap;
}

static void wput(conn *c, const char *s, size_t n) {
    wreserve(c, n);
    memcpy(c->wbuf + c->wlen, s, n);
    c->wlen += n;
}

static void wputs(conn *c, const char *s) { wput(c, s, strlen(s)); }

static void set_out(conn *c, int on) {
    if (c->want_out == on || c->state == S_CLOSED)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void close_conn(conn *c, const char *why) {
    if (c->state == S_CLOSED)
        return;
    if (!running)
        die(3, "connection %d closed during setup (%s)%s%.*s", c->index, why, c->rlen ? "; last bytes: " : "",
            (int)(c->rlen > 200 ? 200 : c->rlen), c->rbuf);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = S_CLOSED;
    disconnected++;
    fprintf(stderr, "driver: connection %d closed during the run (%s)\n", c->index, why);
}

static void flush(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(c, 1);
            return;
        }
        close_conn(c, n == 0 ? "send returned 0" : strerror(errno));
        return;
    }
    c->woff = c->wlen = 0;
    set_out(c, 0);
}

/* -- payloads ---------------------------------------------------------------------------- */

static void record(histogram *h, uint64_t v) {
    if (v > h->max)
        h->max = v;
    int msb = 63 - __builtin_clzll(v);
    int b;
    if (msb < SUB_BITS)
        b = (int)v;
    else
        b = ((msb - SUB_BITS + 1) << SUB_BITS) + (int)((v >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1));
    if (b >= NBUCKETS)
        b = NBUCKETS - 1;
    h->buckets[b]++;
    h->count++;
}

/* A line sent at sent_ns (CLOCK_MONOTONIC) arrived ns later. */
static void record_latency(int64_t ns, int64_t sent_ns) {
    uint64_t v = ns < 1 ? 1 : (uint64_t)ns;
    record(&everything, v);
    if (sent_ns >= t_start + (int64_t)(warmup_s * 1e9))
        record(&timed, v);
}

/* Upper bound (ns) of histogram bucket b. */
static double bucket_upper(int b) {
    if (b < (1 << SUB_BITS))
        return b + 1;
    int e = (b >> SUB_BITS) - 1 + SUB_BITS;
    uint64_t sub = b & ((1 << SUB_BITS) - 1);
    return (double)(((uint64_t)1 << e) + ((sub + 1) << (e - SUB_BITS)));
}

static double percentile(const histogram *h, double q) {
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)(q * h->count);
    if (want >= h->count)
        want = h->count - 1;
    uint64_t seen = 0;
    for (int b = 0; b < NBUCKETS; b++) {
        seen += h->buckets[b];
        if (seen > want) {
            double up = bucket_upper(b);
            return up > h->max ? (double)h->max : up;
        }
    }
    return (double)h->max;
}

static inline const char *parse_u64(const char *p, const char *end, uint64_t *out) {
    uint64_t v = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *out = v;
    return p == s ? NULL : p;
}

/* The send time is written as exactly NS_DIGITS decimal digits (zero-padded: int64 nanoseconds
 * fit) so that it can be read 8 digits at a time: a digit-by-digit loop over it was the driver's
 * hottest code. */
#define NS_DIGITS 19

/* Eight ASCII digits to their value (SWAR, little-endian). */
static inline __attribute__((always_inline)) uint64_t digits8(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    return (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
            (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
}

static inline int all_digits8(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    /* every byte in '0'..'9': no byte below '0' and none above '9' */
    return (((v & 0xF0F0F0F0F0F0F0F0ULL) == 0x3030303030303030ULL) &&
            (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) == 0x3030303030303030ULL));
}

static inline const char *parse_ns(const char *p, const char *end, uint64_t *out) {
    if (end - p < NS_DIGITS || !all_digits8(p) || !all_digits8(p + 8))
        return NULL;
    uint64_t v = digits8(p) * 100000000ULL + digits8(p + 8);
    p += 16;
    for (int i = 16; i < NS_DIGITS; i++, p++) {
        if (*p < '0' || *p > '9')
            return NULL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return p;
}

/* One payload "L <sender> <seq> <ns> ..." of len bytes received by c at time now. */
static void on_payload(conn *c, const char *p, size_t len, int64_t now) {
    const char *end = p + len;
    uint64_t s, seq, ns;
    if (len < 2 || p[0] != 'L' || p[1] != ' ')
        return; /* not ours (someone else talking in the room) */
    p += 2;
    if (!(p = parse_u64(p, end, &s)) || p >= end || *p++ != ' ' || !(p = parse_u64(p, end, &seq)) ||
        p >= end || *p++ != ' ' || !(p = parse_ns(p, end, &ns)) || s >= (uint64_t)nsend)
        return;
    c->got++;
    received++;
    last_data = now;
    t_last = now;
    uint32_t want = c->next[s];
    if (seq == want) {
        c->next[s] = want + 1;
    } else if (seq > want) {
        out_of_order++; /* a gap: the missing ones count as lost unless they come later */
        c->next[s] = (uint32_t)seq + 1;
    } else {
        duplicates++;
    }
    record_latency(now - (int64_t)ns, (int64_t)ns);
}

/* -- setup and protocol lines ------------------------------------------------------------ */

static void became_ready(conn *c) {
    if (c->state != S_READY)
        c->state = S_READY;
}

static void start_handshake(conn *c) {
    char buf[128];
    c->state = S_HANDSHAKE;
    switch (proto) {
    case P_NATIVE:
        break; /* the server speaks first: HELLO */
    case P_IRC:
        snprintf(buf, sizeof buf, "NICK d%d\r\nUSER d%d 0 * :d\r\n", c->index, c->index);
        wputs(c, buf);
        break;
    case P_REDIS:
        wputs(c, c->sender >= 0 ? "PING\r\n" : "SUBSCRIBE bench\r\n");
        break;
    }
    flush(c);
}

/* A native line (without its \n). */
static void native_line(conn *c, const char *l, size_t n, int64_t now) {
    if (n > 10 && memcmp(l, "MSG bench ", 10) == 0) {
        const char *sp = memchr(l + 10, ' ', n - 10);
        if (sp)
            on_payload(c, sp + 1, n - (sp + 1 - l), now);
        return;
    }
    if (n >= 4 && memcmp(l, "PING", 4) == 0) {
        wput(c, "PONG", 4);
        wput(c, l + 4, n - 4);
        wput(c, "\n", 1);
        return;
    }
    if (n >= 4 && memcmp(l, "BYE ", 4) == 0) {
        fprintf(stderr, "driver: connection %d: %.*s\n", c->index, (int)n, l);
        return;
    }
    if (c->state == S_HANDSHAKE) {
        if (n > 6 && memcmp(l, "HELLO ", 6) == 0 && !c->idlen) {
            const char *sp = memchr(l + 6, ' ', n - 6);
            size_t idn = (sp ? sp : l + n) - (l + 6);
            if (idn >= sizeof c->id)
                die(3, "id too long");
            memcpy(c->id, l + 6, idn);
            c->idlen = idn;
            wputs(c, "JOIN bench\n");
        } else if (c->idlen && n == 11 + c->idlen && memcmp(l, "JOIN bench ", 11) == 0 &&
                   memcmp(l + 11, c->id, c->idlen) == 0) {
            became_ready(c);
        } else if (n > 4 && memcmp(l, "ERR ", 4) == 0) {
            die(3, "connection %d: %.*s", c->index, (int)n, l);
        }
    }
}

/* An IRC line (without \r\n). */
static void irc_line(conn *c, const char *l, size_t n, int64_t now) {
    if (n && l[0] == ':') {
        const char *sp = memchr(l, ' ', n);
        if (!sp)
            return;
        const char *cmd = sp + 1;
        size_t rest = n - (cmd - l);
        if (rest > 16 && memcmp(cmd, "PRIVMSG #bench :", 16) == 0) {
            on_payload(c, cmd + 16, rest - 16, now);
            return;
        }
        if (c->state == S_HANDSHAKE) {
            if (rest >= 4 && memcmp(cmd, "001 ", 4) == 0) {
                wputs(c, "JOIN #bench\r\n");
            } else if (rest >= 4 && memcmp(cmd, "366 ", 4) == 0) {
                became_ready(c);
            } else if (rest >= 4 && (memcmp(cmd, "433 ", 4) == 0 || memcmp(cmd, "432 ", 4) == 0 ||
                                     memcmp(cmd, "471 ", 4) == 0 || memcmp(cmd, "405 ", 4) == 0)) {
                die(3, "connection %d: %.*s", c->index, (int)n, l);
            }
        }
        return;
    }
    if (n >= 5 && memcmp(l, "PING ", 5) == 0) {
        wput(c, "PONG ", 5);
        wput(c, l + 5, n - 5);
        wput(c, "\r\n", 2);
        return;
    }
    if (n >= 6 && memcmp(l, "ERROR ", 6) == 0)
        fprintf(stderr, "driver: connection %d: %.*s\n", c->index, (int)n, l);
}

/* Redis during setup: "+PONG" for a sender, the subscribe confirmation ending in ":1" for a
 * receiver. Returns 1 when this line completed the handshake. */
static int redis_setup_line(conn *c, const char *l, size_t n) {
    if (n && l[0] == '-')
        die(3, "connection %d: redis says %.*s", c->index, (int)n, l);
    if (c->sender >= 0 && n == 5 && memcmp(l, "+PONG", 5) == 0) {
        became_ready(c);
        return 1;
    }
    if (c->sender < 0 && n >= 2 && l[0] == ':') {
        became_ready(c);
        return 1;
    }
    return 0;
}

static const char REDIS_MSG[] = "*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$";
#define REDIS_MSG_LEN (sizeof REDIS_MSG - 1)

/* Consume what c's buffer holds; returns bytes used. */
static size_t consume(conn *c, int64_t now) {
    char *buf = c->rbuf, *p = buf, *end = buf + c->rlen;
    while (p < end) {
        if (proto == P_REDIS && c->state == S_READY) {
            if (c->sender >= 0) {
                /* PUBLISH replies (":<count>\r\n"): discard whole lines */
                char *nl = memchr(p, '\n', end - p);
                if (!nl)
                    break;
                if (*p == '-')
                    fprintf(stderr, "driver: connection %d: redis says %.*s\n", c->index, (int)(nl - p), p);
                p = nl + 1;
                continue;
            }
            size_t avail = end - p;
            if (avail < REDIS_MSG_LEN + 3)
                break;
            if (memcmp(p, REDIS_MSG, REDIS_MSG_LEN) != 0) {
                char *nl = memchr(p, '\n', avail); /* not a message: skip a line */
                if (!nl)
                    break;
                p = nl + 1;
                continue;
            }
            uint64_t len;
            const char *q = parse_u64(p + REDIS_MSG_LEN, end, &len);
            if (!q || end - q < 2)
                break;
            q += 2; /* \r\n */
            if ((uint64_t)(end - q) < len + 2)
                break;
            on_payload(c, q, len, now);
            p = (char *)q + len + 2;
            continue;
        }
        char *nl = memchr(p, '\n', end - p);
        if (!nl)
            break;
        size_t n = nl - p;
        if (n && p[n - 1] == '\r')
            n--;
        if (proto == P_NATIVE)
            native_line(c, p, n, now);
        else if (proto == P_IRC)
            irc_line(c, p, n, now);
        else
            redis_setup_line(c, p, n);
        p = nl + 1;
    }
    return p - buf;
}

static void on_readable(conn *c, int64_t now) {
    for (int i = 0; i < 4 && c->state != S_CLOSED; i++) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, READ_SIZE, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            close_conn(c, n == 0 ? "closed by the server" : strerror(errno));
            return;
        }
        c->rlen += n;
        now = now_ns(); /* latency is taken at each read, not at the loop turn */
        size_t used = consume(c, now);
        if (used) {
            memmove(c->rbuf, c->rbuf + used, c->rlen - used);
            c->rlen -= used;
        }
        if (c->rlen > READ_SIZE) /* a line longer than 64 KiB: not ours */
            close_conn(c, "line too long");
        if (n < READ_SIZE)
            break;
    }
    if (c->state != S_CLOSED && c->wlen > c->woff)
        flush(c);
}

/* -- connecting -------------------------------------------------------------------------- */

static int start_connect(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die(3, "socket: %s (open-files limit?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS)
        die(3, "connect to %s:%d: %s", host, port, strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die(3, "epoll_ctl: %s", strerror(errno));
    c->want_out = 1;
    c->state = S_CONNECTING;
    return 0;
}

static void on_connected(conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err)
        die(3, "connect to %s:%d: %s", host, port, strerror(err));
    set_out(c, 0);
    start_handshake(c);
}

/* -- sending ----------------------------------------------------------------------------- */

/* Slowest receiving connection's progress on sender s (every connection but s's own). */
static uint64_t slowest(int s) {
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (!c->expecting || c->sender == s || c->state == S_CLOSED)
            continue;
        if (c->next[s] < m)
            m = c->next[s];
    }
    return m == UINT64_MAX ? sent[s] : m;
}

static void append_message(conn *c, int s, uint64_t seq, int64_t t) {
    char head[96];
    int hn = snprintf(head, sizeof head, "L %d %llu %0*lld ", s, (unsigned long long)seq, NS_DIGITS, (long long)t);
    int pad = size - hn;
    if (pad < 1)
        pad = 1;
    switch (proto) {
    case P_NATIVE:
        wput(c, "SEND ", 5);
        break;
    case P_IRC:
        wput(c, "PRIVMSG #bench :", 16);
        break;
    case P_REDIS: {
        char rh[96];
        int n = snprintf(rh, sizeof rh, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n", hn + pad);
        wput(c, rh, n);
        break;
    }
    }
    wput(c, head, hn);
    wput(c, payload_pad, pad);
    wput(c, proto == P_NATIVE ? "\n" : "\r\n", proto == P_NATIVE ? 1 : 2);
}

/* Returns 1 when sender s may send more now (window and rate), after writing what it may. */
static void pump(int s, int64_t now) {
    conn *c = &conns[nrecv + s];
    if (c->state == S_CLOSED || (uint64_t)messages <= sent[s])
        return;
    if (c->wlen - c->woff > 256 * 1024)
        return; /* the kernel is not taking it yet */
    uint64_t allowed = (uint64_t)messages;
    if (rate > 0) {
        /* sender s says its k-th line at (k + s/S) / rate: spread evenly, not all senders at
         * the same instant (which makes a burst of S fan-outs whose queueing is the latency) */
        double at = (now - t_start) / 1e9 * rate - (double)s / nsend;
        uint64_t due = at < 0 ? 0 : (uint64_t)at + 1;
        if (due < allowed)
            allowed = due;
    }
    uint64_t lim = min_next[s] + (uint64_t)window;
    if (sent[s] >= lim) {
        min_next[s] = slowest(s);
        lim = min_next[s] + (uint64_t)window;
    }
    if (lim < allowed)
        allowed = lim;
    int k = 0;
    while (sent[s] < allowed && k < BATCH) {
        append_message(c, s, sent[s], now_ns());
        sent[s]++;
        k++;
    }
    if (k)
        flush(c);
}

/* -- main -------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: driver --proto native|irc|redis --port PORT [--host 127.0.0.1] [--receivers R]\n"
            "              [--senders S] [--messages M] [--size BYTES] [--window W] [--rate PER_SEC]\n"
            "              [--duration-cap SECONDS] [--warmup SECONDS] [--setup-timeout SECONDS]\n"
            "              [--connect-timeout SECONDS]"
            "              [--connect-concurrency N] [--server-pid PID] [--label TEXT]\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--proto")) {
            if (!strcmp(v, "native"))
                proto = P_NATIVE;
            else if (!strcmp(v, "irc"))
                proto = P_IRC;
            else if (!strcmp(v, "redis"))
                proto = P_REDIS;
            else
                usage();
        } else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--receivers"))
            nrecv = atoi(v);
        else if (!strcmp(a, "--senders"))
            nsend = atoi(v);
        else if (!strcmp(a, "--messages"))
            messages = atol(v);
        else if (!strcmp(a, "--size"))
            size = atoi(v);
        else if (!strcmp(a, "--window"))
            window = atol(v);
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--duration-cap"))
            cap_s = atof(v);
        else if (!strcmp(a, "--warmup"))
            warmup_s = atof(v);
        else if (!strcmp(a, "--setup-timeout"))
            setup_s = atof(v);
        else if (!strcmp(a, "--connect-timeout"))
            connect_s = atof(v);
        else if (!strcmp(a, "--connect-concurrency"))
            connect_concurrency = atoi(v);
        else if (!strcmp(a, "--server-pid"))
            server_pid = atoi(v);
        else if (!strcmp(a, "--label"))
            label = v;
        else
            usage();
    }
    if (port <= 0 || port > 65535 || nrecv < 0 || nsend < 1 || messages < 1 || size < 48 || size > 400 ||
        window < 1 || cap_s <= 0 || warmup_s < 0 || connect_concurrency < 1)
        usage();
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(host, NULL, &hints, &res) != 0)
            die(2, "unknown host %s", host);
        addr.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    payload_pad = malloc(size + 1);
    memset(payload_pad, 'x', size);

    nconns = nrecv + nsend;
    conns = calloc(nconns, sizeof *conns);
    sent = calloc(nsend, sizeof *sent);
    min_next = calloc(nsend, sizeof *min_next);
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        c->index = i;
        c->sender = i >= nrecv ? i - nrecv : -1;
        c->expecting = !(proto == P_REDIS && c->sender >= 0) && !(c->sender >= 0 && nsend == 1);
        c->rbuf = malloc(2 * READ_SIZE + 1);
        c->next = calloc(nsend, sizeof *c->next);
        if (!c->rbuf || !c->next)
            die(4, "out of memory");
        c->fd = -1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event evs[MAX_EVENTS];

    /* setup: connect with bounded concurrency, handshake, until every connection is ready */
    int64_t t0 = now_ns(), setup_deadline = t0 + (int64_t)(setup_s * 1e9);
    int next_connect = 0, ready = 0;
    int64_t last_progress = t0;
    while (ready < nconns) {
        int inflight = 0;
        ready = 0;
        for (int i = 0; i < next_connect; i++) {
            if (conns[i].state == S_READY)
                ready++;
            else
                inflight++;
        }
        while (next_connect < nconns && inflight < connect_concurrency) {
            start_connect(&conns[next_connect++]);
            inflight++;
        }
        if (ready == nconns)
            break;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 100);
        int64_t now = now_ns();
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state == S_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_connected(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c, now);
            if ((evs[i].events & EPOLLOUT) && c->state != S_CLOSED)
                flush(c);
        }
        if (n > 0)
            last_progress = now;
        if (now > setup_deadline || now - last_progress > (int64_t)(connect_s * 1e9)) {
            int st[5] = {0};
            for (int i = 0; i < nconns; i++)
                st[conns[i].state]++;
            die(3, "setup: %s: %d of %d connections ready (%d connecting, %d in handshake, %d not started)",
                now > setup_deadline ? "setup timeout" : "no progress for --connect-timeout", ready, nconns,
                st[S_CONNECTING], st[S_HANDSHAKE], st[S_IDLE]);
        }
    }
    double setup_seconds = (now_ns() - t0) / 1e9;

    /* the run */
    double cpu0 = own_cpu(), srv0 = proc_cpu(server_pid), mach0 = machine_busy(), run0, wait0;
    int sched = proc_sched(server_pid, &run0, &wait0);
    double drun0, dwait0, drun1, dwait1;
    int dsched = proc_sched(getpid(), &drun0, &dwait0);
    running = 1;
    t_start = now_ns();
    t_last = t_start;
    last_data = t_start;
    int64_t cap_at = t_start + (int64_t)(cap_s * 1e9);
    uint64_t expected_total = 0;
    for (;;) {
        int64_t now = now_ns();
        if (!stopped) {
            int all = 1;
            for (int s = 0; s < nsend; s++) {
                pump(s, now);
                if (sent[s] < (uint64_t)messages && conns[nrecv + s].state != S_CLOSED)
                    all = 0;
            }
            if (all || now >= cap_at) {
                stopped = 1;
                capped = !all;
                t_stop = now;
                last_data = now > last_data ? now : last_data;
            }
        }
        /* what every open receiving connection should have, from what was sent */
        uint64_t sent_all = 0;
        for (int s = 0; s < nsend; s++)
            sent_all += sent[s];
        if (stopped) {
            int complete = 1;
            for (int i = 0; i < nconns && complete; i++) {
                conn *c = &conns[i];
                if (!c->expecting || c->state == S_CLOSED)
                    continue;
                uint64_t want = sent_all - (c->sender >= 0 ? sent[c->sender] : 0);
                if (c->got < want)
                    complete = 0;
            }
            if (complete || now - last_data > DRAIN_IDLE_NS || now - t_stop > DRAIN_LIMIT_NS)
                break;
        }
        int timeout = 10;
        if (rate > 0 && !stopped)
            timeout = 1;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c, now);
            if ((evs[i].events & EPOLLOUT) && c->state != S_CLOSED)
                flush(c);
        }
    }
    int64_t t_end = t_last > t_start ? t_last : now_ns();
    double cpu1 = own_cpu(), srv1 = proc_cpu(server_pid), mach1 = machine_busy(), run1, wait1;
    sched = proc_sched(server_pid, &run1, &wait1) && sched;
    dsched = proc_sched(getpid(), &drun1, &dwait1) && dsched;

    uint64_t sent_all = 0, lost = 0, unique = 0;
    for (int s = 0; s < nsend; s++)
        sent_all += sent[s];
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (!c->expecting)
            continue;
        uint64_t want = sent_all - (c->sender >= 0 ? sent[c->sender] : 0);
        expected_total += want;
        /* unique lines from sender s: next[s] minus the gaps skipped over (counted as out of order) */
    }
    unique = received - duplicates;
    lost = expected_total > unique ? expected_total - unique : 0;
    double elapsed = (t_end - t_start) / 1e9;
    double send_elapsed = ((stopped ? t_stop : t_end) - t_start) / 1e9;
    double driver_cpu = cpu1 - cpu0;
    double server_cpu = (srv0 >= 0 && srv1 >= 0) ? srv1 - srv0 : -1;
    double machine = (mach0 >= 0 && mach1 >= 0) ? mach1 - mach0 : -1;
    double other = machine >= 0 ? machine - driver_cpu - (server_cpu > 0 ? server_cpu : 0) : -1;
    if (other < 0 && machine >= 0)
        other = 0;
    const char *pname = proto == P_NATIVE ? "native" : proto == P_IRC ? "irc" : "redis";
    printf("{\"driver\": \"benchmarks/driver.c\", \"label\": \"%s\", \"proto\": \"%s\", "
           "\"receivers\": %d, \"senders\": %d, \"messages_per_sender\": %ld, \"size\": %d, \"window\": %ld, "
           "\"rate\": %g, \"expectation\": \"%s\", "
           "\"setup_seconds\": %.3f, \"elapsed_seconds\": %.6f, \"send_seconds\": %.6f, \"capped\": %s, "
           "\"sent\": %llu, \"messages_in_per_sec\": %.1f, \"expected\": %llu, \"received\": %llu, "
           "\"deliveries_per_sec\": %.1f, \"lost\": %llu, \"duplicates\": %llu, \"out_of_order\": %llu, "
           "\"disconnected\": %llu, "
           "\"warmup_seconds\": %g, "
           "\"latency_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"max\": %.4f, \"samples\": %llu}, "
           "\"latency_with_warmup_ms\": {\"p50\": %.4f, \"p99\": %.4f, \"max\": %.4f, \"samples\": %llu}, "
           "\"driver_cpu_seconds\": %.3f, \"driver_cpu_share\": %.3f, \"driver_wait_share\": %.3f, "
           "\"server_cpu_seconds\": %.3f, \"server_cpu_share\": %.3f, \"server_run_share\": %.3f, "
           "\"server_wait_share\": %.3f, \"other_cpu_share\": %.3f}\n",
           label, pname, nrecv, nsend, messages, size, window, rate,
           proto == P_REDIS ? "receivers*sent (senders do not subscribe)"
                            : "receivers*sent + each sender hears the other senders",
           setup_seconds, elapsed, send_elapsed, capped ? "true" : "false", (unsigned long long)sent_all,
           send_elapsed > 0 ? sent_all / send_elapsed : 0.0, (unsigned long long)expected_total,
           (unsigned long long)unique, elapsed > 0 ? unique / elapsed : 0.0, (unsigned long long)lost,
           (unsigned long long)duplicates, (unsigned long long)out_of_order, (unsigned long long)disconnected,
           warmup_s, percentile(&timed, 0.50) / 1e6, percentile(&timed, 0.90) / 1e6,
           percentile(&timed, 0.99) / 1e6, timed.max / 1e6, (unsigned long long)timed.count,
           percentile(&everything, 0.50) / 1e6, percentile(&everything, 0.99) / 1e6, everything.max / 1e6,
           (unsigned long long)everything.count, driver_cpu, elapsed > 0 ? driver_cpu / elapsed : 0.0,
           dsched && elapsed > 0 ? (dwait1 - dwait0) / elapsed : -1.0, server_cpu,
           elapsed > 0 && server_cpu >= 0 ? server_cpu / elapsed : -1.0,
           sched && elapsed > 0 ? (run1 - run0) / elapsed : -1.0, sched && elapsed > 0 ? (wait1 - wait0) / elapsed : -1.0,
           elapsed > 0 && other >= 0 ? other / elapsed : -1.0);
    fflush(stdout);
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != S_CLOSED && conns[i].fd >= 0)
            close(conns[i].fd);
    return 0;
}
