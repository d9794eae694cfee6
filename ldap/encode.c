/*
 * encode.c: LDAP replies with ber_printf, appended to a gh_ldap_out.
 *
 * Each reply is built in a BerElement and its flattened bytes copied to the
 * output buffer; a search appends every entry of a page before the server
 * writes the buffer once.
 */
#include <stdlib.h>
#include <string.h>

#include <ldap.h>

#include "ldap/ldap-int.h"

int gh__ldap_out_ber(gh_ldap_out *out, BerElement *ber)
{
    struct berval *bv = NULL;
    int rc = 0;
    if (ber_flatten(ber, &bv) != 0) {
        rc = GH_ENOMEM;
        goto done;
    }
    if (out->len + bv->bv_len > out->cap) {
        size_t cap = out->cap ? out->cap : 4096;
        while (cap < out->len + bv->bv_len)
            cap *= 2;
        char *p = realloc(out->buf, cap);
        if (p == NULL) {
            rc = GH_ENOMEM;
            goto done;
        }
        out->buf = p;
        out->cap = cap;
    }
    memcpy(out->buf + out->len, bv->bv_val, bv->bv_len);
    out->len += bv->bv_len;
done:
    if (bv)
        ber_bvfree(bv);
    ber_free(ber, 1);
    return rc;
}

void gh_ldap_out_free(gh_ldap_out *out)
{
    free(out->buf);
    memset(out, 0, sizeof(*out));
}

static ber_tag_t response_tag(gh_ldap_op op)
{
    switch (op) {
    case GH_LDAP_BIND:
        return LDAP_RES_BIND;
    case GH_LDAP_SEARCH:
        return LDAP_RES_SEARCH_RESULT;
    case GH_LDAP_MODIFY:
        return LDAP_RES_MODIFY;
    case GH_LDAP_ADD:
        return LDAP_RES_ADD;
    case GH_LDAP_DELETE:
        return LDAP_RES_DELETE;
    case GH_LDAP_MODDN:
        return LDAP_RES_MODDN;
    case GH_LDAP_COMPARE:
        return LDAP_RES_COMPARE;
    default:
        return LDAP_RES_EXTENDED;
    }
}

int gh_ldap_reply_result(gh_ldap_out *out, const gh_ldap_req *r, int code, const char *matched,
                         const char *text)
{
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    if (ber == NULL)
        return GH_ENOMEM;
    if (ber_printf(ber, "{it{ess}}", r->msgid, response_tag(r->op), code, matched ? matched : "",
                   text ? text : "") == -1) {
        ber_free(ber, 1);
        return GH_ENOMEM;
    }
    return gh__ldap_out_ber(out, ber);
}

int gh_ldap_reply_ext(gh_ldap_out *out, int msgid, int code, const char *text, const char *oid,
                      const struct berval *value)
{
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    int err = 0;
    if (ber == NULL)
        return GH_ENOMEM;
    err |= ber_printf(ber, "{it{ess" /*}}*/, msgid, LDAP_RES_EXTENDED, code, "",
                      text ? text : "") == -1;
    if (oid)
        err |= ber_printf(ber, "ts", LDAP_TAG_EXOP_RES_OID, oid) == -1;
    if (value)
        err |= ber_printf(ber, "tO", LDAP_TAG_EXOP_RES_VALUE, value) == -1;
    err |= ber_printf(ber, /*{{*/ "}}") == -1;
    if (err) {
        ber_free(ber, 1);
        return GH_ENOMEM;
    }
    return gh__ldap_out_ber(out, ber);
}

int gh_ldap_notice_disconnect(gh_ldap_out *out, int code, const char *text)
{
    return gh_ldap_reply_ext(out, 0, code, text, LDAP_NOTICE_OF_DISCONNECTION, NULL);
}

const char *gh_ldap_result_name(int code)
{
    switch (code) {
    case 0:
        return "success";
    case 1:
        return "operationsError";
    case 2:
        return "protocolError";
    case 3:
        return "timeLimitExceeded";
    case 4:
        return "sizeLimitExceeded";
    case 5:
        return "compareFalse";
    case 6:
        return "compareTrue";
    case 7:
        return "authMethodNotSupported";
    case 11:
        return "adminLimitExceeded";
    case 12:
        return "unavailableCriticalExtension";
    case 16:
        return "noSuchAttribute";
    case 17:
        return "undefinedAttributeType";
    case 19:
        return "constraintViolation";
    case 32:
        return "noSuchObject";
    case 34:
        return "invalidDNSyntax";
    case 49:
        return "invalidCredentials";
    case 50:
        return "insufficientAccessRights";
    case 51:
        return "busy";
    case 52:
        return "unavailable";
    case 53:
        return "unwillingToPerform";
    default:
        return "other";
    }
}

const char *gh_ldap_op_name(gh_ldap_op op)
{
    static const char *const names[] = {"?",      "bind",  "unbind",  "search",  "modify",  "add",
                                        "delete", "moddn", "compare", "abandon", "extended"};
    return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}
