/* Unit tests for the HTTP server's pure parts: the JSON writer and body
 * parser (runtime/json.c), token files, roles and SHA-256
 * (runtime/http_cfg.c). The server itself is tested over real sockets by
 * tests/integration/test_http.sh. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/http.h"
#include "runtime/json.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

static void assert_no_leaks(void)
{
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
#endif
}

TestSuite(http_json, .fini = assert_no_leaks);
TestSuite(http_cfg, .fini = assert_no_leaks);

Test(http_json, escapes_strings_and_numbers)
{
    dp_jbuf_t b = {0};
    dp_jb_str(&b, "a\"b\\c\nd\x01");
    dp_jb_raw(&b, " ", 1);
    dp_jb_num(&b, 42);
    dp_jb_raw(&b, " ", 1);
    dp_jb_num(&b, 0.5);
    dp_jb_raw(&b, " ", 1);
    dp_jb_num(&b, 0.0 / 0.0);
    dp_jb_raw(&b, " ", 1);
    dp_jb_str(&b, NULL);
    cr_assert_str_eq(b.p, "\"a\\\"b\\\\c\\nd\\u0001\" 42 0.5 null null");
    dp_jb_free(&b);
}

Test(http_json, parses_flat_objects)
{
    const char *s = " { \"tag\" : \"P101.speed\\u00e9\", \"value\": -12.5e1, \"on\": true, "
                    "\"off\": false, \"none\": null } ";
    dp_jobj_t o;
    char *err = NULL;
    cr_assert_eq(dp_json_parse_object(s, strlen(s), &o, &err), 0, "%s", err ? err : "");
    cr_assert_eq(o.n, 5);
    cr_assert_str_eq(dp_jobj_get(&o, "tag")->u.s, "P101.speed\xc3\xa9");
    cr_assert_eq(dp_jobj_get(&o, "value")->type, DP_NUM);
    cr_assert_float_eq(dp_jobj_get(&o, "value")->u.n, -125.0, 1e-12);
    cr_assert(dp_jobj_get(&o, "on")->u.b);
    cr_assert_eq(dp_jobj_get(&o, "off")->type, DP_BOOL);
    cr_assert_eq(dp_jobj_get(&o, "none")->type, DP_NIL);
    cr_assert_null(dp_jobj_get(&o, "missing"));
    dp_jobj_free(&o);

    cr_assert_eq(dp_json_parse_object("{}", 2, &o, NULL), 0);
    cr_assert_eq(o.n, 0);
    dp_jobj_free(&o);
}

Test(http_json, writes_utf8_only)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
         "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"\xff", 1, "\"\\ufffd\""},
        {"x\xe2\x82", 3, "\"x\\ufffd\""}, /* cut short: one U+FFFD */
        {"\xe2\x82"
         "A",
         3, "\"\\ufffdA\""},
        {"\xc0\x80", 2, "\"\\ufffd\\ufffd\""},            /* overlong: each byte */
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""}, /* surrogate */
        {"\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
        {"\xf0\x9f\x98\"", 4, "\"\\ufffd\\\"\""},
        {"\x80\xbf", 2, "\"\\ufffd\\ufffd\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dp_jbuf_t b = {0};
        dp_jb_strn(&b, cases[i].in, cases[i].n);
        cr_assert_str_eq(b.p, cases[i].out, "case %zu", i);
        dp_jb_free(&b);
    }
    /* What the writer writes, the parser takes back. */
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{");
    dp_jb_key(&b, "k", true);
    dp_jb_strn(&b, "\xff\xc3\xa9\xf0\x9f\x98\x80\x01", 8);
    dp_jb_puts(&b, "}");
    dp_jobj_t o;
    cr_assert_eq(dp_json_parse_object(b.p, b.len, &o, NULL), 0, "%s", b.p);
    cr_assert_str_eq(dp_jobj_get(&o, "k")->u.s, "\xef\xbf\xbd\xc3\xa9\xf0\x9f\x98\x80\x01");
    dp_jobj_free(&o);
    dp_jb_free(&b);
}

Test(http_json, parses_escapes_to_utf8)
{
    const char *body = "{\"a\":\"\\u00e9\\u20AC\\ud83d\\ude00\\/\",\"b\":\"\xc3\xa9\"}";
    dp_jobj_t o;
    char *err = NULL;
    cr_assert_eq(dp_json_parse_object(body, strlen(body), &o, &err), 0, "%s", err);
    cr_assert_str_eq(dp_jobj_get(&o, "a")->u.s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80/");
    cr_assert_str_eq(dp_jobj_get(&o, "b")->u.s, "\xc3\xa9");
    dp_jobj_free(&o);
    const char *bad = "{\"a\":\"ok\xff\"}";
    cr_assert_eq(dp_json_parse_object(bad, strlen(bad), &o, &err), DP_EINVAL);
    cr_assert_str_eq(err, "malformed JSON at byte 8: bytes that are not UTF-8 in a string");
    free(err);
}

Test(http_json, msgpack_as_json)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "a\0b", 3); /* a key with a NUL in it */
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, -3);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_double(&pk, 0.0 / 0.0);
    msgpack_pack_int(&pk, 7); /* a key that is not a string */
    msgpack_pack_bin_with_body(&pk, "\x01\xff", 2);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "n", 1);
    msgpack_pack_nil(&pk);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    dp_jbuf_t b = {0};
    dp_jb_msgpack(&b, &u.data, false);
    cr_assert_str_eq(b.p, "{\"a\\u0000b\":[-3,18446744073709551615,null],\"7\":\"\\u0001\\ufffd\","
                          "\"t\":true,\"n\":null}");
    dp_jb_free(&b);
    dp_jb_msgpack(&b, &u.data, true); /* as doppel export --state writes it */
    cr_assert_str_eq(b.p, "{\"a\\u0000b\": [-3, 18446744073709551615, null], \"7\": "
                          "\"\\u0001\\ufffd\", \"t\": true, \"n\": null}");
    dp_jb_free(&b);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

Test(http_json, parses_every_json_number_form)
{
    static const struct {
        const char *text;
        double want;
    } nums[] = {{"0", 0},      {"-0", -0.0},   {"7", 7},           {"-12", -12},    {"0.5", 0.5},
                {"1E+2", 100}, {"2e-3", 2e-3}, {"10.25e1", 102.5}, {"1e308", 1e308}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"n\":%s}", nums[i].text);
        dp_jobj_t o;
        char *err = NULL;
        cr_assert_eq(dp_json_parse_object(body, strlen(body), &o, &err), 0, "%s: %s", body, err);
        cr_assert_eq(dp_jobj_get(&o, "n")->u.n, nums[i].want, "%s", body);
        dp_jobj_free(&o);
    }
}

Test(http_json, refuses_malformed_bodies_naming_the_byte)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{a:1}",
        "{\"a\":1} x",
        "{\"a\":{}}",
        "{\"a\":[1]}",
        "{\"a\":\"x\n\"}",
        "{\"a\":tru}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":\"\\q\"}",
        "{\"a\":\"\\u0000\"}",
        "{\"a\":-}",
        "{\"a\":\"open",
        "{\"a\":\"\xff\"}",             /* not UTF-8 */
        "{\"a\":\"\xc3\"}",             /* a sequence cut short */
        "{\"\xc0\x80\":1}",             /* overlong NUL, in a key */
        "{\"a\":\"\xed\xa0\x80\"}",     /* a surrogate in UTF-8 */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\\u-001\"}",          /* strtoul would take these */
        "{\"a\":\"\\u+fff\"}",
        "{\"a\":\"\\u 12a\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud83d\"}", /* a high surrogate alone */
        "{\"a\":\"\\ud83dx\"}",
        "{\"a\":\"\\ud83d\\u0041\"}", /* ... or with no low one after it */
        "{\"a\":\"\\ude00\"}",        /* a low surrogate alone */
        "{\"a\":+1}",                 /* numbers as RFC 8259 has them */
        "{\"a\":01}",
        "{\"a\":-01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":1e}",
        "{\"a\":1e+}",
        "{\"a\":--1}",
        "{\"a\":1e999}", /* infinity */
        "{\"a\":1.0000000000000000000000000000000000000000000000000000000000000001}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dp_jobj_t o;
        char *err = NULL;
        int rc = dp_json_parse_object(bad[i], strlen(bad[i]), &o, &err);
        cr_assert_eq(rc, DP_EINVAL, "accepted %s", bad[i]);
        cr_assert_not_null(err);
        cr_assert(strstr(err, "malformed JSON at byte") != NULL, "%s", err);
        cr_assert_eq(o.n, 0);
        free(err);
    }
}

Test(http_cfg, sha256_matches_the_standard_vector)
{
    char hex[65];
    dp_sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static char *write_file(const char *text)
{
    char *path = strdup("/tmp/doppel-tokens-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

Test(http_cfg, token_file_and_lookup)
{
    char alice[65], bob[65];
    dp_sha256_hex("secret-a", 8, alice);
    dp_sha256_hex("secret-b", 8, bob);
    char text[512];
    snprintf(text, sizeof text, "# tokens\n\nalice operator %s  # comment\nbob engineer %s\n",
             alice, bob);
    char *path = write_file(text);
    dp_http_cfg_t cfg = {0};
    char *err = NULL;
    cr_assert_eq(dp_http_tokens_load(&cfg, path, &err), 0, "%s", err ? err : "");
    cr_assert_eq(cfg.ntokens, 2);
    const dp_http_token_t *t = dp_http_token_find(&cfg, "secret-b", 8);
    cr_assert_not_null(t);
    cr_assert_str_eq(t->name, "bob");
    cr_assert_eq(t->role, DP_ROLE_ENGINEER);
    cr_assert_null(dp_http_token_find(&cfg, "secret-", 7));
    cr_assert_null(dp_http_token_find(&cfg, alice, 64), "the hash itself is not a token");
    free(cfg.tokens);
    unlink(path);
    free(path);
}

Test(http_cfg, bad_token_files_name_file_and_line)
{
    char h[65];
    dp_sha256_hex("x", 1, h);
    struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"alice admin 00", "role \"admin\""},
        {"alice viewer 1234", "sha256 must be 64 hex digits"},
        {"alice viewer", "expected NAME ROLE SHA256HEX"},
        {"al/ice viewer HASH", "use letters"},
        {"a viewer HASH\na operator HASH", "declared twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s\n", cases[i].line);
        /* Substitute a valid hash for HASH. */
        char buf[512];
        size_t n = 0;
        for (const char *p = text; *p && n < sizeof buf - 70;) {
            if (strncmp(p, "HASH", 4) == 0) {
                memcpy(buf + n, h, 64);
                n += 64;
                p += 4;
            } else {
                buf[n++] = *p++;
            }
        }
        buf[n] = '\0';
        char *path = write_file(buf);
        dp_http_cfg_t cfg = {0};
        char *err = NULL;
        cr_assert_lt(dp_http_tokens_load(&cfg, path, &err), 0, "accepted %s", cases[i].line);
        cr_assert(strstr(err, path) != NULL && strstr(err, cases[i].want) != NULL, "%s", err);
        cr_assert(strstr(err, ":1:") != NULL || strstr(err, ":2:") != NULL, "%s", err);
        free(err);
        free(cfg.tokens);
        unlink(path);
        free(path);
    }
    dp_http_cfg_t cfg = {0};
    char *err = NULL;
    cr_assert_eq(dp_http_tokens_load(&cfg, "/nonexistent/tokens.txt", &err), DP_ENOENT);
    cr_assert(strstr(err, "/nonexistent/tokens.txt") != NULL);
    free(err);
}

Test(http_cfg, roles)
{
    cr_assert_eq(dp_role_parse("viewer"), DP_ROLE_VIEWER);
    cr_assert_eq(dp_role_parse("operator"), DP_ROLE_OPERATOR);
    cr_assert_eq(dp_role_parse("engineer"), DP_ROLE_ENGINEER);
    cr_assert_eq(dp_role_parse("root"), DP_EINVAL);
    cr_assert_eq(dp_role_parse(NULL), DP_EINVAL);
    cr_assert(DP_ROLE_VIEWER < DP_ROLE_OPERATOR && DP_ROLE_OPERATOR < DP_ROLE_ENGINEER);
    cr_assert_str_eq(dp_role_name(DP_ROLE_OPERATOR), "operator");
}

static bool loopback(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, ip, &a->sin6_addr), 1, "%s", ip);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1, "%s", ip);
    }
    return dp_is_loopback((struct sockaddr *)&ss);
}

/* Without tokens only loopback peers may read: the classification decides. */
Test(http_cfg, loopback_peers)
{
    static const char *const yes[] = {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"};
    static const char *const no[] = {"10.0.0.1",        "192.168.1.10", "0.0.0.0", "128.0.0.1",
                                     "::ffff:10.0.0.1", "fe80::1",      "::",      "2001:db8::1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(loopback(yes[i]), "%s is loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert(!loopback(no[i]), "%s is not loopback", no[i]);
}

Test(http_json, numbers_are_shortest_round_trip)
{
    dp_jbuf_t b = {0};
    const double v[] = {0.1, -0.0, 1.5e20, 2.5e-7, 1.0 / 3, 120.84341706508317, 1e15, INFINITY};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        dp_jb_raw(&b, i ? " " : "", i ? 1 : 0);
        dp_jb_num(&b, v[i]);
    }
    cr_assert_str_eq(
        b.p, "0.1 -0 1.5e+20 2.5e-07 0.3333333333333333 120.84341706508317 1000000000000000 null");
    dp_jb_free(&b);
}
