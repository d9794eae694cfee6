/*
 * decode.c: framing and decoding of LDAP requests with liblber.
 *
 * Framing is liblber's own resumable ber_get_next, reading from a Sockbuf
 * whose provider layer serves the bytes of the current call (no fd): when
 * the bytes run out mid-message the provider says EWOULDBLOCK and the partial
 * message stays in the session's BerElement until more arrive, exactly as
 * slapd resumes on a socket. The maximum message size is the Sockbuf's
 * max-incoming limit, checked by liblber before anything is allocated.
 *
 * Requests are then read with ber_scanf's in-place formats ('m'): strings
 * point into the message, so a request costs one BerElement. A filter is
 * decoded once into a tree with each attribute resolved and each assertion
 * value normalised; nesting and node counts are bounded.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ldap.h>
#include <sodium.h>

#include "ldap/ldap-int.h"

/* ---- the memory provider of the session's Sockbuf ---- */

static int mem_setup(Sockbuf_IO_Desc *sbiod, void *arg)
{
    sbiod->sbiod_pvt = arg;
    return 0;
}

static int mem_remove(Sockbuf_IO_Desc *sbiod)
{
    return 0;
}

static int mem_ctrl(Sockbuf_IO_Desc *sbiod, int opt, void *arg)
{
    gh_ldap_session *s = sbiod->sbiod_pvt;
    if (opt == LBER_SB_OPT_DATA_READY)
        return s->in_off < s->in_len;
    return 0;
}

static ber_slen_t mem_read(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    gh_ldap_session *s = sbiod->sbiod_pvt;
    size_t left = s->in_len - s->in_off;
    if (left == 0) {
        errno = EWOULDBLOCK;
        return -1;
    }
    if (len > left)
        len = left;
    memcpy(buf, s->in + s->in_off, len);
    s->in_off += len;
    return (ber_slen_t)len;
}

static ber_slen_t mem_write(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    errno = EINVAL;
    return -1;
}

static int mem_close(Sockbuf_IO_Desc *sbiod)
{
    return 0;
}

static Sockbuf_IO mem_io = {mem_setup, mem_remove, mem_ctrl, mem_read, mem_write, mem_close};

int gh_ldap_session_new(gh_ldap *l, gh_ldap_session **out)
{
    gh_ldap_session *s = calloc(1, sizeof(*s));
    ber_len_t max;
    if (s == NULL)
        return GH_ENOMEM;
    s->l = l;
    s->sb = ber_sockbuf_alloc();
    if (s->sb == NULL)
        goto fail;
    if (ber_sockbuf_add_io(s->sb, &mem_io, LBER_SBIOD_LEVEL_PROVIDER, s) != 0)
        goto fail;
    max = (ber_len_t)l->max_message;
    ber_sockbuf_ctrl(s->sb, LBER_SB_OPT_SET_MAX_INCOMING, &max);
    *out = s;
    return 0;
fail:
    gh_ldap_session_free(s);
    return GH_ENOMEM;
}

void gh_ldap_session_free(gh_ldap_session *s)
{
    if (s == NULL)
        return;
    if (s->ber)
        ber_free(s->ber, 1);
    if (s->sb)
        ber_sockbuf_free(s->sb);
    sodium_memzero(s, sizeof(*s));
    free(s);
}

/* ---- filters ---- */

void gh__ldap_filter_free(gh_ldap_filter *f)
{
    while (f) {
        gh_ldap_filter *next = f->next;
        gh__ldap_filter_free(f->child);
        free(f->value);
        free(f->raw);
        free(f->set);
        free(f->initial);
        free(f->final);
        for (size_t i = 0; i < f->nany; i++)
            free(f->any[i]);
        free(f->any);
        free(f);
        f = next;
    }
}

typedef struct fctx {
    int nodes;
} fctx;

static int attr_of(const struct berval *bv)
{
    return gh__ldap_attr_id(bv->bv_val, bv->bv_len);
}

/* Sets f->value to v normalised for f->attr, or makes f Undefined. */
static int set_value(gh_ldap_filter *f, const struct berval *v)
{
    if (f->attr == LA_UNKNOWN || f->attr == LA_USERPASSWORD) {
        f->type = LF_UNDEFINED;
        return 0;
    }
    f->value = gh__ldap_normalize(gh__ldap_attrs[f->attr].syntax, v->bv_val, v->bv_len, &f->vlen);
    if (f->value != NULL) {
        f->raw = strndup(v->bv_val, v->bv_len);
        f->rawlen = f->raw ? strlen(f->raw) : 0;
        if (f->raw == NULL)
            return GH_ENOMEM;
    }
    if (f->value == NULL)
        f->type = LF_UNDEFINED;
    return 0;
}

static char *sub_part(int attr, const struct berval *v)
{
    size_t n;
    /* substrings of DNs and integers are Undefined; strings fold as strings */
    gh_ldap_syntax sx = gh__ldap_attrs[attr].syntax;
    if (sx == SX_DN || sx == SX_INT || sx == SX_BOOL)
        return NULL;
    return gh__ldap_normalize(SX_CI, v->bv_val, v->bv_len, &n);
}

static int get_filter(BerElement *ber, fctx *fc, int depth, gh_ldap_filter **out);

static int get_list(BerElement *ber, fctx *fc, int depth, gh_ldap_filter *f)
{
    ber_len_t len;
    char *last;
    gh_ldap_filter **tail = &f->child;
    for (ber_tag_t tag = ber_first_element(ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(ber, &len, last)) {
        int rc = get_filter(ber, fc, depth + 1, tail);
        if (rc != 0)
            return rc;
        tail = &(*tail)->next;
    }
    return 0;
}

static int get_substrings(BerElement *ber, gh_ldap_filter *f)
{
    struct berval type, v;
    ber_len_t len;
    char *last;
    if (ber_scanf(ber, "{m" /*}*/, &type) == LBER_ERROR)
        return GH_EBADREQ;
    f->attr = attr_of(&type);
    int undefined = f->attr == LA_UNKNOWN || f->attr == LA_USERPASSWORD;
    int n = 0;
    for (ber_tag_t tag = ber_first_element(ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(ber, &len, last)) {
        if (ber_scanf(ber, "m", &v) == LBER_ERROR)
            return GH_EBADREQ;
        if (++n > 64)
            return GH_EBADREQ;
        if (undefined)
            continue;
        char *p = sub_part(f->attr, &v);
        if (p == NULL) {
            undefined = 1;
            continue;
        }
        if (tag == LDAP_SUBSTRING_INITIAL && f->initial == NULL && f->nany == 0 &&
            f->final == NULL) {
            f->initial = p;
        } else if (tag == LDAP_SUBSTRING_ANY && f->final == NULL) {
            char **a = realloc(f->any, (f->nany + 1) * sizeof(*a));
            if (a == NULL) {
                free(p);
                return GH_ENOMEM;
            }
            f->any = a;
            f->any[f->nany++] = p;
        } else if (tag == LDAP_SUBSTRING_FINAL && f->final == NULL) {
            f->final = p;
        } else {
            free(p);
            return GH_EBADREQ;
        }
    }
    if (n == 0)
        return GH_EBADREQ;
    if (undefined)
        f->type = LF_UNDEFINED;
    return 0;
}

static int get_extensible(BerElement *ber, gh_ldap_filter *f)
{
    struct berval rule = {0, NULL}, type = {0, NULL}, value = {0, NULL};
    ber_int_t dnattrs = 0;
    ber_len_t len;
    char *last;
    int have_value = 0;
    /* the elements of the MatchingRuleAssertion, bounded by its length */
    for (ber_tag_t tag = ber_first_element(ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(ber, &len, last)) {
        if (tag == LDAP_FILTER_EXT_OID) {
            if (ber_scanf(ber, "m", &rule) == LBER_ERROR)
                return GH_EBADREQ;
        } else if (tag == LDAP_FILTER_EXT_TYPE) {
            if (ber_scanf(ber, "m", &type) == LBER_ERROR)
                return GH_EBADREQ;
        } else if (tag == LDAP_FILTER_EXT_VALUE) {
            if (ber_scanf(ber, "m", &value) == LBER_ERROR)
                return GH_EBADREQ;
            have_value = 1;
        } else if (tag == LDAP_FILTER_EXT_DNATTRS) {
            if (ber_scanf(ber, "b", &dnattrs) == LBER_ERROR)
                return GH_EBADREQ;
        } else {
            return GH_EBADREQ;
        }
    }
    if (!have_value || (rule.bv_len == 0 && type.bv_len == 0))
        return GH_EBADREQ;
    f->attr = type.bv_len ? attr_of(&type) : LA_UNKNOWN;
    if (rule.bv_len == strlen(GH_LDAP_OID_IN_CHAIN) &&
        memcmp(rule.bv_val, GH_LDAP_OID_IN_CHAIN, rule.bv_len) == 0 &&
        (f->attr == LA_MEMBEROF || f->attr == LA_MEMBER)) {
        f->type = LF_CHAIN;
        return set_value(f, &value);
    }
    if (rule.bv_len == 0 && f->attr != LA_UNKNOWN) {
        /* no rule: the attribute's equality */
        f->type = LF_EQ;
        return set_value(f, &value);
    }
    f->type = LF_UNDEFINED;
    return 0;
}

static int get_filter(BerElement *ber, fctx *fc, int depth, gh_ldap_filter **out)
{
    ber_len_t len;
    ber_tag_t tag;
    struct berval type, value;
    int rc = 0;

    if (depth > GH_LDAP_FILTER_DEPTH || ++fc->nodes > GH_LDAP_FILTER_NODES)
        return GH_ETOOBIG;
    gh_ldap_filter *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return GH_ENOMEM;
    *out = f;
    f->attr = LA_UNKNOWN;
    tag = ber_peek_tag(ber, &len);
    switch (tag) {
    case LDAP_FILTER_AND:
    case LDAP_FILTER_OR:
        f->type = tag == LDAP_FILTER_AND ? LF_AND : LF_OR;
        rc = get_list(ber, fc, depth, f);
        break;
    case LDAP_FILTER_NOT:
        f->type = LF_NOT;
        if (ber_skip_tag(ber, &len) == LBER_DEFAULT)
            return GH_EBADREQ;
        rc = get_filter(ber, fc, depth + 1, &f->child);
        break;
    case LDAP_FILTER_EQUALITY:
    case LDAP_FILTER_APPROX:
    case LDAP_FILTER_GE:
    case LDAP_FILTER_LE:
        if (ber_scanf(ber, "{mm}", &type, &value) == LBER_ERROR)
            return GH_EBADREQ;
        f->type = tag == LDAP_FILTER_GE ? LF_GE : tag == LDAP_FILTER_LE ? LF_LE : LF_EQ;
        f->attr = attr_of(&type);
        rc = set_value(f, &value);
        break;
    case LDAP_FILTER_PRESENT:
        if (ber_scanf(ber, "m", &type) == LBER_ERROR)
            return GH_EBADREQ;
        f->type = LF_PRESENT;
        f->attr = attr_of(&type);
        if (f->attr == LA_USERPASSWORD)
            f->type = LF_UNDEFINED;
        break;
    case LDAP_FILTER_SUBSTRINGS:
        f->type = LF_SUB;
        rc = get_substrings(ber, f);
        break;
    case LDAP_FILTER_EXT:
        rc = get_extensible(ber, f);
        break;
    default:
        return GH_EBADREQ;
    }
    return rc;
}

/* FNV-1a of the raw filter element: paging cookies name the search they
 * continue. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ---- requests ---- */

static int get_controls(BerElement *ber, gh_ldap_req *r)
{
    ber_len_t len;
    char *last;
    if (ber_peek_tag(ber, &len) != LDAP_TAG_CONTROLS)
        return 0;
    for (ber_tag_t tag = ber_first_element(ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(ber, &len, last)) {
        gh_ldap_ctrl *c;
        if (r->nctrls == GH_LDAP_MAX_CTRLS)
            return GH_EBADREQ;
        c = &r->ctrls[r->nctrls++];
        if (ber_scanf(ber, "{m" /*}*/, &c->oid) == LBER_ERROR || c->oid.bv_len == 0)
            return GH_EBADREQ;
        tag = ber_peek_tag(ber, &len);
        if (tag == LBER_BOOLEAN) {
            ber_int_t crit;
            if (ber_scanf(ber, "b", &crit) == LBER_ERROR)
                return GH_EBADREQ;
            c->critical = crit != 0;
            tag = ber_peek_tag(ber, &len);
        }
        if (tag == LBER_OCTETSTRING) {
            if (ber_scanf(ber, "m", &c->value) == LBER_ERROR)
                return GH_EBADREQ;
            c->has_value = 1;
        }
    }
    return 0;
}

static int get_search(BerElement *ber, gh_ldap_req *r)
{
    ber_int_t scope, deref, size, time, typesonly;
    ber_len_t len;
    char *last;
    struct berval raw;
    fctx fc = {0};

    if (ber_scanf(ber, "{meeiib" /*}*/, &r->search.base, &scope, &deref, &size, &time,
                  &typesonly) == LBER_ERROR)
        return GH_EBADREQ;
    if (scope < 0 || scope > 2 || size < 0 || time < 0) {
        r->bad = LR_PROTOCOL_ERROR;
        r->why = "bad scope or limit";
        return 0;
    }
    r->search.scope = scope;
    r->search.sizelimit = size;
    r->search.timelimit = time;
    r->search.typesonly = typesonly != 0;
    if (ber_peek_element(ber, &raw) == LBER_DEFAULT)
        return GH_EBADREQ;
    r->search.filter_hash = hash_bytes(1469598103934665603ull, raw.bv_val, raw.bv_len);
    r->search.filter_hash =
        hash_bytes(r->search.filter_hash, r->search.base.bv_val, r->search.base.bv_len);
    r->search.filter_hash = hash_bytes(r->search.filter_hash, &scope, sizeof(scope));
    int rc = get_filter(ber, &fc, 0, &r->search.filter);
    if (rc == GH_ETOOBIG) {
        r->bad = LR_PROTOCOL_ERROR;
        r->why = "filter nested too deeply or too large";
        return 0;
    }
    if (rc != 0)
        return rc;
    if (ber_peek_tag(ber, &len) != LBER_SEQUENCE)
        return GH_EBADREQ;
    for (ber_tag_t tag = ber_first_element(ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(ber, &len, last)) {
        struct berval a;
        if (ber_scanf(ber, "m", &a) == LBER_ERROR)
            return GH_EBADREQ;
        if (r->search.nattrs == GH_LDAP_MAX_ATTRS)
            continue; /* more names than any schema: the rest are ignored */
        if (r->search.attrs == NULL) {
            r->search.attrs = calloc(GH_LDAP_MAX_ATTRS, sizeof(struct berval));
            if (r->search.attrs == NULL)
                return GH_ENOMEM;
        }
        r->search.attrs[r->search.nattrs++] = a;
    }
    return 0;
}

static int get_request(BerElement *ber, gh_ldap_req *r)
{
    ber_len_t len;
    ber_tag_t tag;
    ber_int_t id;

    if (ber_get_int(ber, &id) == LBER_ERROR || id < 0)
        return GH_EBADREQ;
    r->msgid = id;
    tag = ber_peek_tag(ber, &len);
    switch (tag) {
    case LDAP_REQ_BIND: {
        ber_int_t version;
        ber_tag_t method;
        r->op = GH_LDAP_BIND;
        if (ber_scanf(ber, "{imt" /*}*/, &version, &r->bind.dn, &method) == LBER_ERROR)
            return GH_EBADREQ;
        r->bind.version = version;
        if (method == LDAP_AUTH_SIMPLE) {
            r->bind.simple = 1;
            if (ber_scanf(ber, "m}", &r->bind.cred) == LBER_ERROR)
                return GH_EBADREQ;
        } else if (method == LDAP_AUTH_SASL) {
            if (ber_skip_element(ber, &r->bind.cred) == LBER_DEFAULT)
                return GH_EBADREQ;
            r->bind.cred.bv_len = 0;
            r->bind.cred.bv_val = NULL;
        } else {
            return GH_EBADREQ;
        }
        break;
    }
    case LDAP_REQ_UNBIND:
        r->op = GH_LDAP_UNBIND;
        if (ber_scanf(ber, "n") == LBER_ERROR)
            return GH_EBADREQ;
        break;
    case LDAP_REQ_SEARCH:
        r->op = GH_LDAP_SEARCH;
        return get_search(ber, r) ?: get_controls(ber, r);
    case LDAP_REQ_COMPARE:
        r->op = GH_LDAP_COMPARE;
        if (ber_scanf(ber, "{m{mm}}", &r->compare.dn, &r->compare.attr, &r->compare.value) ==
            LBER_ERROR)
            return GH_EBADREQ;
        break;
    case LDAP_REQ_ABANDON:
        r->op = GH_LDAP_ABANDON;
        if (ber_scanf(ber, "i", &id) == LBER_ERROR)
            return GH_EBADREQ;
        r->abandon_id = id;
        break;
    case LDAP_REQ_EXTENDED:
        r->op = GH_LDAP_EXTENDED;
        if (ber_scanf(ber, "{m" /*}*/, &r->ext.oid) == LBER_ERROR)
            return GH_EBADREQ;
        if (ber_peek_tag(ber, &len) == LDAP_TAG_EXOP_REQ_VALUE) {
            if (ber_scanf(ber, "m", &r->ext.value) == LBER_ERROR)
                return GH_EBADREQ;
            r->ext.has_value = 1;
        }
        break;
    case LDAP_REQ_MODIFY:
    case LDAP_REQ_ADD:
    case LDAP_REQ_DELETE:
    case LDAP_REQ_MODDN: {
        struct berval skip;
        r->op = tag == LDAP_REQ_MODIFY   ? GH_LDAP_MODIFY
                : tag == LDAP_REQ_ADD    ? GH_LDAP_ADD
                : tag == LDAP_REQ_DELETE ? GH_LDAP_DELETE
                                         : GH_LDAP_MODDN;
        if (ber_skip_element(ber, &skip) == LBER_DEFAULT)
            return GH_EBADREQ;
        break;
    }
    default:
        return GH_EBADREQ;
    }
    return get_controls(ber, r);
}

/* Decodes the message in ber (its outer tag and length already read). */
static int decode_message(BerElement *ber, gh_ldap_req **out)
{
    gh_ldap_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        ber_free(ber, 1);
        return GH_ENOMEM;
    }
    r->ber = ber;
    int rc = get_request(ber, r);
    if (rc == GH_EBADREQ && r->op != 0) {
        /* the framing held: answer this request with protocolError */
        r->bad = LR_PROTOCOL_ERROR;
        r->why = "malformed request";
        rc = 0;
    }
    if (rc != 0) {
        gh_ldap_req_free(r);
        return rc;
    }
    *out = r;
    return 1;
}

int gh_ldap_session_next(gh_ldap_session *s, const char *buf, size_t len, size_t *used,
                         gh_ldap_req **req)
{
    ber_len_t blen;
    ber_tag_t tag;

    *req = NULL;
    /* every LDAPMessage is a SEQUENCE: anything else at a message boundary
     * is not LDAP (an HTTP request, a TLS hello on a clear port) */
    if (!s->partial && len > 0 && (unsigned char)buf[0] != LBER_SEQUENCE) {
        *used = 0;
        return GH_EBADREQ;
    }
    s->in = buf;
    s->in_len = len;
    s->in_off = 0;
    if (s->ber == NULL) {
        s->ber = ber_alloc_t(0);
        if (s->ber == NULL)
            return GH_ENOMEM;
    }
    errno = 0;
    tag = ber_get_next(s->sb, &blen, s->ber);
    *used = s->in_off;
    s->in = NULL;
    s->in_len = s->in_off = 0;
    if (tag == LDAP_TAG_MESSAGE) {
        BerElement *ber = s->ber;
        s->ber = NULL;
        s->partial = 0;
        return decode_message(ber, req);
    }
    if (tag == LBER_DEFAULT && (errno == EWOULDBLOCK || errno == EAGAIN)) {
        s->partial |= *used > 0;
        return 0;
    }
    if (tag == LBER_DEFAULT && errno == ERANGE)
        return GH_ETOOBIG;
    return GH_EBADREQ;
}

int gh_ldap_decode(const char *buf, size_t len, size_t max_message, size_t *used, gh_ldap_req **req)
{
    gh_ldap l;
    gh_ldap_session *s;
    memset(&l, 0, sizeof(l));
    l.max_message = max_message;
    int rc = gh_ldap_session_new(&l, &s);
    if (rc != 0)
        return rc;
    rc = gh_ldap_session_next(s, buf, len, used, req);
    gh_ldap_session_free(s);
    return rc;
}

void gh_ldap_req_free(gh_ldap_req *r)
{
    if (r == NULL)
        return;
    if (r->bind.cred.bv_val && r->bind.cred.bv_len)
        sodium_memzero(r->bind.cred.bv_val, r->bind.cred.bv_len);
    if (r->op == GH_LDAP_EXTENDED && r->ext.value.bv_val && r->ext.value.bv_len)
        sodium_memzero(r->ext.value.bv_val, r->ext.value.bv_len); /* Password Modify */
    gh__ldap_filter_free(r->search.filter);
    free(r->search.attrs);
    if (r->ber)
        ber_free(r->ber, 1);
    free(r);
}

const gh_ldap_ctrl *gh_ldap_req_ctrl(const gh_ldap_req *r, const char *oid)
{
    size_t n = strlen(oid);
    for (size_t i = 0; i < r->nctrls; i++)
        if (r->ctrls[i].oid.bv_len == n && memcmp(r->ctrls[i].oid.bv_val, oid, n) == 0)
            return &r->ctrls[i];
    return NULL;
}

const gh_ldap_ctrl *gh_ldap_req_unknown_critical(const gh_ldap_req *r, const char *const *known)
{
    for (size_t i = 0; i < r->nctrls; i++) {
        const gh_ldap_ctrl *c = &r->ctrls[i];
        int found = 0;
        if (!c->critical)
            continue;
        for (size_t k = 0; known[k]; k++)
            if (c->oid.bv_len == strlen(known[k]) &&
                memcmp(c->oid.bv_val, known[k], c->oid.bv_len) == 0)
                found = 1;
        if (!found)
            return c;
    }
    return NULL;
}

/* ---- Password Modify ---- */

int gh_ldap_passwd_parse(const gh_ldap_req *r, gh_ldap_passwd *p)
{
    ber_len_t len;
    char *last;
    memset(p, 0, sizeof(*p));
    if (!r->ext.has_value)
        return 0; /* no value: change one's own password to a generated one */
    if (r->ext.value.bv_len == 0)
        return GH_EINVAL; /* not even the SEQUENCE (and liblber cannot read nothing) */
    p->ber = ber_init((struct berval *)&r->ext.value);
    if (p->ber == NULL)
        return GH_ENOMEM;
    if (ber_peek_tag(p->ber, &len) != LBER_SEQUENCE)
        return GH_EINVAL;
    for (ber_tag_t tag = ber_first_element(p->ber, &len, &last); tag != LBER_DEFAULT;
         tag = ber_next_element(p->ber, &len, last)) {
        struct berval *dst = tag == LDAP_TAG_EXOP_MODIFY_PASSWD_ID    ? &p->id
                             : tag == LDAP_TAG_EXOP_MODIFY_PASSWD_OLD ? &p->oldpw
                             : tag == LDAP_TAG_EXOP_MODIFY_PASSWD_NEW ? &p->newpw
                                                                      : NULL;
        if (dst == NULL || dst->bv_val != NULL)
            return GH_EINVAL;
        if (ber_scanf(p->ber, "m", dst) == LBER_ERROR)
            return GH_EINVAL;
    }
    return 0;
}

void gh_ldap_passwd_free(gh_ldap_passwd *p)
{
    if (p->oldpw.bv_val)
        sodium_memzero(p->oldpw.bv_val, p->oldpw.bv_len);
    if (p->newpw.bv_val)
        sodium_memzero(p->newpw.bv_val, p->newpw.bv_len);
    if (p->ber)
        ber_free(p->ber, 1); /* ber_init copied the value */
    memset(p, 0, sizeof(*p));
}
