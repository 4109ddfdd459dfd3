/* file.c: what the tensor formats share: a bounds-checked byte source (file or memory), an
 * atomic writer (temporary file in the same directory, fsync, rename), and element
 * conversion between file types (little/big-endian F32 F64 I32 F16 BF16 I64) and tensors. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK ((size_t)1 << 16) /* bytes converted per step: bounded scratch memory */

static bool host_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void swap_bytes(unsigned char *p, size_t n, size_t size) {
    for (size_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b], p[b] = t;
        }
}

/* ---- reading ------------------------------------------------------------------------------- */
static const char *kind_of(mode_t m) {
    return S_ISREG(m) ? "file" : S_ISDIR(m) ? "directory" : S_ISFIFO(m) ? "FIFO (named pipe)"
         : S_ISCHR(m) ? "character device" : S_ISBLK(m) ? "block device" : S_ISSOCK(m) ? "socket" : "special file";
}

const char *gm_file_kind(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? kind_of(sb.st_mode) : NULL;
}

gm_status gm_src_open(gm_ctx *c, const char *what, const char *path, gm_src *s) {
    memset(s, 0, sizeof *s);
    s->what = what;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever */
    s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0) return gm_errf(c, GM_EIO, "%s: cannot open: %s", what, strerror(errno));
    struct stat sb;
    if (fstat(s->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        const char *kind = e ? NULL : kind_of(sb.st_mode);
        gm_src_close(s);
        return gm_errf(c, GM_EIO, "%s: cannot read: %s%s%s", what, kind ? "it is a " : "", kind ? kind : strerror(e),
                       kind ? ", not a regular file" : "");
    }
    fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK);
    s->size = (uint64_t)sb.st_size;
    return GM_OK;
}

void gm_src_mem(gm_src *s, const char *what, const void *buf, size_t len) {
    memset(s, 0, sizeof *s);
    s->what = what;
    s->fd = -1;
    s->mem = buf;
    s->size = len;
}

gm_status gm_src_read(gm_ctx *c, gm_src *s, uint64_t off, void *dst, size_t n) {
    if (off > s->size || n > s->size - off)
        return gm_errf(c, GM_EIO, "%s: truncated: needs bytes up to %llu but the file has %llu",
                       s->what, (unsigned long long)off + n, (unsigned long long)s->size);
    if (s->fd < 0) {
        if (n) memcpy(dst, s->mem + off, n);
        return GM_OK;
    }
    char *d = dst;
    while (n > 0) {
        ssize_t r = pread(s->fd, d, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return gm_errf(c, GM_EIO, "%s: read failed at byte %llu: %s", s->what,
                           (unsigned long long)off, r < 0 ? strerror(errno) : "file shrank");
        d += r, off += (uint64_t)r, n -= (size_t)r;
    }
    return GM_OK;
}

void gm_src_close(gm_src *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
}

/* ---- atomic writing ------------------------------------------------------------------------ */
gm_status gm_wfile_open(gm_ctx *c, const char *what, const char *path, gm_wfile *w) {
    memset(w, 0, sizeof *w);
    w->what = what, w->path = path, w->fd = -1;
    size_t n = strlen(path);
    w->tmp = malloc(n + 16);
    if (!w->tmp) return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp-XXXXXX", 12);
    w->fd = mkstemp(w->tmp);
    if (w->fd < 0) {
        int e = errno;
        free(w->tmp);
        w->tmp = NULL;
        return gm_errf(c, GM_EIO, "%s: cannot create a file next to it: %s", what, strerror(e));
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would. */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(w->fd, 0666 & ~mask) != 0) { /* harmless: the file stays private */ }
    return GM_OK;
}

gm_status gm_wfile_write(gm_ctx *c, gm_wfile *w, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            gm_status st = gm_errf(c, GM_EIO, "%s: write failed: %s", w->what, strerror(errno));
            gm_wfile_abort(w);
            return st;
        }
        p += r, n -= (size_t)r;
    }
    return GM_OK;
}

gm_status gm_wfile_write_le(gm_ctx *c, gm_wfile *w, const void *buf, size_t n, size_t size) {
    if (host_le() || size == 1) return gm_wfile_write(c, w, buf, n * size);
    unsigned char tmp[CHUNK];
    const unsigned char *p = buf;
    size_t per = CHUNK / size;
    while (n > 0) {
        size_t k = n < per ? n : per;
        memcpy(tmp, p, k * size);
        swap_bytes(tmp, k, size);
        gm_status st = gm_wfile_write(c, w, tmp, k * size);
        if (st != GM_OK) return st;
        p += k * size, n -= k;
    }
    return GM_OK;
}

gm_status gm_wfile_commit(gm_ctx *c, gm_wfile *w) {
    gm_status st = GM_OK;
    if (fsync(w->fd) != 0 && errno != EINVAL)
        st = gm_errf(c, GM_EIO, "%s: fsync failed: %s", w->what, strerror(errno));
    if (close(w->fd) != 0 && st == GM_OK)
        st = gm_errf(c, GM_EIO, "%s: close failed: %s", w->what, strerror(errno));
    w->fd = -1;
    if (st == GM_OK && rename(w->tmp, w->path) != 0)
        st = gm_errf(c, GM_EIO, "%s: cannot rename the temporary file over it: %s", w->what,
                     strerror(errno));
    if (st != GM_OK) unlink(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
    return st;
}

void gm_wfile_abort(gm_wfile *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
}

/* ---- element conversion -------------------------------------------------------------------- */
size_t gm_ftype_size(gm_ftype t) {
    switch (t) {
    case GM_FT_F16: case GM_FT_BF16: return 2;
    case GM_FT_F64: case GM_FT_I64: return 8;
    default: return 4;
    }
}

gm_dtype gm_ftype_dtype(gm_ftype t) {
    switch (t) {
    case GM_FT_F64: return GM_F64;
    case GM_FT_I32: case GM_FT_I64: return GM_I32;
    default: return GM_F32;
    }
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0 && man == 0) bits = sign;
    else if (exp == 0) { /* subnormal: normalise the mantissa */
        exp = 127 - 14;
        while (!(man & 0x400u)) man <<= 1, exp--;
        bits = sign | exp << 23 | (man & 0x3ffu) << 13;
    } else if (exp == 31) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (exp + 127 - 15) << 23 | man << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

gm_status gm_read_elems(gm_ctx *c, gm_src *s, uint64_t off, gm_ftype t, bool big_endian,
                        const char *name, gm_tensor *x) {
    size_t size = gm_ftype_size(t);
    size_t n = (size_t)gm_tensor_numel(x);
    unsigned char *dst = gm_tensor_data(x);
    bool swap = big_endian == host_le() && size > 1;
    if (t == GM_FT_F32 || t == GM_FT_F64 || t == GM_FT_I32) { /* same layout: read in place */
        gm_status st = gm_src_read(c, s, off, dst, n * size);
        if (st == GM_OK && swap) swap_bytes(dst, n, size);
        return st;
    }
    unsigned char *tmp = malloc(CHUNK);
    if (!tmp) return gm_errf(c, GM_ENOMEM, "%s: out of memory", s->what);
    size_t per = CHUNK / size;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < per ? n - i : per;
        gm_status st = gm_src_read(c, s, off + (uint64_t)i * size, tmp, k * size);
        if (st != GM_OK) { free(tmp); return st; }
        if (swap) swap_bytes(tmp, k, size);
        for (size_t j = 0; j < k; j++) {
            const unsigned char *q = tmp + j * size;
            if (t == GM_FT_F16 || t == GM_FT_BF16) {
                uint16_t h;
                memcpy(&h, q, 2);
                float f;
                if (t == GM_FT_F16) f = f16_to_f32(h);
                else {
                    uint32_t bits = (uint32_t)h << 16;
                    memcpy(&f, &bits, 4);
                }
                ((float *)dst)[i + j] = f;
            } else { /* I64 -> i32 */
                int64_t v;
                memcpy(&v, q, 8);
                if (v < INT32_MIN || v > INT32_MAX) {
                    free(tmp);
                    return gm_errf(c, GM_EDTYPE, "%s: %s%s%selement %zu is %lld, outside the i32 "
                                   "range (gmoe reads 64-bit integers as i32)", s->what,
                                   name ? "tensor '" : "", name ? name : "", name ? "': " : "",
                                   i + j, (long long)v);
                }
                ((int32_t *)dst)[i + j] = (int32_t)v;
            }
        }
        i += k;
    }
    free(tmp);
    return GM_OK;
}

gm_status gm_write_tensor(gm_ctx *c, gm_wfile *w, gm_tensor *x) {
    gm_tensor *xc = NULL;
    gm_status st = gm_tensor_contiguous(c, x, &xc);
    if (st != GM_OK) {
        gm_wfile_abort(w);
        return st;
    }
    st = gm_wfile_write_le(c, w, gm_tensor_data(xc), (size_t)gm_tensor_numel(xc),
                           gm_dtype_size(xc->dtype));
    gm_tensor_release(xc);
    return st;
}
