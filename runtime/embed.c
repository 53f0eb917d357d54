#include "embed.h"

#include <string.h>

const dp_embed_file_t *dp_embed_find(const char *path)
{
    for (const dp_embed_file_t *f = dp_embed_files; f->path != NULL; f++) {
        if (strcmp(f->path, path) == 0)
            return f;
    }
    return NULL;
}
