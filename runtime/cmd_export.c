/* doppel export: journal records as CSV, or the newest snapshot as JSON. */
#include "cmd_export.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fmtnum.h"
#include "journal.h"
#include "json.h"
#include "log.h"
#include "snapshot.h"

static void csv_field(FILE *out, const char *s)
{
    if (s == NULL)
        return;
    if (strpbrk(s, ",\"\n\r") == NULL) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void print_time(FILE *out, dp_time_t t)
{
    time_t secs = (time_t)(t >= 0 ? t / DP_US_PER_SEC : (t - DP_US_PER_SEC + 1) / DP_US_PER_SEC);
    long us = (long)(t - (dp_time_t)secs * DP_US_PER_SEC);
    struct tm tm;
    gmtime_r(&secs, &tm);
    fprintf(out, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

/* The shortest text that reads back as the same double; in JSON, null for
 * NaN and infinities (JSON has no text for them). */
static void print_number(FILE *out, double d, bool json)
{
    char num[DP_FMTNUM_SIZE];
    if (json && !isfinite(d))
        fputs("null", out);
    else
        fwrite(num, 1, dp_fmtnum(d, num), out);
}

static void print_value(FILE *out, const dp_value_t *v)
{
    switch (v->type) {
    case DP_NUM:
        print_number(out, v->u.n, false);
        break;
    case DP_BOOL:
        fputs(v->u.b ? "true" : "false", out);
        break;
    case DP_STR:
        csv_field(out, v->u.s);
        break;
    default:
        break;
    }
}

static bool tag_matches(const char *globs, const char *tag)
{
    if (globs == NULL)
        return true;
    if (tag == NULL)
        return false;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", globs);
    char *save = NULL;
    for (char *g = strtok_r(buf, ",", &save); g != NULL; g = strtok_r(NULL, ",", &save)) {
        if (fnmatch(g, tag, 0) == 0)
            return true;
    }
    return false;
}

static void on_warn(const char *msg, void *ud)
{
    uint64_t *n = ud;
    (*n)++;
    fprintf(stderr, "doppel export: %s\n", msg);
}

/* ---- --state: msgpack as JSON --------------------------------------------- */

static void json_str(FILE *out, const char *s, size_t n)
{
    dp_jbuf_t b = {0};
    dp_jb_strn(&b, s, n);
    fwrite(b.p, 1, b.len, out);
    dp_jb_free(&b);
}

static void json_obj(FILE *out, const msgpack_object *o)
{
    dp_jbuf_t b = {0};
    dp_jb_msgpack(&b, o, true);
    fwrite(b.p, 1, b.len, out);
    dp_jb_free(&b);
}

static int export_state(const char *data_dir)
{
    char *dir = dp_xasprintf("%s/snapshots", data_dir);
    dp_snapshot_t *s = NULL;
    int rc = dp_snapshot_load_latest(dir, &s, NULL);
    if (rc < 0) {
        fprintf(stderr, "doppel export: no valid snapshot in %s\n", dir);
        free(dir);
        return 1;
    }
    free(dir);
    printf("{\"plant\": ");
    json_str(stdout, s->plant, strlen(s->plant));
    printf(", \"seq\": %" PRIu64 ", \"time\": \"", s->seq);
    print_time(stdout, s->ts);
    printf("\",\n \"twins\": {");
    for (size_t i = 0; i < s->ntwins; i++) {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 1024);
        msgpack_object obj;
        size_t off = 0;
        printf("%s\n  ", i ? "," : "");
        json_str(stdout, s->twins[i].name, strlen(s->twins[i].name));
        printf(": ");
        if (msgpack_unpack(s->twins[i].state, s->twins[i].len, &off, &zone, &obj) ==
            MSGPACK_UNPACK_SUCCESS)
            json_obj(stdout, &obj);
        else
            printf("null");
        msgpack_zone_destroy(&zone);
    }
    printf("},\n \"tags\": {");
    for (size_t i = 0; i < s->ntags; i++) {
        const dp_snap_tag_t *t = &s->tags[i];
        printf("%s\n  ", i ? "," : "");
        json_str(stdout, t->name, strlen(t->name));
        printf(": {\"value\": ");
        switch (t->cur.v.type) {
        case DP_NUM:
            print_number(stdout, t->cur.v.u.n, true);
            break;
        case DP_BOOL:
            printf(t->cur.v.u.b ? "true" : "false");
            break;
        case DP_STR:
            json_str(stdout, t->cur.v.u.s, strlen(t->cur.v.u.s));
            break;
        default:
            printf("null");
        }
        printf(", \"time\": \"");
        print_time(stdout, t->cur.ts);
        printf("\", \"quality\": \"%s\", \"history\": %zu}", dp_quality_name(t->cur.quality),
               t->nhist);
    }
    printf("},\n \"alarms\": [");
    for (size_t i = 0; i < s->nalarms; i++) {
        const dp_alarm_info_t *a = &s->alarms[i].info;
        printf("%s\n  {\"twin\": ", i ? "," : "");
        json_str(stdout, a->twin, strlen(a->twin));
        printf(", \"name\": ");
        json_str(stdout, a->name, strlen(a->name));
        printf(", \"state\": \"%s\", \"active\": %s, \"severity\": \"%s\", \"priority\": %d",
               dp_alarm_state_name(a->state), a->active ? "true" : "false",
               dp_severity_name(a->severity), a->priority);
        printf(", \"since\": \"");
        print_time(stdout, a->since);
        printf("\", \"value\": ");
        print_number(stdout, a->value, true);
        if (a->acked_by[0] != '\0') {
            printf(", \"acked_by\": ");
            json_str(stdout, a->acked_by, strlen(a->acked_by));
        }
        if (a->shelved) {
            printf(", \"shelved_until\": \"");
            print_time(stdout, a->shelved_until);
            printf("\"");
        }
        if (a->suppressed)
            printf(", \"suppressed\": true");
        printf("}");
    }
    printf("]}\n");
    dp_snapshot_free(s);
    return 0;
}

/* ---- the command ------------------------------------------------------------ */

int dp_cmd_export(int argc, char **argv, const char *data_dir)
{
    const char *tags = NULL, *from_s = NULL, *to_s = NULL;
    bool state = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "--csv") == 0) {
            continue;
        } else if (strcmp(a, "--state") == 0) {
            state = true;
            continue;
        } else if (strcmp(a, "--tags") == 0) {
            slot = &tags;
        } else if (strcmp(a, "--from") == 0) {
            slot = &from_s;
        } else if (strcmp(a, "--to") == 0) {
            slot = &to_s;
        } else if (strcmp(a, "--data-dir") == 0) {
            slot = &data_dir;
        } else {
            fprintf(stderr, "doppel export: unknown argument \"%s\" (try 'doppel help export')\n",
                    a);
            return 2;
        }
        if (i + 1 >= argc || argv[i + 1][0] == '\0') {
            fprintf(stderr, "doppel export: option \"%s\" needs a value\n", a);
            return 2;
        }
        *slot = argv[++i];
    }
    if (state)
        return export_state(data_dir);
    dp_time_t from = INT64_MIN, to = INT64_MAX;
    char *err = NULL;
    if (from_s != NULL && dp_time_parse(from_s, &from, &err) < 0) {
        fprintf(stderr, "doppel export: --from: %s\n", err);
        free(err);
        return 2;
    }
    if (to_s != NULL && dp_time_parse(to_s, &to, &err) < 0) {
        fprintf(stderr, "doppel export: --to: %s\n", err);
        free(err);
        return 2;
    }
    char *dir = dp_xasprintf("%s/journal", data_dir);
    uint64_t warnings = 0;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, on_warn, &warnings, &err);
    if (r == NULL) {
        fprintf(stderr, "doppel export: %s\n", err);
        free(err);
        free(dir);
        return 1;
    }
    printf("seq,time,type,tag,value,quality,twin,kind,text\n");
    dp_jrec_t rec;
    int rc;
    uint64_t n = 0;
    while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
        if (rec.ts < from || rec.ts >= to)
            continue;
        if (tags != NULL && (rec.type == DP_JREC_EVENT || !tag_matches(tags, rec.tag)))
            continue;
        printf("%" PRIu64 ",", rec.seq);
        print_time(stdout, rec.ts);
        switch (rec.type) {
        case DP_JREC_SAMPLE:
            printf(",sample,");
            csv_field(stdout, rec.tag);
            putchar(',');
            print_value(stdout, &rec.value);
            printf(",%s,,%s,\n", dp_quality_name(rec.quality),
                   (rec.flags & DP_JSAMPLE_DERIVED) ? "derived" : "");
            break;
        case DP_JREC_EVENT:
            printf(",event,,,,");
            csv_field(stdout, rec.twin);
            putchar(',');
            csv_field(stdout, rec.kind);
            putchar(',');
            csv_field(stdout, rec.text);
            putchar('\n');
            break;
        case DP_JREC_COMMAND:
            printf(",command,");
            csv_field(stdout, rec.tag);
            putchar(',');
            print_value(stdout, &rec.value);
            printf(",,");
            csv_field(stdout, rec.twin);
            putchar(',');
            csv_field(stdout, rec.kind);
            putchar(',');
            csv_field(stdout, rec.text);
            putchar('\n');
            break;
        }
        n++;
    }
    uint64_t skipped = dp_jreader_skipped(r);
    dp_jreader_free(r);
    free(dir);
    if (rc < 0) {
        fprintf(stderr, "doppel export: %s\n", err);
        free(err);
        return 1;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "doppel export: cannot write the output\n");
        return 1;
    }
    if (skipped > 0)
        fprintf(stderr,
                "doppel export: %" PRIu64 " records exported; %" PRIu64
                " corrupted bytes skipped in %" PRIu64 " places\n",
                n, skipped, warnings);
    return 0;
}
