/* Exact lz4-frame sizes of many concatenations x ⊕ y_j, reusing the parse of x.

   `lz4.frame.compress(x + y)` at levels 0-2 (python-lz4 defaults: 64 KB blocks, content size
   stored, no checksums) is one LZ4 block made by LZ4's fast parser (lz4 1.9.4,
   LZ4_compress_generic with a 16-bit hash table, no dictionary, output capped at srcSize-1 so
   that an incompressible block is stored raw). The parser reads its input strictly left to
   right, so every decision it makes while all the bytes it looks at lie inside x, and while no
   end-of-input limit is in reach, is the same for every y. We run the parser over x once
   ("prefix mode"), stop at the last such point (a checkpoint: parser registers plus the hash
   table), and for each y_j resume from the checkpoint (registers and a copy of its table) over
   x ⊕ y_j. Only compressed *sizes* are computed; no bytes are written.

   This is a transcription of the reference parser's decisions, verified against the real codec
   by tests/compress/test_compress.py; pairs it does not cover (frames of more than one block, an empty y)
   return -1 and the caller compresses them with the codec itself. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HASH_LOG 13 /* LZ4_MEMORY_USAGE 14 -> LZ4_HASHLOG 12, +1 for the 16-bit table */
#define MINMATCH 4
#define LASTLITERALS 5
#define MFLIMIT 12
#define SKIP_TRIGGER 6
#define RUN_MASK 15
#define ML_MASK 15
#define BLOCK_MAX 65536     /* python-lz4's default block size: larger inputs span blocks */
#define FRAME_OVERHEAD 23   /* magic 4 + FLG + BD + content size 8 + HC, block header 4, end mark 4 */

static inline uint32_t read32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t hash_at(const uint8_t *p) {
    return (read32(p) * 2654435761U) >> (32 - HASH_LOG);
}

/* Number of equal bytes at a and b, stopping at `limit` (LZ4_count). */
static inline int32_t count_common(const uint8_t *s, int32_t a, int32_t b, int32_t limit) {
    const int32_t start = a;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (a + 8 <= limit) {
        uint64_t u, v;
        memcpy(&u, s + a, 8);
        memcpy(&v, s + b, 8);
        if (u != v) return a - start + (__builtin_ctzll(u ^ v) >> 3);
        a += 8;
        b += 8;
    }
#endif
    while (a < limit && s[a] == s[b]) {
        a++;
        b++;
    }
    return a - start;
}

/* Hash table. In prefix mode every write is logged so that the last checkpoint can be restored;
   full-mode runs start from a copy of the checkpoint's table instead. */
typedef struct {
    uint16_t table[1 << HASH_LOG];
    uint32_t *log_h;
    uint16_t *log_v;
    Py_ssize_t nlog;
} Table;

static inline __attribute__((always_inline)) void put(Table *t, uint32_t h, int32_t pos,
                                                      int prefix) {
    if (prefix) {
        t->log_h[t->nlog] = h;
        t->log_v[t->nlog] = t->table[h];
        t->nlog++;
    }
    t->table[h] = (uint16_t)pos;
}

static void rollback(Table *t) {
    while (t->nlog > 0) {
        t->nlog--;
        t->table[t->log_h[t->nlog]] = t->log_v[t->nlog];
    }
}

enum { AT_START, AT_SEARCH, AT_MATCH };

/* Parser registers at a checkpoint: the top of the match search, or the start of a match
   (`_next_match` in lz4.c, its token already counted). */
typedef struct {
    int phase;
    int32_t ip, anchor, match;
    int64_t op;
    uint32_t fh; /* hash of ip, at AT_SEARCH */
} State;

/* Runs the parser over s[0:n] from *st.
   Full mode (prefix == 0): returns the block's compressed size, or 0 when it does not fit in
   n-1 bytes (the frame then stores the block raw).
   Prefix mode: s holds x only (n = |x|) and the true length is some N > n. Limits are those of
   N = n+1, and every event whose outcome could differ for a larger N (a limit reached, an
   output-budget check failing) or that would read past x stops the run: *st and the table are
   left at the last checkpoint and -1 is returned. */
static inline __attribute__((always_inline)) int64_t parse(const uint8_t *s, int32_t n, int prefix,
                                                           int accel, State *st, Table *t) {
    const int32_t N = prefix ? n + 1 : n;
    const int32_t mflimit_plus_one = N - MFLIMIT + 1;
    const int32_t matchlimit = N - LASTLITERALS;
    const int64_t olimit = (int64_t)N - 1;
    State c = *st;
    int32_t ip = c.ip, anchor = c.anchor, match = c.match;
    int64_t op = c.op;
    uint32_t fh = c.fh;

#define CHECKPOINT(ph)                                                                           \
    do {                                                                                         \
        if (prefix) {                                                                            \
            c.phase = (ph); c.ip = ip; c.anchor = anchor; c.match = match; c.op = op; c.fh = fh; \
            t->nlog = 0;                                                                         \
        }                                                                                        \
    } while (0)
#define UNSURE()              \
    do {                      \
        if (prefix) {         \
            rollback(t);      \
            *st = c;          \
            return -1;        \
        }                     \
    } while (0)

    if (c.phase == AT_MATCH) goto next_match;
    if (c.phase == AT_START) {
        if (N < MFLIMIT + 1) {
            UNSURE();
            goto last_literals;
        }
        put(t, hash_at(s), 0, prefix);
        ip = 1;
        anchor = 0;
        op = 0;
        fh = hash_at(s + 1);
        CHECKPOINT(AT_SEARCH);
    }

    for (;;) {
        /* Find a match: probe positions with a step that grows after failures. */
        {
            int32_t fwd = ip;
            int32_t step = 1;
            int32_t search = accel << SKIP_TRIGGER;
            for (;;) {
                const uint32_t h = fh;
                const int32_t cur = fwd;
                const int32_t cand = t->table[h];
                ip = fwd;
                fwd += step;
                step = search++ >> SKIP_TRIGGER;
                if (fwd > mflimit_plus_one) {
                    UNSURE();
                    goto last_literals;
                }
                match = cand;
                fh = hash_at(s + fwd);
                put(t, h, cur, prefix);
                if (read32(s + match) == read32(s + ip)) break;
            }
        }
        /* Catch up backwards. */
        while (ip > anchor && match > 0 && s[ip - 1] == s[match - 1]) {
            ip--;
            match--;
        }
        /* Literal run: token, length bytes, literals. */
        {
            const int64_t lit = ip - anchor;
            op++;
            if (op + lit + (2 + 1 + LASTLITERALS) + lit / 255 > olimit) {
                UNSURE();
                return 0;
            }
            if (lit >= RUN_MASK) op += (lit - RUN_MASK) / 255 + 1;
            op += lit;
        }
        CHECKPOINT(AT_MATCH);
    next_match:
        op += 2; /* offset */
        {
            int32_t code = count_common(s, ip + MINMATCH, match + MINMATCH, matchlimit);
            if (prefix && ip + MINMATCH + code >= matchlimit) UNSURE(); /* may run into y */
            ip += code + MINMATCH;
            if (op + (1 + LASTLITERALS) + (code + 240) / 255 > olimit) {
                UNSURE();
                return 0;
            }
            if (code >= ML_MASK) op += (code - ML_MASK) / 255 + 1;
        }
        anchor = ip;
        if (ip >= mflimit_plus_one) {
            UNSURE();
            break;
        }
        put(t, hash_at(s + ip - 2), ip - 2, prefix);
        {
            const uint32_t h = hash_at(s + ip);
            const int32_t cand = t->table[h];
            put(t, h, ip, prefix);
            if (read32(s + cand) == read32(s + ip)) {
                match = cand;
                op++; /* token of a match with no literals */
                CHECKPOINT(AT_MATCH);
                goto next_match;
            }
        }
        fh = hash_at(s + (++ip));
        CHECKPOINT(AT_SEARCH);
    }

last_literals:
    {
        const int64_t run = N - anchor;
        if (op + run + 1 + (run + 255 - RUN_MASK) / 255 > olimit) return 0;
        op += 1 + run;
        if (run >= RUN_MASK) op += (run - RUN_MASK) / 255 + 1;
    }
    return op;
#undef CHECKPOINT
#undef UNSURE
}

static int64_t parse_prefix(const uint8_t *s, int32_t n, int accel, State *st, Table *t) {
    return parse(s, n, 1, accel, st, t);
}

static int64_t parse_full(const uint8_t *s, int32_t n, int accel, State *st, Table *t) {
    return parse(s, n, 0, accel, st, t);
}

static int64_t frame_size(int64_t block, int64_t n) {
    if (block == 0 || block >= n) block = n; /* stored raw */
    return block + FRAME_OVERHEAD;
}

/* pair_sizes(xs, ys, acceleration, out): out[i * len(ys) + j] = len(lz4.frame.compress(
   xs[i] + ys[j])) for levels 0-2 (acceleration 1), or -1 where the pair spans several blocks
   or ys[j] is empty (the caller compresses those with the codec). */
static PyObject *pair_sizes(PyObject *self, PyObject *args) {
    PyObject *xs_obj, *ys_obj;
    int accel;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "OOiw*", &xs_obj, &ys_obj, &accel, &out)) return NULL;
    PyObject *xs = PySequence_Tuple(xs_obj);
    PyObject *ys = xs ? PySequence_Tuple(ys_obj) : NULL;
    const uint8_t **xp = NULL, **yp = NULL;
    Py_ssize_t *xl = NULL, *yl = NULL;
    uint8_t *buf = NULL;
    Table *t = NULL;
    uint16_t *snap_table = NULL;
    PyObject *result = NULL;
    if (!ys) goto done;
    const Py_ssize_t nx = PyTuple_GET_SIZE(xs), ny = PyTuple_GET_SIZE(ys);
    if (accel < 1) accel = 1;
    if (out.len != (Py_ssize_t)(nx * ny * sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "out must hold len(xs) * len(ys) int64 values");
        goto done;
    }
    xp = PyMem_Calloc(nx + 1, sizeof(*xp));
    yp = PyMem_Calloc(ny + 1, sizeof(*yp));
    xl = PyMem_Calloc(nx + 1, sizeof(*xl));
    yl = PyMem_Calloc(ny + 1, sizeof(*yl));
    t = PyMem_Calloc(1, sizeof(Table));
    snap_table = PyMem_Malloc(sizeof(t->table));
    if (!xp || !yp || !xl || !yl || !t || !snap_table) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t xmax = 0, ymax = 0;
    for (Py_ssize_t i = 0; i < nx; i++) {
        PyObject *o = PyTuple_GET_ITEM(xs, i);
        if (!PyBytes_Check(o)) {
            PyErr_SetString(PyExc_TypeError, "xs must hold bytes");
            goto done;
        }
        xp[i] = (const uint8_t *)PyBytes_AS_STRING(o);
        xl[i] = PyBytes_GET_SIZE(o);
        if (xl[i] > xmax) xmax = xl[i];
    }
    for (Py_ssize_t j = 0; j < ny; j++) {
        PyObject *o = PyTuple_GET_ITEM(ys, j);
        if (!PyBytes_Check(o)) {
            PyErr_SetString(PyExc_TypeError, "ys must hold bytes");
            goto done;
        }
        yp[j] = (const uint8_t *)PyBytes_AS_STRING(o);
        yl[j] = PyBytes_GET_SIZE(o);
        if (yl[j] > ymax) ymax = yl[j];
    }
    if (xmax > BLOCK_MAX) xmax = BLOCK_MAX;
    if (ymax > BLOCK_MAX) ymax = BLOCK_MAX;
    /* Prefix mode logs at most one table write per position of x plus two per match. */
    const Py_ssize_t cap = 2 * xmax + 64;
    buf = PyMem_Malloc(xmax + ymax + 8);
    t->log_h = PyMem_Malloc(cap * sizeof(uint32_t));
    t->log_v = PyMem_Malloc(cap * sizeof(uint16_t));
    if (!buf || !t->log_h || !t->log_v) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *o = (int64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nx; i++) {
        const Py_ssize_t m = xl[i];
        if (m > BLOCK_MAX) {
            for (Py_ssize_t j = 0; j < ny; j++) o[i * ny + j] = -1;
            continue;
        }
        memcpy(buf, xp[i], m);
        memset(t->table, 0, sizeof(t->table));
        t->nlog = 0;
        State snap = {AT_START, 0, 0, 0, 0, 0};
        if (m > 0) parse_prefix(buf, (int32_t)m, accel, &snap, t);
        memcpy(snap_table, t->table, sizeof(t->table));
        for (Py_ssize_t j = 0; j < ny; j++) {
            const Py_ssize_t n = m + yl[j];
            /* The checkpoint assumes bytes after x: an empty y is left to the codec. */
            if (n > BLOCK_MAX || yl[j] == 0) {
                o[i * ny + j] = -1;
                continue;
            }
            memcpy(buf + m, yp[j], yl[j]);
            memcpy(t->table, snap_table, sizeof(t->table));
            State st = snap;
            o[i * ny + j] = frame_size(parse_full(buf, (int32_t)n, accel, &st, t), n);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&out);
    Py_XDECREF(xs);
    Py_XDECREF(ys);
    PyMem_Free(xp);
    PyMem_Free(yp);
    PyMem_Free(xl);
    PyMem_Free(yl);
    PyMem_Free(buf);
    if (t) {
        PyMem_Free(t->log_h);
        PyMem_Free(t->log_v);
        PyMem_Free(t);
    }
    PyMem_Free(snap_table);
    return result;
}

static PyMethodDef methods[] = {
    {"pair_sizes", pair_sizes, METH_VARARGS,
     "pair_sizes(xs, ys, acceleration, out): exact lz4-frame sizes of xs[i] + ys[j] (levels "
     "0-2) into the int64 buffer out [len(xs) * len(ys)]; -1 where the pair exceeds one 64 KB "
     "block or y is empty. Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lz4pair", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lz4pair(void) { return PyModule_Create(&module); }
