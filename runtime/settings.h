/* Settings descriptors: one table per driver (or other configurable part)
 * that drives parsing of a Lua table, validation, and the docs. Every error
 * names the context (e.g. "twin P101, tag flow"), the field and what was
 * wrong; unknown fields are refused with the list of known ones. */
#ifndef DP_SETTINGS_H
#define DP_SETTINGS_H

#include <lua.h>
#include <stdbool.h>
#include <stdio.h>

#include "common.h"

typedef enum {
    DP_SET_STRING,   /* char * (malloc'd copy; freed by dp_settings_free) */
    DP_SET_INT,      /* int64_t, range checked with min/max */
    DP_SET_NUMBER,   /* double, range checked with min/max */
    DP_SET_BOOL,     /* bool */
    DP_SET_DURATION, /* dp_time_t; a string like "5s" or a number of seconds */
    DP_SET_ENUM,     /* int: index into choices */
    DP_SET_CUSTOM,   /* parse() reads the value at the stack index */
} dp_set_type_t;

typedef struct dp_setting {
    const char *name;
    dp_set_type_t type;
    size_t offset; /* offsetof the field in the output struct */
    bool required;
    const char *def; /* default as text (parsed like a Lua string value); NULL: zero */
    const char *doc;
    const char *const *choices; /* DP_SET_ENUM: NULL-terminated */
    double min, max;            /* checked when min < max */
    /* DP_SET_CUSTOM: parse the value at idx into field; return 0 or an error
     * with *err set (without context; it is added). free() releases it. */
    int (*parse)(lua_State *L, int idx, void *field, char **err);
    void (*free)(void *field);
} dp_setting_t;

/* Terminates a descriptor array. */
#define DP_SETTINGS_END                                                                            \
    {                                                                                              \
        .name = NULL                                                                               \
    }

/* Parses the table at `idx` into `out` (zeroed by the caller). Keys listed in
 * `ignore` (NULL-terminated, may be NULL) are skipped, not refused. Errors
 * start with "context: "; a table parsed by a DP_SET_CUSTOM field's parser
 * passes NULL, since the outer parse puts "context: field: " in front. */
int dp_settings_parse(lua_State *L, int idx, const dp_setting_t *desc, void *out,
                      const char *const *ignore, const char *context, char **err);
/* Frees strings and custom fields parsed into `out`. */
void dp_settings_free(const dp_setting_t *desc, void *out);

/* A DP_SET_CUSTOM field that is a NULL-terminated list of tag patterns
 * (char **; see dp_tag_pattern_check): one pattern or a list of them. */
int dp_settings_patterns_parse(lua_State *L, int idx, void *field, char **err);
void dp_settings_patterns_free(void *field);
/* The same, for callers with several lists: `who` ("client eve"; NULL: none)
 * prefixes the errors about the list's shape. */
int dp_settings_patterns(lua_State *L, int idx, const char *who, char ***out, char **err);
/* Writes a Markdown table of the descriptor (used to generate driver docs). */
void dp_settings_doc(const dp_setting_t *desc, FILE *out);

#endif
