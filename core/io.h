/* io.h: tensor file formats: safetensors (named tensors + string metadata; checkpoints) and
 * .npy (one array; numpy interop), and the bounded reader and atomic writer they share.
 * Readers are strict: every length, offset and shape product is checked against the file
 * before anything is read, and errors name the file and the problem. CPU tensors only. */
#ifndef GM_IO_H
#define GM_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "gm.h"

/* ---- files (core/file.c) ------------------------------------------------------------------- */
/* A byte source: an open file (read with pread) or a memory buffer. */
typedef struct gm_src {
    const char *what;            /* starts every error message, e.g. "safetensors 'a.st'" */
    int fd;                      /* -1 for memory */
    const unsigned char *mem;
    uint64_t size;
} gm_src;
/* Opens path for reading; a missing or unreadable file is an error naming the path. */
gm_status gm_src_open(gm_ctx *c, const char *what, const char *path, gm_src *s); /* regular files only */
/* What path is, without opening it (a FIFO would block): "file", "directory", "FIFO (named
 * pipe)", "character device", "block device", "socket", "special file"; NULL when absent. */
const char *gm_file_kind(const char *path);
void gm_src_mem(gm_src *s, const char *what, const void *buf, size_t len);
/* Exactly n bytes at off, or an error ("truncated") when the source ends first. */
gm_status gm_src_read(gm_ctx *c, gm_src *s, uint64_t off, void *dst, size_t n);
void gm_src_close(gm_src *s);

/* Atomic replacement of a file: data goes to a temporary file in the same directory, which
 * is fsynced and renamed over `path` by commit; abort (or any failed write) removes it and
 * leaves an existing file untouched. */
typedef struct gm_wfile {
    const char *what;
    const char *path;
    char *tmp;
    int fd;
} gm_wfile;
gm_status gm_wfile_open(gm_ctx *c, const char *what, const char *path, gm_wfile *w);
gm_status gm_wfile_write(gm_ctx *c, gm_wfile *w, const void *buf, size_t n);
/* Writes n items of `size` bytes (2, 4 or 8) in little-endian order whatever the host. */
gm_status gm_wfile_write_le(gm_ctx *c, gm_wfile *w, const void *buf, size_t n, size_t size);
gm_status gm_wfile_commit(gm_ctx *c, gm_wfile *w);
void gm_wfile_abort(gm_wfile *w);

/* ---- safetensors (core/safetensors.c) ------------------------------------------------------ */
/* What a safetensors file holds, in header order. Owned by the caller: gm_st_file_free. */
typedef struct gm_st_file {
    size_t n;
    char **names;
    gm_tensor **tensors;  /* F32, F16, BF16 -> f32; F64 -> f64; I32, I64 (range-checked) -> i32 */
    size_t n_meta;
    char **meta_keys, **meta_vals;
} gm_st_file;
void gm_st_file_free(gm_st_file *f);

#define GM_ST_HEADER_MAX ((uint64_t)100 << 20) /* as the reference reader: 100 MiB */

gm_status gm_safetensors_load(gm_ctx *c, const char *path, gm_st_file *out);
/* The same checks on a file image in memory; `what` names it in errors. */
gm_status gm_safetensors_load_mem(gm_ctx *c, const char *what, const void *buf, size_t len,
                                  gm_st_file *out);
/* Tensors (f32 -> F32, f64 -> F64, i32 -> I32, any strides) sorted by name after the header
 * with its "__metadata__" string map; names must be distinct UTF-8 and not "__metadata__". */
gm_status gm_safetensors_save(gm_ctx *c, const char *path, size_t n, const char *const *names,
                              gm_tensor *const *tensors, size_t n_meta,
                              const char *const *meta_keys, const char *const *meta_vals);

/* ---- .npy (core/npy.c) --------------------------------------------------------------------- */
/* Reads versions 1.0, 2.0 and 3.0; descr <f4 <f8 <i4 (also >-endian), <f2 -> f32,
 * <i8 -> i32 (range-checked); fortran_order True is loaded into C order. */
gm_status gm_npy_load(gm_ctx *c, const char *path, gm_tensor **out);
gm_status gm_npy_load_mem(gm_ctx *c, const char *what, const void *buf, size_t len, gm_tensor **out);
/* Writes version 1.0, C order, <f4 <f8 or <i4. */
gm_status gm_npy_save(gm_ctx *c, const char *path, gm_tensor *x);

/* ---- element conversion shared by the formats (core/file.c) -------------------------------- */
/* File element types gmoe reads, and how each lands in a tensor. */
typedef enum {
    GM_FT_F32, GM_FT_F64, GM_FT_I32, GM_FT_F16, GM_FT_BF16, GM_FT_I64, GM_FT_COUNT
} gm_ftype;
size_t gm_ftype_size(gm_ftype t);
gm_dtype gm_ftype_dtype(gm_ftype t);
/* Fills the new contiguous tensor x (of dtype gm_ftype_dtype(t)) from its numel elements of
 * type t at byte `off` of s (big- or little-endian), converting in bounded chunks. `name`
 * (or NULL) names the tensor in errors. */
gm_status gm_read_elems(gm_ctx *c, gm_src *s, uint64_t off, gm_ftype t, bool big_endian,
                        const char *name, gm_tensor *x);
/* Writes the elements of x (any strides; CPU) little-endian in its own dtype. */
gm_status gm_write_tensor(gm_ctx *c, gm_wfile *w, gm_tensor *x);

#endif
