/*
 * fuzz_sync.c: the decoders of upstream values in sync/sync_ldap.c on
 * arbitrary bytes: a binary objectSid into "S-1-...", and an upstream key
 * (syncUUID, entryUUID, objectGUID) into text in each of its three forms.
 *
 * An upstream is not trusted (docs/SECURITY-sync.md): its values must never
 * overrun the fixed buffers they are written to, whatever their length. The
 * checks are invariants, written from the documented forms: a SID is
 * "S-1-<authority>" then one "-<n>" per sub-authority, a 16-byte key in a
 * UUID form is 36 characters of lower-case hex and four dashes, other keys
 * are lower-case text or hex.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync/sync-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *s)
{
    fprintf(stderr, "fuzz_sync: %s: \"%s\"\n", what, s);
    abort();
}

static void check_sid(const uint8_t *data, size_t size, size_t outlen)
{
    char out[GH_KEY_MAX + 1];
    struct berval bv = {size, (char *)data};
    memset(out, 'X', sizeof(out));
    int rc = gh__sync_sid_text(&bv, out, outlen);
    if (rc != 0)
        return;
    if (strnlen(out, outlen) >= outlen)
        fail("sid not terminated in its buffer", "");
    if (strncmp(out, "S-1-", 4) != 0)
        fail("sid prefix", out);
    size_t dashes = 0;
    for (const char *p = out; *p; p++) {
        if (*p == '-')
            dashes++;
        else if (!isdigit((unsigned char)*p) && !(p == out && *p == 'S'))
            fail("sid character", out);
    }
    if (dashes != 2 + (size_t)data[1])
        fail("sid sub-authority count", out);
}

static void check_key(const uint8_t *data, size_t size, int form)
{
    char out[GH_KEY_MAX + 1];
    struct berval bv = {size, (char *)data};
    if (gh__sync_key_text(&bv, form, out, sizeof(out)) != 0)
        return;
    size_t n = strlen(out);
    if (n > GH_KEY_MAX)
        fail("key too long", out);
    if (form != GH__SYNC_KEY_TEXT && size == 16) {
        if (n != 36 || out[8] != '-' || out[13] != '-' || out[18] != '-' || out[23] != '-')
            fail("uuid shape", out);
    }
    for (const char *p = out; *p; p++)
        if (*p < 0x21 || *p > 0x7e || isupper((unsigned char)*p))
            fail("key character", out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_sid(data, size, GH_KEY_MAX + 1);
    check_sid(data, size, 12); /* a short buffer: GH_ETOOBIG, never an overrun */
    for (int form = GH__SYNC_KEY_TEXT; form <= GH__SYNC_KEY_GUID; form++)
        check_key(data, size, form);
    return 0;
}
