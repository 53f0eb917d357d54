/* Lua <-> msgpack conversion (see lmsgpack.h for the mapping).
 *
 * Packing walks the Lua value with raw accesses only, so no metamethod or
 * other Lua code runs and nothing can raise: errors come back as DP_EINVAL
 * with the key path of the offending value. Map keys are sorted so that equal
 * tables always encode to identical bytes, which snapshots rely on.
 *
 * Decoding does not use msgpack-c's unpacker. Its C unpacker in msgpack-c 4.x
 * refuses containers nested deeper than 32 (MSGPACK_EMBED_STACK_SIZE is
 * compiled into the library), so state we may pack (up to DP_LMP_MAX_DEPTH)
 * could not be read back. It also allocates memory for the element count a
 * header declares before any element is read, so a five-byte payload can make
 * it ask for tens of gigabytes. The small parser below checks declared counts
 * against the bytes actually present, reports where input was truncated, and
 * builds ordinary msgpack_objects so that decoding still goes through
 * dp_lmp_push. */
#include "lmsgpack.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A map key or array index, as recorded for sorting and for error paths.
 * String pointers stay valid because the key is kept on the Lua stack while
 * the descriptor is in use. */
typedef struct {
    int type; /* LUA_TBOOLEAN, LUA_TNUMBER, LUA_TSTRING or another Lua type */
    bool isint;
    bool b;
    lua_Integer i;
    lua_Number n;
    const char *s;
    size_t len;
    int slot; /* Stack index holding the key (map keys only). */
} lmp_key;

typedef struct {
    lua_State *L;
    msgpack_packer *pk;
    const char *root;
    char **err;
    /* Number of tables enclosing the value being packed; also the number of
     * entries of path[] that lead from the root to it. */
    int depth;
    const void *ancestors[DP_LMP_MAX_DEPTH];
    lmp_key path[DP_LMP_MAX_DEPTH + 1];
} pack_ctx;

/* A growable string used only to build error messages. */
typedef struct {
    char *s;
    size_t len;
    size_t cap;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = dp_xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static bool is_identifier(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool alpha = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
        if (!alpha && (i == 0 || ch < '0' || ch > '9'))
            return false;
    }
    return true;
}

/* Appends one path component. Odd string keys are quoted, with control bytes
 * escaped so that the message stays printable on one line. */
static void path_add_key(lua_State *L, strbuf *b, const lmp_key *k)
{
    char tmp[32];
    if (k->type == LUA_TSTRING && is_identifier(k->s, k->len)) {
        sb_puts(b, ".");
        sb_add(b, k->s, k->len);
    } else if (k->type == LUA_TSTRING) {
        sb_puts(b, "[\"");
        for (size_t i = 0; i < k->len; i++) {
            unsigned char ch = (unsigned char)k->s[i];
            if (ch == '"' || ch == '\\') {
                tmp[0] = '\\';
                tmp[1] = (char)ch;
                sb_add(b, tmp, 2);
            } else if (ch < 0x20 || ch == 0x7f) {
                snprintf(tmp, sizeof(tmp), "\\x%02x", ch);
                sb_puts(b, tmp);
            } else {
                sb_add(b, (const char *)&ch, 1);
            }
        }
        sb_puts(b, "\"]");
    } else if (k->type == LUA_TNUMBER && k->isint) {
        snprintf(tmp, sizeof(tmp), "[%lld]", (long long)k->i);
        sb_puts(b, tmp);
    } else {
        sb_puts(b, "[");
        sb_puts(b, lua_typename(L, k->type));
        sb_puts(b, "]");
    }
}

/* Fails with `<path of the first n components>: <what>`. */
static int path_fail(pack_ctx *c, int n, int code, const char *what)
{
    strbuf b = {0};
    sb_puts(&b, c->root);
    for (int i = 0; i < n; i++)
        path_add_key(c->L, &b, &c->path[i]);
    dp_fail(c->err, code, "%s: %s", b.s, what);
    free(b.s);
    return code;
}

/* msgpack-c packers only fail when the buffer's write callback cannot grow
 * the buffer, so any failure is an out-of-memory condition. */
static int pk_check(pack_ctx *c, int rc)
{
    if (rc != 0)
        return path_fail(c, c->depth, DP_ENOMEM, "out of memory while packing");
    return DP_OK;
}

static void key_describe(lua_State *L, int idx, lmp_key *k)
{
    memset(k, 0, sizeof(*k));
    k->type = lua_type(L, idx);
    k->slot = idx;
    switch (k->type) {
    case LUA_TBOOLEAN:
        k->b = lua_toboolean(L, idx);
        break;
    case LUA_TNUMBER:
        k->isint = lua_isinteger(L, idx);
        if (k->isint)
            k->i = lua_tointeger(L, idx);
        else
            k->n = lua_tonumber(L, idx);
        break;
    case LUA_TSTRING:
        /* The value is already a string, so lua_tolstring neither converts
         * nor allocates. */
        k->s = lua_tolstring(L, idx, &k->len);
        break;
    default:
        break;
    }
}

static int type_rank(int type)
{
    switch (type) {
    case LUA_TBOOLEAN:
        return 0;
    case LUA_TNUMBER:
        return 1;
    default:
        return 2;
    }
}

/* Exact comparison of an integer with a float. Converting the integer to a
 * double could round and make distinct keys compare equal, which would make
 * the order depend on the table's internal layout. */
static int cmp_int_float(lua_Integer i, lua_Number f)
{
    if (f >= 9223372036854775808.0)
        return -1;
    if (f < -9223372036854775808.0)
        return 1;
    lua_Number fl = floor(f);
    lua_Integer fi = (lua_Integer)fl;
    if (i != fi)
        return i < fi ? -1 : 1;
    return fl == f ? 0 : -1;
}

static int cmp_keys(const void *pa, const void *pb)
{
    const lmp_key *a = pa;
    const lmp_key *b = pb;
    int ra = type_rank(a->type);
    int rb = type_rank(b->type);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    if (a->type == LUA_TBOOLEAN)
        return (int)a->b - (int)b->b;
    if (a->type == LUA_TNUMBER) {
        if (a->isint && b->isint)
            return a->i < b->i ? -1 : a->i > b->i;
        if (a->isint)
            return cmp_int_float(a->i, b->n);
        if (b->isint)
            return -cmp_int_float(b->i, a->n);
        return a->n < b->n ? -1 : a->n > b->n;
    }
    size_t n = a->len < b->len ? a->len : b->len;
    int r = n ? memcmp(a->s, b->s, n) : 0;
    if (r != 0)
        return r;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* Checks that the key at the top of the stack can be a msgpack map key. */
static int check_key(pack_ctx *c)
{
    lua_State *L = c->L;
    lmp_key *k = &c->path[c->depth];
    key_describe(L, -1, k);
    if (k->type == LUA_TBOOLEAN || k->type == LUA_TSTRING)
        return DP_OK;
    if (k->type == LUA_TNUMBER) {
        /* Lua refuses NaN table keys, so this only guards against a future
         * change; a NaN key could not be decoded again. */
        if (!k->isint && isnan(k->n))
            return path_fail(c, c->depth + 1, DP_EINVAL, "cannot store a NaN key");
        return DP_OK;
    }
    char what[64];
    snprintf(what, sizeof(what), "cannot use a %s as a key", lua_typename(L, k->type));
    return path_fail(c, c->depth + 1, DP_EINVAL, what);
}

static int pack_value(pack_ctx *c, int idx);

/* Packs the element whose path component is already in path[depth]; the
 * element itself is at the top of the stack. */
static int pack_child(pack_ctx *c, const void *self)
{
    c->ancestors[c->depth] = self;
    c->depth++;
    int rc = pack_value(c, lua_gettop(c->L));
    c->depth--;
    lua_pop(c->L, 1);
    return rc;
}

static int pack_array(pack_ctx *c, int idx, const void *self, lua_Integer n)
{
    lua_State *L = c->L;
    int rc = pk_check(c, msgpack_pack_array(c->pk, (size_t)n));
    for (lua_Integer i = 1; rc == DP_OK && i <= n; i++) {
        lmp_key *k = &c->path[c->depth];
        memset(k, 0, sizeof(*k));
        k->type = LUA_TNUMBER;
        k->isint = true;
        k->i = i;
        lua_rawgeti(L, idx, i);
        rc = pack_child(c, self);
    }
    return rc;
}

static int pack_key(pack_ctx *c, const lmp_key *k)
{
    switch (k->type) {
    case LUA_TBOOLEAN:
        return pk_check(c, k->b ? msgpack_pack_true(c->pk) : msgpack_pack_false(c->pk));
    case LUA_TNUMBER:
        if (k->isint)
            return pk_check(c, msgpack_pack_int64(c->pk, k->i));
        return pk_check(c, msgpack_pack_double(c->pk, k->n));
    default:
        if (msgpack_pack_str(c->pk, k->len) != 0)
            return pk_check(c, -1);
        return pk_check(c, msgpack_pack_str_body(c->pk, k->s, k->len));
    }
}

/* Sorting needs every key at hand at once. The keys are kept on the Lua stack
 * (rather than in a Lua table) because growing the stack with lua_checkstack
 * reports failure instead of raising; the C array holds what the comparison
 * needs plus the stack slot used to look the value up again. */
static int pack_map(pack_ctx *c, int idx, const void *self, size_t count)
{
    lua_State *L = c->L;
    if (count == 0)
        return pk_check(c, msgpack_pack_map(c->pk, 0));
    if (count > (size_t)INT_MAX - 16 || !lua_checkstack(L, (int)count + 4)) {
        /* The Lua stack is capped at LUAI_MAXSTACK (a million slots). */
        char what[80];
        snprintf(what, sizeof(what), "table has too many keys to sort (%zu)", count);
        return path_fail(c, c->depth, DP_ENOMEM, what);
    }
    lmp_key *keys = malloc(count * sizeof(*keys));
    if (keys == NULL)
        return path_fail(c, c->depth, DP_ENOMEM, "out of memory sorting table keys");

    int base = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        /* Keep one copy of the key and leave another on top for lua_next.
         * The count cannot grow since the first pass (no Lua code runs), but
         * the reserved stack must not be overrun even so. */
        lua_pop(L, 1);
        if (n == count) {
            lua_pop(L, 1);
            break;
        }
        lua_pushvalue(L, -1);
        n++;
    }
    for (size_t i = 0; i < n; i++)
        key_describe(L, base + 1 + (int)i, &keys[i]);
    qsort(keys, n, sizeof(*keys), cmp_keys);

    int rc = pk_check(c, msgpack_pack_map(c->pk, n));
    for (size_t i = 0; rc == DP_OK && i < n; i++) {
        rc = pack_key(c, &keys[i]);
        if (rc != DP_OK)
            break;
        c->path[c->depth] = keys[i];
        lua_pushvalue(L, keys[i].slot);
        lua_rawget(L, idx);
        rc = pack_child(c, self);
    }
    free(keys);
    lua_settop(L, base);
    return rc;
}

static int pack_table(pack_ctx *c, int idx)
{
    lua_State *L = c->L;
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++) {
        if (c->ancestors[i] == self)
            return path_fail(c, c->depth, DP_EINVAL, "cycle (table refers to itself)");
    }
    if (c->depth >= DP_LMP_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof(what), "nesting deeper than %d", DP_LMP_MAX_DEPTH);
        return path_fail(c, c->depth, DP_EINVAL, what);
    }
    if (!lua_checkstack(L, 4))
        return path_fail(c, c->depth, DP_ENOMEM, "out of Lua stack space");

    /* First pass: validate the keys and decide between array and map. Keys
     * are distinct, so `count` integer keys all within 1..count are exactly
     * 1..count. */
    size_t count = 0;
    lua_Integer maxkey = 0;
    bool array = true;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        int rc = check_key(c);
        if (rc != DP_OK) {
            lua_pop(L, 1);
            return rc;
        }
        const lmp_key *k = &c->path[c->depth];
        if (k->type == LUA_TNUMBER && k->isint && k->i >= 1) {
            if (k->i > maxkey)
                maxkey = k->i;
        } else {
            array = false;
        }
        count++;
    }
    if (count > UINT32_MAX)
        return path_fail(c, c->depth, DP_EINVAL, "table has more than 2^32-1 entries");
    if (array && count > 0 && (uint64_t)maxkey == count)
        return pack_array(c, idx, self, maxkey);
    return pack_map(c, idx, self, count);
}

static int pack_value(pack_ctx *c, int idx)
{
    lua_State *L = c->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return pk_check(c, msgpack_pack_nil(c->pk));
    case LUA_TBOOLEAN:
        return pk_check(c, lua_toboolean(L, idx) ? msgpack_pack_true(c->pk)
                                                 : msgpack_pack_false(c->pk));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return pk_check(c, msgpack_pack_int64(c->pk, lua_tointeger(L, idx)));
        return pk_check(c, msgpack_pack_double(c->pk, lua_tonumber(L, idx)));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > UINT32_MAX)
            return path_fail(c, c->depth, DP_EINVAL, "string longer than 4 GiB");
        if (msgpack_pack_str(c->pk, len) != 0)
            return pk_check(c, -1);
        return pk_check(c, msgpack_pack_str_body(c->pk, s, len));
    }
    case LUA_TTABLE:
        return pack_table(c, idx);
    case LUA_TFUNCTION:
        return path_fail(c, c->depth, DP_EINVAL, "cannot store a function");
    case LUA_TUSERDATA:
    case LUA_TLIGHTUSERDATA:
        return path_fail(c, c->depth, DP_EINVAL, "cannot store userdata");
    case LUA_TTHREAD:
        return path_fail(c, c->depth, DP_EINVAL, "cannot store a coroutine");
    default:
        return path_fail(c, c->depth, DP_EINVAL, "cannot store a value of this type");
    }
}

int dp_lmp_pack(lua_State *L, int idx, msgpack_packer *pk, const char *root, char **err)
{
    pack_ctx c;
    c.L = L;
    c.pk = pk;
    c.root = root != NULL ? root : "value";
    c.err = err;
    c.depth = 0;
    int top = lua_gettop(L);
    int rc = pack_value(&c, lua_absindex(L, idx));
    lua_settop(L, top);
    return rc;
}

/* ---- Lua from msgpack_object ---- */

static int push_obj(lua_State *L, const msgpack_object *o, int depth, char **err);

static int check_map_key(const msgpack_object *k, char **err)
{
    switch (k->type) {
    case MSGPACK_OBJECT_NIL:
        return dp_fail(err, DP_EINVAL, "msgpack map has a nil key");
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isnan(k->via.f64))
            return dp_fail(err, DP_EINVAL, "msgpack map has a NaN key");
        return DP_OK;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        /* Lua would accept a table key, but it could never be packed again,
         * so refuse it here rather than fail on the next snapshot. */
        return dp_fail(err, DP_EINVAL, "msgpack map has %s as a key",
                       k->type == MSGPACK_OBJECT_ARRAY ? "an array" : "a map");
    default:
        return DP_OK;
    }
}

static int push_container(lua_State *L, const msgpack_object *o, int depth, char **err)
{
    if (depth >= DP_LMP_MAX_DEPTH)
        return dp_fail(err, DP_EINVAL, "msgpack data nested deeper than %d", DP_LMP_MAX_DEPTH);
    /* A table, a key and a value are on the stack per level at most. */
    if (!lua_checkstack(L, 4))
        return dp_fail(err, DP_ENOMEM, "out of Lua stack space decoding msgpack");
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = o->via.array.size;
        lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
        for (uint32_t i = 0; i < n; i++) {
            int rc = push_obj(L, &o->via.array.ptr[i], depth + 1, err);
            if (rc != DP_OK)
                return rc;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return DP_OK;
    }
    uint32_t n = o->via.map.size;
    lua_createtable(L, 0, n > INT_MAX ? INT_MAX : (int)n);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        int rc = check_map_key(&kv->key, err);
        if (rc == DP_OK)
            rc = push_obj(L, &kv->key, depth + 1, err);
        if (rc == DP_OK)
            rc = push_obj(L, &kv->val, depth + 1, err);
        if (rc != DP_OK)
            return rc;
        lua_rawset(L, -3);
    }
    return DP_OK;
}

/* Pushes one value. On error the caller restores the stack top, so partial
 * tables left behind here do not matter. */
static int push_obj(lua_State *L, const msgpack_object *o, int depth, char **err)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        lua_pushnil(L);
        return DP_OK;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return DP_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* Lua has no unsigned integers; a float keeps the magnitude. */
        if (o->via.u64 > (uint64_t)INT64_MAX)
            lua_pushnumber(L, (lua_Number)o->via.u64);
        else
            lua_pushinteger(L, (lua_Integer)o->via.u64);
        return DP_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)o->via.i64);
        return DP_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, (lua_Number)o->via.f64);
        return DP_OK;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
        return DP_OK;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
        return DP_OK;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        return push_container(L, o, depth, err);
    case MSGPACK_OBJECT_EXT:
        return dp_fail(err, DP_EINVAL, "msgpack ext type %d is not supported",
                       (int)o->via.ext.type);
    default:
        return dp_fail(err, DP_EINVAL, "unknown msgpack object type %d", (int)o->type);
    }
}

int dp_lmp_push(lua_State *L, const msgpack_object *obj, char **err)
{
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 4))
        return dp_fail(err, DP_ENOMEM, "out of Lua stack space decoding msgpack");
    int rc = push_obj(L, obj, 0, err);
    if (rc != DP_OK)
        lua_settop(L, top);
    return rc;
}

/* ---- Convenience wrappers and the parser behind dp_lmp_decode ---- */

int dp_lmp_encode(lua_State *L, int idx, const char *root, char **out, size_t *len, char **err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    *out = NULL;
    *len = 0;
    int rc = dp_lmp_pack(L, idx, &pk, root, err);
    if (rc != DP_OK) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    return DP_OK;
}

typedef struct {
    const unsigned char *p;
    size_t len;
    size_t off;
    msgpack_zone *zone;
    char **err;
} reader;

static int rd_truncated(reader *r, size_t start)
{
    return dp_fail(r->err, DP_EINVAL,
                   "truncated msgpack data at byte %zu (value at byte %zu is incomplete)", r->len,
                   start);
}

static uint64_t rd_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads an n-byte big-endian length or value field at the read position;
 * `start` is where the value being parsed began, for error messages. */
static int rd_uint(reader *r, size_t start, int n, uint64_t *v)
{
    if (r->len - r->off < (size_t)n)
        return rd_truncated(r, start);
    *v = rd_be(r->p + r->off, n);
    r->off += (size_t)n;
    return DP_OK;
}

static int rd_bytes(reader *r, size_t start, uint64_t n, const char **ptr)
{
    if (r->len - r->off < n)
        return rd_truncated(r, start);
    *ptr = (const char *)r->p + r->off;
    r->off += (size_t)n;
    return DP_OK;
}

static int parse_obj(reader *r, msgpack_object *o, int depth);

/* Every element takes at least one byte, so a count larger than what is
 * left is known to be truncated before anything is allocated. That bounds
 * the memory used to a small multiple of the input size. */
static int parse_container(reader *r, msgpack_object *o, size_t start, uint64_t n, bool map,
                           int depth)
{
    if (depth >= DP_LMP_MAX_DEPTH)
        return dp_fail(r->err, DP_EINVAL, "msgpack data nested deeper than %d (at byte %zu)",
                       DP_LMP_MAX_DEPTH, start);
    uint64_t left = r->len - r->off;
    if (map ? n > left / 2 : n > left)
        return rd_truncated(r, start);
    size_t size = map ? sizeof(msgpack_object_kv) : sizeof(msgpack_object);
    void *items = NULL;
    if (n > 0) {
        items = msgpack_zone_malloc(r->zone, (size_t)n * size);
        if (items == NULL)
            return dp_fail(r->err, DP_ENOMEM, "out of memory decoding msgpack");
    }
    if (map) {
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.size = (uint32_t)n;
        o->via.map.ptr = items;
        for (uint64_t i = 0; i < n; i++) {
            int rc = parse_obj(r, &o->via.map.ptr[i].key, depth + 1);
            if (rc == DP_OK)
                rc = parse_obj(r, &o->via.map.ptr[i].val, depth + 1);
            if (rc != DP_OK)
                return rc;
        }
    } else {
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.size = (uint32_t)n;
        o->via.array.ptr = items;
        for (uint64_t i = 0; i < n; i++) {
            int rc = parse_obj(r, &o->via.array.ptr[i], depth + 1);
            if (rc != DP_OK)
                return rc;
        }
    }
    return DP_OK;
}

static int parse_str(reader *r, msgpack_object *o, size_t start, uint64_t n, bool bin)
{
    const char *ptr = NULL;
    int rc = rd_bytes(r, start, n, &ptr);
    if (rc != DP_OK)
        return rc;
    if (bin) {
        o->type = MSGPACK_OBJECT_BIN;
        o->via.bin.size = (uint32_t)n;
        o->via.bin.ptr = ptr;
    } else {
        o->type = MSGPACK_OBJECT_STR;
        o->via.str.size = (uint32_t)n;
        o->via.str.ptr = ptr;
    }
    return DP_OK;
}

static int parse_ext(reader *r, msgpack_object *o, size_t start, uint64_t n)
{
    uint64_t type = 0;
    const char *ptr = NULL;
    int rc = rd_uint(r, start, 1, &type);
    if (rc == DP_OK)
        rc = rd_bytes(r, start, n, &ptr);
    if (rc != DP_OK)
        return rc;
    o->type = MSGPACK_OBJECT_EXT;
    o->via.ext.type = (int8_t)(uint8_t)type;
    o->via.ext.size = (uint32_t)n;
    o->via.ext.ptr = ptr;
    return DP_OK;
}

static void set_int(msgpack_object *o, int64_t v)
{
    /* msgpack-c reports non-negative signed encodings as positive integers;
     * do the same so that consumers see one representation. */
    if (v >= 0) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = (uint64_t)v;
    } else {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = v;
    }
}

static int parse_obj(reader *r, msgpack_object *o, int depth)
{
    size_t start = r->off;
    if (r->off >= r->len)
        return rd_truncated(r, start);
    unsigned char t = r->p[r->off++];
    uint64_t v = 0;
    int rc = DP_OK;

    if (t <= 0x7f) {
        set_int(o, t);
        return DP_OK;
    }
    if (t >= 0xe0) {
        set_int(o, (int64_t)t - 256);
        return DP_OK;
    }
    if (t <= 0x8f)
        return parse_container(r, o, start, t & 0x0f, true, depth);
    if (t >= 0x90 && t <= 0x9f)
        return parse_container(r, o, start, t & 0x0f, false, depth);
    if (t >= 0xa0 && t <= 0xbf)
        return parse_str(r, o, start, t & 0x1f, false);

    switch (t) {
    case 0xc0:
        o->type = MSGPACK_OBJECT_NIL;
        return DP_OK;
    case 0xc2:
    case 0xc3:
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = t == 0xc3;
        return DP_OK;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        rc = rd_uint(r, start, 1 << (t - 0xc4), &v);
        return rc != DP_OK ? rc : parse_str(r, o, start, v, true);
    case 0xc7:
    case 0xc8:
    case 0xc9:
        rc = rd_uint(r, start, 1 << (t - 0xc7), &v);
        return rc != DP_OK ? rc : parse_ext(r, o, start, v);
    case 0xca:
        rc = rd_uint(r, start, 4, &v);
        if (rc == DP_OK) {
            uint32_t bits = (uint32_t)v;
            float f;
            memcpy(&f, &bits, sizeof(f));
            o->type = MSGPACK_OBJECT_FLOAT32;
            o->via.f64 = f;
        }
        return rc;
    case 0xcb:
        rc = rd_uint(r, start, 8, &v);
        if (rc == DP_OK) {
            double d;
            memcpy(&d, &v, sizeof(d));
            o->type = MSGPACK_OBJECT_FLOAT64;
            o->via.f64 = d;
        }
        return rc;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        rc = rd_uint(r, start, 1 << (t - 0xcc), &v);
        if (rc == DP_OK) {
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = v;
        }
        return rc;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        int n = 1 << (t - 0xd0);
        rc = rd_uint(r, start, n, &v);
        if (rc == DP_OK) {
            /* Sign-extend the n-byte two's complement value. */
            int shift = 64 - 8 * n;
            int64_t s = (int64_t)(v << shift);
            set_int(o, s >> shift);
        }
        return rc;
    }
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return parse_ext(r, o, start, (uint64_t)1 << (t - 0xd4));
    case 0xd9:
    case 0xda:
    case 0xdb:
        rc = rd_uint(r, start, 1 << (t - 0xd9), &v);
        return rc != DP_OK ? rc : parse_str(r, o, start, v, false);
    case 0xdc:
    case 0xdd:
        rc = rd_uint(r, start, t == 0xdc ? 2 : 4, &v);
        return rc != DP_OK ? rc : parse_container(r, o, start, v, false, depth);
    case 0xde:
    case 0xdf:
        rc = rd_uint(r, start, t == 0xde ? 2 : 4, &v);
        return rc != DP_OK ? rc : parse_container(r, o, start, v, true, depth);
    default:
        return dp_fail(r->err, DP_EINVAL, "invalid msgpack type byte 0x%02x at byte %zu", t, start);
    }
}

int dp_mp_parse(const char *buf, size_t len, msgpack_zone *zone, msgpack_object *out, char **err)
{
    if (len == 0)
        return dp_fail(err, DP_EINVAL, "empty msgpack data");
    reader r = {(const unsigned char *)buf, len, 0, zone, err};
    int rc = parse_obj(&r, out, 0);
    if (rc == DP_OK && r.off < len)
        rc = dp_fail(err, DP_EINVAL,
                     "%zu trailing bytes after the msgpack value (which ends at byte %zu)",
                     len - r.off, r.off);
    return rc;
}

int dp_lmp_decode(lua_State *L, const char *buf, size_t len, char **err)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
        return dp_fail(err, DP_ENOMEM, "out of memory decoding msgpack");
    msgpack_object obj;
    int rc = dp_mp_parse(buf, len, &zone, &obj, err);
    if (rc == DP_OK)
        rc = dp_lmp_push(L, &obj, err);
    msgpack_zone_destroy(&zone);
    return rc;
}

void dp_mp_pack_bool(msgpack_packer *pk, bool b)
{
    if (b)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

const msgpack_object *dp_mp_map_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

void dp_mp_pack_str(msgpack_packer *pk, const char *s)
{
    if (s == NULL) {
        msgpack_pack_nil(pk);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void dp_mp_pack_value(msgpack_packer *pk, const dp_value_t *v)
{
    switch (v->type) {
    case DP_NUM:
        msgpack_pack_double(pk, v->u.n);
        break;
    case DP_BOOL:
        if (v->u.b)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case DP_STR:
        dp_mp_pack_str(pk, v->u.s);
        break;
    default:
        msgpack_pack_nil(pk);
    }
}
