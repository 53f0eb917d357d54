#include "replproto.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
    NULL, "hello", "eval", "complete", "cancel", "out", "result", "items", "error",
};

const char *dp_repl_type_name(int type)
{
    if (type <= 0 || type >= (int)DP_ARRAY_LEN(type_names))
        return NULL;
    return type_names[type];
}

/* Fields each type must carry. */
enum { F_V = 1, F_ID = 2, F_OK = 4, F_TEXT = 8, F_ITEMS = 16 };

static unsigned required(int type)
{
    switch (type) {
    case DP_RM_HELLO:
        return F_V;
    case DP_RM_EVAL:
    case DP_RM_COMPLETE:
    case DP_RM_OUT:
        return F_ID | F_TEXT;
    case DP_RM_CANCEL:
        return F_ID;
    case DP_RM_RESULT:
        return F_ID | F_OK | F_TEXT;
    case DP_RM_ITEMS:
        return F_ID | F_TEXT | F_ITEMS;
    case DP_RM_ERROR:
        return F_TEXT;
    default:
        return 0;
    }
}

/* ---- encoding ------------------------------------------------------------ */

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_kv(msgpack_packer *pk, const char *key, const char *val)
{
    pack_str(pk, key);
    pack_str(pk, val);
}

int dp_repl_encode(const dp_repl_msg_t *m, char **out, size_t *len, char **err)
{
    const char *name = dp_repl_type_name((int)m->type);
    if (name == NULL)
        return dp_fail(err, DP_EINVAL, "cannot encode a message of unknown type %d", (int)m->type);
    unsigned req = required((int)m->type);
    if ((req & F_TEXT) && m->text == NULL)
        return dp_fail(err, DP_EINVAL, "a \"%s\" message needs text", name);
    if ((req & F_ITEMS) && m->nitems > 0 && m->items == NULL)
        return dp_fail(err, DP_EINVAL, "a \"%s\" message needs items", name);
    if (m->nitems > DP_REPL_MAX_ITEMS)
        return dp_fail(err, DP_EINVAL, "%zu items is more than the %d allowed", m->nitems,
                       DP_REPL_MAX_ITEMS);

    /* Only the fields that the type uses (or optionally carries) are sent. */
    bool has_v = m->type == DP_RM_HELLO;
    bool has_id = (req & F_ID) != 0;
    bool has_ok = (req & F_OK) != 0;
    bool has_text = m->text != NULL;
    bool has_where = m->where != NULL && (m->type == DP_RM_RESULT || m->type == DP_RM_HELLO);
    bool has_token = m->token != NULL && m->type == DP_RM_HELLO;
    bool has_items = (req & F_ITEMS) != 0;
    uint32_t n = 1 + has_v + has_id + has_ok + has_text + has_where + has_token + has_items;

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* Room for the length prefix, filled in at the end. */
    msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
    msgpack_pack_map(&pk, n);
    pack_kv(&pk, "t", name);
    if (has_v) {
        pack_str(&pk, "v");
        msgpack_pack_uint32(&pk, m->version);
    }
    if (has_id) {
        pack_str(&pk, "id");
        msgpack_pack_uint64(&pk, m->id);
    }
    if (has_ok) {
        pack_str(&pk, "ok");
        if (m->ok)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (has_text)
        pack_kv(&pk, "text", m->text);
    if (has_where)
        pack_kv(&pk, "where", m->where);
    if (has_token)
        pack_kv(&pk, "token", m->token);
    if (has_items) {
        pack_str(&pk, "items");
        msgpack_pack_array(&pk, m->nitems);
        for (size_t i = 0; i < m->nitems; i++)
            pack_str(&pk, m->items[i] != NULL ? m->items[i] : "");
    }
    size_t payload = sb.size - 4;
    if (payload > DP_REPL_MAX_FRAME) {
        msgpack_sbuffer_destroy(&sb);
        return dp_fail(err, DP_EINVAL, "a \"%s\" frame of %zu bytes is over the %u byte limit",
                       name, payload, DP_REPL_MAX_FRAME);
    }
    unsigned char *p = (unsigned char *)sb.data;
    p[0] = (unsigned char)(payload >> 24);
    p[1] = (unsigned char)(payload >> 16);
    p[2] = (unsigned char)(payload >> 8);
    p[3] = (unsigned char)payload;
    *out = sb.data;
    *len = sb.size;
    return 0;
}

/* ---- decoding ------------------------------------------------------------ */

/* A strict reader over one payload. It never allocates by a size read from
 * the input before checking that the input holds at least that many bytes. */
typedef struct {
    const unsigned char *p, *end;
    char **err;
} rd_t;

static int bad(rd_t *r, const char *fmt, const char *what)
{
    return dp_fail(r->err, DP_EINVAL, fmt, what);
}

static bool need(rd_t *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a length field of n bytes after the type byte. */
static int read_len(rd_t *r, int n, uint64_t *out)
{
    if (!need(r, (size_t)n))
        return DP_EINVAL;
    *out = be(r->p, n);
    r->p += n;
    return 0;
}

static int read_str(rd_t *r, const char **s, size_t *n, const char *what)
{
    if (!need(r, 1))
        return bad(r, "truncated frame: %s is missing", what);
    unsigned c = *r->p++;
    uint64_t len;
    if ((c & 0xe0) == 0xa0) {
        len = c & 0x1f;
    } else if (c >= 0xd9 && c <= 0xdb) {
        if (read_len(r, 1 << (c - 0xd9), &len) < 0)
            return bad(r, "truncated frame: in the length of %s", what);
    } else {
        return bad(r, "%s must be a string", what);
    }
    if (!need(r, len))
        return bad(r, "truncated frame: %s is longer than the frame", what);
    *s = (const char *)r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int read_uint(rd_t *r, uint64_t *v, const char *what)
{
    if (!need(r, 1))
        return bad(r, "truncated frame: %s is missing", what);
    unsigned c = *r->p++;
    if (c <= 0x7f) {
        *v = c;
        return 0;
    }
    if (c >= 0xcc && c <= 0xcf) {
        if (read_len(r, 1 << (c - 0xcc), v) < 0)
            return bad(r, "truncated frame: in %s", what);
        return 0;
    }
    /* Signed forms holding a non-negative value: other msgpack libraries
     * write small positive numbers that way. */
    if (c >= 0xd0 && c <= 0xd3) {
        int w = 1 << (c - 0xd0);
        if (read_len(r, w, v) < 0)
            return bad(r, "truncated frame: in %s", what);
        if ((*v >> (w * 8 - 1)) & 1)
            return bad(r, "%s must be a non-negative integer", what);
        return 0;
    }
    return bad(r, "%s must be a non-negative integer", what);
}

/* Skips one value of any type (an unknown key's). */
static int skip(rd_t *r, int depth)
{
    if (depth > 32)
        return bad(r, "%s", "value nested too deeply");
    if (!need(r, 1))
        return bad(r, "%s", "truncated frame");
    unsigned c = *r->p++;
    uint64_t n = 0, count = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0;
    if ((c & 0xe0) == 0xa0) {
        n = c & 0x1f;
    } else if ((c & 0xf0) == 0x90) {
        count = c & 0x0f;
    } else if ((c & 0xf0) == 0x80) {
        count = (uint64_t)(c & 0x0f) * 2;
    } else {
        switch (c) {
        case 0xc4:
        case 0xc5:
        case 0xc6:
        case 0xd9:
        case 0xda:
        case 0xdb: {
            int w = c <= 0xc6 ? 1 << (c - 0xc4) : 1 << (c - 0xd9);
            if (read_len(r, w, &n) < 0)
                return bad(r, "%s", "truncated frame");
            break;
        }
        case 0xc7:
        case 0xc8:
        case 0xc9:
            if (read_len(r, 1 << (c - 0xc7), &n) < 0)
                return bad(r, "%s", "truncated frame");
            n += 1; /* the ext type byte */
            break;
        case 0xca:
            n = 4;
            break;
        case 0xcb:
            n = 8;
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            n = (uint64_t)1 << (c - 0xcc);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            n = (uint64_t)1 << (c - 0xd0);
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            n = 1 + ((uint64_t)1 << (c - 0xd4));
            break;
        case 0xdc:
        case 0xdd:
            if (read_len(r, c == 0xdc ? 2 : 4, &count) < 0)
                return bad(r, "%s", "truncated frame");
            break;
        case 0xde:
        case 0xdf:
            if (read_len(r, c == 0xde ? 2 : 4, &count) < 0)
                return bad(r, "%s", "truncated frame");
            count *= 2;
            break;
        default:
            return bad(r, "%s", "invalid msgpack byte 0xc1");
        }
    }
    if (!need(r, n))
        return bad(r, "%s", "truncated frame");
    r->p += n;
    /* Every element takes at least one byte: a count beyond the bytes left is
     * malformed, whatever it claims. */
    if (count > (uint64_t)(r->end - r->p))
        return bad(r, "%s", "truncated frame: a container claims more elements than fit");
    for (uint64_t i = 0; i < count; i++) {
        int rc = skip(r, depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int dup_str(rd_t *r, char **out, const char *what)
{
    const char *s;
    size_t n;
    int rc = read_str(r, &s, &n, what);
    if (rc < 0)
        return rc;
    if (memchr(s, '\0', n) != NULL)
        return bad(r, "%s holds a NUL byte", what);
    free(*out);
    *out = dp_xmalloc(n + 1);
    memcpy(*out, s, n);
    (*out)[n] = '\0';
    return 0;
}

static int read_items(rd_t *r, dp_repl_msg_t *m)
{
    if (!need(r, 1))
        return bad(r, "truncated frame: %s is missing", "\"items\"");
    unsigned c = *r->p++;
    uint64_t count;
    if ((c & 0xf0) == 0x90)
        count = c & 0x0f;
    else if (c == 0xdc || c == 0xdd) {
        if (read_len(r, c == 0xdc ? 2 : 4, &count) < 0)
            return bad(r, "truncated frame: in the length of %s", "\"items\"");
    } else
        return bad(r, "%s must be an array of strings", "\"items\"");
    if (count > DP_REPL_MAX_ITEMS || count > (uint64_t)(r->end - r->p))
        return bad(r, "%s has more entries than allowed or than fit in the frame", "\"items\"");
    for (size_t i = 0; i < m->nitems; i++)
        free(m->items[i]);
    free(m->items);
    m->items = dp_xcalloc(count > 0 ? (size_t)count : 1, sizeof *m->items);
    m->nitems = 0;
    for (uint64_t i = 0; i < count; i++) {
        int rc = dup_str(r, &m->items[i], "an entry of items");
        if (rc < 0)
            return rc;
        m->nitems++;
    }
    return 0;
}

static bool key_is(const char *k, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(k, want, n) == 0;
}

static int decode_payload(rd_t *r, dp_repl_msg_t *m)
{
    if (!need(r, 1))
        return bad(r, "%s", "empty payload");
    unsigned c = *r->p++;
    uint64_t count;
    if ((c & 0xf0) == 0x80)
        count = c & 0x0f;
    else if (c == 0xde || c == 0xdf) {
        if (read_len(r, c == 0xde ? 2 : 4, &count) < 0)
            return bad(r, "%s", "truncated frame: in the map length");
    } else
        return bad(r, "%s", "the payload is not a msgpack map");
    if (count > (uint64_t)(r->end - r->p))
        return bad(r, "%s", "truncated frame: the map claims more entries than fit");
    unsigned seen = 0;
    const char *type = NULL;
    size_t type_len = 0;
    for (uint64_t i = 0; i < count; i++) {
        const char *k;
        size_t kn;
        int rc = read_str(r, &k, &kn, "a map key");
        if (rc < 0)
            return rc;
        uint64_t u;
        if (key_is(k, kn, "t")) {
            rc = read_str(r, &type, &type_len, "\"t\"");
        } else if (key_is(k, kn, "v")) {
            rc = read_uint(r, &u, "\"v\"");
            if (rc == 0 && u > UINT32_MAX)
                rc = bad(r, "%s is out of range", "\"v\"");
            if (rc == 0)
                m->version = (uint32_t)u;
            seen |= F_V;
        } else if (key_is(k, kn, "id")) {
            rc = read_uint(r, &m->id, "\"id\"");
            seen |= F_ID;
        } else if (key_is(k, kn, "ok")) {
            if (!need(r, 1) || (*r->p != 0xc2 && *r->p != 0xc3))
                rc = bad(r, "%s must be a boolean", "\"ok\"");
            else
                m->ok = *r->p++ == 0xc3;
            seen |= F_OK;
        } else if (key_is(k, kn, "text")) {
            rc = dup_str(r, &m->text, "\"text\"");
            seen |= F_TEXT;
        } else if (key_is(k, kn, "where")) {
            rc = dup_str(r, &m->where, "\"where\"");
        } else if (key_is(k, kn, "token")) {
            rc = dup_str(r, &m->token, "\"token\"");
        } else if (key_is(k, kn, "items")) {
            rc = read_items(r, m);
            seen |= F_ITEMS;
        } else {
            rc = skip(r, 0);
        }
        if (rc < 0)
            return rc;
    }
    if (r->p != r->end)
        return bad(r, "%s", "trailing bytes after the map in the frame");
    if (type == NULL)
        return bad(r, "%s", "the message has no type (key \"t\")");
    for (int t = 1; t < (int)DP_ARRAY_LEN(type_names); t++) {
        if (key_is(type, type_len, type_names[t]))
            m->type = (dp_repl_type_t)t;
    }
    if (m->type == 0) {
        /* Shown cut and with control bytes replaced, so the message stays one line. */
        char shown[40];
        size_t n = type_len > 32 ? 32 : type_len;
        for (size_t i = 0; i < n; i++)
            shown[i] = (unsigned char)type[i] < 0x20 || type[i] == 0x7f ? '?' : type[i];
        shown[n] = '\0';
        return dp_fail(r->err, DP_EINVAL, "unknown message type \"%s%s\"", shown,
                       type_len > 32 ? "..." : "");
    }
    unsigned missing = required((int)m->type) & ~seen;
    if (missing != 0) {
        const char *field = missing & F_V      ? "v"
                            : missing & F_ID   ? "id"
                            : missing & F_OK   ? "ok"
                            : missing & F_TEXT ? "text"
                                               : "items";
        return dp_fail(r->err, DP_EINVAL, "a \"%s\" message needs \"%s\"", type_names[m->type],
                       field);
    }
    return 0;
}

int dp_repl_decode(const char *buf, size_t len, dp_repl_msg_t *m, size_t *used, char **err)
{
    if (len < 4)
        return 0;
    uint64_t n = be((const unsigned char *)buf, 4);
    if (n == 0)
        return dp_fail(err, DP_EINVAL, "empty frame (length 0)");
    if (n > DP_REPL_MAX_FRAME)
        return dp_fail(err, DP_EINVAL, "frame of %llu bytes is over the %u byte limit",
                       (unsigned long long)n, DP_REPL_MAX_FRAME);
    if (len - 4 < n)
        return 0;
    memset(m, 0, sizeof *m);
    rd_t r = {(const unsigned char *)buf + 4, (const unsigned char *)buf + 4 + n, err};
    int rc = decode_payload(&r, m);
    if (rc < 0) {
        dp_repl_msg_clear(m);
        return rc;
    }
    *used = (size_t)n + 4;
    return 1;
}

void dp_repl_msg_clear(dp_repl_msg_t *m)
{
    if (m == NULL)
        return;
    free(m->text);
    free(m->where);
    free(m->token);
    for (size_t i = 0; i < m->nitems; i++)
        free(m->items[i]);
    free(m->items);
    memset(m, 0, sizeof *m);
}
