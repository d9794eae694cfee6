/*
 * ldap-int.h: declarations shared by the files of ldap/ (not public).
 *
 * Attributes are known by a small integer id (enum below) resolved once when
 * a request is decoded; an id of LA_UNKNOWN is an attribute this server does
 * not define (a filter on it is Undefined, a request for it is ignored).
 */
#ifndef GH_LDAP_INT_H
#define GH_LDAP_INT_H

#include "ldap/ldap.h"

/* LDAP result codes used here (RFC 4511). */
enum {
    LR_SUCCESS = 0,
    LR_OPERATIONS_ERROR = 1,
    LR_PROTOCOL_ERROR = 2,
    LR_TIMELIMIT = 3,
    LR_SIZELIMIT = 4,
    LR_COMPARE_FALSE = 5,
    LR_COMPARE_TRUE = 6,
    LR_AUTH_METHOD = 7,
    LR_CRITICAL_EXT = 12,
    LR_ADMINLIMIT = 11,
    LR_NO_SUCH_ATTR = 16,
    LR_UNDEFINED_TYPE = 17,
    LR_NO_SUCH_OBJECT = 32,
    LR_INVALID_DN = 34,
    LR_INVALID_CREDS = 49,
    LR_INSUFFICIENT_ACCESS = 50,
    LR_BUSY = 51,
    LR_UNAVAILABLE = 52,
    LR_UNWILLING = 53,
    LR_CONSTRAINT = 19,
    LR_OTHER = 80
};

/* Attribute ids. */
enum {
    LA_UNKNOWN = -1,
    LA_OBJECTCLASS = 0,
    LA_UID,
    LA_CN,
    LA_SN,
    LA_DISPLAYNAME,
    LA_GECOS,
    LA_MAIL,
    LA_UIDNUMBER,
    LA_GIDNUMBER,
    LA_HOMEDIR,
    LA_LOGINSHELL,
    LA_MEMBEROF,
    LA_MEMBER,
    LA_MEMBERUID,
    LA_DESCRIPTION,
    LA_OU,
    LA_DC,
    LA_O,
    LA_USERPASSWORD, /* known so that it is never served: always unreadable */
    /* operational */
    LA_ENTRYUUID,
    LA_ENTRYDN,
    LA_CREATETS,
    LA_MODIFYTS,
    LA_STRUCTURALOC,
    LA_SUBSCHEMASUBENTRY,
    LA_HASSUBORDINATES,
    /* RootDSE */
    LA_NAMINGCONTEXTS,
    LA_SUPPORTEDCONTROL,
    LA_SUPPORTEDEXTENSION,
    LA_SUPPORTEDFEATURES,
    LA_SUPPORTEDLDAPVERSION,
    LA_SUPPORTEDSASL,
    LA_VENDORNAME,
    LA_VENDORVERSION,
    /* cn=Subschema */
    LA_OBJECTCLASSES,
    LA_ATTRIBUTETYPES,
    LA_LDAPSYNTAXES,
    LA_MATCHINGRULES,
    LA_COUNT
};

typedef enum { SX_CI, SX_CE, SX_INT, SX_DN, SX_TIME, SX_OID, SX_BOOL, SX_DESC } gh_ldap_syntax;

typedef struct gh_ldap_attrdef {
    const char *name;
    const char *alias; /* second name or NULL */
    const char *oid;
    gh_ldap_syntax syntax;
    int oper; /* operational: returned only when named or with "+" */
    int single;
} gh_ldap_attrdef;

extern const gh_ldap_attrdef gh__ldap_attrs[LA_COUNT];
/* Attribute id of a description ("cn", "CN;lang-en" -> LA_CN), or LA_UNKNOWN. */
int gh__ldap_attr_id(const char *name, size_t len);

/* Filters */
enum {
    LF_AND = 1,
    LF_OR,
    LF_NOT,
    LF_EQ,
    LF_GE,
    LF_LE,
    LF_PRESENT,
    LF_SUB,
    LF_CHAIN,    /* extensible match with LDAP_MATCHING_RULE_IN_CHAIN */
    LF_UNDEFINED /* unknown attribute or matching rule: Undefined */
};

struct gh_ldap_filter {
    int type;
    int attr;
    char *value; /* normalised assertion value (LF_EQ/GE/LE/CHAIN) */
    size_t vlen;
    char *initial; /* LF_SUB parts, normalised; NULL when absent */
    char **any;
    size_t nany;
    char *final;
    char *raw; /* the assertion value as sent (names are case-sensitive) */
    size_t rawlen;
    int resolved;  /* DN-valued nodes: set computed (search.c) */
    uint64_t *set; /* sorted keys (id << 1 | is_group) the node matches */
    size_t nset;
    gh_ldap_filter *child; /* and/or/not */
    gh_ldap_filter *next;
};

void gh__ldap_filter_free(gh_ldap_filter *f);
/* Normalises v for comparisons under syntax sx into a malloc'd string:
 * case-folded and space-collapsed for strings, canonical for DNs and integers.
 * NULL when the value is invalid for the syntax (then a match is Undefined). */
char *gh__ldap_normalize(gh_ldap_syntax sx, const char *v, size_t len, size_t *outlen);

/* The front-end. */
#define LDAP_SUFFIX_MAX 512
struct gh_ldap {
    char suffix[LDAP_SUFFIX_MAX];      /* as configured */
    char suffix_norm[LDAP_SUFFIX_MAX]; /* normalised */
    size_t max_message, max_scan;
    char home_template[256];
    char shell[256];
    gh_posix_defaults posix; /* points at the two above */
    char vendor_ver[64];
};

#define LDAP_PAGES 4
typedef struct gh_ldap_page {
    uint8_t cookie[16];
    uint64_t key; /* hash of base, scope and filter */
    int used;
    int phase; /* 0 containers, 1 users, 2 groups */
    char last[GH_NAME_MAX + 1];
    uint64_t stamp;
} gh_ldap_page;

struct gh_ldap_session {
    gh_ldap *l;
    Sockbuf *sb;
    BerElement *ber; /* the message being received */
    const char *in;  /* input of the current gh_ldap_session_next call */
    size_t in_len, in_off;
    int partial; /* a message is half received */
    gh_ldap_page pages[LDAP_PAGES];
    uint64_t page_clock;
};

/* Where a DN points (dit.c). */
enum {
    DL_INVALID = -1,
    DL_NONE = 0,
    DL_ROOTDSE,
    DL_SUBSCHEMA,
    DL_SUFFIX,
    DL_PEOPLE,
    DL_GROUPS,
    DL_USER,
    DL_GROUP,
    DL_NOSUCH,       /* under the suffix, no such container */
    DL_NOSUCH_UNDER, /* under ou=people or ou=groups, not a user or group DN */
    DL_OUTSIDE       /* not under the suffix */
};

/* One entry of the view: its kind and, for users and groups, the record. */
typedef struct gh_ldap_entry {
    int kind; /* DL_* */
    /* a user read from its hot value only: u.id, u.name, u.uid, u.gid,
     * u.display_name, u.mail and u.tombstone are set, nothing else (see
     * gh__ldap_user_attr_hot) */
    int partial;
    gh_user u;
    gh_group g;
} gh_ldap_entry;

typedef int (*gh_ldap_value_cb)(void *arg, const char *v, size_t len);

int gh__ldap_dn_norm(const char *v, size_t len, char *buf, size_t cap);
/* The same through liblber's DN parser only (gh__ldap_dn_norm takes a short
 * cut for plain DNs; the fuzz target checks that both agree). */
int gh__ldap_dn_norm_parsed(const char *v, size_t len, char *buf, size_t cap);
int gh__ldap_dn_locate(const gh_ldap *l, const char *v, size_t len, char *name, size_t namelen);
int gh__ldap_entry_dn(const gh_ldap *l, const gh_ldap_entry *e, char *buf, size_t len);
/* Calls cb for every value of attr in e (none for userPassword, ever). */
int gh__ldap_entry_values(const gh_ldap *l, gh_txn *txn, const gh_ldap_entry *e, int attr,
                          gh_ldap_value_cb cb, void *arg);
/* 1 when a user's values of attr come from its id, name, uid, gid, display
 * name and mail alone (what the store's hot value holds), so a partial entry
 * can serve them. */
int gh__ldap_user_attr_hot(int attr);
/* Whether a group attribute needs only the group's id, name and gid (what
 * its hot value holds; attributes groups do not have need nothing): a
 * compare on it, or a search whose filter and attributes are all such,
 * does not decode group records. */
int gh__ldap_group_attr_hot(int attr);
int gh__ldap_uuid_parse(const char *v, int *kind, uint64_t *id);

/* Output helpers (encode.c). */
int gh__ldap_out_ber(gh_ldap_out *out, BerElement *ber);

#endif
